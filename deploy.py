"""Deploy a trained power policy: export it to a numpy-only file, run it on the live model, bench it.

    python deploy.py export runs/<run> --out policy.npz [--device-kind phone] [--onnx] [--profile P]
    python deploy.py export policy.npz --profile profiles/calibrated.json --out policy-calibrated.npz
    python deploy.py run --policy policy.npz --sensors replay:traces/data/default/phone-00.csv \\
        --speed 60 --prompt "In the beginning" --max-tokens 400
    python deploy.py run --policy policy.npz --sensors live --prompts prompts.txt
    python deploy.py bench --policy policy.npz [--decisions 100000] [--json out.json]

``export`` reads a run folder (``agents.run_io`` format) and writes the policy file described in
``runtime/policy.py`` / ``docs/runtime.md``; with ``--profile P`` its tables come from another profile of
the same configuration space (e.g. one calibrated on the device), and a policy file is re-tabled the same
way. ``run`` generates text with the micro-LLM while the
runtime manager (``runtime/``) re-decides the configuration every N tokens or T ms and switches
the live model. ``bench`` measures decision latency, import time and memory of the runtime.
torch, SB3 and the model are imported inside ``export`` and ``run`` only; ``runtime/`` never
imports them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # runtime/ is imported lazily (docs/runtime.md: import time)
    from runtime.dynamics import DeviceConstants, EnvParams

REPO = Path(__file__).resolve().parent
#: Battery capacity a live run assumes when neither --capacity-wh nor the battery itself says it, Wh.
DEFAULT_CAPACITY_WH = 15.0


class ExportError(RuntimeError):
    """The run folder cannot be exported (unsupported algorithm, inconsistent profile...)."""


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------

def _activation_name(value: Any, algo: str) -> str:
    """'Tanh', "<class 'torch.nn.modules.activation.Tanh'>" or None -> 'Tanh' (SB3 defaults)."""
    from agents.algos import algo as algo_row

    if not value:
        return algo_row(algo).activation
    m = re.search(r"(\w+)'?>?\s*$", str(value))
    return m.group(1) if m else str(value)


def actor_layers(state: dict, algo: str) -> list[tuple[Any, Any]]:
    """The actor's Linear layers (weight, bias) in order (``agents.algos.actor_layers``)."""
    from agents.algos import actor_layers as layers_of

    try:
        return layers_of(state, algo)
    except ValueError as exc:
        raise ExportError(str(exc)) from None


def _is_sha256(x: Any) -> bool:
    return isinstance(x, str) and re.fullmatch(r"[0-9a-f]{64}", x) is not None


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file (``runtime.safeio.file_sha256``)."""
    from runtime.safeio import file_sha256 as sha

    return sha(path)


def _resolve_profile(path: str | None) -> Path:
    from envs.power_env import DEFAULT_PROFILE

    if not path:
        return Path(DEFAULT_PROFILE)
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    return REPO / p


def export_run(run_dir: str | Path, out: str | Path, device_kind: str = "phone", onnx: bool = False,
               allow_profile_change: bool = False, force: bool = False,
               profile: str | Path | None = None) -> dict[str, Any]:
    """Exports a run folder to a policy file (and optionally ONNX); returns a summary dict.

    ``profile``: take the per-configuration tables (energy per token, power, token rate, bytes), the
    configuration features and the checkpoint from this profile instead of the one the run was trained
    on (``deploy.py export --profile P``, e.g. a profile calibrated on the device); its configuration
    space must be the run's (the same names in the same order). The actor, the normalisation and the
    parameters are the run's; ``meta["retabled"]`` names the profile it was trained on.

    Raises:
        runtime.safeio.ExistsError: ``out`` (or, with ``onnx``, ``<out>.onnx``) exists and not ``force``.
        ExportError: the run folder cannot be exported.
    """
    from runtime.safeio import refuse_existing

    refuse_existing(out, force, "policy file")
    if onnx:
        refuse_existing(Path(out).with_suffix(".onnx"), force, "ONNX file")
    if not Path(run_dir).is_dir():
        raise ExportError(f"{run_dir}: no such run folder")

    import numpy as np
    import torch

    from agents.run_io import load_config, load_vecnormalize
    from envs.tables import load_cost_tables
    from model.evaluate import file_sha256 as sha256_file
    from runtime.dynamics import DEVICES, EnvParams
    from runtime.observation import params_layout
    from runtime.policy import save_policy_file
    from runtime.rules import HOT_MARGIN_C

    run = Path(run_dir)
    cfg = load_config(run)
    algo = cfg.get("algo")
    state_path = run / "policy_state.pt"
    if not state_path.exists():
        raise ExportError(f"{state_path}: missing (the run folder is incomplete)")
    state = torch.load(state_path, weights_only=True, map_location="cpu")
    layers = [(w.detach().cpu().numpy(), b.detach().cpu().numpy()) for w, b in actor_layers(state, algo)]
    activation = _activation_name((cfg.get("policy_kwargs") or {}).get("activation_fn"), algo)
    env_kwargs = dict(cfg.get("env_kwargs") or {})
    try:  # run folders written before env_params kept the parameters among the env kwargs
        params = EnvParams.from_dict(cfg["env_params"] if "env_params" in cfg else {
            k: v for k, v in env_kwargs.items() if k in EnvParams.__dataclass_fields__})
    except (TypeError, ValueError) as exc:
        raise ExportError(f"{run}/config.json env_params: {exc}") from None
    obs_dim = layers[0][0].shape[1]
    stats = load_vecnormalize(run / "vecnormalize.npz")
    support = None
    if stats is None:
        mean, var = np.zeros(obs_dim), np.ones(obs_dim)
        norm = {"norm_obs": False, "clip_obs": 10.0, "epsilon": 1e-8}
    else:
        mean, var = stats["mean"], stats["var"]
        norm = {"norm_obs": bool(stats["norm_obs"]), "clip_obs": float(stats["clip_obs"]),
                "epsilon": float(stats["epsilon"])}
        if "obs_min" in stats:  # train.py --clamp-obs: the range each feature is clipped to first
            support = (stats["obs_min"], stats["obs_max"])
    if mean.shape != (obs_dim,):
        raise ExportError(f"vecnormalize mean has shape {mean.shape}, the policy takes {obs_dim} inputs")
    # profile: per-configuration costs, exactly as the environment read them (or --profile's)
    run_prof = _resolve_profile(env_kwargs.get("profile") or (cfg.get("profile") or {}).get("path"))
    trained_sha = (cfg.get("profile") or {}).get("sha256") or cfg.get("profile_sha256")
    table = cfg.get("decode_table")
    if profile is None:
        prof_path = run_prof
        if not prof_path.exists():
            raise ExportError(f"profile {prof_path} (from config.json env_kwargs.profile) not found")
        prof_sha = sha256_file(prof_path)
        if trained_sha and trained_sha != prof_sha and not allow_profile_change:
            raise ExportError(f"profile {prof_path} changed since training (sha256 {prof_sha[:12]} != "
                              f"{trained_sha[:12]}); pass --allow-profile-change to export anyway")
        costs = load_cost_tables(prof_path)
    else:
        prof_path = Path(profile)
        costs = _retable_costs(prof_path, [r["name"] for r in table] if table else None, "the run's")
        prof_sha = sha256_file(prof_path)
    space = costs.space
    layout = params_layout(space, params)  # + processors, objective, thermal blocks
    if cfg.get("obs_features") and list(cfg["obs_features"]) != layout.names:
        raise ExportError(f"config.json obs_features {cfg['obs_features']} differ from the profile's layout "
                          f"{layout.names}")
    if not table:
        raise ExportError("config.json has no decode_table")
    if [r["name"] for r in table] != list(space.names):
        raise ExportError(f"decode table {[r['name'] for r in table]} differs from the profile's {list(space.names)}")
    trained_head = cfg.get("action_head", "flat")
    # the joint and hybrid heads (agents.joint_head) save their summed logits as a flat layer: flat on the device
    head = "flat" if trained_head in ("joint", "hybrid") else trained_head
    n_out = len(space) if head == "flat" else sum(len(k.values) for k in space.knobs)
    if n_out != layers[-1][0].shape[0]:
        raise ExportError(f"{n_out} {'configurations' if head == 'flat' else 'knob values'} but the policy has "
                          f"{layers[-1][0].shape[0]} outputs")
    prof_json = json.loads(prof_path.read_text())
    ckpt_sha = (prof_json.get("model") or {}).get("checkpoint_sha256")
    if not _is_sha256(ckpt_sha):  # "unsaved" or absent: the policy cannot pin its checkpoint
        ckpt_sha = None
    if device_kind not in DEVICES:
        raise ExportError(f"device kind {device_kind!r} not in {sorted(DEVICES)}")
    meta = {
        "algo": algo, "activation": activation, "action_head": head, "trained_head": trained_head,
        "obs_features": layout.table(),
        "config_space": space.to_json(), "decode_table": space.decode_table(), "env_params": params.to_dict(),
        "normalization": norm,
        "mask_rules": {"device_kind": device_kind, "device": asdict(DEVICES[device_kind]),
                       "devices": {k: asdict(v) for k, v in DEVICES.items()}, "hot_margin_c": HOT_MARGIN_C,
                       "cheap_quantile": 0.25},
        "profile": {"path": str(prof_path), "sha256": prof_sha, "name": prof_json.get("name"),
                    "energy_source": costs.energy_source},
        "env": {"env_id": cfg.get("env_id"), "env_kwargs": env_kwargs},
        # the profile's switch costs: the shield's budget rule prices a switch's energy as the env does
        "switch_costs": dict(prof_json.get("switch_costs") or {}),
        # the checkpoint the profile (hence the policy's costs) was measured on; `deploy.py run` checks it
        "model": {"checkpoint_sha256": ckpt_sha},
        "run": {"dir": str(run), "config_sha256": sha256_file(run / "config.json"),
                "policy_state_sha256": sha256_file(state_path)},
        "exported_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"numpy": np.__version__, "torch": torch.__version__},
    }
    if profile is not None:  # the actor was trained on another profile's tables
        meta["retabled"] = {"by": "deploy.py export --profile", "trained_profile": {"path": str(run_prof),
                                                                                     "sha256": trained_sha}}
    digest = save_policy_file(out, layers, meta, mean, var,
                              {"energy_j_per_token": costs.ept_j, "power_w": costs.power_w,
                               "decode_tokens_per_s": costs.tps, "device_bytes": costs.device_bytes,
                               "quality": costs.quality},
                              space.feature_matrix(), obs_support=support)
    summary = {"out": str(out), "sha256": digest, "algo": algo, "activation": activation,
               "layers": [list(w.shape) for w, _ in layers], "n_actions": len(space),
               "knobs": list(space.knob_names),
               "device_kind": device_kind, "profile": str(prof_path), "bytes": Path(out).stat().st_size,
               "checkpoint_sha256": ckpt_sha}
    if onnx:
        summary["onnx"] = str(export_onnx(out, Path(out).with_suffix(".onnx")))
    return summary


def _retable_costs(profile: Path, names: list[str] | None, whose: str) -> Any:
    """The cost tables of ``profile`` (``envs.tables.load_cost_tables``) for re-tabling an actor trained on
    the configurations ``names`` (in order; None: not known, not checked).

    Raises:
        ExportError: the profile is missing or unreadable, or its configuration space is not ``names``.
    """
    from envs.tables import load_cost_tables

    if not profile.is_file():
        raise ExportError(f"--profile {profile}: no such profile file")
    try:
        costs = load_cost_tables(profile)
    except (OSError, ValueError, KeyError) as exc:
        raise ExportError(f"--profile {profile}: not a readable profile ({type(exc).__name__}: {exc})") from None
    got = list(costs.space.names)
    if names is not None and got != list(names):
        first = next((i for i, (a, b) in enumerate(zip(got, names)) if a != b), min(len(got), len(names)))
        where = (f"configuration {first} is {got[first]!r} there, {names[first]!r} in {whose}"
                 if first < min(len(got), len(names)) else "one is a prefix of the other")
        raise ExportError(f"--profile {profile}: its configuration space ({len(got)} configurations) differs from "
                          f"{whose} ({len(names)}): {where}. The actor's outputs are configurations by position: "
                          "re-table it only onto a profile of the same configuration space (the same names in the "
                          "same order), e.g. one calibrated from the profile it was trained on")
    return costs


def retable_policy(src: str | Path, profile: str | Path, out: str | Path, onnx: bool = False,
                   force: bool = False) -> dict[str, Any]:
    """``deploy.py export POLICY.npz --profile P``: a copy of the policy file ``src`` whose per-configuration
    tables (energy per token, power, token rate, bytes), configuration features, ``meta.profile`` and
    checkpoint are ``profile``'s; the actor, the normalisation, the parameters and the shield's rules are
    ``src``'s (what ``export --profile P`` writes from the run folder, for a policy whose run folder is
    gone). Returns a summary dict.

    Raises:
        runtime.safeio.ExistsError: ``out`` (or ``<out>.onnx``) exists and not ``force``.
        ExportError: ``src`` is not a valid policy file, or ``profile``'s configuration space differs.
    """
    from runtime.observation import params_layout
    from runtime.policy import PolicyFileError, load_policy_file, save_policy_file
    from runtime.safeio import refuse_existing

    refuse_existing(out, force, "policy file")
    if onnx:
        refuse_existing(Path(out).with_suffix(".onnx"), force, "ONNX file")
    try:
        pf = load_policy_file(src)
    except PolicyFileError as exc:
        raise ExportError(str(exc)) from None
    prof = Path(profile)
    costs = _retable_costs(prof, pf.names, f"the policy's ({src})")
    layout = params_layout(costs.space, pf.params)
    if layout.names != pf.layout.names:
        raise ExportError(f"--profile {prof}: its observation layout {layout.names} differs from the policy's "
                          f"{pf.layout.names}")
    prof_json = json.loads(prof.read_text())
    ckpt_sha = (prof_json.get("model") or {}).get("checkpoint_sha256")
    meta = dict(pf.meta)
    meta.update({
        "config_space": costs.space.to_json(), "decode_table": costs.space.decode_table(),
        "profile": {"path": str(prof), "sha256": file_sha256(prof), "name": prof_json.get("name"),
                    "energy_source": costs.energy_source},
        "model": {"checkpoint_sha256": ckpt_sha if _is_sha256(ckpt_sha) else None},
        "switch_costs": dict(prof_json.get("switch_costs") or {}),
        "retabled": {"by": "deploy.py export --profile", "from_policy": str(src), "from_policy_sha256": pf.sha256,
                     "trained_profile": pf.meta.get("retabled", {}).get("trained_profile") or pf.meta.get("profile")},
        "exported_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    digest = save_policy_file(out, pf.layers, meta, pf.obs_mean, pf.obs_var,
                              {"energy_j_per_token": costs.ept_j, "power_w": costs.power_w,
                               "decode_tokens_per_s": costs.tps, "device_bytes": costs.device_bytes,
                               "quality": costs.quality},
                              costs.space.feature_matrix(),
                              obs_support=None if pf.obs_min is None else (pf.obs_min, pf.obs_max))
    summary = {"out": str(out), "sha256": digest, "from_policy": str(src), "algo": pf.meta.get("algo"),
               "n_actions": pf.n_actions, "device_kind": pf.meta["mask_rules"]["device_kind"], "profile": str(prof),
               "bytes": Path(out).stat().st_size, "checkpoint_sha256": meta["model"]["checkpoint_sha256"]}
    if onnx:
        summary["onnx"] = str(export_onnx(out, Path(out).with_suffix(".onnx")))
    return summary


def export_onnx(policy_path: str | Path, onnx_path: str | Path) -> Path:
    """Writes the policy (normalisation folded in, clip included) as ONNX: input ``obs`` (n, d) ->
    ``logits`` (n, n_actions). Needs torch's ONNX exporter (and the ``onnx`` package on newer torch)."""
    import torch

    from runtime.policy import NumpyPolicy, load_policy_file

    pol = NumpyPolicy(load_policy_file(policy_path))
    acts = {"Tanh": torch.nn.Tanh, "ReLU": torch.nn.ReLU, "LeakyReLU": torch.nn.LeakyReLU, "ELU": torch.nn.ELU,
            "Sigmoid": torch.nn.Sigmoid, "Identity": torch.nn.Identity}

    class Actor(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("lo", torch.tensor(pol.lo, dtype=torch.float32))
            self.register_buffer("hi", torch.tensor(pol.hi, dtype=torch.float32))
            mods: list[torch.nn.Module] = []
            for k, w in enumerate(pol.mats):
                lin = torch.nn.Linear(w.shape[1] - 1, w.shape[0])
                lin.weight.data = torch.tensor(w[:, :-1], dtype=torch.float32)
                lin.bias.data = torch.tensor(w[:, -1], dtype=torch.float32)
                mods.append(lin)
                if k < len(pol.mats) - 1:
                    mods.append(acts[pol.activation]())
            self.net = torch.nn.Sequential(*mods)

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return self.net(torch.minimum(torch.maximum(obs, self.lo), self.hi))

    onnx_path = Path(onnx_path)
    tmp = onnx_path.with_name(f".{onnx_path.name}.{os.getpid()}.tmp")  # written whole, then renamed
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(Actor().eval(), (torch.zeros(1, pol.mats[0].shape[1] - 1),), str(tmp),
                              input_names=["obs"], output_names=["logits"], dynamic_axes={"obs": {0: "n"}},
                              dynamo=False)
        os.replace(tmp, onnx_path)
    except Exception as exc:  # noqa: BLE001 - missing onnx package, exporter changes
        raise ExportError(f"ONNX export failed ({type(exc).__name__}: {exc}); `pip install onnx` may help") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return onnx_path


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------

#: knobs that say where the model runs, not which model: deploy.py run follows them with model.split_live
SPLIT_KNOBS = ("split", "wire")
PLACE_KNOBS = ("place",)  # the live placement: model.placement.PlacedModel


def model_configs(m: Any, space: Any) -> list[Any]:
    """The live model's configuration for each index of a policy's configuration space, by knob
    values (``space.values_of``; names are never parsed).

    Raises:
        SystemExit: the space has a knob the live model does not offer, or a value it lacks.
    """
    out = []
    for i in range(len(space)):
        # split: model.split_live; placement: model.placement
        vals = {k: v for k, v in space.values_of(i).items() if k not in SPLIT_KNOBS + PLACE_KNOBS}
        extra = sorted(set(vals) - set(m.space.knob_names))
        if extra:
            raise SystemExit(f"deploy.py run: the policy's configuration space has knobs {extra} that the live "
                             f"model ({list(m.space.knob_names)}) cannot switch; export a policy trained on this "
                             "model's profile")
        try:
            out.append(m.validate(vals))
        except ValueError as exc:
            raise SystemExit(f"deploy.py run: configuration {space.names[i]} of the policy: {exc}; export a policy "
                             "trained on this model's profile") from None
    return out


def _read_prompts(args: argparse.Namespace) -> list[str]:
    if args.prompts:
        p = Path(args.prompts)
        if not p.is_file():
            file_error("run", f"--prompts {p}: no such file")
        try:
            lines = [ln.rstrip("\n") for ln in p.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            file_error("run", f"--prompts {p}: cannot read it ({exc})")
        prompts = [ln for ln in lines if ln.strip()]
        if not prompts:
            file_error("run", f"--prompts {p}: the file has no prompts (one per line)")
        return prompts
    return [args.prompt]


def _load_device_config(path: str, kind: str) -> Any:
    """``--device-config``: a JSON object of ``DeviceConstants`` fields over ``DEVICES[kind]``."""
    import math
    from dataclasses import fields, replace

    from runtime.dynamics import DEVICES, DeviceConstants

    p = Path(path)
    if not p.is_file():
        file_error("run", f"--device-config {p}: no such file")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        file_error("run", f"--device-config {p}: not a readable JSON file ({exc})")
    known = {f.name for f in fields(DeviceConstants)}
    if not isinstance(d, dict) or set(d) - known:
        file_error("run", f"--device-config {p}: must be a JSON object with keys among {sorted(known)}")
    bad = [k for k, v in d.items() if isinstance(v, bool) or not isinstance(v, (int, float))
           or not math.isfinite(v) or v <= 0]
    if bad:
        file_error("run", f"--device-config {p}: {bad} must be positive finite numbers")
    return replace(DEVICES.get(kind, DEVICES["default"]), **{k: float(v) for k, v in d.items()})


def _check_new_output(flag: str, path: str, force: bool, what: str) -> None:
    """An output file of ``deploy.py run``: its folder exists, it is not a folder, and it is not
    replaced unless ``--force`` (exit 1 naming the flag otherwise)."""
    from runtime.safeio import ExistsError, refuse_existing

    p = Path(path)
    if not p.parent.is_dir():
        file_error("run", f"{flag} {p}: the folder {p.parent} does not exist; create it first")
    if p.is_dir():
        file_error("run", f"{flag} {p}: is a folder; give a file path")
    try:
        refuse_existing(p, force, what)
    except ExistsError as exc:
        file_error("run", f"{flag} {exc}")


def parse_until(text: str, now: Any = None) -> float:
    """``--until``: seconds from now to ``HH:MM`` (local wall time; tomorrow if already past) or to ``+N``
    with ``s``/``m``/``h`` (``+90m``). ValueError naming the forms otherwise."""
    import datetime as _dt
    import re

    t = text.strip()
    m = re.fullmatch(r"\+(\d+(?:\.\d+)?)([smh]?)", t)
    if m:
        s = float(m.group(1)) * {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]
        if s <= 0:
            raise ValueError(f"--until {text!r}: the deadline must be after now (e.g. +90m)")
        return s
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", t)
    if m and int(m.group(1)) < 24 and int(m.group(2)) < 60:
        now = now or _dt.datetime.now()
        at = now.replace(hour=int(m.group(1)), minute=int(m.group(2)), second=0, microsecond=0)
        if at <= now:
            at += _dt.timedelta(days=1)
        # through timestamps: wall-clock arithmetic is an hour off on a night the clocks change (DST)
        return at.timestamp() - now.timestamp()
    raise ValueError(f"--until {text!r}: write a local time HH:MM (18:30) or a duration +N[s|m|h] (+90m)")


def until_left(args: argparse.Namespace, replaying: bool) -> tuple[float, float]:
    """``(deadline_s, budget_until_s)`` from now: ``--until`` was read before the model loaded, so on live sensors the
    seconds since then are taken off (on a replay the deadline counts replayed time from its start). SystemExit
    (usage error) when the deadline passed meanwhile."""
    deadline_s, until_s = float(args.deadline_s or 0.0), float(getattr(args, "budget_until_s", 0.0) or 0.0)
    at = getattr(args, "until_parsed_at", None)
    if replaying or at is None:
        return deadline_s, until_s
    late = max(0.0, time.time() - at)
    if (deadline_s or until_s) and max(deadline_s, until_s) - late <= 0.0:
        usage_error("run", f"--until {args.until}: the time passed while the model loaded ({late:.0f} s); "
                    "give a later one")
    return (deadline_s - late if deadline_s else 0.0), (until_s - late if until_s else 0.0)


def _check_objective_args(args: argparse.Namespace) -> None:
    """``--objective`` and its parameters (usage errors name the flag and the fix)."""
    kind = getattr(args, "objective", None)
    if getattr(args, "until", None):
        if args.deadline_s:
            usage_error("run", "--until and --deadline-s both set a deadline; give one")
        try:
            args.deadline_s = parse_until(args.until)
        except ValueError as exc:
            usage_error("run", str(exc))
        args.until_parsed_at = time.time()  # the model loads after this: until_left takes the wait off
    if getattr(args, "budget_wh", 0.0):
        if kind not in (None, "max-quality"):
            usage_error("run", f"--budget-wh is an energy budget for --objective max-quality, not {kind}")
        if args.budget_w:
            usage_error("run", "--budget-w and --budget-wh both set a budget; give one")
        if not args.deadline_s:
            usage_error("run", "--budget-wh needs --until HH:MM (or +90m): the time the energy must last until")
        args.objective = kind = "max-quality"
        args.budget_until_s, args.deadline_s = args.deadline_s, 0.0  # the budget's time, not a battery deadline
    if kind is None:
        if args.quality_floor is not None:
            usage_error("run", "--quality-floor needs --objective min-energy")
        return
    if kind == "min-energy" and args.quality_floor is None:
        usage_error("run", "--objective min-energy needs --quality-floor Q (skill above chance, e.g. 0.45)")
    if kind != "min-energy" and args.quality_floor is not None:
        usage_error("run", f"--quality-floor applies to --objective min-energy, not {kind}")
    if args.quality_floor is not None and not 0.0 <= args.quality_floor <= 1.0:
        usage_error("run", f"--quality-floor {args.quality_floor}: must be in [0, 1]")
    if kind == "last-until" and not args.deadline_s and not args.sensors.startswith("replay:"):
        usage_error("run", "--objective last-until needs --until HH:MM (or +90m); a replayed trace may carry one")


def check_run_args(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``deploy.py run`` can check before the model loads: the sensors argument, the replay
    trace and ``--start-s``, the prompts, the checkpoint file, the telemetry path, the device config.

    Bad values exit 2 (``usage_error``); missing or protected files exit 1 (``file_error``).
    Returns ``{"trace": loaded trace or None, "prompts": [...], "checkpoint": Path}``.
    """
    import model as M

    out: dict[str, Any] = {"trace": None}
    _check_objective_args(args)
    sensors = args.sensors
    if sensors.startswith("replay:"):
        import traces

        tp = Path(sensors.split(":", 1)[1])
        if not tp.is_file():
            file_error("run", f"--sensors replay:{tp}: no such trace file")
        try:
            trace = traces.load_trace(tp)
        except Exception as exc:  # noqa: BLE001 - any schema/CSV problem: one line, no traceback
            file_error("run", f"--sensors replay:{tp}: not a readable trace ({type(exc).__name__}: {exc})")
        t = [float(x) for x in trace.time_s]
        step = (t[-1] - t[0]) / max(1, len(t) - 1) if len(t) > 1 else 1.0
        end = t[-1] + step
        if args.start_s >= end:
            usage_error("run", f"argument --start-s: {args.start_s:g} is beyond the end of the trace "
                               f"({tp.name}: {end:g} s long); allowed: [0, {end:g})")
        if getattr(args, "objective", None) == "last-until" and not args.deadline_s and trace.meta.deadline_s is None:
            usage_error("run", f"--objective last-until: the replayed trace {tp.name} has no deadline; pass --until "
                               "(allowed: a local time HH:MM, or +N[s|m|h] from now)")
        out["trace"] = trace
    elif sensors != "live":
        usage_error("run", f"argument --sensors: {sensors!r} is not allowed; use live or replay:<trace.csv>")
    out["prompts"] = _read_prompts(args)
    ckpt = Path(args.checkpoint) if args.checkpoint else Path(M.DEFAULT_CHECKPOINT)
    if not ckpt.is_file():
        file_error("run", f"--checkpoint {ckpt}: no such file")
    out["checkpoint"] = ckpt
    if args.telemetry:
        _check_new_output("--telemetry", args.telemetry, args.force, "telemetry file")
    if getattr(args, "save_calibrated", None):
        _check_new_output("--save-calibrated", args.save_calibrated, args.force, "calibrated profile")
    if getattr(args, "split_server", None):
        url = args.split_server
        if not re.match(r"^wss?://[^/\s]+:\d+/?$", url):
            usage_error("run", f"argument --split-server: {url!r}: use ws://HOST:PORT (loopback) or wss://HOST:PORT")
        from model.split_client import TokenFileError, check_url, read_token

        try:
            check_url(url)
        except ValueError as exc:
            usage_error("run", f"argument --split-server: {exc}")
        if not args.split_token_file:
            usage_error("run", "argument --split-server needs --split-token-file (the server's shared secret)")

        try:
            read_token(args.split_token_file)
        except TokenFileError as exc:
            file_error("run", f"--split-token-file {exc}")
    if getattr(args, "device_config", None):
        kind = args.device_kind or (out["trace"].meta.device_kind if out["trace"] is not None else "default")
        out["device_config"] = _load_device_config(args.device_config, kind)
    return out


def job_workload(remaining_tokens: float, last_latency_ms: float, params: EnvParams) -> dict[str, float]:
    """The manager's ``backlog_frac`` and ``latency_over_slo`` from the job (live sensors, and replay with
    ``--replay-workload job``): the job's remaining tokens over the backlog cap (at most 1) and the last
    token's latency over the SLO."""
    return {"backlog_frac": min(1.0, remaining_tokens / params.backlog_cap_tokens),
            "latency_over_slo": last_latency_ms / params.slo_ms}


class EnvWorkload:
    """The manager's workload inputs in replay mode as the env computes them (``--replay-workload env``).

    The env observes the demand of the step just served, its queue of the trace's demand (served at the
    configuration's token rate × the throttle θ; beyond the backlog cap dropped) over the cap, and that
    step's latency — time per token + the queue's wait — over the SLO (``envs/power_env.py``;
    ``runtime.dynamics``: :func:`~runtime.dynamics.throttle`, :func:`~runtime.dynamics.queue_update`, the
    latency of ``step_core``). Here the interval between two decisions is the step: the trace's demand at
    its start (the row the replay's model power follows), served for the interval's virtual seconds at the
    live model's measured rate ``1000 / decode_ms``, θ from the device's temperature at its start. Before
    the first interval: the current row's demand, an empty queue and latency 0, as the env at reset.

    Not modelled, unlike the env: a switch's compute time (the env serves ``step_s − t_sw``; the live model
    spends it in wall time), the processors' own trip points (placement) and a split configuration's link
    time apart from what the measured decode time holds.
    """

    def __init__(self, params: EnvParams, device: DeviceConstants) -> None:
        self.params, self.device = params, device
        self.queue_tokens = 0.0
        self.latency_ms = 0.0
        self.demand_tps: float | None = None  # of the interval just served (None before the first)

    def serve(self, demand_tps: float, dt_s: float, decode_ms: float, temp_c: float) -> None:
        """One interval: ``demand_tps`` (tok/s) arrives for ``dt_s`` virtual seconds and is served at
        ``1000 / decode_ms`` tok/s (``decode_ms``: ms/token, measured) throttled at ``temp_c`` (°C)."""
        from runtime.dynamics import SCALAR, queue_update, throttle

        dev, dt = self.device, max(0.0, dt_s)
        theta = throttle(SCALAR, temp_c, dev.t_max_c, 0.0, dev.throttle_per_c, dev.throttle_min)
        rate = 1000.0 / decode_ms * theta
        _, _, self.queue_tokens = queue_update(SCALAR, self.queue_tokens, demand_tps, dt, dt, rate,
                                               self.params.backlog_cap_tokens)
        self.latency_ms = decode_ms / theta + 1000.0 * self.queue_tokens / rate
        self.demand_tps = float(demand_tps)

    def inputs(self, row_demand_tps: float) -> dict[str, float]:
        """``demand_tps``, ``backlog_frac``, ``latency_over_slo`` for ``RuntimeManager.set_workload``
        (``row_demand_tps``: the current row's, used before the first interval)."""
        p = self.params
        return {"demand_tps": row_demand_tps if self.demand_tps is None else self.demand_tps,
                "backlog_frac": self.queue_tokens / p.backlog_cap_tokens,
                "latency_over_slo": self.latency_ms / p.slo_ms}


class RunSession:
    """One ``deploy.py run``: the live model, its policy file, the sensors and the runtime manager.

    ``__init__`` loads the model and the policy file (a rejected file runs the safe fallback), maps the
    policy's configuration space to the live model, builds the sensors (replay or live), the hub and the
    manager, and prints the sensor and device lines. ``generate`` streams the prompts and re-decides the
    configuration every ``--every-tokens`` tokens (or ``--every-ms`` ms); ``close`` closes the manager and
    its telemetry, prints the final status line and the summary, and returns the summary.

    Each decision closes an interval (since the previous decision): its tokens and the median of its
    measured decode latencies go to the decision's telemetry record (``tokens``, ``decode_ms``; the tokens
    after the last decision to a ``generation_end`` event), and in replay mode with ``--replay-workload env``
    it is a step of the env's workload emulation (:class:`EnvWorkload`).
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        # before the model loads: arguments, files, the policy and the checkpoint it was trained for
        pre = check_run_args(args)
        self.trace, self.prompts, self.checkpoint = pre["trace"], pre["prompts"], pre["checkpoint"]
        self.user_device = pre.get("device_config")
        self.stop_reason: str | None = None
        self._read_policy()
        self._check_checkpoint()

        import torch

        import model as M

        torch.set_num_threads(args.threads)
        try:
            self.m = M.load(self.checkpoint)
        except (OSError, ValueError) as exc:  # model.CheckpointError is a ValueError
            file_error("run", f"--checkpoint {self.checkpoint}: cannot load it ({exc})")
        self._load_policy()
        self._check_host()
        self.model_cfgs = model_configs(self.m, self.space)
        self._init_counters()
        self._open_placement()
        self._open_split()  # the link's state first: the sensors read it
        self._open_sensors()
        self._connect_split()
        self._open_manager()

    # ---- open ---------------------------------------------------------------------------------
    def _read_policy(self) -> None:
        """The policy file (before the model loads); a rejected file means the safe fallback."""
        from runtime.policy import PolicyFileError, load_policy_file

        try:
            self.pf, self.policy_error = load_policy_file(self.args.policy), None
        except PolicyFileError as exc:
            self.pf, self.policy_error = None, str(exc)
            print(f"[deploy] policy rejected: {exc}\n[deploy] running the safe fallback configuration", file=sys.stderr)

    def _load_policy(self) -> None:
        """The policy's tables; a rejected file leaves the model's own space (fallback)."""
        from runtime.dynamics import EnvParams

        a = self.args
        if self.pf is not None:
            rules = self.pf.meta["mask_rules"]
            self.space, self.params = self.pf.space, self.pf.params
            self.ept = [float(x) for x in self.pf.energy_j_per_token]
            self.tps_prof = [float(x) for x in self.pf.decode_tokens_per_s]
            self.devices, self.device_kind = rules["devices"], a.device_kind or rules["device_kind"]
        else:
            self.space, self.params = self.m.space, EnvParams()
            # proxy: bytes streamed per token; only argmin matters
            self.ept = [float(self.m.resident_bytes(c)) for c in self.m.configs()]
            self.tps_prof, self.devices, self.device_kind = None, None, a.device_kind or "phone"

    def _check_checkpoint(self) -> None:
        """The checkpoint must be the one the policy's profile was measured on (its sha256, recorded at
        export as ``meta["model"]["checkpoint_sha256"]``): refused unless ``--allow-checkpoint-change``;
        a policy without the field gets a warning."""
        if self.pf is None:  # the fallback uses the live model's own sizes: nothing to compare
            return
        want = (self.pf.meta.get("model") or {}).get("checkpoint_sha256")
        if not _is_sha256(want):
            print(f"[deploy] warning: the policy records no checkpoint sha256 (exported before it was recorded, "
                  f"or from a profile without one): cannot check that {self.checkpoint} is the model its costs "
                  "were measured on", file=sys.stderr)
            return
        got = file_sha256(self.checkpoint)
        if got == want:
            return
        msg = (f"--checkpoint {self.checkpoint}: sha256 {got[:12]}… differs from the checkpoint the policy was "
               f"trained for ({want[:12]}…, recorded by its profile)")
        if not self.args.allow_checkpoint_change:
            file_error("run", msg + "; pass --allow-checkpoint-change to run anyway")
        print(f"[deploy] warning: {msg}; running anyway (--allow-checkpoint-change)", file=sys.stderr)

    def _check_host(self) -> None:
        """One stderr warning line when the policy's profile was measured on another host (its
        ``machine.fingerprint``, ``model.profile.host_check_warning``); warning only, nothing changes."""
        if self.pf is None:
            return
        path = (self.pf.meta.get("profile") or {}).get("path")
        if not path or not Path(path).exists():
            print(f"[deploy] host check skipped: the policy's profile {path!r} is not on this machine", file=sys.stderr)
            return
        try:
            from model.profile import host_check_warning

            w = host_check_warning(json.loads(Path(path).read_text()), self.args.threads, str(path))
        except (OSError, ValueError) as exc:
            print(f"[deploy] host check skipped: cannot read {path} ({exc})", file=sys.stderr)
            return
        if w:
            print(f"[deploy] {w}", file=sys.stderr)

    def _init_counters(self) -> None:
        """Run state: the active configuration, the rates the model's power is computed from, the totals."""
        self.names = list(self.space.names)
        self.idx = 0  # active configuration (index into the policy's space)
        self.decided_tps = 0.0  # the measured token rate at the last decision
        self.demand_tps = 0.0  # replay: the trace's demand at the last decision
        self.ema_tps = self.last_lat_ms = 0.0
        self._skip_lat = True
        # the interval since the last decision: tokens, measured decode latencies (ms), and where it started
        self._iv_tokens, self._iv_lat = 0, []
        self._iv_vt = self._iv_demand_tps = self._iv_temp_c = 0.0
        self.env_workload: EnvWorkload | None = None  # replay, --replay-workload env (set at the start)
        self.tokens = self.switches = self.total_tokens = 0
        self.tokens_per_cfg = [0] * len(self.names)
        self.model_energy_j = self.live_energy_j = 0.0
        self.decide_ns: list[int] = []
        self.texts: list[str] = []
        self.t_start = self.last_now = 0.0  # sensor clock
        self.t_wall0: float | None = None  # perf_counter: generation start / end
        self.t_wall1: float | None = None
        self.last_dec_wall = self.last_tok_wall = self.last_status = 0.0
        self.status_every = max(0.05, self.args.status_s)

    def device_for(self, kind: str) -> Any:
        """``DeviceConstants`` of ``kind`` for the shield and the simulation: the device's own
        configuration (``--device-config``, else ``runtime.dynamics.DEVICES[kind]``), made stricter —
        never looser — by the policy file's entry for that kind (``runtime.shield.device_limits``)."""
        from runtime.shield import device_limits

        return device_limits(kind, self.pf.meta if self.pf is not None else None, self.user_device)

    def _open_placement(self) -> None:
        """A policy with the ``place`` knob runs the model through ``model.placement.PlacedModel``: its
        segments on this host's processors (``--processors fake-gpu``: a test double that runs the "gpu"
        role on the CPU). Placements on a processor this host lacks are masked for good, with the reason."""
        a = self.args
        self.has_place = "place" in self.space.knob_names
        self.placed: Any = None
        self.absent_bits = 0
        if not self.has_place:
            if getattr(a, "processors", "host") != "host":
                usage_error("run", "--processors: the policy has no placement configurations (no 'place' knob)")
            return
        if "split" in self.space.knob_names:
            usage_error("run", "the policy has both split and placement configurations; the live runtime runs "
                               "one of them at a time: export a policy trained on a profile with one")
        from model.placement import FaultInjector, PlacedModel, ProcessorHealth, ProcessorMap
        from runtime.placement import ROLES

        procs = ProcessorMap.fake_gpu() if a.processors == "fake-gpu" else ProcessorMap()
        injector = None
        if a.inject_fault:
            injector = FaultInjector(seed=a.seed or 0)
            for item in a.inject_fault:
                role, kind, after = item
                injector.arm(role, kind, after_calls=after)
        self.placed = PlacedModel(self.m, procs, health=ProcessorHealth(), injector=injector)
        for i, r in enumerate(ROLES):
            if r not in procs.roles():
                self.absent_bits |= 1 << i
                print(f"[deploy] placements on {r} masked: {procs.why_absent(r)}", file=sys.stderr)
        print(f"[deploy] processors: {json.dumps(procs.describe())}"
              + (" (fake-gpu: a TEST DOUBLE, the gpu role runs on the CPU)" if a.processors == "fake-gpu" else ""),
              file=sys.stderr)

    def procs_down(self) -> int:
        """Processor roles unavailable now: absent on this host, or quarantined after faults."""
        if self.placed is None:
            return 0
        from runtime.placement import ROLES

        down = self.absent_bits
        for r in self.placed.health.unavailable_roles():
            down |= 1 << ROLES.index(r)
        return down

    def _open_split(self) -> None:
        """The split link's state (``LinkState``: back-off in wall time, also under a faster virtual
        clock) and the split flags; ``_connect_split`` connects once the sensors are open.

        Without a server, or while it is unreachable, the link reads 0 Mbit/s (``SplitLinkSensor``): the
        shield masks every split configuration and the model runs on the device."""
        from model.split_live import LinkState

        a = self.args
        self.has_split = "split" in self.space.knob_names
        self.link = LinkState(clock=time.monotonic)
        self.split_client: Any = None
        self.split_stream: Any = None
        if a.split_server and not self.has_split:
            print("[deploy] --split-server: the policy has no split configurations; the server is not used",
                  file=sys.stderr)

    def _connect_split(self) -> None:
        """Connects to ``--split-server`` at the start (after the sensors: the shaper reads the link)."""
        a = self.args
        if not (a.split_server and self.has_split):
            return
        try:
            self.split_client = self._new_split_client()
            info = self.split_client.info
            print(f"[deploy] split server {a.split_server}: server_bits {info.get('server_bits')}, "
                  f"codecs {info.get('codecs')}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - unreachable, refused, bad token: run locally, retry later
            self.link.fail(f"{type(exc).__name__}: {exc}")
            print(f"[deploy] split server {a.split_server} unreachable ({exc}); running on the device, "
                  "retrying with back-off", file=sys.stderr)

    def _new_split_client(self) -> Any:
        """A new, opened client for ``--split-server``, shaped to the link (``LinkShaper``)."""
        import ssl

        from model.split_client import LinkShaper, SplitClient, read_token

        a = self.args
        ctx = ssl.create_default_context(cafile=a.split_ca) if a.split_server.startswith("wss://") else None
        shaper = LinkShaper(self._link_mbps() or 1e-3, self.params.link.rtt_ms) if a.split_shape else None
        c = SplitClient(a.split_server, read_token(a.split_token_file), shaper=shaper, ssl_context=ctx)
        c.open()
        return c

    def _link_mbps(self) -> float:
        """The link's recorded (replay) or assumed (``--link-mbps``) bandwidth, before any failure."""
        if self.replay is not None:
            return float(self.replay.bandwidth_mbps())
        return float(self.args.link_mbps)

    def _link_sensor(self) -> Any:
        from model.split_live import SplitLinkSensor

        return SplitLinkSensor(self.link, self._link_mbps, clock=self.clock,
                               connected=lambda: bool(self.args.split_server))

    def _open_sensors(self) -> None:
        self.replay: Any = None
        if self.args.sensors.startswith("replay:"):
            self._open_replay(self.args.sensors.split(":", 1)[1])
        elif self.args.sensors == "live":
            self._open_live()
        else:
            raise SystemExit(f"--sensors {self.args.sensors!r}: use live or replay:<trace.csv>")

    def _open_replay(self, trace_path: str) -> None:
        """A trace replayed on an emulated device, in virtual time (``--speed`` virtual s per wall s)."""
        import traces
        from runtime.replay import ReplaySensors
        from runtime.sensors import SensorHub

        trace = self.trace if self.trace is not None else traces.load_trace(trace_path)
        self.device_kind = self.args.device_kind or trace.meta.device_kind
        self.device = self.device_for(self.device_kind)
        self.replay = ReplaySensors(trace, self.device, speed=self.args.speed, start_s=self.args.start_s,
                                    loop=self.args.replay_end == "loop")
        self.clock = self.replay.now
        self.hub = SensorHub(([self._link_sensor()] if self.has_split else []) + [self.replay], clock=self.clock)
        self.capacity_j = self.replay.capacity_j

    def _open_live(self) -> None:
        """This machine's sensors; power and temperature are modelled where it has none."""
        from runtime.sensors import SensorHub, live_sensors

        a = self.args
        self.device = dev = self.device_for(self.device_kind)
        self.clock = time.monotonic
        base = dev.idle_power_w
        sensors = live_sensors(self.clock, power_fn=lambda: base + self.model_power_w(),
                               thermal={"r_th_c_per_w": dev.r_th_c_per_w, "tau_s": dev.tau_s,
                                        "ambient_c": a.ambient_c}, nvml=a.nvml)
        # without a battery sensor the machine is taken to be mains powered (ASSUMED -> DEGRADED)
        if self.has_split:
            sensors = [self._link_sensor(), *sensors]
        self.hub = SensorHub(sensors, assumptions={"soc_frac": 1.0, "plugged": 1.0, "ambient_c": a.ambient_c,
                                                   "bandwidth_mbps": 0.0}, clock=self.clock)
        self.capacity_j = self.live_capacity_wh(sensors) * 3600.0
        src = self.hub.owner.get("temp_c", "")
        if src in ("psutil_temperature", "nvml") and not a.device_kind and not a.device_config:
            print(f"[deploy] warning: temp_c is this machine's processor die ({src}), and the thermal limits are the "
                  f"policy's simulated {self.device_kind} (T_max {dev.t_max_c:g} °C, a skin/battery limit): a die "
                  "runs hotter; pass --device-kind laptop, or --device-config with the die's own trip point",
                  file=sys.stderr)

    def live_capacity_wh(self, sensors: list) -> float:
        """``--capacity-wh`` when given, else the battery's own full energy (``energy_full``, or ``charge_full`` ×
        ``voltage_min_design``), else 15 Wh; says which."""
        from runtime.sensors import PowerSupplySensor

        a = self.args
        if a.capacity_wh is not None:
            return float(a.capacity_wh)
        for s in sensors:
            if isinstance(s, PowerSupplySensor) and s.available():
                wh = s.capacity_wh()
                if wh is not None and wh > 0:
                    print(f"[deploy] battery capacity {wh:.1f} Wh, sensed ({s.meter.name}); --capacity-wh overrides it",
                          file=sys.stderr)
                    return float(wh)
        print(f"[deploy] battery capacity {DEFAULT_CAPACITY_WH:g} Wh, assumed (none sensed); set it with --capacity-wh",
              file=sys.stderr)
        return DEFAULT_CAPACITY_WH

    def min_dwell(self) -> int:
        """The dwell rule's decisions between policy-driven switches: ``--min-dwell``, else the window the policy
        was trained under (``EnvParams.min_dwell_steps`` > 1), else 3."""
        if self.args.min_dwell is not None:
            return int(self.args.min_dwell)
        trained = int(self.params.min_dwell_steps) if self.pf is not None else 0
        return trained if trained > 1 else 3

    def _open_manager(self) -> None:
        from runtime.manager import FallbackSpec, ManagerConfig, RuntimeManager, Telemetry

        a = self.args
        if getattr(a, "until_parsed_at", None) is not None:  # the model has loaded: --until from now, once
            a.deadline_s, a.budget_until_s = until_left(a, replaying=self.replay is not None)
            a.until_parsed_at = None
        mcfg = ManagerConfig(min_dwell_decisions=self.min_dwell(), capacity_wh=self.capacity_j / 3600.0,
                             saver_s=60.0 * a.battery_saver_min if a.battery_saver_min else None,
                             saver_to_deadline=True if a.saver_to_deadline else None,
                             saver_floor_frac=a.saver_floor,
                             floor_rule=False if getattr(a, "no_floor_rule", False) else None,
                             budget_rule=False if getattr(a, "no_budget_rule", False) else None,
                             budget_reserve_s=getattr(a, "budget_reserve_s", None),
                             budget_reserve_tps=getattr(a, "budget_reserve_tps", None),
                             budget_floor_reserve_s=getattr(a, "budget_floor_reserve_s", None))
        try:  # exclusive create unless --force (checked before the model loaded; this closes the race)
            tel = Telemetry(a.telemetry, self.names, overwrite=a.force) if a.telemetry else None
        except FileExistsError:
            file_error("run", f"--telemetry {a.telemetry}: telemetry file already exists; choose another path or "
                              "pass --force to replace it")
        except OSError as exc:
            file_error("run", f"--telemetry {a.telemetry}: cannot create it ({exc})")
        fallback = FallbackSpec(self.names, self.ept, self.device)
        self.mgr = mgr = RuntimeManager(self.pf, self.hub, mcfg, tel, fallback, device=self.device, clock=self.clock,
                                        policy_error=self.policy_error, device_kind=self.device_kind)
        print(f"[deploy] sensors: {json.dumps(self.hub.describe())}", file=sys.stderr)
        print(f"[deploy] device {self.device_kind}: T_max {self.device.t_max_c} °C, ceiling "
              f"{mgr.shield.ceiling_c} °C, reserve SoC {mgr.shield.reserve:.2f}"
              + (f", battery saver {mgr.shield.p.saver_s / 60.0:g} min" if mgr.shield.p.saver_s else "")
              + (", battery saver to the deadline" if mgr.shield.p.saver_to_deadline else "")
              + (f" from {mgr.shield.p.saver_floor_frac:g} x the reserve"
                 if (mgr.shield.p.saver_s or mgr.shield.p.saver_to_deadline) and mgr.shield.p.saver_floor_frac != 1.0
                 else "")
              + (f"; quality floor {a.quality_floor:g} held by the shield"
                 + (f" (within a budget, spending its reserve down to {mgr.shield.p.budget_floor_reserve_s:g} s)"
                    if getattr(a, "budget_w", None) and mgr.shield.p.budget_rule else "")
                 if getattr(a, "objective", None) == "min-energy" and mgr.shield.p.floor_rule
                 and mgr.shield.rules.quality is not None
                 else "")
              + (f"; power budget held by the shield, {mgr.shield.p.budget_reserve_s:g} s of it kept in hand (at least "
                 f"the safe config at {mgr.shield.p.budget_reserve_tps:g} tok/s)"
                 if (getattr(a, "budget_w", None) or getattr(a, "budget_wh", None)) and mgr.shield.p.budget_rule
                 else "")
              + f"; safe config {self.names[mgr.safe]}", file=sys.stderr)
        if a.budget_w:
            mgr.budget_w = a.budget_w
        if a.objective:
            try:
                self._open_objective(mgr)
            except BaseException:  # a usage error this late: leave no empty telemetry file to refuse the re-run
                if tel is not None:
                    tel.close()
                    p = Path(a.telemetry)
                    if p.is_file() and p.stat().st_size == 0:
                        p.unlink()
                raise

    def _open_objective(self, mgr: Any) -> None:
        """The user's objective (``--objective``): tracked by the manager (``runtime.objective``); a
        goal-conditioned policy also reads it."""
        import math

        a = self.args
        now = self.clock()
        deadline = now + a.deadline_s if a.deadline_s else math.nan
        if a.objective == "last-until" and deadline != deadline and self.replay is not None:
            left = self.replay.workload().get("deadline_left_s")
            deadline = now + left if left is not None and left == left else math.nan
            if deadline != deadline:
                usage_error("run", "--objective last-until: the replayed trace has no deadline; pass --until")
        try:
            wh = getattr(a, "budget_wh", 0.0)
            mgr.set_objective(a.objective, budget_w=a.budget_w or math.nan,
                              quality_floor=a.quality_floor if a.quality_floor is not None else math.nan,
                              deadline_s=deadline if a.objective == "last-until" else math.nan,
                              budget_j=wh * 3600.0 if wh else math.nan,
                              budget_until_s=now + a.budget_until_s if wh else math.nan)
        except ValueError as exc:
            usage_error("run", f"--objective {a.objective}: {exc}")
        if not mgr.layout.goal:
            print(f"[deploy] objective {a.objective}: this policy was not trained goal-conditioned (its observation "
                  "has no objective block): the objective is tracked and reported, not pursued; train with "
                  "--env.objective.kind mix", file=sys.stderr)
        if a.objective == "min-energy" and (self.pf is None or self.pf.quality is None):
            print("[deploy] objective min-energy: the policy file has no per-configuration quality (exported before "
                  "it was recorded): the quality floor cannot be tracked; re-export with deploy.py export",
                  file=sys.stderr)

    # ---- what the manager sees ----------------------------------------------------------------
    def model_power_w(self) -> float:
        """The live model's power: token rate × profiled energy per token of the active configuration."""
        if self.pf is None:
            return 0.0
        if self.replay is not None and self.args.replay_power == "profile":
            # the emulated device serves the trace's demand at its profiled speed (the env's rule)
            return min(self.demand_tps, self.tps_prof[self.idx]) * self.ept[self.idx]
        return self.decided_tps * self.ept[self.idx]

    def feed_workload(self, measured_tps: float) -> None:
        """The workload: the trace's demand, budget and deadline (replay) or the measured rate (live)."""
        a, mgr = self.args, self.mgr
        if self.replay is not None:
            w = self.replay.workload()
            self.demand_tps = w["demand_tps"]
            mgr.set_workload(demand_tps=w["demand_tps"], budget_w=a.budget_w or w["budget_w"],
                             deadline_left_s=(a.deadline_s - (self.clock() - self.t_start)) if a.deadline_s
                             else w["deadline_left_s"],
                             base_w=w["base_w"], capacity_j=w["capacity_j"])  # no horizon: the device's own
            if mgr.lookahead:
                mgr.supply_ahead_w = self.replay.supply_ahead_w(mgr.lookahead, self.params.step_s)
            if self.env_workload is not None:  # the env's demand, backlog and latency (replaces the row's demand)
                mgr.set_workload(**self.env_workload.inputs(w["demand_tps"]))
        else:
            mgr.set_workload(demand_tps=measured_tps)
            mgr.budget_rate_tps = float("inf")  # the live model generates the job flat out: the budget rule prices it
            if a.deadline_s:
                mgr.set_workload(deadline_left_s=a.deadline_s - (self.clock() - self.t_start))

    # ---- the token loop -----------------------------------------------------------------------
    def generate(self, prompts: list[str]) -> list[str]:
        """Streams every prompt under the manager; returns the generated texts."""
        from model.data import decode

        a = self.args
        self._start(len(prompts) * a.max_tokens)
        for p_i, prompt in enumerate(prompts):
            if self._trace_ended():
                break
            out_tokens: list[int] = []
            self._skip_lat = True  # the first token of a prompt carries the prefill
            for k, tok in enumerate(self._stream(prompt)):
                t = time.perf_counter()
                self.on_token(tok, t)
                out_tokens.append(tok)
                if self._decision_due(k, t):
                    self.decide(t)
                    if self._trace_ended():
                        break
            self.texts.append(decode(out_tokens))
            if not a.echo:
                print(f"\n=== prompt {p_i + 1}/{len(prompts)}: {prompt!r}\n{prompt}{self.texts[-1]}", flush=True)
        return self.texts

    def _stream(self, prompt: str) -> Any:
        """The token stream: the model's own, or ``model.split_live.SplitStream`` for a policy with split
        configurations (it follows ``self.idx`` per token and falls back to the device on a failure)."""
        a = self.args
        if self.placed is not None:
            return self.placed.stream(prompt, a.max_tokens, temperature=a.temperature, seed=a.seed)
        if not self.has_split:
            return self.m.stream(prompt, a.max_tokens, temperature=a.temperature, seed=a.seed)
        if self.split_stream is None:
            from model.split_live import SplitStream

            self.split_stream = SplitStream(self.m, self.space, self.split_client, self.link,
                                            reconnect=self._new_split_client if a.split_server else None,
                                            bandwidth=self._link_mbps, rtt_ms=self.params.link.rtt_ms)
        return self.split_stream.stream(prompt, a.max_tokens, current=lambda: self.idx, temperature=a.temperature,
                                        seed=a.seed)

    def _trace_ended(self) -> bool:
        """Replay with ``--replay-end stop``: True (and said once) once the virtual clock passed the
        trace's end; generation stops there instead of holding the last row forever."""
        rp = self.replay
        if rp is None or not rp.finished:
            return False
        if self.stop_reason is None:
            self.stop_reason = "trace_finished"
            self.mgr.telemetry.event(event="trace_finished", t_s=rp.vt)
            print(f"\n[deploy] trace finished: the replay's virtual clock ({rp.vt:.0f} s) passed the end of the "
                  f"trace ({rp.end_s:g} s); stopping generation (pass --replay-end loop to loop the trace)",
                  file=sys.stderr)
        return True

    def _start(self, total_tokens: int) -> None:
        """The first decision, before the first token."""
        self.total_tokens = total_tokens
        self.t_start = now = self.clock()
        if self.replay is not None and self.pf is not None and getattr(self.args, "replay_workload", "env") == "env":
            self.env_workload = EnvWorkload(self.params, self.device)
        self.feed_workload(0.0)
        self.mgr.procs_down = self.procs_down()
        self.mgr.start_at(self.idx)  # the model as loaded (the full configuration), as an env episode starts
        self._set_config(self.mgr.decide(now))
        self._interval_start(now)
        self.t_wall0 = self.last_dec_wall = self.last_tok_wall = time.perf_counter()
        self.last_now = self.clock()

    def on_token(self, tok: int, t: float) -> None:
        """Accounts a token generated at wall time ``t`` (rate, latency, energy) and echoes it."""
        dt_tok = t - self.last_tok_wall
        self.last_tok_wall = t
        self.last_lat_ms = dt_tok * 1e3
        if self._skip_lat:  # a prompt's first token or the first after a switch: prefill / KV repair
            self._skip_lat = False
        else:
            self._iv_lat.append(self.last_lat_ms)
            if self.pf is not None:  # the online correction learns this host's latency per configuration
                self.mgr.observe_measurement(latency_ms=self.last_lat_ms, config=self.idx)
        self._iv_tokens += 1
        inst = 1.0 / dt_tok if dt_tok > 0 else 0.0
        self.ema_tps = inst if self.tokens == 0 else 0.8 * self.ema_tps + 0.2 * inst
        self.tokens += 1
        self.tokens_per_cfg[self.idx] += 1
        self.model_energy_j += self.ept[self.idx] if self.pf is not None else 0.0
        if self.args.echo:
            from model.data import decode

            sys.stdout.write(decode([tok]))
            sys.stdout.flush()

    def _decision_due(self, k: int, t: float) -> bool:
        if self.args.every_ms:
            return (t - self.last_dec_wall) * 1e3 >= self.args.every_ms
        return (k + 1) % self.args.every_tokens == 0

    def decide(self, t: float) -> None:
        """Feeds the manager the workload and the model's power, decides, switches the model if needed."""
        from runtime.sensors import POWER

        mgr = self.mgr
        self.last_dec_wall = t
        self.decided_tps = self.ema_tps
        now = self.clock()
        self._interval_end(now)
        self.feed_workload(self.ema_tps)
        if self.env_workload is None:
            mgr.set_workload(**job_workload(self.total_tokens - self.tokens, self.last_lat_ms, self.params))
        mgr.procs_down = self.procs_down()
        if self.replay is not None:
            self.replay.set_model_power_w(self.model_power_w())
        t_dec = time.perf_counter_ns()
        new = mgr.decide(now)
        self.decide_ns.append(time.perf_counter_ns() - t_dec)
        self.live_energy_j += self.hub.values[POWER] * max(0.0, now - self.last_now)
        self.last_now = now
        if new != self.idx:
            self._set_config(new)
            self.switches += 1
        self._interval_start(now)
        if not self.args.no_status and (t - self.last_status >= self.status_every):
            self.last_status = t
            self._status(now)

    def _interval_start(self, now: float) -> None:
        """A decision at ``now`` (virtual time in replay) opens an interval: the row's demand and the
        device's temperature at its start (what the env's step reads)."""
        from runtime.sensors import TEMP

        self._iv_vt, self._iv_demand_tps, self._iv_temp_c = now, self.demand_tps, float(self.hub.values[TEMP])

    def interval_decode_ms(self) -> float | None:
        """The median measured decode latency (ms/token) since the last decision (None: none measured)."""
        return statistics.median(self._iv_lat) if self._iv_lat else None

    def _interval_end(self, now: float) -> None:
        """Closes the interval at a decision at ``now``: its tokens and median decode latency to the
        manager's telemetry record; with :class:`EnvWorkload`, the trace's demand queued and served in it
        (the profile's decode time when no token was measured)."""
        dec = self.interval_decode_ms()
        self.mgr.set_interval(self._iv_tokens, dec)
        if self.env_workload is not None:
            d = dec if dec is not None else 1000.0 / self.tps_prof[self.idx]
            self.env_workload.serve(self._iv_demand_tps, now - self._iv_vt, d, self._iv_temp_c)
        self._iv_tokens, self._iv_lat = 0, []

    def _set_config(self, idx: int) -> None:
        """Switches the live model to configuration ``idx`` (and the emulated device's model power)."""
        if self.placed is not None:
            from model.placement import PlacementUnavailable

            try:
                self.placed.set(self.space.config(idx))
            except PlacementUnavailable as exc:  # quarantined since the manager decided: its CPU twin
                cfg = self.space.config(idx)
                idx = self.space.index(cfg._replace(place="cpu")) if cfg._replace(place="cpu") in \
                    self.space.configs else self.mgr.safe
                self.mgr.telemetry.event(event="placement_unavailable", reason=str(exc), config=self.names[idx])
                self.placed.set(self.space.config(idx))
        else:
            self.m.set_config(self.model_cfgs[idx])
        self.idx = idx
        self._skip_lat = True
        if self.replay is not None:
            self.replay.set_model_power_w(self.model_power_w())

    def _status(self, now: float) -> None:
        _status_line(self.mgr, self.hub, self.names[self.idx], self.ema_tps, self.tokens, self.switches, now,
                     self.replay, self.args.echo)

    # ---- report -------------------------------------------------------------------------------
    def close(self) -> dict[str, Any]:
        """Ends the run: final status line, manager (and telemetry) closed, summary printed and returned."""
        self.t_wall1 = time.perf_counter()
        now = self.clock()
        if not self.args.no_status:
            self._status(now)
            print(file=sys.stderr)
        if self.t_wall0 is not None:  # the tokens since the last decision (a telemetry file scores the whole run)
            self.mgr.telemetry.event(event="generation_end", t_s=now, tokens=self._iv_tokens,
                                     decode_ms=self.interval_decode_ms())
        self._save_calibrated()
        if self.split_stream is not None and self.split_stream.client is not None:
            self.split_stream.client.close()
        self.mgr.close()
        summary = self.summary()
        print("[deploy] summary " + json.dumps(summary), file=sys.stderr)
        return summary

    def _save_calibrated(self) -> None:
        """``--save-calibrated OUT``: the policy's profile corrected by what this run measured."""
        out = getattr(self.args, "save_calibrated", None)
        if not out:
            return
        base = (self.pf.meta.get("profile") or {}).get("path") if self.pf is not None else None
        if not base or not Path(base).is_file():
            print(f"[deploy] --save-calibrated: the policy's profile {base!r} is not here; nothing saved",
                  file=sys.stderr)
            return
        path = self.mgr.save_calibrated_profile(base, out, force=self.args.force)
        c = self.mgr.correction.state()
        print(f"[deploy] calibrated profile written to {path} ({c['samples']} measurements; latency ratio "
              f"{c['latency_ratio_global']})", file=sys.stderr)

    def wall_s(self) -> float:
        """Wall seconds from the first decision to the end of generation (so far, before ``close``)."""
        if self.t_wall0 is None:
            return 0.0
        return (self.t_wall1 if self.t_wall1 is not None else time.perf_counter()) - self.t_wall0

    def summary(self) -> dict[str, Any]:
        """Tokens, rate, switches, the manager's counters, energy, decision latency, device state."""
        import numpy as np

        wall_s, dn, s = self.wall_s(), np.array(self.decide_ns or [0]), self.mgr.summary()
        summary = {
            "tokens": self.tokens, "wall_s": round(wall_s, 3),
            "tokens_per_s": round(self.tokens / wall_s, 2) if wall_s else None,
            "switches": self.switches, "decisions": s["decisions"], "overrides": s["overrides"],
            "decisions_per_state": s["decisions_per_state"], "final_state": s["state"],
            "policy_error": s["policy_error"], "sensor_failures": s["sensor_failures"],
            "tokens_per_config": {self.names[i]: n for i, n in enumerate(self.tokens_per_cfg) if n},
            "model_energy_j": round(self.model_energy_j, 4),
            "decide_us_median": round(float(np.median(dn)) / 1e3, 2),
            "decide_us_p99": round(float(np.percentile(dn, 99)) / 1e3, 2),
        }
        rp = self.replay
        if rp is not None:
            summary.update({"virtual_s": round(rp.vt - self.args.start_s, 1), "device_energy_j": round(rp.energy_j, 2),
                            "final_soc": round(rp.soc, 4), "final_temp_c": round(rp.temp_c, 2),
                            "battery_died": rp.dead, "trace_finished": rp.finished, "replay_end": self.args.replay_end,
                            "trace_laps": rp.laps})
        else:
            summary["device_energy_j_estimate"] = round(self.live_energy_j, 3)
        if self.split_stream is not None:  # where the tokens were computed, and the link's failures
            st = self.split_stream.stats
            summary["split"] = {**st, "wire_ms": round(st["wire_ms"], 2), "link_failures": self.link.total_failures,
                                "last_link_error": self.link.last_error or None}
        if self.placed is not None:  # where the tokens ran, the faults and how they were recovered
            f = self.placed.faults
            rec = sorted(x.recover_ms for x in f)
            summary["placement"] = {
                "faults": len(f), "restored_by": {k: sum(1 for x in f if x.restored == k)
                                                  for k in sorted({x.restored for x in f})},
                "recover_ms_p50": round(rec[len(rec) // 2], 2) if rec else None,
                "quarantine_events": len(self.placed.health.events),
                "unavailable_now": self.placed.health.unavailable_roles(), "final_placement": self.placed.placement}
        if s.get("objective") is not None:
            summary["objective"] = s["objective"]
        summary["stop_reason"] = self.stop_reason
        return summary


def run_cmd(args: argparse.Namespace) -> dict[str, Any]:
    """``deploy.py run``: generate with the live model under the runtime manager."""
    session = RunSession(args)
    try:
        session.generate(session.prompts)
    finally:  # interrupted (Ctrl-C) or failed: the telemetry is still closed and what was done reported
        summary = session.close()
    return summary


def _status_line(mgr: Any, hub: Any, cfg_name: str, tps: float, tokens: int, switches: int, now: float,
                 replay: Any, echo: bool) -> None:
    from runtime.sensors import POWER, SOC, TEMP
    from runtime.shield import Reason

    v = hub.values
    vt = f" vt={int(now) // 3600:02d}:{int(now) % 3600 // 60:02d}:{int(now) % 60:02d}" if replay is not None else ""
    if replay is not None and replay.finished:
        vt += " trace_finished"
    elif replay is not None and replay.laps:
        vt += f" lap={replay.laps + 1}"
    line = (f"[{mgr.state.name:<9}] {cfg_name:<14} P={v[POWER]:6.2f} W SoC={v[SOC] * 100:5.1f}% "
            f"T={v[TEMP]:5.1f}°C {tps:6.1f} tok/s tok={tokens} sw={switches} "
            f"ovr={sum(mgr.overrides[1:]) - mgr.overrides[Reason.DWELL]}{vt}"
            + (f" [{mgr.objective.kind}: {mgr.objective.status()}]" if getattr(mgr, "objective", None) else ""))
    sys.stderr.write(("\n" if echo else "\r") + line + " " * 4)
    sys.stderr.flush()


# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------

_RSS_SNIPPET = """
import resource, sys, time
def peak_kb():
    # ru_maxrss survives exec on Linux (a child starts with its parent's high-water mark), so
    # prefer the kernel's per-address-space VmHWM; getrusage is the portable fallback
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
import numpy
t_np = time.perf_counter()
{imports}
t_rt = time.perf_counter()
rss0 = peak_kb()
{work}
rss1 = peak_kb()
print(t_np - t, t_rt - t_np, rss0, rss1, 'torch' in sys.modules)
"""


def _bench_setup(policy: str, poll_every: bool, telemetry_path: str | None):
    """A manager on a replayed phone trace in manual (virtual) time; returns (manager, replay)."""
    import traces
    from runtime.manager import ManagerConfig, RuntimeManager, Telemetry
    from runtime.policy import load_policy_file
    from runtime.replay import ReplaySensors
    from runtime.sensors import SensorHub
    from runtime.shield import device_limits

    pf = load_policy_file(policy)
    trace = traces.load_trace(traces.default_trace_set_dir() / "phone-00.csv")
    kind = trace.meta.device_kind
    dev = device_limits(kind, pf.meta)
    replay = ReplaySensors(trace, dev, clock=None, period_s=0.0 if poll_every else 1.0)
    hub = SensorHub([replay], clock=replay.now)
    tel = Telemetry(telemetry_path, pf.names, overwrite=True) if telemetry_path else None
    mgr = RuntimeManager(pf, hub, ManagerConfig(), tel, device=dev, clock=replay.now, device_kind=kind)
    mgr.set_workload(demand_tps=20.0, backlog_frac=0.1, latency_over_slo=0.2)
    return mgr, replay


def bench_decisions(policy: str, n: int, poll_every: bool, telemetry_path: str | None,
                    step_s: float = 0.01, flush_mb: float = 0.0) -> dict[str, float]:
    """Median / p99 / mean of ``RuntimeManager.decide`` over ``n`` decisions (virtual time).

    With ``flush_mb``, a buffer of that size is rewritten before every decision (untimed), which
    evicts the caches the way an LLM forward pass between two decisions does.
    """
    import gc

    import numpy as np

    mgr, replay = _bench_setup(policy, poll_every, telemetry_path)
    junk = np.zeros(int(flush_mb * (1 << 20)) // 8) if flush_mb else None
    ns = np.empty(n, dtype=np.int64)
    pc = time.perf_counter_ns
    vt = 0.0
    decide, advance = mgr.decide, replay.advance_to
    for _ in range(2000):  # warm-up
        vt += step_s
        advance(vt)
        decide(vt)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i in range(n):
            vt += step_s
            advance(vt)
            if junk is not None:
                junk += 1.0
            t0 = pc()
            decide(vt)
            ns[i] = pc() - t0
    finally:
        if gc_was:
            gc.enable()
    mgr.close()
    us = ns / 1e3
    return {"median_us": round(float(np.median(us)), 2), "p99_us": round(float(np.percentile(us, 99)), 2),
            "mean_us": round(float(us.mean()), 2), "n": n, "switches": mgr.switches,
            "overrides": sum(mgr.overrides[1:])}


def bench_policy_only(policy: str, n: int) -> dict[str, float]:
    """Latency of ``NumpyPolicy.act`` alone on observations sampled in the observation bounds."""
    import numpy as np

    from runtime.policy import NumpyPolicy, load_policy_file

    pf = load_policy_file(policy)
    pol = NumpyPolicy(pf)
    lo, hi = pf.layout.lo, pf.layout.hi
    rng = np.random.default_rng(0)
    obs = rng.uniform(lo, hi, size=(1024, lo.shape[0])).astype(np.float32)
    ns = np.empty(n, dtype=np.int64)
    pc, act = time.perf_counter_ns, pol.act
    rows = [obs[i] for i in range(1024)]
    for i in range(n):
        o = rows[i & 1023]
        t0 = pc()
        act(o)
        ns[i] = pc() - t0
    us = ns / 1e3
    return {"median_us": round(float(np.median(us)), 2), "p99_us": round(float(np.percentile(us, 99)), 2)}


def bench_process(policy: str) -> dict[str, Any]:
    """Import time (numpy, then runtime) and peak RSS of a fresh interpreter running the runtime."""
    imports = "import runtime.manager, runtime.policy, runtime.sensors, runtime.replay, runtime.shield"
    work = (f"import deploy\nmgr, rp = deploy._bench_setup({policy!r}, True, None)\nvt = 0.0\n"
            "for _ in range(10000):\n    vt += 0.01\n    rp.advance_to(vt)\n    mgr.decide(vt)")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", _RSS_SNIPPET.format(imports=imports, work=work)],
                             capture_output=True, text=True, env=env, cwd=str(REPO), check=True).stdout.split()
        runs.append(out)
    base = subprocess.run([sys.executable, "-c", _RSS_SNIPPET.format(imports="", work="")], capture_output=True,
                          text=True, env=env, cwd=str(REPO), check=True).stdout.split()
    imp = subprocess.run([sys.executable, "-X", "importtime", "-c", "import numpy; " + imports],
                         capture_output=True, text=True,
                         env=env, cwd=str(REPO), check=True).stderr
    top: dict[str, int] = {}  # top-level entries of the import tree: name -> cumulative µs
    for line in imp.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            top[parts[2].strip()] = int(parts[1])
    numpy_ms = sorted(float(r[0]) * 1e3 for r in runs)[1]
    runtime_ms = sorted(float(r[1]) * 1e3 for r in runs)[1]
    return {
        "import_numpy_ms": round(numpy_ms, 1),
        "import_runtime_ms_after_numpy": round(runtime_ms, 1),
        "importtime_total_ms": round(sum(v for k, v in top.items() if k not in ("site", "encodings")) / 1e3, 1),
        "importtime_numpy_ms": round(top.get("numpy", 0) / 1e3, 1),
        "rss_mb_python_numpy": round(int(base[2]) / 1024, 1),
        "rss_mb_after_import": round(int(runs[0][2]) / 1024, 1),
        "rss_mb_peak_after_10k_decisions": round(int(runs[0][3]) / 1024, 1),
        "torch_imported": runs[0][4] == "True",
    }


def bench_cmd(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    from runtime.policy import PolicyFileError, load_policy_file
    from runtime.safeio import ExistsError, atomic_write_text, refuse_existing

    if args.json:
        try:
            refuse_existing(args.json, args.force, "results file")
        except ExistsError as exc:
            file_error("bench", f"--json {exc}")
    try:
        load_policy_file(args.policy)
    except PolicyFileError as exc:
        file_error("bench", f"--policy {exc}")
    from model.profile_schema import _cpu_model

    res: dict[str, Any] = {"policy": args.policy, "python": sys.version.split()[0], "cpu": _cpu_model()}
    res["policy_act"] = bench_policy_only(args.policy, args.decisions)
    res["decide_cached_sensors"] = bench_decisions(args.policy, args.decisions, poll_every=False, telemetry_path=None)
    with tempfile.TemporaryDirectory() as d:
        res["decide_cached_sensors_telemetry"] = bench_decisions(args.policy, args.decisions, False,
                                                                 str(Path(d) / "t.jsonl"))
    res["decide_poll_every_decision"] = bench_decisions(args.policy, args.decisions, poll_every=True,
                                                        telemetry_path=None)
    res["decide_cold_cache_16mb_flush"] = bench_decisions(args.policy, min(args.decisions, 20_000), False, None,
                                                          flush_mb=16.0)
    res["process"] = bench_process(args.policy)
    print(json.dumps(res, indent=1))
    if args.json:
        atomic_write_text(args.json, json.dumps(res, indent=1) + "\n")
    return res


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: ``deploy.py run: error: argument --x: ... allowed: [lo, hi]``
    (exit 2); ``--help`` still prints the full usage."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def usage_error(cmd: str, message: str) -> Any:
    """A bad argument value found after parsing (exit 2, one line, like argparse's)."""
    sys.stderr.write(f"deploy.py {cmd}: error: {message} (see deploy.py {cmd} --help)\n")
    raise SystemExit(2)


def file_error(cmd: str, message: str) -> Any:
    """A missing, unreadable or protected input/output file (exit 1, one line)."""
    raise SystemExit(f"deploy.py {cmd}: error: {message}")


def _fault_spec(text: str) -> tuple[str, str, int]:
    """argparse type of --inject-fault: ROLE:KIND:AFTER."""
    from runtime.placement import ROLES

    parts = text.split(":")
    kinds = ("error", "timeout", "device_lost")
    if len(parts) != 3 or parts[0] not in ROLES or parts[1] not in kinds or not parts[2].isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: write ROLE:KIND:AFTER with ROLE in {list(ROLES)}, KIND in "
                                         f"{list(kinds)} and AFTER a count of segment calls, e.g. gpu:device_lost:20")
    return parts[0], parts[1], int(parts[2])


def build_parser() -> argparse.ArgumentParser:
    from model.cli import float_in, nonneg_float, nonneg_int, positive_float, positive_int
    from runtime.dynamics import DEVICES

    kinds = sorted(DEVICES)
    ap = _Parser(prog="deploy.py", description=__doc__.split("\n\n")[0],
                 epilog="Exit status: 0 success; 2 a bad argument value (one line naming the argument and "
                        "what is allowed); 1 a missing/unreadable input file, an output that exists "
                        "(without --force) or a failed export.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="run folder -> numpy-only policy file")
    e.add_argument("run_dir", help="a run folder written by train.py, or (with --profile) a policy file to re-table")
    e.add_argument("--out", default="policy.npz", help="policy file to write (refused if it exists, unless --force)")
    e.add_argument("--device-kind", default="phone", choices=kinds,
                   help="simulated device kind for the shield (runtime.dynamics.DEVICES)")
    e.add_argument("--onnx", action="store_true", help="also write <out>.onnx")
    e.add_argument("--allow-profile-change", action="store_true")
    e.add_argument("--profile", default=None, metavar="P",
                   help="take the per-configuration tables, configuration features and checkpoint from profile P "
                        "(e.g. calibrated on the device) instead of the training profile; P must have the same "
                        "configuration space (names, in order). With a policy file as run_dir: re-table that file")
    e.add_argument("--force", action="store_true", help="replace an existing --out (and <out>.onnx)")
    r = sub.add_parser("run", help="generate with the live model under the runtime manager")
    r.add_argument("--policy", required=True)
    r.add_argument("--checkpoint", default=None, help="model checkpoint (default: the committed one)")
    r.add_argument("--allow-checkpoint-change", action="store_true",
                   help="run even if the checkpoint's sha256 differs from the one the policy was trained for")
    r.add_argument("--sensors", default="live", help="live | replay:<trace.csv>")
    r.add_argument("--speed", type=positive_float, default=1.0, help="replay: virtual seconds per wall second")
    r.add_argument("--start-s", type=nonneg_float, default=0.0, help="replay: start time within the trace")
    r.add_argument("--replay-end", choices=("stop", "loop"), default="stop",
                   help="replay: at the end of the trace stop generating (stop) or wrap to its start (loop)")
    r.add_argument("--replay-power", choices=("profile", "measured"), default="profile",
                   help="replay: model power = min(trace demand, profiled tok/s) x J/token of the active "
                        "config (profile, the env's rule) or the live model's measured tok/s x J/token")
    r.add_argument("--replay-workload", choices=("env", "job"), default="env",
                   help="replay: the manager's demand / backlog / latency inputs as the env computes them (env: the "
                        "demand of the interval just served, the trace's demand queued and served at the measured "
                        "rate, that interval's latency) or from the job (job: the current row's demand, the job's "
                        "remaining tokens as backlog, the last token's latency)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--prompt", default="In the beginning")
    g.add_argument("--prompts", default=None, help="file with one prompt per line")
    r.add_argument("--max-tokens", type=positive_int, default=200, help="tokens per prompt")
    r.add_argument("--every-tokens", type=positive_int, default=8, help="decide every N tokens")
    r.add_argument("--every-ms", type=nonneg_float, default=0.0, help="decide every T ms instead (wall clock)")
    r.add_argument("--min-dwell", type=nonneg_int, default=None,
                   help="decisions between policy-driven switches (default: the window the policy was trained "
                        "under, --env.min-dwell-steps, else 3)")
    r.add_argument("--battery-saver-min", type=nonneg_float, default=0.0, metavar="MIN",
                   help="battery saver: only the cheapest quarter of configurations while the device's own load "
                        "and the smallest one would bring the battery to its reserve within MIN minutes "
                        "(EnvParams.saver_s; the longer of this and the policy's; default 0: the policy's, off "
                        "unless trained with it). Costs quality where a session ends early; buys time where it "
                        "does not (docs/agents.md, \"The battery saver\")")
    r.add_argument("--saver-to-deadline", action="store_true",
                   help="the battery saver holds until the deadline (--until HH:MM, or a replayed trace's): only "
                        "the cheapest quarter of configurations while the device's own load and the smallest one "
                        "would bring the battery to its reserve before it "
                        "(EnvParams.saver_to_deadline; default: the policy's, off unless trained with it)")
    r.add_argument("--saver-floor", type=float_in(0.0, 1.0), default=None, metavar="FRAC",
                   help="where the battery saver counts from, as a share of the reserve (EnvParams.saver_floor_frac): "
                        "1 holds the reserve for the saver's time, 0 only keeps the device alive that long and "
                        "spends the reserve before it (default: the policy's, 1 unless trained otherwise; "
                        "docs/agents.md, \"The saver that spends the reserve\")")
    r.add_argument("--no-floor-rule", action="store_true",
                   help="min-energy: do not hold the quality floor in the shield's masks; the floor is then only "
                        "measured (ShieldParams.floor_rule; default: on, whatever the policy was trained with)")
    r.add_argument("--no-budget-rule", action="store_true",
                   help="do not hold the power budget (--budget-w, --budget-wh) in the shield's masks; an overdraw is "
                        "then only measured (ShieldParams.budget_rule; default: on, whatever the policy was trained "
                        "with)")
    r.add_argument("--budget-reserve-s", type=nonneg_float, default=None, metavar="S",
                   help="what the budget rule keeps in hand, seconds of the budget, so that a burst of demand does not "
                        "overdraw it (EnvParams.budget_reserve_s; default: the policy's, 900 unless trained otherwise; "
                        "docs/objectives.md)")
    r.add_argument("--budget-reserve-tps", type=nonneg_float, default=None, metavar="TPS",
                   help="the burst the budget rule's reserve also pays for: at least --budget-reserve-s of the safe "
                        "configuration serving this many tokens/s (EnvParams.budget_reserve_tps; default: the "
                        "policy's, 50 unless trained otherwise)")
    r.add_argument("--budget-floor-reserve-s", type=nonneg_float, default=None, metavar="S",
                   help="min-energy under a power budget: what is kept in hand, seconds of the budget, where holding "
                        "the quality floor needs the budget rule's reserve (never below zero: the floor does not "
                        "overdraw the budget; EnvParams.budget_floor_reserve_s; default: the policy's)")
    r.add_argument("--telemetry", default=None, help="JSONL decision log path (refused if it exists, unless --force)")
    r.add_argument("--save-calibrated", default=None, metavar="OUT",
                   help="at the end, write the policy's profile corrected by the latency measured in this run "
                        "(runtime online correction; refused if it exists, unless --force)")
    r.add_argument("--force", action="store_true", help="replace an existing --telemetry / --save-calibrated file")
    r.add_argument("--temperature", type=nonneg_float, default=0.8, help="sampling temperature (0: greedy)")
    r.add_argument("--seed", type=nonneg_int, default=0)
    r.add_argument("--threads", type=positive_int, default=1)
    r.add_argument("--device-kind", default=None, choices=kinds, help="override the device kind (shield + simulation)")
    r.add_argument("--device-config", default=None,
                   help="JSON object of the device's own constants (runtime.dynamics.DeviceConstants fields; "
                        "the others from DEVICES[kind]); the shield uses the stricter of it and the policy's")
    r.add_argument("--budget-w", type=nonneg_float, default=0.0, help="LLM power budget, W (0: the trace's / none)")
    r.add_argument("--budget-wh", type=nonneg_float, default=0.0,
                   help="LLM energy budget, Wh, to last until --until (max-quality; re-paced every decision into the "
                        "power budget energy left / time left); 0: none")
    r.add_argument("--deadline-s", type=nonneg_float, default=0.0, help="deadline, s (0: the trace's / none)")
    r.add_argument("--objective", choices=("max-quality", "min-energy", "last-until"), default=None,
                   help="the user's objective (docs/objectives.md): max-quality (under --budget-w), min-energy "
                        "(above --quality-floor), last-until (--until); tracked, status line and summary say if met")
    r.add_argument("--quality-floor", type=float, default=None,
                   help="min-energy: the floor on the served quality per token over the last minute (0..1)")
    r.add_argument("--until", default=None, metavar="HH:MM|+N[s|m|h]",
                   help="the deadline, a local time (18:30) or a duration from now (+90m): last-until's; with "
                        "--budget-wh the budget's time; otherwise when the session ends (the policy observes it, and "
                        "--saver-to-deadline holds the battery for it)")
    r.add_argument("--capacity-wh", type=positive_float, default=None,
                   help=f"live: battery capacity, Wh (default: the battery's own, sensed; "
                        f"else {DEFAULT_CAPACITY_WH:g})")
    r.add_argument("--ambient-c", type=float_in(-40.0, 80.0), default=25.0, help="live: ambient if not sensed")
    r.add_argument("--nvml", action="store_true", help="live: probe NVML for GPU power/temperature")
    r.add_argument("--echo", action="store_true", help="stream the text as it is generated")
    r.add_argument("--no-status", action="store_true")
    r.add_argument("--status-s", type=nonneg_float, default=0.1, help="status line refresh period")
    r.add_argument("--split-server", default=None, metavar="URL",
                   help="split server for a policy with split configurations: ws://127.0.0.1:PORT (loopback) or "
                        "wss://HOST:PORT (TLS; see deploy.py serve-split)")
    r.add_argument("--split-token-file", default=None, help="the split server's shared secret (required with it)")
    r.add_argument("--split-ca", default=None, help="CA certificate that signed a wss:// server's certificate")
    r.add_argument("--no-split-shape", dest="split_shape", action="store_false",
                   help="do not shape the traffic to the trace's bandwidth and the link's round trip")
    r.add_argument("--processors", choices=("host", "fake-gpu"), default="host",
                   help="placement policies: this host's processors (default), or fake-gpu, a TEST DOUBLE that runs "
                        "the gpu role on the CPU (to try placement and faults without a GPU)")
    r.add_argument("--inject-fault", type=_fault_spec, action="append", default=[], metavar="ROLE:KIND:AFTER",
                   help="placement: make ROLE's segment fail (KIND error|timeout|device_lost) after AFTER calls; "
                        "repeatable (fault-recovery drills)")
    r.add_argument("--link-mbps", type=nonneg_float, default=0.0,
                   help="live: the link's bandwidth when no trace gives it, Mbit/s (0: split configurations masked)")
    sub.add_parser("serve-split", add_help=False,
                   help="run the split server (model.split_server; its own options: deploy.py serve-split --help)")
    b = sub.add_parser("bench", help="decision latency, import time and memory of the runtime")
    b.add_argument("--policy", required=True)
    b.add_argument("--decisions", type=positive_int, default=100_000)
    b.add_argument("--json", default=None, help="also write the results here (refused if it exists, unless --force)")
    b.add_argument("--force", action="store_true", help="replace an existing --json file")
    return ap


def main(argv: list[str] | None = None) -> Any:
    from runtime.safeio import ExistsError

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve-split"]:  # the server parses its own options (loopback, token, TLS, limits)
        from model.split_server import main as serve_split

        raise SystemExit(serve_split(argv[1:]))  # its exit status: 0, 1 (a file), 2 (an argument)
    args = build_parser().parse_args(argv)
    if args.cmd == "export":
        src = Path(args.run_dir)
        if src.is_file() and not args.profile:
            usage_error("export", f"run_dir {src} is a file: a policy file is re-exported only onto another "
                                  "profile; pass --profile P (or give a run folder)")
        if not src.is_dir() and not src.is_file():
            file_error("export", f"run_dir {args.run_dir}: no such run folder")
        try:
            if src.is_file():
                res = retable_policy(src, args.profile, args.out, args.onnx, force=args.force)
            else:
                res = export_run(args.run_dir, args.out, args.device_kind, args.onnx, args.allow_profile_change,
                                 force=args.force, profile=args.profile)
        except ExistsError as exc:
            file_error("export", f"--out {exc}")
        except ExportError as exc:
            raise SystemExit(f"export failed: {exc}") from exc
        print(json.dumps(res, indent=1))
        return res
    if args.cmd == "run":
        return run_cmd(args)
    return bench_cmd(args)


if __name__ == "__main__":
    main()
