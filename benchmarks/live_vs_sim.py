"""Live score versus simulated score of the deployed policy, on the calibrated profile of this host.

    python benchmarks/live_vs_sim.py [--policy reports/real-oracle-dagger-only-seed3/policy.npz]
        [--profile profiles/calibrated-amd-epyc-2c.json] [--traces phone-01,laptop-00,deadline-00,heat-00,link-04]
        [--steps 90] [--speed 10] [--threads 2] [--out benchmarks/results/live_vs_sim.json] [--force]

Per trace of the default test split, over the same window (the first row with demand, then ``--steps``
control steps of ``step_s`` = 10 s):

* **policy on the calibrated profile.** The committed policy file's tables (energy per token, power,
  token rate: what the shield, the replay's model power and the online correction read) come from the
  profile it was exported with (``reference-cpu``). :func:`reexport_policy` writes a copy whose tables
  are the calibrated profile's — the same weights, normalisation, parameters and configuration space
  (``deploy.py export <policy.npz> --profile <calibrated>``: no run folder of this policy is committed).
  Both sides below use that copy.
* **simulated** (:func:`simulate`): the exported policy (``runtime.policy.NumpyPolicy``, with the
  env's action masks) steps ``MicroLLMPowerEnv`` on the calibrated profile from the same row.
* **live** (:func:`run_live`): ``deploy.py run --sensors replay:<trace> --start-s <row·10>
  --speed S --every-ms 10000/S --threads 2 --replay-workload W --telemetry <tmp>`` in this process
  (``deploy.RunSession``; the subclass :class:`RecordingSession` only records, and stops at the first
  decision past the window's end): the real model generates for real under the runtime manager (policy,
  shield, dwell, online correction), re-deciding every 10 virtual seconds, i.e. once per env step. For each
  decision interval it records the configuration run and every per-token decode latency the run feeds its
  online correction (a prompt's first token and the first after a switch are left out, as there). Two
  variants: ``env`` (the default of ``deploy.py run``: the manager fed the env's demand / backlog / latency
  inputs, ``deploy.EnvWorkload``) and ``job`` (``--replay-workload job``: the job's backlog, the current
  row's demand, the last token's latency, as before 2026-12-01). Before each live run the benchmark waits
  (``--quiet-wait-s``) for other processes to leave the CPU, and it reports the share they used during the
  run: with 2 torch threads on a shared 2-core host the model slows down by orders of magnitude.

Both are scored by one function, :func:`score_records`, from the same per-step fields — the
configuration run, its decode latency (ms/token) and its token rate — by stepping the env itself
(``runtime.dynamics.step_core``: quality × served tokens, thermal, SLO, budget, drops, death) with the
step's latency and rate put in place of the profile's for the configuration run. For the simulated
records those are the profile's, so the score is the env's return to the last bit (checked on every run);
for the live records they are what the live model measured in that step (the median decode latency of
the decision intervals in it, rate = 1000 / median ms, as the profile defines ``decode_tokens_per_s``). The
battery, temperature and queue are the env's in both: on this machine they are modelled either way (the
replay device of ``deploy.py run`` integrates the same equations; its own SoC and temperature are reported
as a check).

A live step is a step of the env's grid of virtual time: its configuration is the one that ran longest in
it, its latency the median of its intervals' measured medians under that configuration, weighted by their
time in the step (:func:`interval_records`), so late decisions (a slow token delays the next one) are
accounted where they fell. The intervals' medians and token counts are what ``deploy.py run`` writes to
its telemetry (``tokens``, ``decode_ms`` of each decision record): :func:`score_telemetry` computes the live
score from a telemetry file alone, and every live run here checks that it equals the in-process score.

Also reported: the live decisions scored with the profile's speeds and with the run's median speed per
configuration (splits the gap into the decisions' part and the measured speed's part), the agreement of
the configurations chosen, SLO and thermal violations, the decision layer alone (:func:`dry_replay`: the
runtime manager on the replayed window without the model, in exact virtual time) and counterfactual
simulations that give the policy in the env what the live manager gave it (the live run's
``backlog_frac`` observation; the manager's dwell rule) to attribute the disagreement.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/live_vs_sim.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

import deploy  # noqa: E402
from envs.power_env import MicroLLMPowerEnv  # noqa: E402
from runtime.policy import NumpyPolicy, PolicyFile, load_policy_file  # noqa: E402

DEFAULT_POLICY = "reports/real-oracle-dagger-only-seed3/policy.npz"
DEFAULT_PROFILE = "profiles/calibrated-amd-epyc-2c.json"
# the default test split without solar-03: its episode ends by battery death in 7 steps in the simulation
# (start SoC 0.27 at night), so its score is the death penalty whatever runs
DEFAULT_TRACES = ("phone-01", "laptop-00", "deadline-00", "heat-00", "link-04")
DEFAULT_PROMPT = "In the beginning God created the heaven and the earth."
#: ``deploy.py run --min-dwell`` (the runs here use its default).
DEFAULT_MIN_DWELL = 3


# ---- the policy on the calibrated profile --------------------------------------------------------------------

def reexport_policy(src: str | Path, profile: str | Path, out: str | Path) -> Path:
    """A copy of the policy file ``src`` whose per-configuration tables (``energy_j_per_token``, ``power_w``,
    ``decode_tokens_per_s``, ``device_bytes``), configuration features and ``meta.profile`` / ``meta.model``
    are ``profile``'s: the same actor, normalisation, parameters and configuration space. It is
    ``deploy.py export <src> --profile <profile> --out <out>`` (``deploy.retable_policy``).

    Raises:
        deploy.ExportError: the profile's configuration space or observation layout differs from the policy's.
    """
    deploy.retable_policy(src, profile, out, force=True)
    return Path(out)


# ---- the one score -------------------------------------------------------------------------------------------

def make_env(profile: str | Path, pf: PolicyFile, traces: Any = None, split: str = "test") -> MicroLLMPowerEnv:
    """The env the policy is simulated and both runs are scored in: the profile, the policy's ``EnvParams``."""
    return MicroLLMPowerEnv(profile=str(profile), traces=traces, split=split, random_start=False, params=pf.params)


def score_records(env: MicroLLMPowerEnv, trace: str | int, start: int, records: list[dict],
                  initial_config: int | None = None) -> dict[str, Any]:
    """The env's return of a sequence of per-step records on ``trace`` from row ``start``.

    Each record gives the configuration run in that step (``config``) and its decode latency
    (``decode_ms``, ms/token) and token rate (``tps``); the env steps with them in place of the profile's
    for that configuration (everything else — energy, quality, switch costs, the trace, the battery,
    thermal and queue dynamics, the reward — is the env's). Stops at battery death, like the env.

    Returns:
        ``return`` (Σ reward), ``steps``, per-step ``rewards`` and ``steps_detail`` (the env's
        ``StepResult`` fields), and totals: ``served``, ``quality_tokens`` (Σ quality × served),
        ``energy_j``, ``thermal_steps``, ``slo_steps``, ``budget_steps``, ``dropped``, ``deaths``,
        ``switches`` (changes between consecutive steps), ``configs``.
    """
    opts: dict[str, Any] = {"trace": trace, "start": int(start)}
    if initial_config is not None:
        opts["config"] = int(initial_config)
    env.reset(seed=0, options=opts)
    tps, dec = env._tps, env._dec  # the env's per-configuration lists, read by step()
    rewards, detail, configs = [], [], []
    quality_tokens = 0.0
    try:
        for rec in records:
            a = int(rec["config"])
            if not 0 <= a < len(tps):
                raise ValueError(f"configuration {a} outside 0..{len(tps) - 1}")
            d, r = float(rec["decode_ms"]), float(rec["tps"])
            if not (d > 0 and r > 0 and math.isfinite(d) and math.isfinite(r)):
                raise ValueError(f"step {len(rewards)}: decode_ms {d!r} and tps {r!r} must be positive and finite")
            t0, d0 = tps[a], dec[a]
            tps[a], dec[a] = r, d
            try:
                _, reward, term, trunc, info = env.step(a)
            finally:
                tps[a], dec[a] = t0, d0
            st = info["step"]
            rewards.append(float(reward))
            configs.append(a)
            detail.append({k: (bool(v) if isinstance(v, (bool, np.bool_)) else float(v))
                           for k, v in st._asdict().items()})
            quality_tokens += float(env.costs.quality[a]) * float(st.served)
            if term or trunc:
                break
    finally:
        env._tps, env._dec = tps, dec

    def total(key: str) -> float:
        return float(sum(s.get(key, 0.0) for s in detail))

    return {
        "return": float(sum(rewards)), "steps": len(rewards), "rewards": rewards, "steps_detail": detail,
        "served": total("served"), "quality_tokens": quality_tokens, "energy_j": total("energy_j"),
        "thermal_steps": sum(s["over_c"] > 0 for s in detail), "slo_steps": sum(bool(s["slo_bad"]) for s in detail),
        "budget_steps": sum(s["over_budget"] > 0 for s in detail), "dropped": total("dropped"),
        "deaths": sum(bool(s["dead"]) for s in detail), "configs": configs,
        "switches": int(sum(1 for a, b in zip(configs, configs[1:]) if a != b)),
    }


def profile_records(env: MicroLLMPowerEnv, configs: list[int]) -> list[dict]:
    """Records of ``configs`` with the profile's decode latency and token rate."""
    return [{"config": int(a), "decode_ms": float(env.costs.decode_ms[a]), "tps": float(env.costs.tps[a])}
            for a in configs]


# ---- simulated -----------------------------------------------------------------------------------------------

def simulate(pf: PolicyFile, env: MicroLLMPowerEnv, trace: str | int, start: int, steps: int,
             obs_override: dict[str, list[float]] | None = None, min_dwell: int = 0) -> dict[str, Any]:
    """The exported policy in the env: ``NumpyPolicy.act`` on the env's observation (with its action mask
    when the policy uses masks), ``steps`` steps from row ``start`` (fewer at battery death / trace end).

    ``obs_override`` (counterfactuals): feature name -> per-step values put into the observation the policy
    sees. ``min_dwell``: the runtime manager's dwell rule (a policy-driven switch needs that many decisions
    since the previous switch, if the current configuration is allowed).

    Returns ``records`` (config, decode_ms, tps: the profile's), ``policy_actions`` and ``env_return``
    (Σ of the env's rewards as it stepped).
    """
    pol = NumpyPolicy(pf)
    idx = {name: pf.layout.names.index(name) for name in (obs_override or {})}
    obs, info = env.reset(seed=0, options={"trace": trace, "start": int(start)})
    cur, since = env.full_config, 1 << 30
    records, actions, ret = [], [], 0.0
    for k in range(steps):
        o = obs
        if idx:
            o = obs.copy()
            for name, i in idx.items():
                vals = obs_override[name]
                o[i] = vals[min(k, len(vals) - 1)]
        mask = info["action_mask"]
        a_pol = int(pol.act(o, mask) if pf.uses_masks else pol.act(o))
        a = a_pol
        if min_dwell and a_pol != cur and since < min_dwell and mask[cur]:
            a = cur
        if a != cur:
            cur, since = a, 0
        since += 1
        actions.append(a_pol)
        records.append({"config": a, "decode_ms": float(env.costs.decode_ms[a]), "tps": float(env.costs.tps[a])})
        obs, r, term, trunc, info = env.step(a)
        ret += float(r)
        if term or trunc:
            break
    return {"records": records, "policy_actions": actions, "env_return": ret}


# ---- live ------------------------------------------------------------------------------------------------------

class RecordingSession(deploy.RunSession):
    """``deploy.RunSession`` that records each decision interval and stops at the end of a window of
    virtual time; nothing of the run changes (the overrides call the run's own methods and only read its
    state; the manager's workload inputs are ``--replay-workload``'s, ``deploy.EnvWorkload`` by default).

    An interval starts at a decision (the first one before the first token) and holds the configuration the
    model ran until the next decision, the decode latencies the run fed its online correction (with the wall
    time of their token: the same list whose median ``deploy.py run`` writes to the next decision's
    telemetry record), the token count, and what the manager saw and did (virtual time, SoC, temperature, the
    workload inputs, policy action, override reason, state). The run stops at the first decision at or
    after ``window_end_s`` of virtual time (``stop_reason`` ``"window_end"``).
    """

    def __init__(self, args: argparse.Namespace, window_end_s: float) -> None:
        self.window_end_s = float(window_end_s)
        self.intervals: list[dict[str, Any]] = []
        super().__init__(args)

    def _interval_start(self, now: float) -> None:
        from runtime.sensors import SOC, TEMP
        from runtime.shield import REASON_NAMES

        super()._interval_start(now)
        mgr, v = self.mgr, self.hub.values
        self.intervals.append({
            "vt": float(now), "wall": time.perf_counter(), "config": int(self.idx),
            "policy_action": int(mgr.last_policy_action), "reason": REASON_NAMES[mgr.last_reason],
            "state": mgr.state.name, "soc": float(v[SOC]), "temp_c": float(v[TEMP]),
            "demand_tps": float(mgr.demand_tps), "row_demand_tps": float(self.demand_tps),
            "backlog_frac": float(mgr.backlog_frac),
            "latency_over_slo": None if mgr.latency_over_slo is None else float(mgr.latency_over_slo),
            "lat": [], "tokens": 0})

    def on_token(self, tok: int, t: float) -> None:
        n = len(self._iv_lat)
        super().on_token(tok, t)
        iv = self.intervals[-1]
        iv["tokens"] += 1
        if len(self._iv_lat) > n:  # measured (not a prompt's first token or the first after a switch)
            iv["lat"].append((float(t), float(self._iv_lat[-1])))

    def _trace_ended(self) -> bool:
        rp = self.replay
        if rp is not None and self.intervals and rp.vt >= self.window_end_s:
            if self.stop_reason is None:
                self.stop_reason = "window_end"
            return True
        return super()._trace_ended()


def run_argv(policy: str | Path, trace_path: str | Path, start_s: float, step_s: float, speed: float,
             threads: int, max_tokens: int, prompt: str = DEFAULT_PROMPT, seed: int = 0,
             checkpoint: str | Path | None = None, telemetry: str | Path | None = None,
             replay_workload: str = "env") -> list[str]:
    """The ``deploy.py run`` arguments of a live run that decides once per env step (virtual time)."""
    argv = ["run", "--policy", str(policy), "--sensors", f"replay:{trace_path}", "--start-s", repr(float(start_s)),
            "--speed", repr(float(speed)), "--every-ms", repr(1000.0 * step_s / speed), "--replay-end", "stop",
            "--replay-workload", replay_workload,
            "--prompt", prompt, "--max-tokens", str(int(max_tokens)), "--threads", str(int(threads)),
            "--seed", str(int(seed)), "--no-status"]
    if checkpoint is not None:
        argv += ["--checkpoint", str(checkpoint)]
    if telemetry is not None:
        argv += ["--telemetry", str(telemetry), "--force"]
    return argv


def run_live(argv: list[str], steps: int, step_s: float, quiet: bool = True) -> dict[str, Any]:
    """Runs ``deploy.py run`` (``argv`` as on its command line) in this process over ``steps`` env steps of
    virtual time from its ``--start-s`` (:class:`RecordingSession`); returns the intervals, the run's
    summary, its stop reason, the wall time and the share of the CPU other processes used meanwhile."""
    import os

    args = deploy.build_parser().parse_args(argv)
    t0 = time.perf_counter()
    out = io.StringIO()
    with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
        sess = RecordingSession(args, args.start_s + steps * step_s)
        load = OtherLoad().start()  # from the model loaded to the end of generation
        try:
            sess.generate(sess.prompts)
        finally:
            other = load.stop()
            summary = sess.close()
    return {"intervals": sess.intervals, "summary": summary, "stop_reason": sess.stop_reason,
            "vt_end": float(sess.replay.vt) if sess.replay is not None else None,
            "start_s": float(args.start_s), "speed": float(args.speed), "step_s": float(step_s), "steps": int(steps),
            "wall_s": time.perf_counter() - t0, "argv": argv, "names": list(sess.names),
            "replay_workload": args.replay_workload, "other_cpu_share": other,
            "loadavg_1min_at_end": os.getloadavg()[0]}


def _latencies_by_config(intervals: list[dict]) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for x in intervals:
        out.setdefault(x["config"], []).extend(lt for _, lt in x["lat"])
    return {a: v for a, v in out.items() if v}


def _weighted_median(pairs: list[tuple[float, float]]) -> float:
    """The lower weighted median of (value, weight > 0) pairs."""
    pairs = sorted(pairs)
    half, acc = 0.5 * sum(w for _, w in pairs), 0.0
    for v, w in pairs:
        acc += w
        if acc >= half:
            return v
    return pairs[-1][0]


def interval_records(intervals: list[dict], env: MicroLLMPowerEnv, start_s: float, step_s: float, steps: int,
                     vt_end: float | None) -> list[dict]:
    """Per-step records of a live run on the env's step grid (virtual time ``start_s + k·step_s``), from its
    decision intervals: what a ``deploy.py run --telemetry`` file holds (:func:`score_telemetry`), so that
    the in-process score and the file's are one.

    ``intervals``: in order, one per decision: ``vt`` (its virtual time), ``config`` (the configuration run
    until the next decision or ``vt_end``), ``tokens`` and ``decode_ms`` (the median measured decode
    latency in it, ms/token; None: none measured). The first covers from ``start_s``.

    A step's configuration is the one that ran longest in it (ties: the first to run; the decisions fall
    where the live clock put them, late when a token was slow); its decode latency the median of the
    measured medians of that configuration's intervals in the step, weighted by their virtual seconds in
    it. A step without one takes the configuration's median over the run (weighted by tokens), and
    without any, the profile's (``source`` says which). Each record also names the first interval of its
    configuration in the step (``interval``), counts the measured intervals used (``intervals``) and the
    decisions that fell in the step (``decisions``).
    """
    iv = intervals
    if not iv:
        return []
    t0, dt = float(start_s), float(step_s)
    starts = [t0] + [x["vt"] for x in iv[1:]]  # nothing ran before the first decision: it covers from t0
    end_last = max(vt_end if vt_end is not None else iv[-1]["vt"], iv[-1]["vt"])
    ends = [x["vt"] for x in iv[1:]] + [end_last]
    per_cfg: dict[int, list[tuple[float, float]]] = {}
    for x in iv:
        if x["decode_ms"] is not None and x["tokens"] > 0:
            per_cfg.setdefault(x["config"], []).append((float(x["decode_ms"]), float(x["tokens"])))
    out = []
    for k in range(steps):
        w0, w1 = t0 + k * dt, t0 + (k + 1) * dt
        if w0 >= end_last:
            break
        cover: dict[int, float] = {}
        first: dict[int, int] = {}
        meas: dict[int, list[tuple[float, float]]] = {}
        for i, x in enumerate(iv):
            o = min(ends[i], w1) - max(starts[i], w0)
            if o > 0:
                a = x["config"]
                cover[a] = cover.get(a, 0.0) + o
                first.setdefault(a, i)
                if x["decode_ms"] is not None:
                    meas.setdefault(a, []).append((float(x["decode_ms"]), o))
        if not cover:
            break
        a = max(cover, key=lambda c: (cover[c], -first[c]))
        if meas.get(a):
            d, src = _weighted_median(meas[a]), "measured"
        elif per_cfg.get(a):
            d, src = _weighted_median(per_cfg[a]), "measured_config_median"
        else:
            d, src = float(env.costs.decode_ms[a]), "profile"
        out.append({"config": a, "decode_ms": float(d), "tps": 1000.0 / float(d), "source": src,
                    "intervals": len(meas.get(a, ())), "interval": first[a],
                    "decisions": sum(1 for x in iv if w0 <= x["vt"] < w1)})
    return out


def live_records(live: dict[str, Any], env: MicroLLMPowerEnv) -> list[dict]:
    """Per-step records of a live run (:func:`run_live`): :func:`interval_records` of its intervals, each
    with the median of the latencies recorded in it (the ``decode_ms`` of its telemetry record)."""
    iv = [{"vt": x["vt"], "config": x["config"], "tokens": x["tokens"],
           "decode_ms": statistics.median(lt for _, lt in x["lat"]) if x["lat"] else None} for x in live["intervals"]]
    return interval_records(iv, env, live["start_s"], live["step_s"], live["steps"], live["vt_end"])


def telemetry_intervals(path: str | Path, names: list[str]) -> tuple[list[dict], float | None]:
    """The decision intervals of a ``deploy.py run --telemetry`` file (the shape :func:`interval_records`
    reads) and the virtual time its generation ended (its ``generation_end`` event; None without one).

    A decision record opens an interval with its ``final_config`` (indexed in ``names``); the next record's
    ``tokens`` / ``decode_ms`` (or the ``generation_end`` event's) are what ran in it.
    """
    decisions, end = [], None
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            if "final_action" in rec:
                decisions.append(rec)
            elif rec.get("event") == "generation_end":
                end = rec
    idx = {n: i for i, n in enumerate(names)}
    out = []
    for i, rec in enumerate(decisions):
        nxt = decisions[i + 1] if i + 1 < len(decisions) else end
        if rec["final_config"] not in idx:
            raise ValueError(f"{path}: configuration {rec['final_config']!r} is not one of the env's {names}")
        out.append({"vt": float(rec["t_s"]), "config": idx[rec["final_config"]],
                    "tokens": int(nxt.get("tokens") or 0) if nxt is not None else 0,
                    "decode_ms": nxt.get("decode_ms") if nxt is not None else None})
    return out, (float(end["t_s"]) if end is not None and end.get("t_s") is not None else None)


def score_telemetry(path: str | Path, env: MicroLLMPowerEnv, trace: str | int, start: int | None = None,
                    steps: int | None = None) -> dict[str, Any]:
    """The live score of a ``deploy.py run --sensors replay:<trace> --telemetry <path>`` run from its telemetry
    file alone: :func:`score_records` of :func:`interval_records` of its decisions (``tokens``, ``decode_ms``,
    ``final_config``, ``t_s``) in ``env`` (the profile and ``EnvParams`` to score on, e.g. :func:`make_env`).

    ``start``: the env row the run started at (default: the first decision's virtual time // ``step_s``);
    ``steps``: how many env steps to score (default: every step the run covered).

    Returns :func:`score_records`'s dict plus ``records`` and ``start_row``.
    """
    intervals, vt_end = telemetry_intervals(path, list(env.costs.names))
    if not intervals:
        raise ValueError(f"{path}: no decision records")
    dt = env.params.step_s
    row = int(intervals[0]["vt"] // dt) if start is None else int(start)
    if steps is None:
        end = max(vt_end if vt_end is not None else intervals[-1]["vt"], intervals[-1]["vt"])
        steps = max(1, math.ceil((end - row * dt) / dt - 1e-9))
    recs = interval_records(intervals, env, row * dt, dt, steps, vt_end)
    out = score_records(env, trace, row, recs)
    out.update(records=recs, start_row=row)
    return out


# ---- the decision layer alone --------------------------------------------------------------------------------

def dry_replay(pf: PolicyFile, trace_path: str | Path, start: int, steps: int, workload: str = "env",
               min_dwell: int = 3) -> list[int]:
    """The runtime manager of ``deploy.py run`` on the replayed trace without the model, in exact virtual
    time (one decision every ``step_s`` from row ``start``): the workload fed as ``RunSession`` feeds it for
    ``--replay-workload workload``, with the profile's token rates for the model. ``job``: the current row's
    demand, ``backlog_frac`` of a job longer than the backlog cap = 1, the last token's latency = the
    profile's decode time (``deploy.job_workload``; the first decision without them, as ``_start``);
    ``env``: ``deploy.EnvWorkload`` with the queue served at the profile's rate. Returns the configuration
    of each step: the decision layer's part of the live-vs-sim gap, free of the host's timing and speed.
    """
    import traces as T
    from runtime.manager import ManagerConfig, RuntimeManager
    from runtime.replay import ReplaySensors
    from runtime.sensors import TEMP, SensorHub
    from runtime.shield import device_limits

    if workload not in ("env", "job"):
        raise ValueError(f"workload {workload!r}: env or job")
    trace = T.load_trace(trace_path)
    kind = trace.meta.device_kind
    dev = device_limits(kind, pf.meta)
    p = pf.params
    dt = p.step_s
    rp = ReplaySensors(trace, dev, clock=None, start_s=start * dt)
    mgr = RuntimeManager(pf, SensorHub([rp], clock=rp.now),
                         ManagerConfig(min_dwell_decisions=min_dwell, capacity_wh=rp.capacity_j / 3600.0),
                         None, device=dev, clock=rp.now, device_kind=kind)
    tps, ept = [float(x) for x in pf.decode_tokens_per_s], [float(x) for x in pf.energy_j_per_token]
    ew = deploy.EnvWorkload(p, dev) if workload == "env" else None
    idx, prev = 0, None  # RunSession starts at index 0 (the full model, as loaded) with no model power
    mgr.start_at(idx)
    out = []
    for k in range(steps):
        vt = (start + k) * dt
        rp.advance_to(vt)
        w = rp.workload()
        mgr.set_workload(demand_tps=w["demand_tps"], budget_w=w["budget_w"], deadline_left_s=w["deadline_left_s"],
                         base_w=w["base_w"], capacity_j=w["capacity_j"])  # no horizon: the device's own
        if mgr.lookahead:
            mgr.supply_ahead_w = rp.supply_ahead_w(mgr.lookahead, dt)
        if ew is not None:
            if k:
                ew.serve(prev["demand"], dt, 1000.0 / tps[idx], prev["temp_c"])
            mgr.set_workload(**ew.inputs(w["demand_tps"]))
        elif k:
            mgr.set_workload(**deploy.job_workload(math.inf, 1000.0 / tps[idx], p))
        if k:
            rp.set_model_power_w(min(w["demand_tps"], tps[idx]) * ept[idx])
        new = mgr.decide(vt)
        if new != idx:
            idx = new
            rp.set_model_power_w(min(w["demand_tps"], tps[idx]) * ept[idx])
        prev = {"demand": w["demand_tps"], "temp_c": float(mgr.hub.values[TEMP])}
        out.append(idx)
    return out


# ---- the host's other load ---------------------------------------------------------------------------------

def _cpu_busy_s() -> tuple[float, float]:
    """(busy CPU seconds of the whole host, of this process) so far (``/proc/stat``, ``getrusage``)."""
    import os
    import resource

    hz = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat", encoding="ascii") as fh:
        v = [float(x) for x in fh.readline().split()[1:]]
    busy = (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0.0)) / hz  # user nice system irq softirq steal
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return busy, ru.ru_utime + ru.ru_stime


class OtherLoad:
    """The share of the host's CPU capacity used by other processes between :meth:`start` and :meth:`stop`
    (0 = the host was ours alone, 1 = every core busy with someone else's work)."""

    def start(self) -> OtherLoad:
        self.t0, (self.b0, self.o0) = time.perf_counter(), _cpu_busy_s()
        return self

    def stop(self) -> float:
        import os

        dt = time.perf_counter() - self.t0
        b1, o1 = _cpu_busy_s()
        cores = os.cpu_count() or 1
        return max(0.0, ((b1 - self.b0) - (o1 - self.o0)) / (cores * dt)) if dt > 0 else 0.0


def wait_quiet(max_wait_s: float, threshold: float, probe_s: float = 3.0) -> dict[str, Any]:
    """Waits (at most ``max_wait_s``) until other processes use less than ``threshold`` of the CPU over a
    ``probe_s`` probe; returns the wait and the last probe's share."""
    t0 = time.perf_counter()
    while True:
        ol = OtherLoad().start()
        time.sleep(probe_s)
        share = ol.stop()
        waited = time.perf_counter() - t0
        if share < threshold or waited >= max_wait_s:
            return {"waited_s": round(waited, 1), "other_cpu_share_before": round(share, 3), "quiet": share < threshold}


# ---- comparison ----------------------------------------------------------------------------------------------

def rel_diff(live: float, sim: float) -> float | None:
    """(live − sim) / |sim| (None when sim is 0)."""
    return (live - sim) / abs(sim) if sim else None


def _brief(score: dict) -> dict:
    keys = ("return", "steps", "served", "quality_tokens", "energy_j", "thermal_steps", "slo_steps", "budget_steps",
            "dropped", "deaths", "switches")
    return {k: score[k] for k in keys}


def compare_trace(pf: PolicyFile, env: MicroLLMPowerEnv, name: str, start: int, sim: dict, live: dict,
                  min_dwell: int) -> dict[str, Any]:
    """Scores both runs with :func:`score_records` on their common steps and compares them."""
    recs_live = live_records(live, env)
    n = min(len(sim["records"]), len(recs_live))
    s_sim = score_records(env, name, start, sim["records"][:n])
    s_live = score_records(env, name, start, recs_live[:n])
    s_live_prof = score_records(env, name, start, profile_records(env, [r["config"] for r in recs_live[:n]]))
    # the same decisions at the run's typical speed: each configuration's median over the whole run
    med = {a: statistics.median(v) for a, v in _latencies_by_config(live["intervals"]).items()}
    recs_med = [dict(r, decode_ms=med.get(r["config"], r["decode_ms"])) for r in recs_live[:n]]
    recs_med = [dict(r, tps=1000.0 / r["decode_ms"]) for r in recs_med]
    s_live_med = score_records(env, name, start, recs_med)
    ivs = live["intervals"]
    sim_cfg = [r["config"] for r in sim["records"][:n]]
    live_cfg = [r["config"] for r in recs_live[:n]]
    live_pol = [ivs[r["interval"]]["policy_action"] for r in recs_live[:n]]
    step_s, start_s = live["step_s"], live["start_s"]
    # decisions vs the step grid: the k-th decision opens step k when the live clock keeps up
    lag = [x["vt"] - (start_s + k * step_s) for k, x in enumerate(ivs)]
    # the replay device's own state at each decision vs the scored state at the step boundary nearest to it
    det = s_live["steps_detail"]
    d_temp, d_soc = [], []
    for x in ivs[1:]:
        j = int(round((x["vt"] - start_s) / step_s)) - 1
        if 0 <= j < len(det):
            d_temp.append(abs(x["temp_c"] - det[j]["temp_c"]))
            d_soc.append(abs(x["soc"] - det[j]["soc"]))
    t_max = env.trace.device.t_max_c
    names = env.costs.names
    window_end = start_s + n * step_s
    in_window = [x for x in ivs if x["vt"] < window_end]
    measured: dict[str, dict] = {}
    for a in sorted(set(live_cfg)):
        lat = [lt for x in in_window if x["config"] == a for _, lt in x["lat"]]
        if lat:
            med = statistics.median(lat)
            measured[names[a]] = {"steps": live_cfg.count(a), "tokens_measured": len(lat), "median_ms": med,
                                  "p90_ms": float(np.percentile(lat, 90)), "max_ms": max(lat),
                                  "profile_ms": float(env.costs.decode_ms[a]),
                                  "profile_error_pct": 100.0 * (float(env.costs.decode_ms[a]) - med) / med}
    all_lat = [lt for x in in_window for _, lt in x["lat"]]
    # counterfactuals: the policy in the env given what the live manager gave it
    backlog = [ivs[r["interval"]]["backlog_frac"] for r in recs_live[:n]]
    cfs = {}
    for label, kw in (("live_backlog_obs", {"obs_override": {"backlog_frac": backlog}}),
                      ("dwell", {"min_dwell": min_dwell}),
                      ("live_backlog_obs+dwell", {"obs_override": {"backlog_frac": backlog}, "min_dwell": min_dwell})):
        cf = simulate(pf, env, name, start, n, **kw)
        sc = score_records(env, name, start, cf["records"])
        cfg = [r["config"] for r in cf["records"]]
        m = min(len(cfg), n)
        cfs[label] = {"return": sc["return"], "rel_diff_vs_sim": rel_diff(sc["return"], s_sim["return"]),
                      "rel_diff_live_vs_this": rel_diff(s_live["return"], sc["return"]),
                      "agreement_with_live": float(np.mean([cfg[k] == live_cfg[k] for k in range(m)])) if m else None,
                      "switches": sc["switches"]}
    agree = float(np.mean([a == b for a, b in zip(sim_cfg, live_cfg)])) if n else None
    agree_pol = float(np.mean([a == b for a, b in zip(sim_cfg, live_pol)])) if n else None
    return {
        "trace": name, "start_row": int(start), "start_s": start_s, "steps": n, "device_kind": env.trace.device_kind,
        "sim": _brief(s_sim), "live": _brief(s_live), "live_decisions_profile_speeds": _brief(s_live_prof),
        "live_run_median_speeds": _brief(s_live_med),
        "sim_env_return_check": {"env_return": sim["env_return"] if len(sim["records"]) == n else None,
                                 "score_records": s_sim["return"]},
        "rel_diff": rel_diff(s_live["return"], s_sim["return"]),
        "rel_diff_decisions_only": rel_diff(s_live_prof["return"], s_sim["return"]),
        "rel_diff_speed_only": rel_diff(s_live["return"], s_live_prof["return"]),
        "rel_diff_run_median_speeds": rel_diff(s_live_med["return"], s_sim["return"]),
        "agreement": agree, "agreement_live_policy_action_vs_sim": agree_pol,
        "live_decisions": len(in_window),
        "live_overrides": dict(Counter(x["reason"] for x in in_window)),
        "live_states": dict(Counter(x["state"] for x in in_window)),
        "configs_sim": dict(Counter(names[a] for a in sim_cfg)),
        "configs_live": dict(Counter(names[a] for a in live_cfg)),
        "sim_configs_per_step": sim_cfg, "live_configs_per_step": live_cfg, "live_policy_action_per_step": live_pol,
        "live_decode_ms_per_step": [round(r["decode_ms"], 4) for r in recs_live[:n]],
        "live_measured": measured,
        "live_tokens": int(sum(x["tokens"] for x in in_window)),
        "live_latency_ms": {"median": statistics.median(all_lat) if all_lat else None,
                            "p90": float(np.percentile(all_lat, 90)) if all_lat else None,
                            "max": max(all_lat) if all_lat else None,
                            "tokens_over_slo": sum(x > pf.params.slo_ms for x in all_lat)},
        "live_record_sources": dict(Counter(r["source"] for r in recs_live[:n])),
        "live_steps_without_decision": sum(r["decisions"] == 0 for r in recs_live[:n]),
        "live_backlog_frac_per_step": backlog,
        "replay_device_check": {"max_abs_temp_diff_c": max(d_temp) if d_temp else None,
                                "max_abs_soc_diff": max(d_soc) if d_soc else None,
                                "thermal_decisions_replay": sum(x["temp_c"] > t_max for x in in_window)},
        "decision_lag_s": {"max": max(lag) if lag else None, "min": min(lag) if lag else None,
                           "first": lag[0] if lag else None},
        "live_wall_s": live["wall_s"], "live_stop_reason": live["stop_reason"],
        "host_other_cpu_share_during_live": live["other_cpu_share"], "loadavg_1min_at_end": live["loadavg_1min_at_end"],
        "quiet_wait": live.get("quiet_wait"),
        "live_summary": {k: live["summary"].get(k) for k in ("tokens", "wall_s", "tokens_per_s", "switches",
                                                              "decisions", "overrides", "final_state",
                                                              "final_soc", "final_temp_c", "virtual_s")},
        "counterfactual_sims": cfs,
    }


def first_demand_row(env: MicroLLMPowerEnv, name: str) -> int:
    """The window's start: the trace's first row with a demand (0 when it has none)."""
    tr = next(t for t in env.traces if t.name == name)
    d = np.asarray(tr.demand_tps)
    return int(np.argmax(d > 0)) if (d > 0).any() else 0


# ---- report --------------------------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100.0 * x:+.1f} %"


VARIANTS = {
    "env": "`deploy.py run` (`--replay-workload env`, the default: the env's workload inputs — the demand of the "
           "last step, the emulated queue, the step's latency)",
    "job": "`deploy.py run --replay-workload job` (the job's backlog, the current row's demand, the last token's "
           "latency: `deploy.py run` before 2026-12-01)",
}


def _table(rows: list[dict], a: dict) -> list[str]:
    lines = [
        "| trace | rows | sim score | live score | live vs sim | same decisions, profile speeds | same decisions, "
        "run-median speeds | configurations agree | policy action agrees | SLO steps sim / live | thermal steps "
        "sim / live | switches sim / live | live ms/token median / p90 / max | decisions (latest, s) | other CPU "
        "use | live overrides |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ov = ", ".join(f"{k} {v}" for k, v in sorted(r["live_overrides"].items()) if k != "none") or "none"
        lat, sim, live = r["live_latency_ms"], r["sim"], r["live"]
        prof, med = r["live_decisions_profile_speeds"], r["live_run_median_speeds"]
        lines.append(
            f"| {r['trace']} | {r['start_row']}–{r['start_row'] + r['steps'] - 1} | {sim['return']:.3f} | "
            f"{live['return']:.3f} | {_pct(r['rel_diff'])} | "
            f"{prof['return']:.3f} ({_pct(r['rel_diff_decisions_only'])}) | "
            f"{med['return']:.3f} ({_pct(r['rel_diff_run_median_speeds'])}) | "
            f"{100 * r['agreement']:.0f} % | {100 * r['agreement_live_policy_action_vs_sim']:.0f} % | "
            f"{sim['slo_steps']} / {live['slo_steps']} | {sim['thermal_steps']} / {live['thermal_steps']} | "
            f"{sim['switches']} / {live['switches']} | {lat['median']:.2f} / {lat['p90']:.2f} / {lat['max']:.0f} | "
            f"{r['live_decisions']} ({r['decision_lag_s']['max']:.1f}) | "
            f"{100 * r['host_other_cpu_share_during_live']:.0f} % | {ov} |")
    lines += [
        f"| **all** | | **{a['sim_return']:.3f}** | **{a['live_return']:.3f}** | **{_pct(a['rel_diff'])}** | "
        f"{a['live_profile_speeds_return']:.3f} ({_pct(a['rel_diff_decisions_only'])}) | "
        f"{a['live_run_median_speeds_return']:.3f} ({_pct(a['rel_diff_run_median_speeds'])}) | "
        f"{100 * a['agreement']:.0f} % | {100 * a['agreement_policy_action']:.0f} % | "
        f"{a['sim_slo_steps']} / {a['live_slo_steps']} | {a['sim_thermal_steps']} / {a['live_thermal_steps']} | "
        "| | | | |", "",
        "Within 5 %: " + ", ".join(r["trace"] + (" yes" if r["within_5pct"] else " no") for r in rows) + "; "
        f"all traces together {'yes' if a['within_5pct'] else 'no'} ({_pct(a['rel_diff'])}); "
        f"mean |live vs sim| per trace {100 * a['mean_abs_rel_diff']:.1f} %.", ""]
    return lines


def markdown(res: dict) -> str:
    """The results as Markdown (``benchmarks/results/live_vs_sim.md``; docs/sim2real.md quotes it)."""
    fp = res["host_fingerprint"]
    lines = [
        f"# Live score versus simulated score ({res['date']})", "",
        f"Host {fp['cpu_model']}, {fp['cores_logical']} logical cores, torch {fp['torch_version']}, "
        f"bench_score_us {fp['bench_score_us']}; {res['threads']} torch threads. Policy `{res['policy']}` with the "
        f"tables of `{res['profile']}` (re-exported); {res['steps']} steps of {res['step_s']:g} s per trace; "
        f"live: `deploy.py run --sensors replay:<trace> --speed {res['speed']:g} --every-ms "
        f"{1000.0 * res['step_s'] / res['speed']:g}` (one decision per env step); total live wall time "
        f"{res['live_wall_s_total']:.0f} s, whole benchmark {res['wall_s_total']:.0f} s. "
        f"Command: `{res['command']}`.", ""]
    for key, v in res["variants"].items():
        lines += [f"## Live: {VARIANTS[key]}", ""] + _table(v["traces"], v["aggregate"])
    lines += ["## The decision layer alone", "",
              "The runtime manager of `deploy.py run` on the same replayed window without the model, in exact "
              "virtual time (a decision every step), with the profile's token rates (`dry_replay`); its "
              "configurations scored like the others.", "",
              "| trace | sim score | --replay-workload job | agree | --replay-workload env | agree |",
              "|---|---|---|---|---|---|"]
    dr = res["dry_replay"]
    for r0, r1 in zip(dr["job"]["traces"], dr["env"]["traces"]):
        lines.append(f"| {r0['trace']} | {r0['sim_return']:.3f} | {r0['dry_return']:.3f} ({_pct(r0['rel_diff'])}) | "
                     f"{100 * r0['agreement']:.0f} % | {r1['dry_return']:.3f} ({_pct(r1['rel_diff'])}) | "
                     f"{100 * r1['agreement']:.0f} % |")
    a0, a1 = dr["job"]["aggregate"], dr["env"]["aggregate"]
    lines += [f"| **all** | **{a0['sim_return']:.3f}** | **{a0['dry_return']:.3f} ({_pct(a0['rel_diff'])})** | | "
              f"**{a1['dry_return']:.3f} ({_pct(a1['rel_diff'])})** | |", ""]
    v = res["variants"].get("job")
    if v:
        lines += [
            "## Counterfactual simulations of the --replay-workload job run", "",
            "The policy in the env given what the live manager gave it (`deploy.py run --replay-workload job`): "
            "score and agreement of their configurations with the live run's.", "",
            "| trace | sim | + live backlog_frac observation | + dwell rule | + both | live |",
            "|---|---|---|---|---|---|"]
        for r in v["traces"]:
            c = r["counterfactual_sims"]
            cells = [f"{c[k]['return']:.3f} ({100 * c[k]['agreement_with_live']:.0f} % agree)"
                     for k in ("live_backlog_obs", "dwell", "live_backlog_obs+dwell")]
            lines.append(f"| {r['trace']} | {r['sim']['return']:.3f} ({100 * r['agreement']:.0f} % agree) | "
                         + " | ".join(cells) + f" | {r['live']['return']:.3f} |")
    return "\n".join(lines) + "\n"


def aggregate(rows: list[dict]) -> dict[str, Any]:
    sim = sum(r["sim"]["return"] for r in rows)
    live = sum(r["live"]["return"] for r in rows)
    prof = sum(r["live_decisions_profile_speeds"]["return"] for r in rows)
    med = sum(r["live_run_median_speeds"]["return"] for r in rows)
    steps = sum(r["steps"] for r in rows)
    rds = [abs(r["rel_diff"]) for r in rows if r["rel_diff"] is not None]
    return {
        "sim_return": sim, "live_return": live, "live_profile_speeds_return": prof,
        "live_run_median_speeds_return": med,
        "rel_diff": rel_diff(live, sim), "rel_diff_decisions_only": rel_diff(prof, sim),
        "rel_diff_run_median_speeds": rel_diff(med, sim),
        "mean_abs_rel_diff": float(np.mean(rds)) if rds else None,
        "within_5pct": rel_diff(live, sim) is not None and abs(rel_diff(live, sim)) <= 0.05,
        "traces_within_5pct": sum(r["within_5pct"] for r in rows), "traces": len(rows),
        "agreement": sum(r["agreement"] * r["steps"] for r in rows) / steps if steps else None,
        "agreement_policy_action": (sum(r["agreement_live_policy_action_vs_sim"] * r["steps"] for r in rows) / steps
                                    if steps else None),
        "sim_slo_steps": sum(r["sim"]["slo_steps"] for r in rows),
        "live_slo_steps": sum(r["live"]["slo_steps"] for r in rows),
        "sim_thermal_steps": sum(r["sim"]["thermal_steps"] for r in rows),
        "live_thermal_steps": sum(r["live"]["thermal_steps"] for r in rows),
    }


# ---- CLI -----------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict[str, Any]:
    from model.cli import nonneg_float, positive_float, positive_int
    from runtime.safeio import atomic_write_text, refuse_existing

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policy", default=DEFAULT_POLICY, help="the exported policy file")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="the calibrated profile of this host")
    p.add_argument("--traces", default=",".join(DEFAULT_TRACES), help="comma-separated default test-split traces")
    p.add_argument("--steps", type=positive_int, default=90, help="env steps per trace (10 s each)")
    p.add_argument("--speed", type=positive_float, default=10.0, help="replay: virtual seconds per wall second")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads (the profile's)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"live variants among {list(VARIANTS)}")
    p.add_argument("--max-tokens", type=positive_int, default=1_000_000,
                   help="deploy.py run --max-tokens (the job; it must outlast the window)")
    p.add_argument("--quiet-wait-s", type=nonneg_float, default=180.0,
                   help="before each live run, wait at most this long for other processes to leave the CPU")
    p.add_argument("--quiet-threshold", type=float, default=0.15,
                   help="share of the host's CPU other processes may use for it to count as quiet")
    p.add_argument("--out", default="benchmarks/results/live_vs_sim.json", help="JSON; the .md beside it")
    p.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    a = p.parse_args(argv)
    variants = [x.strip() for x in a.variants.split(",") if x.strip()]
    if not variants or set(variants) - set(VARIANTS):
        p.error(f"argument --variants: {a.variants!r}; allowed: a comma-separated subset of {list(VARIANTS)}")
    out = Path(a.out)
    for f in (out, out.with_suffix(".md")):
        try:
            refuse_existing(f, a.force, "results file")
        except FileExistsError as exc:
            raise SystemExit(f"live_vs_sim: {exc}") from None
    import traces as T
    from model.profile import host_fingerprint

    t_all = time.perf_counter()
    fp = host_fingerprint(a.threads)
    names = [x.strip() for x in a.traces.split(",") if x.strip()]
    rows: dict[str, list[dict]] = {v: [] for v in variants}
    dry: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    src = Path(a.policy) if Path(a.policy).exists() else REPO / a.policy
    profile = Path(a.profile) if Path(a.profile).exists() else REPO / a.profile
    with tempfile.TemporaryDirectory() as tmp:
        policy = reexport_policy(src, profile, Path(tmp) / "policy-calibrated.npz")
        pf = load_policy_file(policy)
        env = make_env(profile, pf, T.default_trace_set_dir(), "test")
        known = [t.name for t in env.traces]
        bad = [x for x in names if x not in known]
        if bad:
            raise SystemExit(f"live_vs_sim: --traces {bad} not in the default test split {known}")
        for name in names:
            start = first_demand_row(env, name)
            sim = simulate(pf, env, name, start, a.steps)
            sim_cfg = [r["config"] for r in sim["records"]]
            for var in VARIANTS:
                cfg = dry_replay(pf, T.default_trace_set_dir() / f"{name}.csv", start, len(sim_cfg),
                                 workload=var, min_dwell=DEFAULT_MIN_DWELL)
                sc = score_records(env, name, start, profile_records(env, cfg))
                dry[var].append({"trace": name, "start_row": start, "steps": sc["steps"],
                                 "sim_return": sim["env_return"], "dry_return": sc["return"],
                                 "rel_diff": rel_diff(sc["return"], sim["env_return"]),
                                 "agreement": float(np.mean([x == y for x, y in zip(cfg, sim_cfg)])),
                                 "thermal_steps": sc["thermal_steps"], "slo_steps": sc["slo_steps"],
                                 "switches": sc["switches"], "configs_per_step": cfg})
            for var in variants:
                tel = Path(tmp) / f"{name}-{var}.jsonl"
                argv_run = run_argv(policy, T.default_trace_set_dir() / f"{name}.csv", start * pf.params.step_s,
                                    pf.params.step_s, a.speed, a.threads, a.max_tokens, telemetry=tel,
                                    replay_workload=var)
                min_dwell = int(deploy.build_parser().parse_args(argv_run).min_dwell)
                assert min_dwell == DEFAULT_MIN_DWELL
                print(f"[live_vs_sim] {name} ({var}): rows {start}..{start + a.steps - 1}", file=sys.stderr,
                      flush=True)
                quiet = wait_quiet(a.quiet_wait_s, a.quiet_threshold) if a.quiet_wait_s > 0 else None
                live = run_live(argv_run, a.steps, pf.params.step_s)
                live["quiet_wait"] = quiet
                row = compare_trace(pf, env, name, start, sim, live, min_dwell=min_dwell)
                chk = row["sim_env_return_check"]
                if chk["env_return"] is not None and chk["env_return"] != chk["score_records"]:
                    raise SystemExit(f"live_vs_sim: score_records {chk['score_records']!r} != the env's return "
                                     f"{chk['env_return']!r} on the simulated run of {name}")
                # the same live score from the run's telemetry file alone
                row["live_return_from_telemetry"] = score_telemetry(tel, env, name, start, row["steps"])["return"]
                if row["live_return_from_telemetry"] != row["live"]["return"]:
                    raise SystemExit(f"live_vs_sim: score_telemetry {row['live_return_from_telemetry']!r} != the "
                                     f"in-process live score {row['live']['return']!r} on {name} ({var})")
                row["within_5pct"] = row["rel_diff"] is not None and abs(row["rel_diff"]) <= 0.05
                row["live_argv"] = ["deploy.py"] + ["<re-exported policy>" if "policy-calibrated" in x else
                                                    "<telemetry>" if x == str(tel) else x for x in argv_run]
                rows[var].append(row)
                print(f"[live_vs_sim] {name} ({var}): sim {row['sim']['return']:.3f} live {row['live']['return']:.3f} "
                      f"({_pct(row['rel_diff'])}), agreement {100 * row['agreement']:.0f} %, "
                      f"other CPU use {100 * row['host_other_cpu_share_during_live']:.0f} %, "
                      f"live {row['live_wall_s']:.0f} s", file=sys.stderr, flush=True)
    res = {
        "date": a.date, "host_fingerprint": fp, "threads": a.threads, "policy": a.policy, "profile": a.profile,
        "policy_reexported_with_profile_tables": True, "steps": a.steps, "step_s": pf.params.step_s,
        "speed": a.speed, "max_tokens": a.max_tokens,
        "command": "python benchmarks/live_vs_sim.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "score": "score_records: the env's return (runtime.dynamics.step_core reward) of per-step records "
                 "(config, decode_ms, tps); sim: the profile's decode_ms/tps; live: measured per step",
        "variants": {v: {"description": VARIANTS[v], "traces": rows[v], "aggregate": aggregate(rows[v])}
                     for v in variants},
        "dry_replay": {v: {"description": "the runtime manager without the model, exact virtual time, profile "
                                          "speeds: " + VARIANTS[v], "traces": dry[v],
                           "aggregate": {"sim_return": sum(r["sim_return"] for r in dry[v]),
                                         "dry_return": sum(r["dry_return"] for r in dry[v]),
                                         "rel_diff": rel_diff(sum(r["dry_return"] for r in dry[v]),
                                                              sum(r["sim_return"] for r in dry[v])),
                                         "max_abs_rel_diff": max(abs(r["rel_diff"]) for r in dry[v])}}
                       for v in VARIANTS},
        "live_wall_s_total": sum(r["live_wall_s"] for v in variants for r in rows[v]),
        "wall_s_total": time.perf_counter() - t_all,
    }
    atomic_write_text(out, json.dumps(res, indent=1) + "\n")
    md = markdown(res)
    atomic_write_text(out.with_suffix(".md"), md)
    print(md)
    return res


if __name__ == "__main__":
    main()
