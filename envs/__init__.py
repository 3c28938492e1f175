"""wattwise.envs: the Gymnasium environment (dynamics only; data comes from profiles and traces).

``import envs`` registers ``wattwise/MicroLLMPower-v0``::

    import gymnasium as gym, envs
    env = gym.make("wattwise/MicroLLMPower-v0")            # default profile + default traces
    env = gym.make("wattwise/MicroLLMPower-v0", split="test", traces="data/real")
"""

from gymnasium.envs.registration import register, registry

from envs.power_env import DEFAULT_PROFILE, MicroLLMPowerEnv
from runtime.dynamics import EnvParams, RewardWeights

ENV_ID = "wattwise/MicroLLMPower-v0"
MAX_EPISODE_STEPS = EnvParams().max_episode_steps  # 720 = 2 h at the default 10 s step

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="envs.power_env:MicroLLMPowerEnv", max_episode_steps=MAX_EPISODE_STEPS)

__all__ = ["ENV_ID", "MAX_EPISODE_STEPS", "EnvParams", "MicroLLMPowerEnv", "RewardWeights", "DEFAULT_PROFILE"]
