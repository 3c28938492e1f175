"""A random-weight exported policy file for a profile: the fixture of the runtime and deploy tests."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np


def random_policy_file(path: str | Path, profile: str | Path, params=None, favour: str | None = None,
                       with_quality: bool = False) -> str:
    """Writes a policy file over ``profile``'s configurations with a random two-layer actor; ``favour`` (a
    configuration name) gets a large bias, i.e. a policy that insists on it. Returns the path."""
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
    arrays = {"energy_j_per_token": c.ept_j, "power_w": c.power_w, "decode_tokens_per_s": c.tps,
              "device_bytes": c.device_bytes}
    if with_quality:
        arrays["quality"] = c.quality
    save_policy_file(path, layers, meta, np.zeros(d), np.ones(d), arrays, c.features)
    return str(path)
