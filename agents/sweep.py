"""Sweeps on Ray Tune: seeds × hyperparameters × trace sets (folds) × algorithms, each trial one ``train.py`` run.

::

    python -m agents.sweep agents/sweeps/example.yaml --dry-run      # the trial grid and each trial's command
    python -m agents.sweep agents/sweeps/example.yaml                # local: one trial per core of this machine
    python -m agents.sweep agents/sweeps/example.yaml --resume       # continue an interrupted / failed sweep
    python -m agents.sweep agents/sweeps/example.yaml --address auto # on the Ray cluster this node belongs to

The config (YAML; ``agents/sweeps/example.yaml`` is commented) has a ``grid`` (every combination is a trial) and
``train`` (train.py arguments shared by every trial). Keys are train.py's (``learning_rate``, ``algo``,
``traces``, ``seed``, ``env.slo_ms``, ...) or ``hyperparams.<key>`` for a key of ``agents/hyperparams/<algo>.yml``
(RL Zoo's format; the trial gets its own copy with the value applied). A fold is a trace set whose manifest
assigns other units to val/test, so folds are a ``traces`` axis.

Each trial runs ``train.py`` in a **subprocess** (not ``train.main`` in the Ray worker): a crash, an OOM kill or a
stuck torch thread pool stays in that process, early stopping can stop it at once, and its torch/OMP thread count
is set before torch loads. The run folder is the usual one (``<sweep>/<trial>/runs/<run>/``: model, config,
TensorBoard logs, ``eval/evaluations.npz``), and ``<sweep>/<trial>/train.log`` holds its output.

Intermediate scores: train.py evaluates the policy on the fixed val episodes every ``eval_freq`` steps and SB3's
callback appends each result to ``<run>/eval/evaluations.npz``. The trial polls that file and reports every new
evaluation to Tune (``val_return``: mean return over the val episodes; one Tune iteration per evaluation), so
ASHA / the median rule can stop a weak trial early: its train.py is stopped, and its run folder keeps what it
had (checkpoints every ``checkpoint_freq`` steps, TensorBoard logs, the val evaluations). A finished trial reports
once more, with ``best_val_return`` = the val return of the policy train.py kept (``--select-best``): the score
the results table ranks by.

Faults: a trial whose process exits non-zero (a crash, a kill) is retried ``max_failures`` times (Tune's
``FailureConfig``), then marked failed with its log; the other trials carry on. ``--resume`` restores the sweep
(Tune's ``Tuner.restore``): finished trials are kept, unfinished and failed ones run again from the start.

Outputs in ``<out>/<name>/``: ``results.md`` / ``results.csv`` (one row per trial, failed ones with their log),
``best.yaml`` (the best configuration, by its mean over seeds, with the command that reproduces it), the
resolved ``trials.json``, Tune's own state, and per trial folder Tune's ``progress.csv`` and TensorBoard events.
Details and the cluster recipe: docs/scale-out.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SCHEDULERS = ("asha", "median", "fifo")
METRIC = "val_return"  # reported at every val evaluation: what early stopping compares
RANK = "best_val_return"  # the kept policy's val return: what the table and best.yaml rank by
POLL_S = 1.0  # how often a trial looks for a new val evaluation
STOP_GRACE_S = 10.0  # SIGTERM, then SIGKILL
#: train.py arguments the sweep sets itself (each trial has its own run folder and no progress bar)
RESERVED = ("runs_dir", "exp_name", "progress")
#: train.py arguments that name files: made absolute (relative to the working directory), and checked
PATH_KEYS = ("traces", "profile", "bc_demos")
TOP_KEYS = {
    "name": "sweep name: the folder <out>/<name>",
    "out": "parent folder of sweeps (default runs/sweeps)",
    "grid": "mapping key -> list of values; every combination is a trial",
    "train": "mapping of train.py arguments shared by every trial",
    "scheduler": f"early stopping on {METRIC}: {' | '.join(SCHEDULERS)} (default asha)",
    "grace_evals": "val evaluations before a trial may be stopped early (default 1)",
    "reduction_factor": "ASHA's reduction factor (default 2)",
    "max_failures": "retries of a trial whose process crashed or was killed (default 1)",
    "cpus_per_trial": "CPUs reserved per trial (default 1; train.py's --threads follows unless set)",
    "resources_per_trial": "extra Ray resources per trial, e.g. {node2: 1} (default none)",
    "max_concurrent": "trials at once at most (default 0: as many as the CPUs allow)",
}


class SweepConfigError(ValueError):
    """The sweep config is wrong; the message names the file, the field and the fix."""


class TrialFailed(RuntimeError):
    """train.py exited non-zero; the message names the trial and its log."""


@dataclass
class Trial:
    """One combination of the grid."""

    key: str  # t000, t001, ... in grid order (the trial's folder and Tune name)
    axes: dict[str, Any]  # this trial's grid values, by config key
    train: dict[str, Any]  # train.py arguments (config keys; env.* dotted), base + axes
    hyperparams: dict[str, Any]  # overrides of agents/hyperparams/<algo>.yml
    algo: str
    argv: list[str]  # train.py's command-line arguments (without the sweep's own)


@dataclass
class Sweep:
    """A parsed, checked sweep config."""

    path: Path
    name: str
    out: Path
    grid: dict[str, list]
    trials: list[Trial]
    scheduler: str = "asha"
    grace_evals: int = 1
    reduction_factor: float = 2.0
    max_failures: int = 1
    cpus_per_trial: float = 1.0
    resources_per_trial: dict[str, float] = field(default_factory=dict)
    max_concurrent: int = 0

    @property
    def exp_dir(self) -> Path:
        return self.out / self.name


# ---- config -------------------------------------------------------------------------------------------

def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _argv(train: dict[str, Any]) -> list[str]:
    """train.py's argv for config keys (``learning_rate`` -> ``--learning-rate``; booleans as --x / --no-x)."""
    out: list[str] = []
    for k, v in train.items():
        if isinstance(v, bool):  # argparse's BooleanOptionalAction: --final-eval / --no-final-eval
            out.append(_flag(k) if v else "--no-" + _flag(k)[2:])
        else:
            out += [_flag(k), f"{v:g}" if isinstance(v, float) else str(v)]
    return out


def _check_train_args(argv: list[str]):
    """``train.Args`` from ``argv`` (its own range checks); a one-line error instead of argparse's exit."""
    import train
    from model.cli import parse_dataclass_args

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parse_dataclass_args(train.Args, argv)
    except SystemExit:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        raise ValueError(lines[-1].split("error: ", 1)[-1] if lines else "invalid train.py arguments") from None


def load_sweep(path: str | Path, out: str | Path | None = None) -> Sweep:
    """Reads and checks a sweep config; every trial's train.py arguments are range-checked here, before Ray starts.

    Raises:
        SweepConfigError: naming the file, the field (and the trial) and the fix.
    """
    p = Path(path)

    def bad(where: str, why: str, fix: str) -> SweepConfigError:
        return SweepConfigError(f"{p}: {where}: {why}; fix: {fix}")

    try:
        cfg = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise SweepConfigError(f"{p}: no such file; fix: pass a sweep config such as agents/sweeps/example.yaml") \
            from None
    except yaml.YAMLError as exc:
        raise SweepConfigError(f"{p}: not valid YAML ({exc})") from None
    if not isinstance(cfg, dict):
        raise bad("top level", "not a mapping", "see agents/sweeps/example.yaml")
    unknown = sorted(set(cfg) - set(TOP_KEYS))
    if unknown:
        raise bad(unknown[0], "unknown key", "use one of " + ", ".join(TOP_KEYS))
    name = cfg.get("name", p.stem)
    if not isinstance(name, str) or not name or name in (".", "..") or any(c in name for c in "/\\"):
        raise bad("name", f"{name!r} must be a non-empty folder name", "e.g. name: lr-seeds")
    grid = cfg.get("grid") or {}
    if not isinstance(grid, dict) or not grid:
        raise bad("grid", "missing or not a mapping", "grid: {seed: [1, 2], learning_rate: [3.0e-4, 1.0e-3]}")
    for k, vals in grid.items():
        if not isinstance(vals, list) or not vals:
            raise bad(f"grid.{k}", f"{vals!r} is not a non-empty list", f"{k}: [value1, value2]")
        if len({json.dumps(v, sort_keys=True, default=str) for v in vals}) != len(vals):
            raise bad(f"grid.{k}", "repeated values", "list each value once")
    base = cfg.get("train") or {}
    if not isinstance(base, dict):
        raise bad("train", "not a mapping", "train: {total_timesteps: 16384, n_envs: 8}")
    for where, keys in (("train", base), ("grid", grid)):
        for k in keys:
            norm = str(k).replace("-", "_")
            if norm in RESERVED:
                raise bad(f"{where}.{k}", "set by the sweep (each trial gets its own run folder)", f"remove {k}")
            if where == "train" and norm in {str(g).replace("-", "_") for g in grid}:
                raise bad(f"train.{k}", "also a grid axis", f"keep {k} in one of train / grid")
    opts: dict[str, Any] = {}
    sched = cfg.get("scheduler", "asha")
    if sched not in SCHEDULERS:
        raise bad("scheduler", f"{sched!r}", f"one of {', '.join(SCHEDULERS)}")
    for key, kind, lo, default in (("grace_evals", int, 1, 1), ("reduction_factor", float, 1.0001, 2.0),
                                   ("max_failures", int, 0, 1), ("cpus_per_trial", float, 0.01, 1.0),
                                   ("max_concurrent", int, 0, 0)):
        v = cfg.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not float(v).is_integer()) \
                or v < lo:
            raise bad(key, f"{v!r} is out of range", f"{'an integer' if kind is int else 'a number'} >= {lo:g}")
        opts[key] = kind(v)
    res = cfg.get("resources_per_trial") or {}
    if not isinstance(res, dict) or any(not isinstance(v, (int, float)) or v <= 0 for v in res.values()) \
            or any(k.upper() in ("CPU", "GPU") for k in res):
        raise bad("resources_per_trial", f"{res!r}", "custom resources with positive amounts, e.g. {node2: 1} "
                  "(CPUs: cpus_per_trial)")
    sweep = Sweep(p, name, Path(out or cfg.get("out") or "runs/sweeps").resolve(), grid, [], sched,
                  resources_per_trial={str(k): float(v) for k, v in res.items()}, **opts)
    axes = list(grid)
    for i, combo in enumerate(itertools.product(*(grid[a] for a in axes))):
        sweep.trials.append(_make_trial(f"t{i:03d}", dict(zip(axes, combo)), base, opts["cpus_per_trial"], bad))
    return sweep


def _make_trial(key: str, axes: dict, base: dict, cpus: float, bad) -> Trial:
    """One trial: the train.py arguments and hyperparameter overrides, checked."""
    import train

    merged = {**base, **axes}
    hp = {k.split(".", 1)[1]: v for k, v in merged.items() if str(k).startswith("hyperparams.")}
    targs: dict[str, Any] = {}
    for k, v in merged.items():
        k = str(k)
        if k.startswith("hyperparams."):
            continue
        k = k.replace("-", "_")
        if k in PATH_KEYS and v not in (None, ""):
            v = str(Path(str(v)).expanduser().resolve())
            if not Path(v).exists():
                raise bad(f"{'grid' if k in axes else 'train'}.{k}", f"{v} does not exist",
                          "give an existing path (on a cluster: on storage every node mounts at the same path)")
        targs[k] = v
    if "threads" not in targs and float(cpus).is_integer():
        targs["threads"] = int(cpus)  # torch threads = the CPUs Ray reserved for the trial
    where = f"trial {key} ({', '.join(f'{a}={v}' for a, v in axes.items())})"
    try:
        args = _check_train_args(_argv(targs))
    except ValueError as exc:
        raise bad(where, str(exc), "change that value in grid / train (python train.py --help lists the ranges)") \
            from None
    hp_full = _trial_hyperparams(args.algo, hp)
    try:
        parsed = train._from_rl_zoo(dict(hp_full), Path(f"hyperparams/{args.algo}.yml"))
    except SystemExit as exc:
        raise bad(where, f"hyperparameters: {exc}", "fix the hyperparams.* value") from None
    total = args.total_timesteps if args.total_timesteps >= 0 else float(parsed["n_timesteps"])
    if total > 0 and args.eval_freq > total:
        raise bad(where, f"eval_freq {args.eval_freq} > total_timesteps {total:g}: no val evaluation would run, so "
                  "nothing could be compared", "set eval_freq <= total_timesteps")
    return Trial(key, axes, targs, hp, args.algo, _argv(targs))


def _trial_hyperparams(algo: str, overrides: dict) -> dict:
    """agents/hyperparams/<algo>.yml's entry (RL Zoo format) with ``overrides`` applied."""
    import envs

    src = REPO / "agents" / "hyperparams" / f"{algo}.yml"
    base = dict(yaml.safe_load(src.read_text())[envs.ENV_ID])
    return {**base, **overrides}


# ---- one trial (runs in a Ray worker) ---------------------------------------------------------------------

def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """train.py is killed if the Ray worker that started it dies (Linux; elsewhere a no-op): Tune ends the worker
    of a trial it stops, and a killed worker must not leave its training running."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _new_run(runs: Path, before: set[str]) -> Path | None:
    """The run folder train.py created in this attempt (the newest one that was not there before)."""
    if not runs.is_dir():
        return None
    new = [d for d in runs.iterdir() if d.is_dir() and d.name not in before]
    return max(new, key=lambda d: d.stat().st_mtime) if new else None


def _read_evals(run: Path | None) -> list[tuple[int, float]]:
    """(env steps, mean val return) of every evaluation so far; [] while the file is absent or being written."""
    if run is None or not (run / "eval" / "evaluations.npz").exists():
        return []
    import numpy as np

    try:
        with np.load(run / "eval" / "evaluations.npz") as z:
            return [(int(t), float(np.mean(r))) for t, r in zip(z["timesteps"], z["results"])]
    except Exception:  # SB3 rewrites the file in place: a half-written zip is read again at the next poll
        return []


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after a grace period."""
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _exit_text(rc: int) -> str:
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-rc).name}"
        return f"was killed by signal {-rc}"
    return f"exited with code {rc}"


def _trial(config: dict) -> None:
    """Tune's trainable: run train.py for one trial and report its val evaluations."""
    import ray
    from ray import tune

    t, s = config["trial"], config["sweep"]
    folder = Path(s["exp_dir"]) / t["key"]
    folder.mkdir(parents=True, exist_ok=True)
    hp_dir = folder / "hyperparams"
    hp_dir.mkdir(exist_ok=True)
    import envs
    from runtime.safeio import atomic_write_text

    atomic_write_text(hp_dir / f"{t['algo']}.yml", "# agents/hyperparams/" + t["algo"] + ".yml with the sweep's "
                      "values (RL Zoo's format)\n" + yaml.safe_dump({envs.ENV_ID: _trial_hyperparams(
                          t["algo"], t["hyperparams"])}, sort_keys=False))
    runs, log = folder / "runs", folder / "train.log"
    before = {d.name for d in runs.iterdir()} if runs.is_dir() else set()
    argv = [sys.executable, str(REPO / "train.py"), *t["argv"], "--runs-dir", str(runs), "--exp-name", t["key"],
            "--no-progress"]
    threads = str(int(t["train"].get("threads", 1)))
    env = {**os.environ, "WATTWISE_HYPERPARAMS": str(hp_dir), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": threads,
           "MKL_NUM_THREADS": threads}
    node = ray.get_runtime_context().get_node_id()
    with open(log, "a") as fh:
        fh.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} attempt on node {node}: {' '.join(argv)}\n")
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, cwd=folder, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    (folder / "train.pid").write_text(str(proc.pid))
    common = {"node": node, "log": str(log)}
    run, reported, best, last = None, 0, -math.inf, math.nan
    try:
        while True:
            rc = proc.poll()
            run = run or _new_run(runs, before)
            evals = _read_evals(run)
            for steps, val in evals[reported:]:
                reported += 1
                best, last = max(best, val), val
                tune.report({METRIC: val, RANK: best, "env_steps": steps, "evals": reported, "finished": False,
                             "run": str(run), **common})
            if rc is not None:
                break
            time.sleep(POLL_S)
    finally:  # stopped early (Tune raises SystemExit in report), interrupted or failed: never leave train.py running
        if proc.poll() is None:
            _stop(proc)
    if rc != 0:
        raise TrialFailed(f"trial {t['key']}: train.py {_exit_text(rc)}; log: {log}")
    cfg = json.loads((run / "config.json").read_text()) if run and (run / "config.json").exists() else {}
    sel = cfg.get("selected")
    kept = float(sel["val_return"]) if isinstance(sel, dict) and "val_return" in sel else last
    tune.report({METRIC: last, RANK: kept, "env_steps": int(cfg.get("total_timesteps", 0)), "evals": reported,
                 "finished": True, "run": str(run), "train_wall_s": float(cfg.get("train_wall_s", math.nan)),
                 **common})


def _trial_dirname(trial) -> str:
    return trial.config["trial"]["key"]


# ---- the sweep ----------------------------------------------------------------------------------------------

def _scheduler(sweep: Sweep):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    if sweep.scheduler == "asha":
        # one Tune iteration per val evaluation; max_t above any trial's count, so ASHA never cuts the final report
        return ASHAScheduler(time_attr="training_iteration", grace_period=sweep.grace_evals, max_t=10**6,
                             reduction_factor=sweep.reduction_factor)
    if sweep.scheduler == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=sweep.grace_evals,
                                  min_samples_required=2)
    return FIFOScheduler()


def _progress_callback(total: int, enabled: bool):
    from ray.tune import Callback
    from tqdm import tqdm

    class Bar(Callback):
        """tqdm over finished trials, with the best score so far."""

        def __init__(self):
            self.bar = tqdm(total=total, desc="sweep", unit="trial", disable=not enabled, file=sys.stderr)
            self.best = -math.inf

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if math.isfinite(result.get(RANK, math.nan)):
                self.best = max(self.best, result[RANK])
                self.bar.set_postfix_str(f"best {RANK} {self.best:.3f}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.bar.update(1)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.bar.update(1)

        def on_experiment_end(self, trials, **info):
            self.bar.close()

    return Bar()


def run_sweep(sweep: Sweep, *, address: str | None = None, resume: bool = False, progress: bool = True) -> dict:
    """Runs (or with ``resume`` continues) the sweep on Ray; writes the results; returns their paths."""
    from agents.parallel import init_ray
    from runtime.safeio import atomic_write_text

    exp = sweep.exp_dir
    state = exp / "trials.json"
    trials = [asdict(t) for t in sweep.trials]
    if resume:
        from ray import tune

        if not state.exists() or not tune.Tuner.can_restore(str(exp)):
            raise SweepConfigError(f"{exp}: no sweep to resume there; fix: run without --resume to start it")
        if json.loads(state.read_text()) != json.loads(json.dumps(trials)):
            raise SweepConfigError(f"{sweep.path}: the grid or train arguments changed since {exp} was started; "
                                   "--resume continues the original trials; fix: restore the config, or give the "
                                   "sweep another name to start a new one")
    elif exp.exists():
        raise SweepConfigError(f"{exp}: the sweep folder already exists; fix: --resume to continue it, or another "
                               "name (or delete the folder yourself)")
    init_ray(address)
    from ray import tune

    trainable = tune.with_resources(_trial, {"cpu": sweep.cpus_per_trial, **sweep.resources_per_trial})
    if resume:
        # no Tune checkpoints are kept (train.py's own are not resumable): failed and unfinished trials start over
        tuner = tune.Tuner.restore(str(exp), trainable=trainable, resume_unfinished=True, restart_errored=True)
    else:
        exp.mkdir(parents=True)
        atomic_write_text(state, json.dumps(trials, indent=1))
        atomic_write_text(exp / "sweep.yaml", sweep.path.read_text())
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(trials), "sweep": {"exp_dir": str(exp), "name": sweep.name}},
            tune_config=tune.TuneConfig(metric=METRIC, mode="max", scheduler=_scheduler(sweep),
                                        max_concurrent_trials=sweep.max_concurrent or None,
                                        trial_name_creator=_trial_dirname, trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(name=sweep.name, storage_path=str(sweep.out), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                                      callbacks=[_progress_callback(len(trials), progress)]),
        )
    grid = tuner.fit()
    rows = _rows(sweep, grid)
    return write_results(sweep, rows)


def _rows(sweep: Sweep, grid) -> list[dict]:
    """One row per trial, in grid order."""
    by_key = {}
    for r in grid:
        by_key[r.config["trial"]["key"]] = r
    rows = []
    for t in sweep.trials:
        r = by_key.get(t.key)
        m = dict(r.metrics or {}) if r is not None else {}
        log = sweep.exp_dir / t.key / "train.log"
        attempts = log.read_text(errors="replace").count("\n==== ") if log.exists() else 0
        if r is None:
            status = "not run"
        elif r.error is not None:
            status = "failed"
        elif m.get("finished"):
            status = "done"
        else:
            status = "stopped early"
        rows.append({"trial": t.key, **{k: t.axes[k] for k in sweep.grid}, "status": status,
                     RANK: m.get(RANK, math.nan), METRIC: m.get(METRIC, math.nan),
                     "evals": m.get("evals", 0), "env_steps": m.get("env_steps", 0),
                     "attempts": attempts, "node": m.get("node", ""), "run": m.get("run", ""),
                     "log": str(log), "error": "" if r is None or r.error is None else str(r.error).splitlines()[0]})
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


def _finite(v: Any) -> Any:
    """``v`` with every non-finite float (recursively) replaced by None."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def _groups(sweep: Sweep, rows: list[dict]) -> list[dict]:
    """Trials that differ only in seed, pooled: mean / std of the ranking score over their seeds."""
    axes = [a for a in sweep.grid if a.replace("-", "_") != "seed"]
    out: dict[tuple, dict] = {}
    for r in rows:
        g = out.setdefault(tuple(json.dumps(r[a], default=str) for a in axes),
                           {**{a: r[a] for a in axes}, "scores": [], "trials": [], "failed": 0})
        g["trials"].append(r["trial"])
        if r["status"] == "done" and math.isfinite(r[RANK]):
            g["scores"].append(r[RANK])
        elif r["status"] == "failed":
            g["failed"] += 1
    res = []
    for g in out.values():
        sc = g.pop("scores")
        n = len(sc)
        mean = sum(sc) / n if n else math.nan
        std = math.sqrt(sum((x - mean) ** 2 for x in sc) / (n - 1)) if n > 1 else math.nan
        res.append({**g, "mean": mean, "std": std, "n": n})
    return sorted(res, key=lambda g: -g["mean"] if math.isfinite(g["mean"]) else math.inf)


def write_results(sweep: Sweep, rows: list[dict]) -> dict:
    """results.md, results.csv and best.yaml in the sweep folder (atomically); returns their paths."""
    from runtime.safeio import atomic_write_text, atomic_writer

    exp = sweep.exp_dir
    order = {"done": 0, "stopped early": 1, "failed": 2, "not run": 3}
    rows_sorted = sorted(rows, key=lambda r: (order[r["status"]], -r[RANK] if math.isfinite(r[RANK]) else math.inf))
    cols = list(rows[0]) if rows else []
    with atomic_writer(exp / "results.csv", "w") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows_sorted:
            w.writerow([r[c] for c in cols])
    groups = _groups(sweep, rows)
    show = [c for c in cols if c not in ("error", "run", "node")]
    md = [f"# Sweep {sweep.name}", "", f"* config: `{sweep.path}`; {len(rows)} trials; scheduler: {sweep.scheduler} "
          f"on `{METRIC}` (mean val return at each evaluation); ranked by `{RANK}` (the val return of the policy "
          "train.py kept)", f"* done: {sum(r['status'] == 'done' for r in rows)}, stopped early: "
          f"{sum(r['status'] == 'stopped early' for r in rows)}, failed: {sum(r['status'] == 'failed' for r in rows)}",
          "", "| " + " | ".join(show) + " |", "|---" * len(show) + "|"]
    for r in rows_sorted:
        md.append("| " + " | ".join(_fmt(r[c]) if c != "log" or r["status"] == "failed" else "" for c in show) + " |")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        md += ["", "## Failed trials", ""] + [f"* {r['trial']}: {r['error']} (log: `{r['log']}`)" for r in failed]
    gaxes = [a for a in sweep.grid if a.replace("-", "_") != "seed"]
    md += ["", f"## By configuration (mean ± std of `{RANK}` over seeds)", "",
           "| " + " | ".join(gaxes + ["mean", "std", "seeds done", "failed", "trials"]) + " |",
           "|---" * (len(gaxes) + 5) + "|"]
    for g in groups:
        md.append("| " + " | ".join([_fmt(g[a]) for a in gaxes] + [_fmt(g["mean"]), _fmt(g["std"]), str(g["n"]),
                                     str(g["failed"]), ", ".join(g["trials"])]) + " |")
    atomic_write_text(exp / "results.md", "\n".join(md) + "\n")
    paths = {"md": exp / "results.md", "csv": exp / "results.csv"}
    best = next((g for g in groups if math.isfinite(g["mean"])), None)
    if best is not None:
        t = next(t for t in sweep.trials if t.key == best["trials"][0])
        train_args = {k: v for k, v in t.train.items() if k.replace("-", "_") != "seed"}
        runs = [r for r in rows if r["trial"] in best["trials"] and r["status"] == "done"]
        top = max(runs, key=lambda r: r[RANK])
        doc = {"metric": f"{RANK}: mean over seeds (the val return of the policy train.py kept)",
               "config": {a: best[a] for a in gaxes}, "mean": best["mean"], "std": best["std"], "seeds_done": best["n"],
               "train": train_args, "hyperparams": t.hyperparams,
               "command": "python train.py " + " ".join(_argv(train_args)),
               "hyperparams_file": str(exp / t.key / "hyperparams" / f"{t.algo}.yml"),
               "best_trial": {"trial": top["trial"], RANK: top[RANK], "run": top["run"]}}
        if t.hyperparams:
            doc["command"] = f"WATTWISE_HYPERPARAMS={exp / t.key / 'hyperparams'} " + doc["command"]
        doc = _finite(doc)  # a std over one seed is NaN: null in YAML
        atomic_write_text(exp / "best.yaml", "# the best configuration of sweep " + sweep.name + "\n"
                          + yaml.safe_dump(doc, sort_keys=False, width=1000))
        paths["best"] = exp / "best.yaml"
    return paths


def dry_run_text(sweep: Sweep) -> str:
    """The trial grid, one line per trial with its train.py command."""
    lines = [f"{len(sweep.trials)} trials ({' x '.join(f'{len(v)} {k}' for k, v in sweep.grid.items())}); "
             f"sweep folder {sweep.exp_dir}; scheduler {sweep.scheduler}; {sweep.cpus_per_trial:g} CPU per trial"]
    for t in sweep.trials:
        hp = f"  [hyperparams: {', '.join(f'{k}={v}' for k, v in t.hyperparams.items())}]" if t.hyperparams else ""
        lines.append(f"{t.key}  {', '.join(f'{k}={v}' for k, v in t.axes.items())}  ->  python train.py "
                     f"{' '.join(t.argv)}{hp}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agents.sweep", description=__doc__.split("\n")[0])
    ap.add_argument("config", help="sweep config YAML (see agents/sweeps/example.yaml)")
    ap.add_argument("--address", default=None,
                    help="Ray cluster to run on: auto (this node's cluster) or HOST:PORT; default: a local runtime "
                         "with one CPU per core of this machine")
    ap.add_argument("--resume", action="store_true", help="continue the sweep in its folder (Tune's restore)")
    ap.add_argument("--out", default=None, help="parent folder of sweep folders (default: the config's out, else "
                                                "runs/sweeps)")
    ap.add_argument("--dry-run", action="store_true", help="print the trial grid and exit (Ray is not started)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        sweep = load_sweep(args.config, args.out)
    except SweepConfigError as exc:
        raise SystemExit(f"python -m agents.sweep: {exc}") from None
    if args.dry_run:
        print(dry_run_text(sweep))
        return 0
    from agents.parallel import RayNotInstalledError

    try:
        paths = run_sweep(sweep, address=args.address, resume=args.resume, progress=not args.no_progress)
    except (SweepConfigError, RayNotInstalledError) as exc:
        raise SystemExit(f"python -m agents.sweep: {exc}") from None
    print((sweep.exp_dir / "results.md").read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
