"""wattwise.agents: everything that chooses a configuration, behind one ``predict()``.

SB3 agents, heuristic baselines, forecast MPC and the offline oracle all expose
``predict(observation, state=None, episode_start=None, deterministic=True) -> (actions, state)``
so ``stable_baselines3.common.evaluation.evaluate_policy`` and ``agents.evaluate`` score them
the same way.
"""
