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
  (``deploy.py export`` has no ``--profile`` and no run folder of this policy is committed). Both
  sides below use that copy.
* **simulated** (:func:`simulate`): the exported policy (``runtime.policy.NumpyPolicy``, with the
  env's action masks) steps ``MicroLLMPowerEnv`` on the calibrated profile from the same row.
* **live** (:func:`run_live`): ``deploy.py run --sensors replay:<trace> --start-s <row·10>
  --speed S --every-ms 10000/S --threads 2`` in this process (``deploy.RunSession``; the subclass
  :class:`RecordingSession` only records, and stops at the first decision past the window's end): the real
  model generates for real under the runtime manager (policy, shield, dwell, online correction), re-deciding
  every 10 virtual seconds, i.e. once per env step. For each decision interval it records the configuration
  run and every per-token decode latency the run feeds its online correction (a prompt's first token and
  the first after a switch are left out, as there). Two variants: ``as_is`` (``deploy.py run`` unchanged)
  and ``env_workload`` (the manager fed the env's demand / backlog / latency inputs: the change to
  ``deploy.py run`` this benchmark proposes, see :class:`RecordingSession`). Before each live run the
  benchmark waits (``--quiet-wait-s``) for other processes to leave the CPU, and it reports the share they
  used during the run: with 2 torch threads on a shared 2-core host the model slows down by orders of
  magnitude.

Both are scored by one function, :func:`score_records`, from the same per-step fields — the
configuration run, its decode latency (ms/token) and its token rate — by stepping the env itself
(``runtime.dynamics.step_core``: quality × served tokens, thermal, SLO, budget, drops, death) with the
step's latency and rate put in place of the profile's for the configuration run. For the simulated
records those are the profile's, so the score is the env's return to the last bit (checked on every run);
for the live records they are what the live model measured in that step (median over the step's tokens,
rate = 1000 / median ms, as the profile defines ``decode_tokens_per_s``). The battery, temperature and
queue are the env's in both: on this machine they are modelled either way (the replay device of
``deploy.py run`` integrates the same equations; its own SoC and temperature are reported as a check).

A live step is a step of the env's grid of virtual time: its configuration is the one that ran longest in
it, its latency the median of the tokens measured in it (:func:`live_records`), so late decisions (a slow
token delays the next one) are accounted where they fell.

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
from runtime.policy import PER_CONFIG_ARRAYS, NumpyPolicy, PolicyFile, load_policy_file, save_policy_file  # noqa: E402

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
    ``decode_tokens_per_s``) and ``meta.profile`` / ``meta.model`` are ``profile``'s: the same actor,
    normalisation, parameters and configuration space, as ``deploy.py export`` would write it from the
    same run folder on that profile.

    Raises:
        ValueError: the profile's configuration space or configuration features differ from the policy's.
    """
    from envs.tables import load_cost_tables
    from model.profile_schema import load_profile
    from runtime.safeio import file_sha256

    pf = load_policy_file(src)
    costs = load_cost_tables(profile)
    if list(costs.names) != pf.names:
        raise ValueError(f"{profile}: configurations {list(costs.names)} differ from the policy's {pf.names}")
    if not np.allclose(costs.features, pf.config_features, atol=1e-12):
        raise ValueError(f"{profile}: configuration features differ from the policy's")
    data = load_profile(profile).data
    meta = dict(pf.meta)
    meta["profile"] = {"path": str(Path(profile).resolve()), "sha256": file_sha256(profile), "name": data.get("name"),
                       "energy_source": costs.energy_source}
    meta["model"] = {"checkpoint_sha256": (data.get("model") or {}).get("checkpoint_sha256")}
    meta["reexported"] = {"from": str(src), "from_sha256": pf.sha256,
                          "why": "benchmarks/live_vs_sim.py: the policy's tables on the calibrated profile"}
    tables = {"energy_j_per_token": costs.ept_j, "power_w": costs.power_w, "decode_tokens_per_s": costs.tps}
    assert set(tables) == set(PER_CONFIG_ARRAYS)
    save_policy_file(out, pf.layers, meta, pf.obs_mean, pf.obs_var, tables, pf.config_features)
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
    virtual time.

    With ``env_workload`` False (``deploy.py run`` as it is) nothing of the run changes: the overrides call
    the session's own methods and only read its state. An interval starts at a decision (the first one
    before the first token) and holds the configuration the model ran until the next decision, the decode
    latencies the session fed its online correction (with the wall time of their token), the token count,
    and what the manager saw and did (virtual time, SoC, temperature, the workload inputs, policy action,
    override reason, state). The run stops at the first decision at or after ``window_end_s`` of virtual
    time (``stop_reason`` ``"window_end"``).

    With ``env_workload`` True (the change to ``deploy.py run`` this benchmark proposes for replay mode),
    three workload inputs of the manager are the environment's instead: ``demand_tps`` the demand of the
    interval just served (the env's "demand of the last step"; the replay's model power still follows the
    current row), ``backlog_frac`` the emulated device's queue of the trace's demand served at the live
    model's measured rate (instead of the job's remaining tokens), and ``latency_over_slo`` that interval's
    latency as the env defines it (measured decode time / throttle + the queue's wait) instead of the last
    token's.
    """

    def __init__(self, args: argparse.Namespace, window_end_s: float, env_workload: bool = False) -> None:
        self.window_end_s = float(window_end_s)
        self.env_workload = bool(env_workload)
        self.intervals: list[dict[str, Any]] = []
        self._queue = self._step_lat_ms = 0.0
        super().__init__(args)

    def _open_manager(self) -> None:
        super()._open_manager()
        if self.env_workload:
            decide = self.mgr.decide

            def decide_with_env_workload(now_s: float | None = None) -> int:
                self._env_workload(self.clock() if now_s is None else now_s)
                return decide(now_s)

            self.mgr.decide = decide_with_env_workload

    def _env_workload(self, now: float) -> None:
        """The env's demand / backlog / latency inputs, from the interval just finished (none before the first)."""
        mgr, p = self.mgr, self.params
        if self.intervals:
            iv = self.intervals[-1]
            lat = [x for _, x in iv["lat"]]
            dec = statistics.median(lat) if lat else 1000.0 / self.tps_prof[iv["config"]]
            dev = self.device
            t = iv["temp_c"]
            theta = 1.0 if t <= dev.t_max_c else max(dev.throttle_min, 1.0 - dev.throttle_per_c * (t - dev.t_max_c))
            rate = 1000.0 / dec * theta
            requested = self._queue + iv["row_demand_tps"] * max(0.0, now - iv["vt"])
            served = min(requested, rate * max(0.0, now - iv["vt"]))
            self._queue = min(requested - served, p.backlog_cap_tokens)
            self._step_lat_ms = dec / theta + 1000.0 * self._queue / rate
            mgr.demand_tps = iv["row_demand_tps"]
        mgr.backlog_frac = self._queue / p.backlog_cap_tokens
        mgr.latency_over_slo = self._step_lat_ms / p.slo_ms

    def _open_interval(self, wall: float) -> None:
        from runtime.sensors import SOC, TEMP
        from runtime.shield import REASON_NAMES

        mgr, v = self.mgr, self.hub.values
        self.intervals.append({
            "vt": float(self.replay.vt) if self.replay is not None else float(self.clock()), "wall": float(wall),
            "config": int(self.idx), "policy_action": int(mgr.last_policy_action),
            "reason": REASON_NAMES[mgr.last_reason], "state": mgr.state.name, "soc": float(v[SOC]),
            "temp_c": float(v[TEMP]), "demand_tps": float(mgr.demand_tps), "row_demand_tps": float(self.demand_tps),
            "backlog_frac": float(mgr.backlog_frac),
            "latency_over_slo": None if mgr.latency_over_slo is None else float(mgr.latency_over_slo),
            "lat": [], "tokens": 0})

    def _start(self, total_tokens: int) -> None:
        super()._start(total_tokens)
        self._open_interval(self.t_wall0)

    def decide(self, t: float) -> None:
        super().decide(t)
        self._open_interval(t)

    def on_token(self, tok: int, t: float) -> None:
        skipped = self._skip_lat or self.pf is None  # as RunSession.on_token: not fed to the correction
        super().on_token(tok, t)
        iv = self.intervals[-1]
        iv["tokens"] += 1
        if not skipped:
            iv["lat"].append((float(t), float(self.last_lat_ms)))

    def _trace_ended(self) -> bool:
        rp = self.replay
        if rp is not None and self.intervals and rp.vt >= self.window_end_s:
            if self.stop_reason is None:
                self.stop_reason = "window_end"
            return True
        return super()._trace_ended()


def run_argv(policy: str | Path, trace_path: str | Path, start_s: float, step_s: float, speed: float,
             threads: int, max_tokens: int, prompt: str = DEFAULT_PROMPT, seed: int = 0,
             checkpoint: str | Path | None = None, telemetry: str | Path | None = None) -> list[str]:
    """The ``deploy.py run`` arguments of a live run that decides once per env step (virtual time)."""
    argv = ["run", "--policy", str(policy), "--sensors", f"replay:{trace_path}", "--start-s", repr(float(start_s)),
            "--speed", repr(float(speed)), "--every-ms", repr(1000.0 * step_s / speed), "--replay-end", "stop",
            "--prompt", prompt, "--max-tokens", str(int(max_tokens)), "--threads", str(int(threads)),
            "--seed", str(int(seed)), "--no-status"]
    if checkpoint is not None:
        argv += ["--checkpoint", str(checkpoint)]
    if telemetry is not None:
        argv += ["--telemetry", str(telemetry), "--force"]
    return argv


def run_live(argv: list[str], steps: int, step_s: float, env_workload: bool = False,
             quiet: bool = True) -> dict[str, Any]:
    """Runs ``deploy.py run`` (``argv`` as on its command line) in this process over ``steps`` env steps of
    virtual time from its ``--start-s`` (``env_workload``: :class:`RecordingSession`); returns the intervals,
    the session's summary, its stop reason, the wall time and the share of the CPU other processes used
    meanwhile."""
    import os

    args = deploy.build_parser().parse_args(argv)
    t0 = time.perf_counter()
    out = io.StringIO()
    with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
        sess = RecordingSession(args, args.start_s + steps * step_s, env_workload)
        load = OtherLoad().start()  # from the model loaded to the end of generation
        try:
            sess.generate(sess.prompts)
        finally:
            other = load.stop()
            summary = sess.close()
    return {"intervals": sess.intervals, "summary": summary, "stop_reason": sess.stop_reason,
            "vt_end": float(sess.replay.vt) if sess.replay is not None else None,
            "start_s": float(args.start_s), "speed": float(args.speed), "step_s": float(step_s), "steps": int(steps),
            "wall_s": time.perf_counter() - t0, "argv": argv, "names": list(sess.names), "env_workload": env_workload,
            "other_cpu_share": other, "loadavg_1min_at_end": os.getloadavg()[0]}


def _latencies_by_config(intervals: list[dict]) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for x in intervals:
        out.setdefault(x["config"], []).extend(lt for _, lt in x["lat"])
    return {a: v for a, v in out.items() if v}


def live_records(live: dict[str, Any], env: MicroLLMPowerEnv) -> list[dict]:
    """Per-step records of a live run on the env's step grid (virtual time ``start_s + k·step_s``).

    A step's configuration is the one that ran longest in it (the decisions fall where the live clock put
    them: late when a token was slow); its decode latency is the median of the latencies measured in it
    under that configuration (a token's virtual time: its decision's plus the wall time since × speed), its
    rate 1000 / that median. A step without such a token takes the median of every measurement of that
    configuration in the run, and without any, the profile's figures (``source`` says which). Each record
    also names the interval it took its configuration from (``interval``) and counts the decisions that
    fell in the step (``decisions``).
    """
    iv, speed, dt = live["intervals"], live["speed"], live["step_s"]
    t0, n = live["start_s"], live["steps"]
    if not iv:
        return []
    starts = [t0] + [x["vt"] for x in iv[1:]]  # nothing ran before the first decision: it covers from t0
    end_last = max(live["vt_end"] or iv[-1]["vt"], iv[-1]["vt"])
    ends = [x["vt"] for x in iv[1:]] + [end_last]
    toks: list[tuple[float, int, float]] = []  # (virtual time, interval, latency ms)
    per_cfg: dict[int, list[float]] = {}
    for i, x in enumerate(iv):
        for wall, lat in x["lat"]:
            toks.append((x["vt"] + (wall - x["wall"]) * speed, i, lat))
            per_cfg.setdefault(x["config"], []).append(lat)
    out = []
    for k in range(n):
        w0, w1 = t0 + k * dt, t0 + (k + 1) * dt
        if w0 >= end_last:
            break
        cover: dict[int, float] = {}
        first: dict[int, int] = {}
        for i, x in enumerate(iv):
            o = min(ends[i], w1) - max(starts[i], w0)
            if o > 0:
                cover[x["config"]] = cover.get(x["config"], 0.0) + o
                first.setdefault(x["config"], i)
        if not cover:
            break
        a = max(cover, key=lambda c: (cover[c], -first[c]))
        lat = [lt for vt, i, lt in toks if w0 <= vt < w1 and iv[i]["config"] == a]
        if lat:
            d, src = statistics.median(lat), "measured"
        elif per_cfg.get(a):
            d, src = statistics.median(per_cfg[a]), "measured_config_median"
        else:
            d, src = float(env.costs.decode_ms[a]), "profile"
        out.append({"config": a, "decode_ms": float(d), "tps": 1000.0 / float(d), "source": src,
                    "samples": len(lat), "interval": first[a],
                    "decisions": sum(1 for x in iv if w0 <= x["vt"] < w1)})
    return out


# ---- the decision layer alone --------------------------------------------------------------------------------

def dry_replay(pf: PolicyFile, trace_path: str | Path, start: int, steps: int, env_workload: bool,
               min_dwell: int = 3) -> list[int]:
    """The runtime manager of ``deploy.py run`` on the replayed trace without the model, in exact virtual
    time (one decision every ``step_s`` from row ``start``): the workload fed as ``RunSession.decide`` feeds
    it, with the profile's token rates for the model. ``env_workload`` False: as ``deploy.py run`` does
    today (the current row's demand, ``backlog_frac`` of a job longer than the backlog cap = 1, the last
    token's latency = the profile's decode time; the first decision without them, as ``_start``); True: as
    :class:`RecordingSession` with ``env_workload`` (the env's inputs, the queue served at the profile's rate).
    Returns the configuration of each step: the decision layer's part of the live-vs-sim gap, free of the
    host's timing and speed.
    """
    import traces as T
    from runtime.manager import ManagerConfig, RuntimeManager
    from runtime.replay import ReplaySensors
    from runtime.sensors import TEMP, SensorHub
    from runtime.shield import device_limits

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
    idx, queue, prev = 0, 0.0, None  # RunSession starts at index 0 with no model power
    out = []
    for k in range(steps):
        vt = (start + k) * dt
        rp.advance_to(vt)
        w = rp.workload()
        mgr.set_workload(demand_tps=w["demand_tps"], budget_w=w["budget_w"], deadline_left_s=w["deadline_left_s"],
                         horizon_left_s=w["horizon_left_s"], base_w=w["base_w"], capacity_j=w["capacity_j"])
        if mgr.lookahead:
            mgr.supply_ahead_w = rp.supply_ahead_w(mgr.lookahead, dt)
        if k and env_workload:
            t = prev["temp_c"]
            theta = 1.0 if t <= dev.t_max_c else max(dev.throttle_min, 1.0 - dev.throttle_per_c * (t - dev.t_max_c))
            rate = tps[idx] * theta
            requested = queue + prev["demand"] * dt
            queue = min(requested - min(requested, rate * dt), p.backlog_cap_tokens)
            mgr.set_workload(demand_tps=prev["demand"], backlog_frac=queue / p.backlog_cap_tokens,
                             latency_over_slo=(1000.0 / tps[idx] / theta + 1000.0 * queue / rate) / p.slo_ms)
        elif k:
            mgr.set_workload(backlog_frac=1.0, latency_over_slo=1000.0 / tps[idx] / p.slo_ms)
        elif env_workload:
            mgr.set_workload(backlog_frac=0.0, latency_over_slo=0.0)
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
    "as_is": "`deploy.py run` as it is",
    "env_workload": "`deploy.py run` with the env's workload inputs (demand of the last step, the emulated queue, "
                    "the step's latency; the proposed change, applied by RecordingSession)",
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
              "| trace | sim score | as it is | agree | env's workload inputs | agree |", "|---|---|---|---|---|---|"]
    dr = res["dry_replay"]
    for r0, r1 in zip(dr["as_is"]["traces"], dr["env_workload"]["traces"]):
        lines.append(f"| {r0['trace']} | {r0['sim_return']:.3f} | {r0['dry_return']:.3f} ({_pct(r0['rel_diff'])}) | "
                     f"{100 * r0['agreement']:.0f} % | {r1['dry_return']:.3f} ({_pct(r1['rel_diff'])}) | "
                     f"{100 * r1['agreement']:.0f} % |")
    a0, a1 = dr["as_is"]["aggregate"], dr["env_workload"]["aggregate"]
    lines += [f"| **all** | **{a0['sim_return']:.3f}** | **{a0['dry_return']:.3f} ({_pct(a0['rel_diff'])})** | | "
              f"**{a1['dry_return']:.3f} ({_pct(a1['rel_diff'])})** | |", ""]
    v = res["variants"].get("as_is")
    if v:
        lines += [
            "## Counterfactual simulations of the as-is run", "",
            "The policy in the env given what the live manager gave it (`deploy.py run` as it is): score and "
            "agreement of their configurations with the live run's.", "",
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
                                 env_workload=var == "env_workload", min_dwell=DEFAULT_MIN_DWELL)
                sc = score_records(env, name, start, profile_records(env, cfg))
                dry[var].append({"trace": name, "start_row": start, "steps": sc["steps"],
                                 "sim_return": sim["env_return"], "dry_return": sc["return"],
                                 "rel_diff": rel_diff(sc["return"], sim["env_return"]),
                                 "agreement": float(np.mean([x == y for x, y in zip(cfg, sim_cfg)])),
                                 "thermal_steps": sc["thermal_steps"], "slo_steps": sc["slo_steps"],
                                 "switches": sc["switches"], "configs_per_step": cfg})
            argv_run = run_argv(policy, T.default_trace_set_dir() / f"{name}.csv", start * pf.params.step_s,
                                pf.params.step_s, a.speed, a.threads, a.max_tokens)
            min_dwell = int(deploy.build_parser().parse_args(argv_run).min_dwell)
            assert min_dwell == DEFAULT_MIN_DWELL
            for var in variants:
                print(f"[live_vs_sim] {name} ({var}): rows {start}..{start + a.steps - 1}", file=sys.stderr,
                      flush=True)
                quiet = wait_quiet(a.quiet_wait_s, a.quiet_threshold) if a.quiet_wait_s > 0 else None
                live = run_live(argv_run, a.steps, pf.params.step_s, env_workload=var == "env_workload")
                live["quiet_wait"] = quiet
                row = compare_trace(pf, env, name, start, sim, live, min_dwell=min_dwell)
                chk = row["sim_env_return_check"]
                if chk["env_return"] is not None and chk["env_return"] != chk["score_records"]:
                    raise SystemExit(f"live_vs_sim: score_records {chk['score_records']!r} != the env's return "
                                     f"{chk['env_return']!r} on the simulated run of {name}")
                row["within_5pct"] = row["rel_diff"] is not None and abs(row["rel_diff"]) <= 0.05
                row["live_argv"] = ["deploy.py"] + [x if "policy-calibrated" not in x else "<re-exported policy>"
                                                    for x in argv_run]
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
