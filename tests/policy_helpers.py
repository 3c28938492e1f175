"""A random-weight exported policy file for a profile: the fixture of the runtime and deploy tests."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np


def random_policy_file(path: str | Path, profile: str | Path, params=None, favour: str | None = None,
                       with_quality: bool = False, with_switch_costs: bool = True) -> str:
    """Writes a policy file over ``profile``'s configurations with a random two-layer actor; ``favour`` (a
    configuration name) gets a large bias, i.e. a policy that insists on it; ``with_switch_costs``: the profile's
    switch costs in its meta, as ``deploy.py export`` writes them (False: a file from before they were). Returns the
    path."""
    import json

    from envs.tables import load_cost_tables
    from runtime.dynamics import DEVICES, EnvParams
    from runtime.observation import params_layout
    from runtime.policy import save_policy_file

    params = params or EnvParams()
    c = load_cost_tables(profile)
    layout = params_layout(c.space, params)
    rng = np.random.default_rng(0)
    n, d, h = len(c), layout.dim, 16
    layers = [(rng.normal(0, 0.3, (h, d)), rng.normal(0, 0.1, h)), (rng.normal(0, 0.3, (n, h)), np.zeros(n))]
    if favour is not None:
        layers[-1][1][c.space.index(favour)] = 50.0
    meta = {"algo": "ppo", "activation": "Tanh", "obs_features": layout.table(), "config_space": c.space.to_json(),
            "decode_table": c.decode_table(), "env_params": params.to_dict(),
            "normalization": {"norm_obs": True, "clip_obs": 10.0, "epsilon": 1e-8},
            "mask_rules": {"device_kind": "phone", "device": asdict(DEVICES["phone"]),
                           "devices": {k: asdict(v) for k, v in DEVICES.items()}},
            "profile": {"path": str(profile), "sha256": "0" * 64, "name": Path(profile).stem}}
    if with_switch_costs:
        meta["switch_costs"] = dict(json.loads(Path(profile).read_text()).get("switch_costs") or {})
    arrays = {"energy_j_per_token": c.ept_j, "power_w": c.power_w, "decode_tokens_per_s": c.tps,
              "device_bytes": c.device_bytes}
    if with_quality:
        arrays["quality"] = c.quality
    save_policy_file(path, layers, meta, np.zeros(d), np.ones(d), arrays, c.features)
    return str(path)


def train_tiny_warm_run(tmp_path: str | Path, action_head: str) -> Path:
    """A seconds-long ``train.py`` run with the ``action_head``: a schedutil warm start (2 episodes, one DAgger
    round) and 2,048 RL steps on 40-step episodes, no final evaluation. Returns the run folder."""
    import train
    from model.cli import parse_dataclass_args

    args = parse_dataclass_args(train.Args, argv=[
        "--action-head", action_head, "--total-timesteps", "2048", "--n-envs", "8", "--eval-freq", "1024",
        "--eval-episodes", "2", "--no-final-eval", "--runs-dir", str(Path(tmp_path) / "runs"), "--bc-expert",
        "schedutil", "--bc-episodes", "2", "--dagger-rounds", "1", "--dagger-episodes", "1",
        "--env.max-episode-steps", "40", "--no-progress"])
    return train.main(args)


def steps_where_numpy_decides_as_torch(pol, ctrl, env, traces: int, steps: int) -> int:
    """Runs ``env`` over the first ``traces`` test traces (at most ``steps`` each), asserting at every step that the
    device's ``NumpyPolicy`` ``pol`` picks the torch controller's configuration and that it is allowed. Returns
    the number of steps checked."""
    n = 0
    for k in range(traces):
        obs, _ = env.reset(seed=0, options={"trace": k, "start": 0})
        for _ in range(steps):
            m = env.unwrapped.action_masks()
            a = pol.act(obs, m)
            assert a == int(ctrl.predict(obs, action_masks=m)[0])
            assert m[a]
            obs, _, term, trunc, _ = env.step(a)
            n += 1
            if term or trunc:
                break
    return n
