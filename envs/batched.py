"""A batched form of ``MicroLLMPowerEnv``: N environments stepped at once in numpy, exposed as a
stable-baselines3 ``VecEnv`` (so PPO can train on it directly).

The dynamics are ``runtime.dynamics.step_core`` — the same function the scalar environment calls,
here on arrays — and the observation is ``runtime.observation.ObsLayout``'s, look-ahead included;
``tests/test_batched_env.py`` pins every output (observations, rewards, terminations, SoC,
temperature) to ``MicroLLMPowerEnv`` on the same traces, starts and actions. Differences from the
scalar env: episodes start at a uniformly random row of a uniformly random trace
(``random_start`` semantics), the time limit ``params.max_episode_steps`` is applied here (there
is no ``TimeLimit`` wrapper), and ``infos`` carry only ``terminal_observation``,
``TimeLimit.truncated`` for the envs that ended (the others share one read-only empty mapping)
and nothing per step (per-step results are in ``last``, a ``runtime.dynamics.StepResult`` of
arrays, to keep the step fast).
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from envs.power_env import MicroLLMPowerEnv
from envs.tables import PaddedTraces
from runtime.dynamics import (
    OBJECTIVES,
    VECTOR,
    EnvParams,
    Plant,
    episode_objective,
    placement_columns,
    runs_on,
    start_temp_c,
    step_core,
)
from runtime.observation import (
    demand_avg_update,
    head_values,
    thermal_scale_w,
    thermal_values,
)
from runtime.rules import NO_SWITCH_YET, dwell_mask, floor_in_force, saver_horizon_s, saver_soc, since_switch_after

_NO_INFO = MappingProxyType({})
#: the highest state of charge a ``low_soc_frac`` episode starts from: the real phone sessions' deaths start from
#: 15 % and below; up to 30 % also covers a battery that will be low within the two-hour episode
LOW_SOC_MAX = 0.3
#: the largest ambient shift a ``hot_frac`` episode draws (deg C): a 22 deg C indoor trace becomes a 42 deg C heat
#: wave at most, and a heat-wave trace (peaks 36-44 deg C, sun spells +4-8) meets the trip point by day's end
HOT_SHIFT_MAX_C = 20.0
#: with ``hot_trip``: the range (deg C) of the margin below the device's trip point at which a hot episode's mean
#: ambient is placed (the band where a rule's thermal cap and the masks decide; ``train.py --val-hot-episodes``
#: spreads its val episodes over the same band)
HOT_TRIP_MARGIN_C = (2.0, 10.0)


def draw_episode_randomisation(rng: np.random.Generator, reserve_soc: float, low_soc_frac: float = 0.0,
                               capacity_sigma: float = 0.0, hot_frac: float = 0.0,
                               trip_gap_c: float | None = None) -> tuple[float | None, float, float]:
    """One episode's battery and weather draws (``train.py --low-soc-frac``, ``--capacity-sigma``, ``--hot-frac``),
    in this order, each drawn only when on: (start state of charge or None for the trace's, capacity scale, ambient
    shift in deg C). The batched env's random resets and the warm start's demonstrations
    (``agents.imitation.DemoRandomisation``, ``train.py --demo-dr``) both draw here.

    ``trip_gap_c`` (``--hot-trip``): the episode's trip point minus its trace's mean ambient; a hot episode then
    draws a margin ``m ~ U(HOT_TRIP_MARGIN_C)`` and is shifted by ``max(0, trip_gap_c − m)``, so that its mean ambient
    lies ``m`` below the trip point whatever the device kind (one uniform draw either way)."""
    soc = None
    if low_soc_frac > 0.0 and rng.random() < low_soc_frac:
        soc = float(rng.uniform(reserve_soc, max(reserve_soc, LOW_SOC_MAX)))
    scale = math.exp(capacity_sigma * float(rng.standard_normal())) if capacity_sigma > 0.0 else 1.0
    shift = 0.0
    if hot_frac > 0.0 and rng.random() < hot_frac:
        if trip_gap_c is None:
            shift = float(rng.uniform(0.0, HOT_SHIFT_MAX_C))
        else:
            shift = max(0.0, float(trip_gap_c) - float(rng.uniform(*HOT_TRIP_MARGIN_C)))
    return soc, scale, shift


class BatchedPowerEnv(VecEnv):
    """N copies of ``MicroLLMPowerEnv``'s dynamics in numpy.

    Args:
        n_envs: Batch size.
        profile, traces, split, params, **param_overrides: As ``MicroLLMPowerEnv`` (ignored with ``ref``).
        seed: Seed of the batch's own generator (episode starts).
        speed_sigma: Domain randomisation over the host's speed (``train.py --speed-sigma``): each randomly
            reset episode draws a factor ``s = exp(σ·N(0, 1))`` from the batch's generator and runs every
            configuration ``s`` times slower than the profile says (decode time and second segment × s, token
            rate ÷ s, energy per token × s: the same power for longer). 0 (default): the profile's host, and
            not one number drawn. Explicit resets (``reset_env``: evaluation, demonstrations) keep s = 1.
        low_soc_frac: Domain randomisation over the battery (``train.py --low-soc-frac``): this share of the
            randomly reset episodes starts with a state of charge drawn uniformly from
            ``[reserve_soc, LOW_SOC_MAX]`` instead of the trace's, so that a policy meets nearly empty batteries
            (where deaths happen) far more often than the traces alone show it. 0 (default): nothing drawn.
        capacity_sigma: Domain randomisation over the battery's capacity (``train.py --capacity-sigma``): each
            randomly reset episode's capacity is the trace's × ``exp(σ·N(0, 1))``, so that the same state of
            charge means more or less time to empty. 0 (default): nothing drawn.
        hot_frac: Domain randomisation over the weather (``train.py --hot-frac``): this share of the randomly reset
            episodes has its whole ambient trace raised by ``U(0, HOT_SHIFT_MAX_C)`` deg C (the start temperature
            follows it), so that a policy runs near the thermal trip point far more often than the few heat-wave
            traces show it: the margin between the masks' trip-point rule and a rule's early thermal cap is only
            learnt where the device is hot. 0 (default): nothing drawn.
        hot_trip: With ``hot_frac``: place a hot episode relative to its device's trip point instead (its mean ambient
            ``U(HOT_TRIP_MARGIN_C)`` deg C below it; ``draw_episode_randomisation``), so that every device kind's
            hot episodes land in the band where the thermal rules decide; a blind shift of up to 20 deg C puts a
            22 deg C phone there only sometimes and a laptop (trip point 70 deg C) never.
        mask_actions: Unused; kept for the VecEnv constructor signature of callers.
        ref: Reuse an existing env's profile, traces and parameters.
    """

    def __init__(self, n_envs: int = 64, profile=None, traces=None, split: str = "train",
                 params: EnvParams | dict | None = None, seed: int = 0, mask_actions: bool = False,
                 ref: MicroLLMPowerEnv | None = None, speed_sigma: float = 0.0, low_soc_frac: float = 0.0,
                 capacity_sigma: float = 0.0, hot_frac: float = 0.0, hot_trip: bool = False, **param_overrides: Any):
        # one scalar env supplies the parsed profile and traces (a single source of both)
        self.ref = ref.unwrapped if ref is not None else MicroLLMPowerEnv(
            profile=profile, traces=traces, split=split, params=params, **param_overrides)
        self.params = p = self.ref.params
        self.render_mode = None
        super().__init__(n_envs, self.ref.observation_space, self.ref.action_space)
        c = self.ref.costs
        self.costs, self.layout = c, self.ref.layout
        self.tr = PaddedTraces(self.ref.traces)
        self.dt, self.max_steps = p.step_s, p.max_episode_steps
        self.mask_actions = mask_actions
        self.rng = np.random.default_rng(seed)
        n = n_envs
        if not (math.isfinite(speed_sigma) and speed_sigma >= 0):
            raise ValueError(f"speed_sigma must be a finite number >= 0, got {speed_sigma!r}")
        self.speed_sigma = float(speed_sigma)
        if not (math.isfinite(low_soc_frac) and 0.0 <= low_soc_frac <= 1.0):
            raise ValueError(f"low_soc_frac must be in [0, 1], got {low_soc_frac!r}")
        if not (math.isfinite(capacity_sigma) and capacity_sigma >= 0):
            raise ValueError(f"capacity_sigma must be a finite number >= 0, got {capacity_sigma!r}")
        self.low_soc_frac, self.capacity_sigma = float(low_soc_frac), float(capacity_sigma)
        if not (math.isfinite(hot_frac) and 0.0 <= hot_frac <= 1.0):
            raise ValueError(f"hot_frac must be in [0, 1], got {hot_frac!r}")
        self.hot_frac = float(hot_frac)
        # each trace's trip point minus its mean ambient (hot_trip); None: the blind shift
        self._trip_gap = ([t.device.t_max_c - float(np.mean(t.ambient_c)) for t in self.ref.traces]
                          if hot_trip else None)
        self.amb_off = np.zeros(n)  # this episode's ambient shift, deg C (domain randomisation)
        self.speed = np.ones(n)  # this episode's host slow-down factor (domain randomisation)
        self.k = np.zeros(n, int)
        self.i = np.zeros(n, int)
        self.fi = np.zeros(n, int)  # flat row index k·L + i into PaddedTraces.flat
        # per-env copies of the trace's constants, set at reset (no gathers by trace in step)
        self.plant = Plant(*(np.zeros(n) for _ in Plant._fields))
        self.n_rows, self.deadline_s = np.zeros(n, int), np.zeros(n)
        self.soc, self.temp, self.backlog = np.zeros(n), np.zeros(n), np.zeros(n)
        self.a = np.full(n, self.ref.full_config)
        self.since_switch = np.full(n, NO_SWITCH_YET)  # the dwell rule (EnvParams.min_dwell_steps)
        self.budget_left = np.zeros(n)
        self.last_p, self.last_lat, self.last_dem = np.zeros(n), np.zeros(n), np.zeros(n)
        self.dem_avg = np.zeros(n)  # the smoothed demand (EnvParams.demand_avg_s)
        self.t = np.zeros(n, int)
        self._actions = None
        self.last = None
        self._ahead = np.arange(1, p.lookahead + 1)
        # the objective per env (runtime.dynamics.Objective), set at reset
        self.obj = np.zeros(n, int)  # index into OBJECTIVES
        self.wq, self.we, self.qmin = np.ones(n), np.zeros(n), np.full(n, np.nan)
        self.qmin_obs, self.until_row, self.deadline_eff = np.zeros(n), np.full(n, -1), np.full(n, np.nan)
        # the rule hint (EnvParams.rule_hint; as MicroLLMPowerEnv): the rule's configuration per env
        self._hint_rule = self.ref._hint_rule
        self.hint_config = np.full(n, -1)
        # the masks the hint computed for the current states, reused by action_masks (rows valid until stepped/reset)
        self._mask_cache: np.ndarray | None = None
        self._mask_valid = np.zeros(n, bool)
        # (n_traces, n_configs): the configurations that fit each trace's device memory
        self._fits = np.stack([self.ref.rules.fits(m) for m in self.tr.memory_bytes])

    # ---- resets ------------------------------------------------------------------------------
    def reset_env(self, j: int, trace: int, start: int, soc: float | None = None,
                  temp_c: float | None = None, config: int | None = None, objective: str | None = None) -> None:
        self._mask_valid[j] = False
        tr = self.tr
        self.k[j], self.i[j], self.fi[j] = trace, start, trace * tr.L + start
        for arr, v in zip(self.plant, tr.plant(trace)):
            arr[j] = v
        self.n_rows[j], self.deadline_s[j] = tr.n[trace], tr.deadline_s[trace]
        self.soc[j] = tr.soc0[trace] if soc is None else soc
        base, idle = tr.base[trace, start], tr.idle[trace]
        self.speed[j], self.amb_off[j] = 1.0, 0.0
        self.temp[j] = self._start_temp_c(j) if temp_c is None else temp_c
        self.backlog[j], self.budget_left[j], self.t[j] = 0.0, 0.0, 0
        self.a[j] = self.ref.full_config if config is None else config
        self.since_switch[j] = NO_SWITCH_YET
        self.last_p[j], self.last_lat[j], self.last_dem[j] = idle + base, 0.0, tr.demand[trace, start]
        self.dem_avg[j] = self.last_dem[j]
        self._set_objective(j, trace, start, objective)

    def _start_temp_c(self, j: int) -> float:
        """Env ``j``'s temperature at the start of its episode: steady state at its row's (shifted) ambient."""
        tr, k, i = self.tr, self.k[j], self.i[j]
        return start_temp_c(tr.ambient[k, i] + self.amb_off[j], tr.idle[k], tr.base[k, i], tr.r_th[k])

    def _set_objective(self, j: int, trace: int, start: int, kind: str | None) -> None:
        """As ``MicroLLMPowerEnv._set_objective``, from this batch's generator."""
        tr = self.tr
        e = episode_objective(self.params, self.rng, tr.quality_floor[trace], tr.deadline_s[trace], start, kind)
        self.obj[j] = OBJECTIVES.index(e.kind)
        self.wq[j], self.we[j], self.qmin[j] = e.w_q, e.w_e, e.q_min
        self.qmin_obs[j], self.deadline_eff[j], self.until_row[j] = e.floor, e.deadline_s, e.until_row

    def _random_reset(self, j: int) -> None:
        k = int(self.rng.integers(len(self.tr.n)))
        self.reset_env(j, k, int(self.rng.integers(0, max(1, self.tr.n[k] - 1))))
        if self.speed_sigma > 0.0:  # drawn only when on: the batch's sequence is unchanged without it
            self.speed[j] = math.exp(self.speed_sigma * float(self.rng.standard_normal()))
        soc, scale, shift = draw_episode_randomisation(self.rng, self.params.reserve_soc, self.low_soc_frac,
                                                       self.capacity_sigma, self.hot_frac,
                                                       None if self._trip_gap is None else self._trip_gap[k])
        if soc is not None:
            self.soc[j] = soc
        self.plant.capacity_j[j] *= scale
        if shift:
            self.amb_off[j] = shift
            self.temp[j] = self._start_temp_c(j)

    def reset(self):
        for j in range(self.num_envs):
            self._random_reset(j)
        return self._obs()

    # ---- dynamics ------------------------------------------------------------------------------
    def _step(self, a: np.ndarray):
        self._mask_valid[:] = False
        c = self.costs
        if self.tr.has_outages and c.has_place:  # a processor that is down: re-placed on the CPU
            a = runs_on(c, a, self.tr.procs_down.ravel().take(self.fi))
        supply, _, ambient, demand, bandwidth, budget, base = self.tr.rows.take(self.fi, axis=0).T
        ambient = ambient + self.amb_off
        tps, ept, dec, place = c.tps[a], c.ept_j[a], c.decode_ms[a], placement_columns(c, a)
        if self.speed_sigma > 0.0:  # this episode's host is `speed` times slower than the profile's
            s = self.speed
            tps, ept, dec, place = tps / s, ept * s, dec * s, (place[0] * s, *place[1:])
        r = step_core(VECTOR, self.dt, self.params, tps, ept, dec, c.quality[a],
                      c.offload[a], c.up_bits[a], c.server_ms[a], *place,
                      c.switch_s[self.a, a], c.switch_j[self.a, a],
                      self.soc, self.temp, self.backlog, self.budget_left, demand, supply, ambient, base, budget,
                      bandwidth, self.wq, self.we, self.qmin, (self.i < self.until_row) * 1.0, *self.plant)
        self.last = r
        self.soc, self.temp, self.backlog, self.budget_left = r.soc, r.temp_c, r.backlog, r.budget_left_j
        if self.params.min_dwell_steps > 1:
            self.since_switch = since_switch_after(self.since_switch, a != self.a)
        self.a, self.last_p, self.last_lat, self.last_dem = a.copy(), r.power_w, r.latency_ms, demand
        if self.params.demand_avg_s:
            self.dem_avg = demand_avg_update(VECTOR, self.dem_avg, demand, self.dt, self.params.demand_avg_s)
        self.t += 1
        trunc_trace = self.i + 1 >= self.n_rows
        step = ~trunc_trace  # the last row stays the observed one at the end of a trace
        self.i += step
        self.fi += step
        return r.reward, r.dead, trunc_trace & ~r.dead

    @property
    def last_cost(self) -> np.ndarray:
        """Violated constraints per env in the last step (the Lagrangian wrapper's cost)."""
        return self.last.cost

    def _obs(self, rows: Any = slice(None)) -> np.ndarray:
        """(len(rows), dim) observations of the envs ``rows`` (default: all)."""
        dt, f, p = self.dt, self.tr.flat, self.params
        fi, i, soc, plant = self.fi[rows], self.i[rows], self.soc[rows], self.plant
        supply, plugged, ambient, _, bandwidth, bud, base = self.tr.rows.take(fi, axis=0).T
        ambient = ambient + self.amb_off[rows]
        head = head_values(VECTOR, soc, supply, plugged, self.temp[rows],
                           plant.t_max_c[rows], bud,
                           self.budget_left[rows] + np.where(bud == bud, bud * p.budget_grace_s, 0.0),
                           self.deadline_eff[rows] - i * dt, soc * plant.capacity_j[rows],
                           p.horizon_s, self.last_dem[rows],
                           self.backlog[rows] / p.backlog_cap_tokens, self.last_lat[rows] / p.slo_ms, bandwidth)
        ahead = None
        if p.lookahead:
            off = np.minimum(i[:, None] + self._ahead[None, :], self.n_rows[rows][:, None] - 1) - i[:, None]
            ahead = f["supply"].take(fi[:, None] + off)
        down = self.tr.procs_down.ravel().take(fi) if self.layout.processors else None
        goal = None
        if self.layout.goal:
            k, q, b = self.obj[rows], self.qmin_obs[rows], np.where(bud == bud, np.maximum(bud, 0.0), 0.0)
            goal = np.stack([k == 0, k == 1, k == 2, np.where(k == 1, q, 0.0), b], axis=1).astype(float)
        therm = None
        if self.layout.thermal:  # an env not reset yet has an all-zero plant: its row means nothing until reset
            with np.errstate(divide="ignore", invalid="ignore"):
                therm = thermal_values(VECTOR, self.temp[rows], ambient, plant.t_max_c[rows], plant.r_th_c_per_w[rows],
                                       plant.tau_s[rows], dt, plant.idle_power_w[rows] + base,
                                       thermal_scale_w(VECTOR, p.thermal_cap, self.last_dem[rows], self.ref._costliest))
        pw = None
        if self.layout.power:  # as the thermal block: a row not reset yet means nothing until reset
            with np.errstate(divide="ignore", invalid="ignore"):
                pw = self.layout.power_block(VECTOR, self.last_p[rows], head, plant.idle_power_w[rows] + base,
                                             self.last_dem[rows], self.ref._costliest)
        obs = self.layout.batch(head, self.costs.features[self.a[rows]], self.last_p[rows], ambient, ahead, down,
                                goal, therm, self.dem_avg[rows], pw)
        if self._hint_rule is not None:  # the rule's choice from these observations, under their masks
            r = self._hint_rule
            with np.errstate(divide="ignore", invalid="ignore"):  # as the thermal block: rows not reset yet
                masks = self._masks(rows)
            if self._mask_cache is None:
                self._mask_cache = np.empty((self.num_envs, masks.shape[1]), bool)
            self._mask_cache[rows], self._mask_valid[rows] = masks, True  # action_masks reuses them
            self.hint_config[rows] = hint = r.masked_batch(r.choose_batch(*self.layout.hint_inputs(obs)), masks)
            self.layout.set_hint(obs, self.ref._hint_table[hint])
        return obs

    # ---- VecEnv API ---------------------------------------------------------------------------
    def step_async(self, actions) -> None:
        self._actions = np.asarray(actions, dtype=int).reshape(self.num_envs)

    def step_wait(self):
        reward, term, trunc = self._step(self._actions)
        trunc = trunc | (self.t >= self.max_steps)
        done = term | trunc
        obs = self._obs()
        # envs that did not end share one read-only empty mapping: building 4096 dicts a step cost as
        # much as a tenth of the step, and nothing in SB3 writes into a running env's info
        infos: list[Any] = [_NO_INFO] * self.num_envs
        ended = np.flatnonzero(done)
        for j in ended:
            infos[j] = {"terminal_observation": obs[j].copy(), "TimeLimit.truncated": bool(trunc[j] and not term[j])}
            self._random_reset(int(j))
        if ended.size:  # only the reset envs' observations change
            obs[ended] = self._obs(ended)
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        pass

    def seed(self, seed: int | None = None) -> list[int | None]:
        """Reseed the batch's generator (episode starts, objectives and domain randomisation) from now on.

        SB3's ``VecEnv.seed`` keeps per-env seeds for the next reset of each sub-environment; this batch has one
        generator, so ``seed`` restarts it: ``BatchedPowerEnv(seed=s)`` and ``env.seed(s)`` before the first
        reset give the same episodes. ``None`` draws a seed, as SB3 does. Returns SB3's per-env seed list.
        """
        if seed is None:
            seed = int(np.random.randint(0, np.iinfo(np.uint32).max, dtype=np.uint32))
        self.rng = np.random.default_rng(seed)
        return [seed + idx for idx in range(self.num_envs)]

    def get_attr(self, attr_name, indices=None):
        return [getattr(self, attr_name)] * len(self._idx(indices))

    def set_attr(self, attr_name, value, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        if method_name == "action_masks":
            return list(self.action_masks())
        return [getattr(self, method_name)(*args, **kwargs) for _ in self._idx(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * len(self._idx(indices))

    def _idx(self, indices):
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else indices

    def action_masks(self) -> np.ndarray:
        """(n_envs, n_actions) feasibility masks (``runtime.rules``), for MaskablePPO. With the rule hint the
        observation already computed them: those of envs not stepped or reset since are reused."""
        if self._mask_cache is None:
            out = self._masks()
        else:
            out = self._mask_cache.copy()
            stale = np.flatnonzero(~self._mask_valid)
            if stale.size:
                out[stale] = self._masks(stale)
        # the dwell rule last: the rule hint reads the masks without it, as the runtime manager's does
        return dwell_mask(out, self.a, self.since_switch, self.params.min_dwell_steps)

    def _masks(self, rows: Any = slice(None)) -> np.ndarray:
        """(len(rows), n_actions) feasibility masks of the envs ``rows`` (default: all)."""
        from runtime.rules import HOT_MARGIN_C, floor_within_budget

        f, pl, reserve = self.tr.flat, self.plant, self.params.reserve_soc
        idx = np.arange(self.num_envs)[rows]
        fi, temp, soc = self.fi[idx], self.temp[idx], self.soc[idx]
        out = self._fits[self.k[idx]]  # each env's device memory (runtime.rules.Feasibility.fits); a copy
        rules = self.ref.rules
        # min-energy's floor in the masks where it is in force (EnvParams.floor_rule; under a power budget only within
        # the budget rule's mask, below)
        qmin = (floor_in_force(self.qmin[idx], f["budget"].take(fi)) if self.params.floor_rule
                else np.full(len(idx), np.nan))
        if (qmin == qmin).any():
            out = rules.floor_mask(qmin, out)
        hot = temp > pl.t_max_c[idx] - HOT_MARGIN_C
        base = f["base"].take(fi) + pl.idle_power_w[idx]
        saver = self.params.saver_s
        if self.params.saver_to_deadline:  # the saver's horizon reaches each env's deadline (as the scalar env)
            saver = saver_horizon_s(saver, self.deadline_eff[idx] - self.i[idx] * self.dt, True)
        lo = saver_soc(reserve, saver, pl.capacity_j[idx], base, self.last_dem[idx],
                       rules.ept_min, f["supply"].take(fi),
                       self.params.saver_floor_frac)  # the reserve, raised by the battery saver
        low = soc < lo
        bw = f["bandwidth"].take(fi)
        down = (bw <= 0.0) if rules.has_split else np.zeros_like(low)
        procs = self.tr.procs_down.ravel().take(fi) if rules.has_place else np.zeros(len(low), int)
        for r in np.flatnonzero(hot | low | down | (procs != 0)):
            j, x = idx[r], fi[r]
            rules.mask(self.last_dem[j], self.temp[j], f["ambient"][x] + self.amb_off[j], pl.t_max_c[j],
                       pl.r_th_c_per_w[j],
                       base[r], self.soc[j], lo[r] if isinstance(lo, np.ndarray) else lo, f["supply"][x],
                       out=out[r],
                       bandwidth_mbps=bw[r], fits=self._fits[self.k[j]], down=int(procs[r]), q_min=qmin[r])
        if self.params.budget_rule:  # the power budget in the masks (EnvParams.budget_rule; as the scalar env)
            bud = f["budget"].take(fi)
            if (bud == bud).any():
                p = self.params
                # min-energy's floor within what the budget allows (floor_within_budget), where the floor rule holds it
                q_in = floor_within_budget(self.qmin[idx], bud) if p.floor_rule else np.full(len(idx), np.nan)
                out = rules.budget_floor_mask(self.last_dem[idx] + self.backlog[idx] / self.dt, bud,
                                              self.budget_left[idx] + bud * p.budget_grace_s, self.dt, out,
                                              self.costs.switch_j[self.a[idx]], p.budget_reserve_s,
                                              p.budget_reserve_tps, q_in, p.budget_floor_reserve_s)
        return out


__all__ = ["BatchedPowerEnv"]
