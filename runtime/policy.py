"""The exported policy file (``policy.npz``) and its numpy forward pass.

numpy + the standard library only: this is what runs on the device.

A policy file is a plain ``.npz`` (loads with ``allow_pickle=False``) holding

* ``meta_json`` — a 0-d unicode array with a JSON object: format name and version, algorithm,
  activation, the configuration space (``config_space``: knobs and values,
  ``runtime.configspace``) and its decode table, the environment parameters (``env_params``:
  ``runtime.dynamics.EnvParams``: step, SLO, backlog cap, reserve SoC, budget grace, look-ahead,
  reward weights), the observation feature table, the VecNormalize settings, the mask-rule
  parameters (device kind and the device constants table), the profile's identity and its
  ``switch_costs`` (optional: the shield's budget rule prices a switch as the env does, ``PolicyFile.switch_j``);
* ``layer{k}_weight`` (out, in) / ``layer{k}_bias`` (out,) float32 — the actor MLP, last layer
  = action logits (PPO: ``mlp_extractor.policy_net`` + ``action_net``; DQN: ``q_net.q_net``): one per
  configuration, or with ``meta.action_head = "factorised"`` one per knob value, family by family in the
  space's knob order (``runtime.factorised``: per-family masked argmax, then the nearest allowed configuration);
* ``obs_mean`` / ``obs_var`` float64 (obs_dim,) — VecNormalize running statistics;
* ``obs_min`` / ``obs_max`` float64 (obs_dim,), optional (``train.py --clamp-obs``) — the range of the raw
  observations those statistics were fitted on; each feature is clipped to it before it is normalised;
* ``energy_j_per_token``, ``power_w``, ``decode_tokens_per_s`` float64 (n_actions,) (optional:
  ``device_bytes``, the memory each configuration needs on the device) and
  ``config_features`` float64 (n_actions, n_config_features) — per-configuration figures from
  the profile (the shield's feasibility rules and the observation's configuration block);
* ``content_sha256`` — a 0-d unicode array: SHA-256 over every other array (name, dtype,
  shape, bytes, in sorted name order). :func:`load_policy_file` recomputes and compares it.

Format version 2 adds ``config_space`` and ``env_params``; version-1 files (three knobs, the
parameters under ``env`` and ``mask_rules``) still load and decide identically.
``docs/runtime.md`` has the full table. Any problem while loading raises
:class:`PolicyFileError` naming what is wrong; the runtime manager then falls back to the safe
configuration.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.configspace import ConfigSpace, ConfigSpaceError, space_from_records
from runtime.dynamics import EnvParams
from runtime.observation import ObsLayout, params_layout

FORMAT = "wattwise-policy"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
HASH_KEY = "content_sha256"
META_KEY = "meta_json"
ACTIVATIONS = ("Tanh", "ReLU", "LeakyReLU", "ELU", "Sigmoid", "Identity")
PER_CONFIG_ARRAYS = ("energy_j_per_token", "power_w", "decode_tokens_per_s")
#: per-configuration arrays a file may carry (older files: absent, read as zeros)
OPTIONAL_PER_CONFIG = ("device_bytes", "quality")
#: per-feature arrays a file may carry (older files, or runs without ``--clamp-obs``: absent, no extra clip)
OPTIONAL_PER_FEATURE = ("obs_min", "obs_max")
#: Logit given to masked-out actions (sb3-contrib's MaskableCategorical uses -1e8).
MASKED_LOGIT = -1e8


class PolicyFileError(ValueError):
    """A policy file is missing, truncated, corrupted, tampered with or inconsistent.

    Attributes:
        path: The file.
        problem: What is wrong, in words.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def content_hash(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over every array except ``content_sha256`` (sorted by name).

    Each array contributes its name, dtype string, shape and C-order bytes, so a change to any
    value, a reshape or a dtype change all alter the hash.
    """
    import hashlib  # lazily: only loading/saving needs it (keeps the runtime's import light)

    h = hashlib.sha256()
    for name in sorted(arrays):
        if name == HASH_KEY:
            continue
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(b"\0" + a.dtype.str.encode() + b"\0" + repr(a.shape).encode() + b"\0")
        h.update(a.tobytes())
    return h.hexdigest()


def save_policy_file(path: str | Path, layers: list[tuple[np.ndarray, np.ndarray]], meta: dict[str, Any],
                     obs_mean: np.ndarray, obs_var: np.ndarray, per_config: dict[str, np.ndarray],
                     config_features: np.ndarray, obs_support: tuple[np.ndarray, np.ndarray] | None = None) -> str:
    """Writes a policy file atomically (temp file + rename) and returns its content hash.

    Args:
        path: Output ``.npz`` path.
        layers: ``[(weight (out, in), bias (out,)), ...]``; the last layer gives the logits.
        meta: JSON-ready metadata (see the module docstring; ``format`` keys are filled in).
        obs_mean: VecNormalize mean (obs_dim,).
        obs_var: VecNormalize variance (obs_dim,).
        per_config: ``energy_j_per_token``, ``power_w``, ``decode_tokens_per_s`` arrays.
        config_features: (n_actions, n_config_features): the space's feature matrix.
        obs_support: ``(obs_min, obs_max)`` (obs_dim,) each, or None: the raw range each feature is clipped to
            before it is normalised (``agents.obs_support``).
    """
    import os

    meta = dict(meta)
    meta.setdefault("format", FORMAT)
    meta.setdefault("format_version", FORMAT_VERSION)
    meta["n_layers"] = len(layers)
    arrays: dict[str, np.ndarray] = {}
    for k, (w, b) in enumerate(layers):
        arrays[f"layer{k}_weight"] = np.ascontiguousarray(w, dtype=np.float32)
        arrays[f"layer{k}_bias"] = np.ascontiguousarray(b, dtype=np.float32)
    arrays["obs_mean"] = np.asarray(obs_mean, dtype=np.float64)
    arrays["obs_var"] = np.asarray(obs_var, dtype=np.float64)
    if obs_support is not None:
        arrays["obs_min"], arrays["obs_max"] = (np.asarray(a, dtype=np.float64) for a in obs_support)
    for name in PER_CONFIG_ARRAYS:
        arrays[name] = np.asarray(per_config[name], dtype=np.float64)
    for name in OPTIONAL_PER_CONFIG:
        if name in per_config:
            arrays[name] = np.asarray(per_config[name], dtype=np.float64)
    arrays["config_features"] = np.asarray(config_features, dtype=np.float64)
    arrays[META_KEY] = np.array(json.dumps(meta, sort_keys=True))
    digest = content_hash(arrays)
    arrays[HASH_KEY] = np.array(digest)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:  # np.savez on a path would append ".npz" to other suffixes
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return digest


@dataclass
class PolicyFile:
    """A validated policy file.

    Attributes:
        path: Where it was loaded from.
        meta: The decoded ``meta_json``.
        layers: ``[(weight float32 (out, in), bias float32 (out,)), ...]``.
        obs_mean: (obs_dim,) float64.
        obs_var: (obs_dim,) float64.
        energy_j_per_token: (n_actions,) float64.
        power_w: (n_actions,) float64.
        decode_tokens_per_s: (n_actions,) float64.
        config_features: (n_actions, n_config_features) float64.
        sha256: The verified content hash.
        space: The configuration space (index i = action i).
        params: The environment parameters the policy was trained under.
        layout: The observation layout it reads.
    """

    path: str
    meta: dict[str, Any]
    layers: list[tuple[np.ndarray, np.ndarray]]
    obs_mean: np.ndarray
    obs_var: np.ndarray
    energy_j_per_token: np.ndarray
    power_w: np.ndarray
    decode_tokens_per_s: np.ndarray
    config_features: np.ndarray
    sha256: str
    space: ConfigSpace
    params: EnvParams
    layout: ObsLayout
    device_bytes: np.ndarray | None = None  # memory each configuration needs on the device (None: unknown)
    quality: np.ndarray | None = None  # each configuration's quality (skill above chance; None: unknown)
    obs_min: np.ndarray | None = None  # each feature's raw range in training (--clamp-obs; None: not clipped to it)
    obs_max: np.ndarray | None = None
    #: (n, n) energy of a switch i → j, J: the profile's ``switch_costs`` (meta) priced as the env prices them
    #: (``ConfigSpace.switch_time_s`` × the target's power); None: the file has none (switches cost 0 J)
    switch_j: np.ndarray | None = None

    @property
    def obs_dim(self) -> int:
        return int(self.layers[0][0].shape[1])

    @property
    def n_actions(self) -> int:
        """Configurations the policy chooses among (a factorised head has fewer outputs: one per knob value)."""
        return len(self.space)

    @property
    def decode_table(self) -> list[dict[str, Any]]:
        return list(self.meta["decode_table"])

    @property
    def names(self) -> list[str]:
        return list(self.space.names)


    @property
    def safe_index(self) -> int:
        """The configuration with the lowest energy per token (the shield's safe choice)."""
        return int(np.argmin(self.energy_j_per_token))

    @property
    def uses_masks(self) -> bool:
        return self.meta.get("algo") == "maskable_ppo"

    @property
    def lookahead(self) -> int:
        return self.params.lookahead

    def summary(self) -> dict[str, Any]:
        """A short JSON-ready description (algo, sizes, profile, hash)."""
        m = self.meta
        return {"path": self.path, "algo": m.get("algo"), "activation": m.get("activation"),
                "layers": [list(w.shape) for w, _ in self.layers], "n_actions": self.n_actions,
                "knobs": list(self.space.knob_names), "profile": m.get("profile"),
                "device_kind": m.get("mask_rules", {}).get("device_kind"), "format_version": m.get("format_version"),
                "sha256": self.sha256}


# ---- loading: one validator per part, each raising PolicyFileError ------------------------------

_REQUIRED_META = ("format", "format_version", "algo", "activation", "obs_features", "decode_table",
                  "normalization", "mask_rules", "profile")


def _read_arrays(p: Path) -> dict[str, np.ndarray]:
    if not p.is_file():
        raise PolicyFileError(p, "no such file; export one with `python deploy.py export <run-dir>`")
    import zipfile  # lazily, as np.load does
    import zlib

    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(p, allow_pickle=False) as z:
            for k in z.files:
                arrays[k] = z[k]
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as exc:
        raise PolicyFileError(p, f"not a readable .npz (truncated or corrupted): {exc}") from exc
    except ValueError as exc:  # pickled object arrays, bad headers
        raise PolicyFileError(p, f"not a valid policy .npz (object arrays or bad header): {exc}") from exc
    for k in (META_KEY, HASH_KEY, "obs_mean", "obs_var", "config_features", *PER_CONFIG_ARRAYS):
        if k not in arrays:
            raise PolicyFileError(p, f"missing array {k!r}; re-export the policy")
    return arrays


def _check_hash(p: Path, arrays: dict[str, np.ndarray]) -> str:
    stored = arrays[HASH_KEY]
    if stored.shape != () or stored.dtype.kind != "U":
        raise PolicyFileError(p, f"{HASH_KEY} must be a 0-d unicode array")
    digest = content_hash(arrays)
    if str(stored) != digest:
        raise PolicyFileError(p, f"content hash mismatch (stored {str(stored)[:12]}…, computed {digest[:12]}…): "
                                 "the file was modified after export (tampered or corrupted)")
    return digest


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _parse_meta(p: Path, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The meta JSON and its top-level schema (types of every key the runtime reads)."""
    try:
        meta = json.loads(str(arrays[META_KEY]))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise PolicyFileError(p, f"meta_json is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise PolicyFileError(p, "meta_json must be a JSON object")
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise PolicyFileError(p, f"meta_json lacks {missing}")
    version = meta["format_version"]
    if meta["format"] != FORMAT or isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise PolicyFileError(p, f"format {meta['format']!r} v{version!r}; this runtime reads "
                                 f"{FORMAT!r} v{'/'.join(map(str, READABLE_VERSIONS))}")
    if version >= 2 and "env_params" not in meta:
        raise PolicyFileError(p, "meta_json lacks ['env_params'] (format version 2)")
    if not isinstance(meta["algo"], str):
        raise PolicyFileError(p, f"algo must be a string, got {meta['algo']!r}")
    if not isinstance(meta["activation"], str) or meta["activation"] not in ACTIVATIONS:
        raise PolicyFileError(p, f"activation {meta['activation']!r} not in {ACTIVATIONS}")
    n_layers = meta.get("n_layers")
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise PolicyFileError(p, f"n_layers must be an integer >= 1, got {n_layers!r}")
    feats = meta["obs_features"]
    if not isinstance(feats, list) or not all(
            isinstance(f, str) or (isinstance(f, dict) and isinstance(f.get("name"), str)) for f in feats):
        raise PolicyFileError(p, "obs_features must be a list of feature names or of objects with a string 'name'")
    table = meta["decode_table"]
    if not isinstance(table, list) or not table:
        raise PolicyFileError(p, "decode_table must be a non-empty list")
    for i, row in enumerate(table):
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise PolicyFileError(p, f"decode_table[{i}] must be an object with a string 'name'")
    if "config_space" in meta and not isinstance(meta["config_space"], dict):
        raise PolicyFileError(p, "config_space must be an object")
    for key in ("profile", "env", "run", "model", "versions"):
        if key in meta and meta[key] is not None and not isinstance(meta[key], dict):
            raise PolicyFileError(p, f"{key} must be an object")
    ck = (meta.get("model") or {}).get("checkpoint_sha256")
    if ck is not None and not isinstance(ck, str):
        raise PolicyFileError(p, f"model.checkpoint_sha256 must be a string or null, got {ck!r}")
    env = meta.get("env") or {}
    if env.get("env_kwargs") is not None and not isinstance(env["env_kwargs"], dict):
        raise PolicyFileError(p, "env.env_kwargs must be an object")
    sc = meta.get("switch_costs")
    if sc is not None:  # the profile's switch costs (absent in older files: switches priced at 0 J)
        if not isinstance(sc, dict):
            raise PolicyFileError(p, "switch_costs must be an object like {\"depth_repair_ms\": 0.25, ...}")
        for key, v in sc.items():
            if not _is_num(v) or v < 0:
                raise PolicyFileError(p, f"switch_costs.{key} must be a finite number >= 0, got {v!r}")
    if version == 1 and "lookahead" in meta and (isinstance(meta["lookahead"], bool)
                                                 or not isinstance(meta["lookahead"], int)):
        raise PolicyFileError(p, f"lookahead must be an integer, got {meta['lookahead']!r}")
    return meta


def _check_layers(p: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    n_layers = meta["n_layers"]  # an integer >= 1 (_parse_meta)
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    for k in range(n_layers):
        wk, bk = f"layer{k}_weight", f"layer{k}_bias"
        if wk not in arrays or bk not in arrays:
            raise PolicyFileError(p, f"missing {wk} / {bk} (meta says {n_layers} layers)")
        w, b = arrays[wk], arrays[bk]
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise PolicyFileError(p, f"{wk} {w.shape} / {bk} {b.shape}: expected (out, in) / (out,)")
        if k and w.shape[1] != layers[-1][0].shape[0]:
            raise PolicyFileError(p, f"{wk} takes {w.shape[1]} inputs but layer{k - 1} gives "
                                     f"{layers[-1][0].shape[0]}")
        if w.dtype.kind != "f" or b.dtype.kind != "f":
            raise PolicyFileError(p, f"{wk}/{bk} must be floating point")
        layers.append((w, b))
    return layers


def _space_and_params(p: Path, meta: dict[str, Any]) -> tuple[ConfigSpace, EnvParams]:
    """The configuration space and environment parameters (version 2 fields, or version 1's)."""
    try:
        space = space_from_records(meta["decode_table"], meta.get("config_space"))
    except (ConfigSpaceError, KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise PolicyFileError(p, f"config_space / decode_table: {exc}") from exc
    if [r.get("name") for r in meta["decode_table"]] != list(space.names):
        raise PolicyFileError(p, "decode_table is not in the configuration space's index order")
    try:
        if meta["format_version"] >= 2:
            params = EnvParams.from_dict(meta["env_params"])
        else:  # version 1: the parameters the runtime needed were spread over env and mask_rules
            env = meta.get("env", {}) or {}
            kw = dict(env.get("env_kwargs", {}) or {})
            keep = {k: kw[k] for k in ("step_s", "slo_ms", "backlog_cap_tokens", "reserve_soc", "budget_grace_s",
                                       "lookahead", "weights") if k in kw}
            keep.setdefault("reserve_soc", meta["mask_rules"].get("reserve_soc", 0.05))
            keep["lookahead"] = int(meta.get("lookahead", keep.get("lookahead", 0)))
            params = EnvParams.from_dict(keep)
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise PolicyFileError(p, f"env_params: {exc}") from exc
    return space, params


def _check_observation(p: Path, meta: dict[str, Any], layers: list, space: ConfigSpace,
                       params: EnvParams) -> ObsLayout:
    layout = params_layout(space, params)
    names = [f["name"] if isinstance(f, dict) else f for f in meta["obs_features"]]
    if names != layout.names:
        raise PolicyFileError(p, f"observation features {names} differ from this runtime's {layout.names} "
                                 "for the file's configuration space (feature order or version mismatch)")
    if layers[0][0].shape[1] != layout.dim:
        raise PolicyFileError(p, f"first layer takes {layers[0][0].shape[1]} inputs but there are {layout.dim} "
                                 "features")
    head = meta.get("action_head", "flat")
    if head not in ("flat", "factorised"):
        raise PolicyFileError(p, f"action_head {head!r} is not flat or factorised")
    n_out = len(space) if head == "flat" else sum(len(k.values) for k in space.knobs)
    if n_out != layers[-1][0].shape[0]:
        what = (f"{len(space)} configurations" if head == "flat" else
                f"{n_out} knob values (factorised head over {list(space.knob_names)})")
        raise PolicyFileError(p, f"the configuration space has {what}, the policy {layers[-1][0].shape[0]} outputs")
    return layout


def _check_arrays(p: Path, arrays: dict[str, np.ndarray], obs_dim: int, space: ConfigSpace) -> None:
    n_act = len(space)
    if ("obs_min" in arrays) != ("obs_max" in arrays):
        raise PolicyFileError(p, "obs_min and obs_max come together (the training range of each feature); the file "
                                 "has only one: re-export it with `python deploy.py export <run-dir>`")
    for k in ("obs_mean", "obs_var") + tuple(k for k in OPTIONAL_PER_FEATURE if k in arrays):
        if arrays[k].shape != (obs_dim,):
            raise PolicyFileError(p, f"{k} has shape {arrays[k].shape}, expected ({obs_dim},)")
    for k in PER_CONFIG_ARRAYS + tuple(k for k in OPTIONAL_PER_CONFIG if k in arrays):
        if arrays[k].shape != (n_act,):
            raise PolicyFileError(p, f"{k} has shape {arrays[k].shape}, expected ({n_act},)")
    want = (n_act, len(space.features))
    if arrays["config_features"].shape != want:
        raise PolicyFileError(p, f"config_features has shape {arrays['config_features'].shape}, expected {want}")
    for k, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise PolicyFileError(p, f"{k} contains NaN or infinity")
    if (arrays["obs_var"] < 0).any() or (arrays["energy_j_per_token"] <= 0).any():
        raise PolicyFileError(p, "negative variance or non-positive energy per token")
    if "obs_min" in arrays and (arrays["obs_min"] > arrays["obs_max"]).any():
        k = int(np.argmax(arrays["obs_min"] > arrays["obs_max"]))
        raise PolicyFileError(p, f"obs_min > obs_max for feature {k}: not a range")
    if not np.allclose(arrays["config_features"], space.feature_matrix(), atol=1e-12):
        raise PolicyFileError(p, "config_features differ from the configuration space's encoding")


_DEVICE_KEYS = ("t_max_c", "r_th_c_per_w", "tau_s", "idle_power_w")


def _check_device(p: Path, where: str, dev: Any) -> None:
    if not isinstance(dev, dict):
        raise PolicyFileError(p, f"{where} must be an object of device constants")
    for key in _DEVICE_KEYS:
        if not _is_num(dev.get(key)):
            raise PolicyFileError(p, f"{where}.{key} missing or not a finite number")
    for key, v in dev.items():  # optional constants (throttle, charge efficiency) must be numbers too
        if not _is_num(v):
            raise PolicyFileError(p, f"{where}.{key} is not a finite number: {v!r}")


def _check_mask_rules(p: Path, meta: dict[str, Any]) -> None:
    """``mask_rules``: device kind, its constants, the whole device table, the rule parameters."""
    rules = meta["mask_rules"]
    if not isinstance(rules, dict):
        raise PolicyFileError(p, "mask_rules must be an object")
    if not isinstance(rules.get("device_kind"), str):
        raise PolicyFileError(p, "mask_rules.device_kind missing or not a string")
    _check_device(p, "mask_rules.device", rules.get("device"))
    devices = rules.get("devices")
    if not isinstance(devices, dict) or not devices:
        raise PolicyFileError(p, "mask_rules.devices missing or not an object of device kinds")
    for kind, dev in devices.items():
        _check_device(p, f"mask_rules.devices.{kind}", dev)
    for key in ("hot_margin_c", "cheap_quantile", "reserve_soc"):
        if key in rules and not _is_num(rules[key]):
            raise PolicyFileError(p, f"mask_rules.{key} is not a finite number: {rules[key]!r}")


def _check_normalization(p: Path, meta: dict[str, Any]) -> None:
    """``normalization``: ``norm_obs`` (bool), ``clip_obs`` and ``epsilon`` (positive finite numbers)."""
    norm = meta["normalization"]
    if not isinstance(norm, dict):
        raise PolicyFileError(p, "normalization must be an object")
    if not isinstance(norm.get("norm_obs"), bool):
        raise PolicyFileError(p, "normalization.norm_obs missing or not a boolean")
    for key in ("clip_obs", "epsilon"):
        v = norm.get(key)
        if not _is_num(v) or v <= 0:
            raise PolicyFileError(p, f"normalization.{key} missing or not a positive finite number")


def load_policy_file(path: str | Path) -> PolicyFile:
    """Loads and validates a policy file (``allow_pickle=False``).

    Raises:
        PolicyFileError: Missing, truncated or corrupted file; missing arrays; a content hash that
            does not match (tampering); inconsistent shapes; non-finite numbers; an unknown
            format version or activation; a configuration space or observation layout that this
            runtime does not know; any ``meta_json`` key of the wrong type or missing (mask rules
            and their device table, normalisation, decode table rows, environment parameters) —
            so a file whose hash was recomputed after editing its metadata is rejected, never
            crashes the loader or the manager.
    """
    p = Path(path)
    arrays = _read_arrays(p)
    digest = _check_hash(p, arrays)
    meta = _parse_meta(p, arrays)
    _check_mask_rules(p, meta)
    _check_normalization(p, meta)
    layers = _check_layers(p, arrays, meta)
    space, params = _space_and_params(p, meta)
    layout = _check_observation(p, meta, layers, space, params)
    _check_arrays(p, arrays, layout.dim, space)
    if params.rule_hint and "quality" not in arrays:
        raise PolicyFileError(p, "the policy reads the rule hint (env.rule_hint) but the file has no per-configuration "
                                 "quality table, which the hint's rule needs; re-export it with `python deploy.py "
                                 "export <run-dir>`")
    return PolicyFile(str(p), meta, layers, arrays["obs_mean"], arrays["obs_var"],
                      arrays["energy_j_per_token"], arrays["power_w"], arrays["decode_tokens_per_s"],
                      arrays["config_features"], digest, space, params, layout, arrays.get("device_bytes"),
                      arrays.get("quality"), arrays.get("obs_min"), arrays.get("obs_max"),
                      None if meta.get("switch_costs") is None
                      else space.switch_time_s(meta["switch_costs"]) * arrays["power_w"][None, :])


class NumpyPolicy:
    """The exported actor MLP in numpy: normalise, forward, argmax (optionally masked).

    VecNormalize is folded into the first layer: ``clip((x − μ)/σ, −c, c)`` equals
    ``(clip(x, μ − cσ, μ + cσ) − μ)/σ``, so the device clips the raw observation to per-feature
    bounds and the first layer absorbs ``1/σ`` and ``−μ/σ``. A file with ``obs_min`` / ``obs_max``
    (``--clamp-obs``) narrows those bounds to the training range: the same two clip ufuncs.
    Biases ride on a constant-1 input (augmented matrices), so one decision is: 2 clip ufuncs + one
    ``np.dot`` and one activation per layer + ``argmax`` — all into preallocated float64 buffers, no allocation.

    Args:
        pf: A loaded :class:`PolicyFile`.
    """

    def __init__(self, pf: PolicyFile) -> None:
        self.pf = pf
        self.activation = pf.meta["activation"]
        self.uses_masks = pf.uses_masks
        norm = pf.meta["normalization"]
        d = pf.obs_dim
        mean = pf.obs_mean.astype(np.float64)
        if norm.get("norm_obs", False):
            clip = float(norm["clip_obs"])
            std = np.sqrt(pf.obs_var.astype(np.float64) + float(norm["epsilon"]))
            scale, shift = 1.0 / std, -mean / std
            self.lo, self.hi = mean - clip * std, mean + clip * std
            if pf.obs_min is not None:  # clip(clip(x, m, M) ...) then the z-clip: one clip to the intersection
                self.lo = np.minimum(np.maximum(self.lo, pf.obs_min), self.hi)
                self.hi = np.maximum(np.minimum(self.hi, pf.obs_max), self.lo)
        else:
            scale, shift = np.ones(d), np.zeros(d)
            self.lo, self.hi = np.full(d, -np.inf), np.full(d, np.inf)
        self._scale, self._shift = scale, shift
        self.mats: list[np.ndarray] = []
        for k, (w, b) in enumerate(pf.layers):
            w64, b64 = w.astype(np.float64), b.astype(np.float64)
            if k == 0:
                b64 = b64 + w64 @ shift
                w64 = w64 * scale[None, :]
            self.mats.append(np.ascontiguousarray(np.concatenate([w64, b64[:, None]], axis=1)))
        # buffers: each hidden buffer ends with a constant 1 for the next layer's bias column
        self._x = np.ones(d + 1)
        self._xv = self._x[:d]
        self._h: list[np.ndarray] = []
        self._hv: list[np.ndarray] = []
        for w in self.mats[:-1]:
            h = np.ones(w.shape[0] + 1)
            self._h.append(h)
            self._hv.append(h[:-1])
        self.logits = np.zeros(self.mats[-1].shape[0])
        self._masked = np.zeros_like(self.logits)
        self._act = _ACT_FNS[self.activation]
        self._tanh = self.activation == "Tanh"
        #: the factorised head's decoder (runtime.factorised), None for the flat head (one logit per configuration)
        self.fac = None
        if pf.meta.get("action_head", "flat") == "factorised":
            from runtime.factorised import Factorisation

            self.fac = Factorisation(pf.space)

    @property
    def n_actions(self) -> int:
        """Configurations the policy chooses among."""
        return int(self.logits.shape[0]) if self.fac is None else len(self.fac.values)

    def act(self, obs: np.ndarray, mask: np.ndarray | None = None) -> int:
        """Returns the deterministic action for one observation (obs_dim,), any float dtype.

        With ``mask`` (bool, n_actions), masked-out actions get a logit of ``MASKED_LOGIT``
        first (sb3-contrib's rule). The raw logits stay in :attr:`logits`.
        """
        xv = self._xv
        np.minimum(obs, self.hi, out=xv)
        np.maximum(xv, self.lo, out=xv)
        inp = self._x
        if self._tanh:
            for w, h, hv in zip(self.mats, self._h, self._hv):
                np.dot(w, inp, out=hv)
                np.tanh(hv, out=hv)
                inp = h
        else:
            act = self._act
            for w, h, hv in zip(self.mats, self._h, self._hv):
                np.dot(w, inp, out=hv)
                act(hv)
                inp = h
        np.dot(self.mats[-1], inp, out=self.logits)
        if self.fac is not None:  # one argmax per knob family, then the nearest (allowed) configuration
            return self.fac.choose(self.logits, mask)
        if mask is None:
            return int(self.logits.argmax())
        return self.masked_argmax(mask)

    def masked_argmax(self, mask: np.ndarray) -> int:
        """Argmax of the last :meth:`act` logits over the allowed actions only."""
        if self.fac is not None:
            return self.fac.choose(self.logits, mask)
        m = self._masked
        m.fill(MASKED_LOGIT)
        np.copyto(m, self.logits, where=mask)
        return int(m.argmax())

    def logits_batch(self, obs: np.ndarray) -> np.ndarray:
        """Logits for a batch (n, obs_dim) -> (n, n_actions) (allocates; for tests and tools)."""
        x = np.clip(np.asarray(obs, dtype=np.float64), self.lo, self.hi)
        h = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
        for w in self.mats[:-1]:
            z = h @ w.T
            self._act(z)
            h = np.concatenate([z, np.ones((z.shape[0], 1))], axis=1)
        return h @ self.mats[-1].T

    def act_batch(self, obs: np.ndarray, masks: np.ndarray | None = None) -> np.ndarray:
        """Deterministic actions for a batch (n, obs_dim) -> (n,) int64."""
        lg = self.logits_batch(obs)
        if self.fac is not None:
            return np.array([self.fac.choose(g, None if masks is None else masks[i]) for i, g in enumerate(lg)],
                            dtype=np.int64)
        if masks is not None:
            lg = np.where(masks, lg, MASKED_LOGIT)
        return lg.argmax(axis=1)


def _tanh(h: np.ndarray) -> None:
    np.tanh(h, out=h)


def _relu(h: np.ndarray) -> None:
    np.maximum(h, 0.0, out=h)


def _leaky_relu(h: np.ndarray) -> None:  # torch default negative_slope 0.01
    np.maximum(h, 0.01 * h, out=h)


def _elu(h: np.ndarray) -> None:  # alpha 1
    neg = np.minimum(h, 0.0)
    np.maximum(h, 0.0, out=h)
    h += np.expm1(neg)


def _sigmoid(h: np.ndarray) -> None:
    np.negative(h, out=h)
    np.exp(h, out=h)
    h += 1.0
    np.reciprocal(h, out=h)


def _identity(h: np.ndarray) -> None:
    pass


_ACT_FNS = {"Tanh": _tanh, "ReLU": _relu, "LeakyReLU": _leaky_relu, "ELU": _elu, "Sigmoid": _sigmoid,
            "Identity": _identity}
