"""Run folders: what ``train.py`` writes and how evaluation and export read it back — without
unpickling anything.

A run folder holds::

    config.json          args, algorithm, env kwargs (profile, traces), env_params (EnvParams),
                         config_space, observation feature table, decode table, profile identity
                         (path, sha256), policy architecture, host (run_host: CPU, its kernel ISA, versions)
    policy_state.pt      the SB3 policy's state_dict (tensors only: loads with weights_only=True)
    vecnormalize.npz     observation normalisation: mean, var, clip_obs, epsilon [obs_min, obs_max] (or absent)
    model.zip            SB3's own save, for resuming training (never needed for evaluation)
    last/                the final policy, when --select-best kept an earlier one (same files)
    checkpoints/         model_<steps>_steps.zip (SB3's save) with model_vecnormalize_<steps>_steps.npz beside it
    report.md/.csv/.json the evaluation against the baselines

``load_controller(run_dir)`` rebuilds the policy network from ``config.json`` and loads the
weights with ``torch.load(weights_only=True)``; observations are normalised exactly as
``VecNormalize`` did during training (``(obs − mean) / sqrt(var + eps)``, clipped).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from agents.algos import algo


def run_host(threads: int) -> dict[str, Any]:
    """The machine a run trained on, for ``config.json``: the profile's ``machine`` block (CPU model, cores,
    threads, torch / numpy / Python versions, platform) plus torch's CPU kernel level (``DEFAULT`` / ``AVX2`` /
    ``AVX512``…) and the RL libraries' versions.

    Why: a seed fixes every random draw, but not the floating-point results. torch picks its CPU kernels by the
    instruction set, and a different rounding early in training grows into a different policy, so one seed on
    two CPUs (or under other library versions) can train two policies; PyTorch does not promise reproducibility
    across platforms or releases. With this block a difference between two runs of a seed can be traced.
    """
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from model.profile_schema import machine_info

    packages = {}
    for name in ("stable-baselines3", "sb3-contrib", "gymnasium"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {**machine_info(threads, str(torch.__version__)),
            "torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()), "packages": packages}


def vecnormalize_stats(vecnorm) -> dict[str, np.ndarray]:
    """VecNormalize's observation statistics now, as plain arrays (copies): what ``normalize_obs`` reads."""
    from agents.obs_support import support

    rms = vecnorm.obs_rms
    out = dict(mean=rms.mean.astype(np.float64), var=rms.var.astype(np.float64),
               count=np.array(rms.count, dtype=np.float64), clip_obs=np.array(vecnorm.clip_obs),
               epsilon=np.array(vecnorm.epsilon), norm_obs=np.array(bool(vecnorm.norm_obs)))
    s = support(rms)
    if s is not None:  # train.py --clamp-obs: each feature is clipped to this range before it is normalised
        out.update(obs_min=s[0].astype(np.float64), obs_max=s[1].astype(np.float64))
    return out


def save_vecnormalize(vecnorm, path: str | Path) -> None:
    """VecNormalize observation statistics as plain arrays (no pickle)."""
    np.savez(path, **vecnormalize_stats(vecnorm))


def load_vecnormalize(path: str | Path) -> dict[str, np.ndarray] | None:
    path = Path(path)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def normalize_obs(obs: np.ndarray, stats: dict[str, np.ndarray] | None) -> np.ndarray:
    """VecNormalize's observation transform, from saved statistics."""
    if stats is None or not bool(stats["norm_obs"]):
        return obs.astype(np.float32)
    clip = float(stats["clip_obs"])
    if "obs_min" in stats:  # train.py --clamp-obs (agents.obs_support)
        obs = np.clip(obs, stats["obs_min"], stats["obs_max"])
    out = (obs - stats["mean"]) / np.sqrt(stats["var"] + float(stats["epsilon"]))
    return np.clip(out, -clip, clip).astype(np.float32)


def save_run(run_dir: str | Path, model, vecnorm, config: dict[str, Any]) -> None:
    """Write config.json, policy_state.pt, vecnormalize.npz and model.zip."""
    import torch

    from runtime.safeio import atomic_write_text, atomic_writer

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    # every file atomically (temp file + rename): an interrupt never leaves half a policy behind;
    # config.json last, so a folder with a config.json is complete
    with atomic_writer(run / "policy_state.pt", "wb") as fh:
        torch.save({k: v.detach().cpu() for k, v in model.policy.state_dict().items()}, fh)
    if vecnorm is not None:
        with atomic_writer(run / "vecnormalize.npz", "wb") as fh:
            save_vecnormalize(vecnorm, fh)
    with atomic_writer(run / "model.zip", "wb") as fh:
        model.save(fh)
    atomic_write_text(run / "config.json", json.dumps(config, indent=1, default=str))


def load_config(run_dir: str | Path) -> dict[str, Any]:
    p = Path(run_dir) / "config.json"
    if not p.exists():
        raise FileNotFoundError(f"{p}: not a run folder (no config.json); train one with python train.py")
    return json.loads(p.read_text())


class PolicyController:
    """A trained SB3 policy as a ``Controller``: normalise, forward, argmax (deterministic)."""

    def __init__(self, policy, stats: dict | None, name: str, uses_masks: bool = False):
        self.policy, self.stats, self.name, self.uses_masks = policy, stats, name, uses_masks

    def predict(self, observation, state=None, episode_start=None, deterministic=True, action_masks=None):
        obs = normalize_obs(np.asarray(observation, dtype=np.float64), self.stats)
        if self.uses_masks:
            act, _ = self.policy.predict(obs, deterministic=deterministic, action_masks=action_masks)
        else:
            act, _ = self.policy.predict(obs, deterministic=deterministic)
        return act, state


def env_from_config(cfg: dict[str, Any], **overrides: Any):
    """The ``MicroLLMPowerEnv`` a run was trained on: its profile, traces and ``env_params``
    (``runtime.dynamics.EnvParams``), with ``overrides`` (e.g. ``split``, ``traces``)."""
    from envs.power_env import MicroLLMPowerEnv

    kw = dict(cfg.get("env_kwargs") or {})
    params = cfg.get("env_params")
    if params is None:  # run folders written before env_params: the parameters were env kwargs
        params = {k: kw.pop(k) for k in list(kw) if k in ("step_s", "slo_ms", "backlog_cap_tokens", "reserve_soc",
                                                          "budget_grace_s", "lookahead", "weights")}
    kw.update(overrides)
    kw.pop("render_mode", None)
    return MicroLLMPowerEnv(params=params, **kw)


def load_controller(run_dir: str | Path) -> PolicyController:
    """Rebuild the run's policy from config.json + policy_state.pt (weights only)."""
    import torch

    run = Path(run_dir)
    cfg = load_config(run)
    try:
        a = algo(cfg["algo"])
    except ValueError as exc:
        raise ValueError(f"{run}/config.json: {exc}") from None
    env = env_from_config(cfg)
    saved = cfg.get("obs_features")
    if saved is not None and list(saved) != list(env.layout.names):
        extra, missing = sorted(set(env.layout.names) - set(saved)), sorted(set(saved) - set(env.layout.names))
        raise ValueError(f"{run}/config.json: the run was trained on {len(saved)} observation features, this code "
                         f"builds {len(env.layout.names)} from its parameters (new: {extra[:4]}, gone: {missing[:4]}); "
                         "the observation changed since the run was written: retrain it, or evaluate it with the "
                         "code of its commit")
    policy_kwargs = dict(cfg.get("policy_kwargs") or {})
    if "activation_fn" in policy_kwargs:
        policy_kwargs["activation_fn"] = getattr(torch.nn, policy_kwargs["activation_fn"])
    lr = lambda _: 0.0  # noqa: E731 - a schedule is required by the constructors, unused here
    factorised = cfg.get("action_head", "flat") == "factorised"
    action_space = env.action_space
    if factorised:
        from gymnasium import spaces

        from runtime.factorised import Factorisation

        action_space = spaces.MultiDiscrete(Factorisation(env.space).dims)
    policy = a.policy_class()(env.observation_space, action_space, lr, **policy_kwargs)
    state = torch.load(run / "policy_state.pt", weights_only=True, map_location="cpu")
    policy.load_state_dict(state)
    policy.set_training_mode(False)
    stats = load_vecnormalize(run / "vecnormalize.npz")
    if factorised:
        from agents.factorised import FactorisedController

        ctrl = FactorisedController(policy, stats, env.space, name=f"rl:{a.name}-factorised", maskable=a.uses_masks)
    else:
        ctrl = PolicyController(policy, stats, name=f"rl:{a.name}", uses_masks=a.uses_masks)
    # what the policy's inputs and outputs mean, for a check against another env (agents.evaluate)
    ctrl.trained_on = {"configs": tuple(env.space.names), "features": tuple(env.layout.names),
                       "profile": (cfg.get("env_kwargs") or {}).get("profile")}
    return ctrl
