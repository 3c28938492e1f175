"""``wattwise/MicroLLMPower-v0``: pick the micro-LLM's configuration under power, battery,
thermal and latency limits, driven by a measured cost profile and replayed traces.

## Description
A device runs the elastic micro-LLM (``model/``) and serves a token workload. Each control
step (``step_s``, default 10 s) the agent picks one configuration of the model (depth × heads
× weight bits, from the profile). The chosen configuration serves the workload at its
*measured* throughput and energy per token; the battery, the device temperature and the
request queue evolve; the trace supplies the charger/harvester power, ambient temperature,
workload and link bandwidth.

## Action Space
``Discrete(n_configs)``: index into the profile's configuration list (``env.decode_table``
gives each index's name, depth, heads and bits). ``action_masks()`` (sb3-contrib) and
``info["action_mask"]`` (Gymnasium) mark configurations infeasible now (``runtime.rules``).

## Observation Space
``Box(float32)``, defined once in ``runtime.observation`` (the device builds the same vector):

| index | feature | unit | min | max |
|---|---|---|---|---|
| 0 | state of charge | frac | 0 | 1 |
| 1 | supply power (charger / harvester) | W | 0 | 500 |
| 2 | plugged | 0/1 | 0 | 1 |
| 3 | device temperature | °C | -40 | 150 |
| 4 | headroom to throttling, T_max − T | °C | -190 | 190 |
| 5 | has a power budget | 0/1 | 0 | 1 |
| 6 | budget left (energy allowance / budget·1 h) | frac | -10 | 1 |
| 7 | has a deadline | 0/1 | 0 | 1 |
| 8 | time to deadline | h | 0 | 100 |
| 9 | affordable power (stored energy / time left) | W | 0 | 500 |
| 10 | demand of the last step | tok/s | 0 | 10000 |
| 11 | backlog / backlog capacity | frac | 0 | 1 |
| 12 | last latency / SLO | ratio | 0 | 100 |
| 13 | link bandwidth | Mbit/s | 0 | 10000 |
| 14-16 | current configuration: depth/max, heads, bits/32 | frac | 0 | 1 |
| 17 | device power draw of the last step | W | 0 | 500 |
| 18 | ambient temperature | °C | -40 | 80 |
| 19.. | supply power look-ahead, ``lookahead`` steps (optional) | W | 0 | 500 |

## Dynamics (per step of ``dt = step_s``)
* throttle ``θ = 1`` if ``T ≤ T_max`` else ``max(θ_min, 1 − k·(T − T_max))``;
* switching from configuration i to j costs ``t_sw[i, j]`` seconds of compute (the measured
  KV-cache repair + ``set_config``) and ``t_sw · P_j`` joules;
* served tokens ``S = min(backlog + demand·dt, tps_j · θ · (dt − t_sw))``; the rest queues up
  to ``backlog_cap_tokens``, beyond which tokens are dropped;
* energy ``E = S · e_j + t_sw·P_j + (P_idle + P_base)·dt`` (P_base: the trace's other device
  load); draw ``P = E / dt``;
* battery (capacity from the trace): surplus ``supply − P ≥ 0`` charges with efficiency
  ``η``, a deficit discharges at 100 %; SoC ≤ 0 is **battery death**;
* temperature, exact for constant power over the step:
  ``T ← T_∞ + (T − T_∞)·exp(−dt/τ)``, ``T_∞ = T_amb + R_th·P`` (``envs.devices``);
* latency of the step: ``decode_ms_j / θ + 1000·backlog / (tps_j·θ)`` (decode time plus the
  queueing wait of the last queued token), against ``slo_ms``;
* budget (traces with ``budget_w``, a power budget for the LLM itself): an allowance
  ``budget_w·(elapsed + budget_grace_s) − E_llm_used``; while it is negative, an LLM power
  above ``budget_w`` is a violation.

## Rewards
``r = quality_j · S / (100·dt) − w_thermal·max(0, T − T_max) − w_slo·[latency > SLO]
− w_budget·max(0, P_llm − budget_w)/budget_w·[allowance < 0] − w_drop·dropped/(100·dt) − w_death·[death]``.
``quality_j`` is the profile's multiple-choice skill above chance, ``(acc − 0.25)/0.75``, so a
step serving 100 tok/s with the full model earns ≈ its skill (≈ 0.5). Default weights and why:
``w_death = 50`` (about a hundred steps of full-quality serving: dying must never pay),
``w_thermal = 0.5`` per °C over (a few degrees cost as much as the whole step's quality),
``w_slo = 0.5``, ``w_budget = 1.0`` per unit of relative overdraw, ``w_drop = 0.5`` (a dropped
token costs about what serving it would have earned). ``info["reward_terms"]`` holds every term,
``info["cost"]`` the number of violated constraints (safety-gymnasium convention).

## Starting State
Trace: uniform over the split (or ``options["trace"]``); start row uniform over the trace
(``random_start``) or 0 (or ``options["start"]``); SoC: the trace's ``initial_soc`` (or
``options["soc"]``); temperature: ambient + R_th·(idle + base load) (or ``options["temp_c"]``).

## Episode End
Terminated: battery death. Truncated: the trace ends, or ``max_episode_steps`` (registration:
720 steps = 2 h at 10 s) via ``TimeLimit``.

## Arguments
``profile`` (path; default the committed reference profile), ``traces`` (trace-set dir or a
list of ``Trace``; default the generated default set), ``split``, ``step_s``, ``lookahead``,
``slo_ms``, ``backlog_cap_tokens``, ``reserve_soc``, ``random_start``, ``weights``.

## Version History
* v0: first release.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.devices import DeviceParams, device_params
from runtime.observation import N_BASE, bounds, feature_names, write_observation
from runtime.rules import feasible_mask

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = REPO / "profiles" / "reference-cpu.json"
TOK_SCALE = 100.0  # tokens per second that make one unit of reward


@dataclass(frozen=True)
class RewardWeights:
    death: float = 50.0
    thermal_per_c: float = 0.5
    slo: float = 0.5
    budget: float = 1.0
    drop: float = 0.5


@dataclass
class CostTables:
    """Per-configuration arrays the dynamics read (precomputed once from the profile)."""

    names: list[str]
    tps: np.ndarray  # decode tokens/s
    ept_j: np.ndarray  # energy per token, J
    decode_ms: np.ndarray  # decode latency per token, ms
    power_w: np.ndarray  # power while decoding, W
    quality: np.ndarray  # skill above chance, 0..1
    depth: np.ndarray  # active layers
    heads: np.ndarray  # active head fraction
    bits: np.ndarray  # weight bits
    features: np.ndarray  # (n, 3): depth/max, heads, bits/32
    switch_s: np.ndarray  # (n, n) compute time of a switch i -> j, s
    switch_j: np.ndarray  # (n, n) energy of a switch i -> j, J
    idle_w: float
    energy_source: str


def load_cost_tables(profile) -> CostTables:
    """Arrays from a profile (path or dict); validates it with ``model.profile_schema``."""
    from model.profile_schema import Profile, load_profile, validate_profile

    if isinstance(profile, (str, Path)):
        p = load_profile(profile)
    elif isinstance(profile, Profile):
        p = profile
    else:
        validate_profile(profile, "<profile dict>")
        p = Profile(profile)
    cfgs = p.configs
    depth = np.array([c["depth"] for c in cfgs], float)
    heads = np.array([c["heads"] for c in cfgs], float)
    bits = np.array([c["bits"] for c in cfgs], float)
    sc = p.data.get("switch_costs", {})

    def knob_s(*keys):
        return max([float(sc[k]) for k in keys if k in sc] or [0.0]) / 1e3

    set_s = max([float(v) for k, v in sc.items() if k.endswith("_set_config_us")] or [0.0]) / 1e6
    t_depth = knob_s("depth_repair_ms", "depth_ms")
    t_heads = knob_s("heads_repair_ms", "heads_ms")
    t_bits = knob_s("bits_int8_repair_ms", "bits_int4_repair_ms", "bits_ms")
    n = len(cfgs)
    sw = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                sw[i, j] = set_s + max(t_depth * (depth[i] != depth[j]), t_heads * (heads[i] != heads[j]),
                                       t_bits * (bits[i] != bits[j]))
    power = np.array([c["power_w"] for c in cfgs], float)
    acc = np.array([c["mc_accuracy"] for c in cfgs], float)
    return CostTables(
        names=[c["name"] for c in cfgs],
        tps=np.array([c["decode_tokens_per_s"] for c in cfgs], float),
        ept_j=np.array([c["energy_j_per_token"] for c in cfgs], float),
        decode_ms=np.array([c["decode_ms_per_token_median"] for c in cfgs], float),
        power_w=power,
        quality=np.clip((acc - 0.25) / 0.75, 0.0, 1.0),
        depth=depth, heads=heads, bits=bits,
        features=np.stack([depth / depth.max(), heads, bits / 32.0], 1),
        switch_s=sw, switch_j=sw * power[None, :],
        idle_w=float(p.data.get("idle_power_w", 0.0)),
        energy_source=str(p.data.get("energy_source", "unknown")),
    )


@dataclass
class TraceArrays:
    """One resampled trace as plain lists (fast scalar indexing in ``step``)."""

    name: str
    n: int
    supply_w: list
    plugged: list
    ambient_c: list
    demand_tps: list
    bandwidth_mbps: list
    budget_w: list  # NaN where absent
    base_w: list
    capacity_j: float
    initial_soc: float
    deadline_s: float  # NaN where absent
    device: DeviceParams
    device_kind: str


def prepare_traces(traces, split: str, step_s: float) -> list[TraceArrays]:
    import traces as T

    if traces is None:
        traces = T.default_trace_set_dir()
    if isinstance(traces, (str, Path)):
        items = T.TraceSet.load(traces).split(split)
        if not items:
            raise ValueError(f"trace set {traces} has no traces in split {split!r}")
    else:
        items = list(traces)
    out = []
    for tr in items:
        r = tr.resample(step_s)
        n = len(r)
        nan = np.full(n, np.nan)
        base = r.base_load_w if r.base_load_w is not None else np.zeros(n)
        dev = device_params(r.meta.device_kind)
        out.append(TraceArrays(
            name=r.name, n=n, supply_w=r.supply_w.tolist(), plugged=r.plugged.tolist(),
            ambient_c=r.ambient_c.tolist(), demand_tps=r.demand_tps.tolist(),
            bandwidth_mbps=r.bandwidth_mbps.tolist(),
            budget_w=(r.budget_w if r.budget_w is not None else nan).tolist(),
            base_w=np.nan_to_num(base, nan=0.0).tolist(),
            capacity_j=float(r.meta.capacity_wh) * 3600.0, initial_soc=float(r.meta.initial_soc),
            deadline_s=float(r.meta.deadline_s) if r.meta.deadline_s is not None else math.nan,
            device=dev, device_kind=r.meta.device_kind))
    return out


class MicroLLMPowerEnv(gym.Env):
    """See the module docstring: it is this environment's spec sheet."""

    metadata = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(self, profile=None, traces=None, split: str = "train", step_s: float = 10.0,
                 lookahead: int = 0, slo_ms: float = 500.0, backlog_cap_tokens: float = 5000.0,
                 reserve_soc: float = 0.05, budget_grace_s: float = 300.0, random_start: bool = True,
                 weights: RewardWeights = RewardWeights(), render_mode: str | None = None):
        super().__init__()
        self.costs = load_cost_tables(profile if profile is not None else DEFAULT_PROFILE)
        self.traces = prepare_traces(traces, split, step_s)
        self.step_s, self.lookahead, self.slo_ms = float(step_s), int(lookahead), float(slo_ms)
        self.backlog_cap, self.reserve_soc = float(backlog_cap_tokens), float(reserve_soc)
        self.budget_grace_s, self.random_start, self.w = budget_grace_s, random_start, weights
        self.render_mode = render_mode
        n = len(self.costs.names)
        self.action_space = spaces.Discrete(n)
        lo, hi = bounds(self.lookahead)
        self.observation_space = spaces.Box(lo, hi, dtype=np.float32)
        self.feature_names = feature_names(self.lookahead)
        c = self.costs
        # plain lists: scalar indexing of a list is ~10x faster than of a numpy array
        self._tps, self._ept, self._dec = c.tps.tolist(), c.ept_j.tolist(), c.decode_ms.tolist()
        self._q, self._feat = c.quality.tolist(), [tuple(f) for f in c.features.tolist()]
        self._sw_s, self._sw_j = c.switch_s.tolist(), c.switch_j.tolist()
        self._cheap = c.ept_j <= np.quantile(c.ept_j, 0.25)
        self._all_ok = np.ones(n, dtype=bool)
        self._all_ok.flags.writeable = False
        self._full = int(np.argmax(c.quality))  # the best-quality configuration starts an episode
        self.decode_table = [dict(index=i, name=nm, depth=int(c.depth[i]), heads=float(c.heads[i]),
                                  bits=int(c.bits[i])) for i, nm in enumerate(c.names)]
        self._tr: TraceArrays | None = None

    # ---- Gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        o = options or {}
        rng = self.np_random
        if "trace" in o:
            k = o["trace"]
            k = k if isinstance(k, int) else [t.name for t in self.traces].index(k)
        else:
            k = int(rng.integers(len(self.traces)))
        tr = self._tr = self.traces[k]
        if "start" in o:
            self._i = int(o["start"])
        else:
            self._i = int(rng.integers(0, max(1, tr.n - 1))) if self.random_start else 0
        self._i0 = self._i
        self.soc = float(o.get("soc", tr.initial_soc))
        dev = tr.device
        self._idle_w = dev.idle_power_w
        amb = tr.ambient_c[self._i]
        self.temp_c = float(o.get("temp_c", amb + dev.r_th_c_per_w * (self._idle_w + tr.base_w[self._i])))
        self.backlog = 0.0
        self._a = int(o.get("config", self._full))
        self._budget_left_j = 0.0
        self._last_power_w = self._idle_w + tr.base_w[self._i]
        self._last_lat_ms = 0.0
        self._last_demand = tr.demand_tps[self._i]
        self._mask = self._all_ok
        obs = self._obs()
        return obs, {"action_mask": self._mask.copy(), "trace": tr.name, "start": self._i,
                     "soc": self.soc, "temp_c": self.temp_c}

    def step(self, action):
        a = int(action)
        tr, i, dt, dev = self._tr, self._i, self.step_s, self._tr.device
        temp, t_max = self.temp_c, dev.t_max_c
        theta = 1.0 if temp <= t_max else max(dev.throttle_min, 1.0 - dev.throttle_per_c * (temp - t_max))
        prev = self._a
        sw_s, sw_j = self._sw_s[prev][a], self._sw_j[prev][a]
        rate = self._tps[a] * theta
        demand = tr.demand_tps[i]
        requested = self.backlog + demand * dt
        served = min(requested, rate * max(dt - sw_s, 0.0))
        left = requested - served
        dropped = left - self.backlog_cap if left > self.backlog_cap else 0.0
        self.backlog = left - dropped
        base = tr.base_w[i]
        energy_j = served * self._ept[a] + sw_j + (self._idle_w + base) * dt
        power_w = energy_j / dt
        # battery
        net_w = tr.supply_w[i] - power_w
        soc = self.soc + (net_w * dev.charge_efficiency if net_w > 0 else net_w) * dt / tr.capacity_j
        soc = 1.0 if soc > 1.0 else soc
        dead = soc <= 0.0
        self.soc = 0.0 if dead else soc
        # temperature: exact solution for constant power over the step
        t_inf = tr.ambient_c[i] + dev.r_th_c_per_w * power_w
        self.temp_c = temp = t_inf + (temp - t_inf) * math.exp(-dt / dev.tau_s)
        # latency and constraints
        lat_ms = self._dec[a] / theta + 1000.0 * self.backlog / rate
        over_c = temp - t_max if temp > t_max else 0.0
        slo_bad = lat_ms > self.slo_ms
        budget = tr.budget_w[i]
        over_budget = 0.0
        if budget == budget:  # not NaN; the budget covers the LLM's own energy (traces/ schema)
            llm_j = energy_j - (self._idle_w + base) * dt
            self._budget_left_j += budget * dt - llm_j
            if self._budget_left_j + budget * self.budget_grace_s < 0 and llm_j > budget * dt:
                over_budget = (llm_j / dt - budget) / budget
        w = self.w
        terms = {
            "quality": self._q[a] * served / (TOK_SCALE * dt),
            "thermal": -w.thermal_per_c * over_c,
            "slo": -w.slo if slo_bad else 0.0,
            "budget": -w.budget * over_budget,
            "drop": -w.drop * dropped / (TOK_SCALE * dt),
            "death": -w.death if dead else 0.0,
        }
        reward = sum(terms.values())
        cost = (over_c > 0) + slo_bad + (over_budget > 0) + dead
        self._a, self._last_power_w, self._last_lat_ms, self._last_demand = a, power_w, lat_ms, demand
        self._i = i + 1
        truncated = self._i >= tr.n
        if truncated:
            self._i = tr.n - 1  # observation of the last row; the episode is over
        hot = temp > t_max - 1.0
        low = self.soc < self.reserve_soc
        self._mask = self._compute_mask() if (hot or low) else self._all_ok
        info = {
            "reward_terms": terms, "cost": float(cost), "energy_j": energy_j, "power_w": power_w,
            "latency_ms": lat_ms, "temp_c": temp, "soc": self.soc, "tokens_served": served,
            "tokens_dropped": dropped, "demand_tokens": demand * dt, "backlog_tokens": self.backlog,
            "throttle": theta, "config": a, "config_name": self.costs.names[a],
            "switched": a != prev, "action_mask": self._mask.copy(), "quality": self._q[a],
            "violations": {"thermal": over_c > 0, "slo": slo_bad, "budget": over_budget > 0, "death": dead},
        }
        return self._obs(), reward, dead, truncated and not dead, info

    def action_masks(self) -> np.ndarray:
        """Configurations allowed now (sb3-contrib MaskablePPO convention)."""
        return self._mask.copy()

    def _compute_mask(self) -> np.ndarray:
        tr, i = self._tr, self._i
        return feasible_mask(self.costs.ept_j, self._last_demand, self.temp_c, tr.ambient_c[i],
                             tr.device.t_max_c, tr.device.r_th_c_per_w, tr.base_w[i] + self._idle_w,
                             self.soc, self.reserve_soc, tr.supply_w[i], self._cheap)

    def _obs(self) -> np.ndarray:
        tr, i, dt = self._tr, self._i, self.step_s
        out = np.empty(N_BASE + self.lookahead, dtype=np.float32)
        dl = tr.deadline_s
        t_s = i * dt
        ahead = [tr.supply_w[min(i + k, tr.n - 1)] for k in range(1, self.lookahead + 1)]
        return write_observation(
            out, self.soc, tr.supply_w[i], tr.plugged[i], self.temp_c, tr.device.t_max_c,
            tr.budget_w[i], self._budget_left_j + (tr.budget_w[i] * self.budget_grace_s
                                                   if tr.budget_w[i] == tr.budget_w[i] else 0.0),
            dl - t_s if dl == dl else math.nan, self.soc * tr.capacity_j, (tr.n - i) * dt,
            self._last_demand, self.backlog / self.backlog_cap, self._last_lat_ms / self.slo_ms,
            tr.bandwidth_mbps[i], self._feat[self._a], self._last_power_w, tr.ambient_c[i], ahead)

    def render(self):
        if self.render_mode == "ansi":
            return (f"t={self._i * self.step_s:7.0f}s soc={self.soc:.3f} T={self.temp_c:5.1f}°C "
                    f"cfg={self.costs.names[self._a]} P={self._last_power_w:.2f}W backlog={self.backlog:.0f}")
        return None

    # ---- helpers for baselines / evaluation --------------------------------------------------
    @property
    def trace(self) -> TraceArrays:
        return self._tr

    def weights_dict(self) -> dict:
        return asdict(self.w)
