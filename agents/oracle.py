"""The offline oracle: backward dynamic programming with the whole trace known (the upper bound).

For one (trace, start row, horizon H) the oracle computes the optimal value
``V_t(soc, T, backlog)`` for t = H … 0 on a grid, with ``V_H = 0`` (and 0 after a battery
death, which ends the episode):

    V_t(s) = max_a [ r_t(s, a) + (1 − death) · V_{t+1}(s'(s, a)) ]

and acts by one-step lookahead from the *true* state of the env it is bound to.

**One implementation of the dynamics.** Transitions and rewards come from
``runtime.dynamics.Dynamics.step`` (state in, state out; the same ``step_core`` the environments
call), on a batch of all (temperature, backlog, action) grid pairs per time step. The SoC axis needs no batch: in the
env, SoC enters only the battery update ``soc' = min(soc + δ, 1)`` and the death test
``soc + δ ≤ 0``, where δ (the step's charge/discharge, in SoC) depends on the pair but not on
the SoC. ``step`` is called twice per time step — from soc = 0 (δ > 0 reads off as soc') and
from soc = 1 (δ < 0 reads off as soc' − 1) — and the value is then formed for every SoC grid
point by shifting. Rewards, temperature, backlog and all penalties are ``step``'s.

**State and discretisation** (defaults; ``docs/agents.md`` has the measured error). Battery
death costs 50, so V has a cliff at the least SoC that survives to the end of the block;
linear interpolation across it would smear it and, over hundreds of steps, diffuse it
backwards (pessimistic values, timid actions). V is therefore stored against *spare SoC*
``x = soc − need_t(T, backlog)``:

* ``need_t`` — the least SoC from which the block's end is reached alive — has its own
  recursion, exact in SoC since δ does not depend on it:
  ``need_t = clip(min_a [need_{t+1}(T'_a, b'_a) − δ_a], SOC_EPS, 1)``, ``need_H = SOC_EPS``;
* x grid: ``n_soc = 101`` points on [0, 1] (alive, spacing h) and ``n_doomed = 10`` on [−1, 0)
  (doomed, spacing 0.1); interpolation never crosses x = 0. The four (T, backlog) corners of a
  next state are blended at the same x, measured from the need interpolated at (T', b'), so
  the survival boundary always sits on the seam;
* temperature: ``n_temp = 25`` points on [min(T0, min ambient), max(T0, max steady-state
  temperature at full token power)], spaced ``T_max + s·sinh(u)`` with u uniform and
  s = 4 °C, i.e. densest around the trip point where throttling and the thermal penalty start.
  When the steady state can never exceed ``T_max`` on this stretch of trace, the temperature
  cannot affect reward or dynamics and its axis collapses to one point;
* backlog: ``n_backlog = 7`` points on [0, cap], spaced ``20·sinh(u)`` tokens (0, 24, 78, 220,
  610, 1700, 5000 at the default cap): fine where SLO violations start (tens of tokens);
* values between grid points: linear in x, bilinear in (T, backlog); clamped at the ends.

In x, a step moves every alive grid point of a (T, backlog, action) pair by the same number of
cells, so the DP slices rows there and gathers element-wise only near the seam and in the tail
clamped at SoC = 1 (``_continuation``).

**What the DP ignores or approximates.**

* Switch costs (``t_sw``: the measured KV-cache repair + ``set_config``, milliseconds of
  compute and millijoules) are not in the DP: the previous configuration is not a state, so
  transitions are computed with previous = the action itself. The acting step, from the true
  state, does include the switch cost of each candidate.
* The budget allowance (traces with ``budget_w``) is path-dependent. Linearised around a nominal trajectory,
  ``allowance_t(soc) ≈ â_t + capacity · (soc − ŝ_t)`` with (â_t, ŝ_t) the allowance and SoC of the nominal
  trajectory at step t, it is *exact* while the battery only discharges: between two trajectories at the same step
  the supply and the non-LLM load (idle + base) are the same, so the LLM energy the allowance counts and the stored
  energy differ joule for joule. A block without any supply is planned so, in one pass around the cheapest
  configuration's trajectory. With a supply the linearisation is not exact (only η of a surplus is stored), and at
  SoC = 1 it is blind: on a charger at full charge the SoC stays at 1 whatever runs, so the plan cannot see the
  allowance fall, spends it, and overdraws later. Such a block is planned twice and the better plan kept:

  - *linearised*: pass 1 around the cheapest configuration's trajectory, pass 2 (``budget_passes``) around the
    oracle's own trajectory from pass 1;
  - *allowance axis*: the allowance A (joules) as a fourth state, ``n_allowance`` points per step spaced
    ``c + s·sinh(u)`` around c = −B·grace, where overdraws start to count (s = ``ALLOWANCE_SCALE_STEPS`` steps of
    budget, B·dt), out to c − gain_t and c + spend_t: what the rest of the block can add to the allowance at most
    and take from it at most. Below the first the allowance cannot climb back to c, above the second it cannot fall
    to c, so V is flat beyond both and clamping is exact. Its step is exact (A' = A + B·dt − E_llm, the same shift
    for every SoC; the overdraw test on A itself), but V is interpolated linearly in A, which smears it over a long
    block where the allowance ends up between points; on a small battery the linearisation's SoC grid resolves the
    allowance more finely (one SoC cell of a 0.2 Wh battery is 7 J; of a 47 Wh laptop's, 1.7 kJ);
  - each plan's greedy steps are simulated exactly from the planned state over the block (``_rollout``), and the plan
    with the higher return is kept (``plans[…]["budget_method"]``; ``benchmarks/oracle_budget_axis.py`` measures
    both). The acting step always uses the true allowance.

**Masked** (``masked=True``, the controller ``oracle-masked``): the same DP, with every action the env's
action mask forbids in a state (``runtime.rules.Feasibility.mask``: the thermal rule near the trip point,
the cheap set below the reserve, the link and the processors) left out of the max, and the acting step held
to the bound env's mask. Its return is the best any policy that obeys the masks can reach (a masked learned
policy, a rule stepped down to the mask, a policy behind the runtime's shield), where the plain oracle may run
forbidden configurations: the gap between the two is out of reach for every masked controller. The mask reads
the state only through two tests, hot (T above the trip point less ``HOT_MARGIN_C``) and low (SoC below the
reserve with too little supply), so the DP asks ``Feasibility.mask`` for the four (hot, low) cases of each
row and picks per grid point: the mask rules keep one owner.

**Charger-blind** (:class:`ChargerBlindOracle`, the controller ``oracle-charger-blind``): the same DP planning as
if no charger were plugged in later than now, re-planning when one is; what the oracle's lead owes to foresight
of chargers (``benchmarks/charger_foresight.py``).

**Foresight-free** (:class:`ForesightFreeOracle`, the controller ``oracle-blind``): charger-blind, and planning each
phone's and laptop's session as if it went on to the episode's cap; a death the policies have where it survives is one
that control would have avoided (``benchmarks/foresight_free.py``).

The oracle needs the env's true state, not just the observation: ``bind(env)`` (or a list, one
per VecEnv sub-env; by default the env it was built with). It reads ``env.trace`` and
``env.sim_state()`` (SoC, temperature, backlog, row, episode start row, current configuration,
budget allowance) — the env's public state, never its private fields. Plans are cached per (trace,
start, horizon, start state); a block of ``horizon_steps`` is planned on its first step, and an
episode longer than that is re-planned block by block.

**Randomised episodes.** An episode reset with ``options["ambient_shift_c"]`` or ``options["capacity_scale"]``
(the weather and battery randomisation of ``envs.batched``, ``train.py --hot-frac`` / ``--capacity-sigma``, and of
the demonstrations, ``--demo-dr``) runs on a variant of its trace: the ambient raised by the shift, the capacity
scaled. The oracle reads both from ``sim_state()`` and plans on that variant (its own copy of the trace, kept
beside the env's, at most ``MAX_VARIANTS`` at a time), so its labels on such an episode are as exact as on the
trace itself (tests/test_oracle_variants.py pins them to the oracle on a trace shifted beforehand). At the first
variant the padded trace table is made once with room for ``MAX_VARIANTS``; each variant then fills one row
(``PaddedTraces.append``) instead of the whole table being built again (benchmarks/oracle_variants.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from agents.baselines import smallest_config
from envs.tables import PaddedTraces, TraceArrays, prepare_traces
from runtime.dynamics import Dynamics, StepResult
from runtime.rules import HOT_MARGIN_C, floor_in_force, saver_horizon_s, saver_soc

TEMP_SCALE_C = 4.0  # temperature grid: spacing ≈ TEMP_SCALE_C · du near T_max, wider far away
BACKLOG_SCALE_TOKENS = 20.0  # backlog grid: spacing ≈ this · du near 0
MAX_VARIANTS = 64  # randomised trace variants kept at once (module docstring); then the table starts afresh
NO_LIMIT_J = 1e30  # an allowance so negative that any overdraw is a violation
SOC_EPS = 1e-5  # least SoC that counts as alive at the end (> SEAM_TOL: float32 round-off can't kill)
FAST_MAX_GROUPS = 16  # more distinct per-pair shifts than this: gather element-wise instead
SEAM_TOL = 1e-6  # spare SoC this close below 0 is round-off (float32) of a state at the need
ALLOWANCE_SCALE_STEPS = 2.0  # allowance grid: spacing ≈ this many steps' budget (B·dt) · du where overdraws count
N_ALLOWANCE = 9  # allowance grid points on a block with a budget and a supply (docs/agents.md: the measured error)


@dataclass
class OraclePlan:
    """Value function of one (trace, start, horizon) block."""

    k: int  # trace index in the oracle's traces (the env's, then the randomised variants)
    start: int  # first trace row
    horizon: int  # steps planned
    episode_start: int  # the env's _i0 when planned
    spare_grid: np.ndarray  # spare SoC x = soc − need: n_doomed points below 0, n_soc on [0, 1]
    temp_grid: np.ndarray
    backlog_grid: np.ndarray
    values: np.ndarray  # (horizon + 1, n_temp, n_backlog, n_allowance (1: no axis), n_spare) float32
    soc_need: np.ndarray  # (horizon + 1, n_temp, n_backlog): least SoC that survives to the end
    h_alive: float = 0.01  # spare-SoC spacing above the cliff
    h_doomed: float = 0.1  # spare-SoC spacing below it
    nominal_soc: np.ndarray | None = None  # budget linearisation (per step), None without budget
    # the allowance axis (J before the step; (horizon + 1, n_allowance), one grid per step) of a plan made with the
    # allowance as a state, else None (module docstring)
    allowance_grid: np.ndarray | None = None
    nominal_allowance_j: np.ndarray | None = None
    plan_s: float = 0.0
    value0: float = float("nan")  # interpolated V_0 at the state it was planned from
    info: dict = field(default_factory=dict)
    # the episode's objective (runtime.dynamics.objective_inputs): w_q, w_e, q_min, and the first row at
    # which a last-until deadline is no longer ahead (-1: none)
    objective: tuple = (1.0, 0.0, float("nan"), -1)
    # masked oracle: per step, the env's action mask in its four (hot, low) cases (OracleController._mask_cases),
    # computed once per plan for every backward pass and every acting step; empty when not masked
    mask_cases: list = field(default_factory=list)
    # a block with a budget and a supply: each candidate plan's return, simulated from the planned state (plan())
    budget_rollouts: dict = field(default_factory=dict)


def _okey(objective: tuple) -> tuple:
    """A hashable, NaN-safe key of an objective tuple (NaN != NaN would defeat the plan cache)."""
    return tuple("nan" if v != v else v for v in objective)


def _locate(grid: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell (lower, upper index) and weight of the upper point for linear interpolation.

    Points beyond the grid are clamped to its ends. A one-point grid gives weight 0.
    """
    n = len(grid)
    if n == 1:
        z = np.zeros(np.shape(x), dtype=np.intp)
        return z, z, np.zeros(np.shape(x))
    lo = np.clip(np.searchsorted(grid, x, side="right") - 1, 0, n - 2)
    w = np.clip((x - grid[lo]) / (grid[lo + 1] - grid[lo]), 0.0, 1.0)
    return lo, lo + 1, w


def _warped_grid(lo: float, hi: float, centre: float, scale: float, n: int) -> np.ndarray:
    """n points on [lo, hi], spaced ``centre + scale·sinh(u)`` with u uniform (dense at centre)."""
    if n == 1 or hi <= lo:
        return np.array([lo])
    u = np.linspace(np.arcsinh((lo - centre) / scale), np.arcsinh((hi - centre) / scale), n)
    g = centre + scale * np.sinh(u)
    g[0], g[-1] = lo, hi
    return g


class OracleController:
    """Backward-DP oracle over (SoC, temperature, backlog) with the whole trace known.

    Args:
        env: The ``MicroLLMPowerEnv`` whose profile, traces and parameters it plans with (and,
            until ``bind`` says otherwise, the env it acts on).
        n_soc, n_temp, n_backlog: Grid sizes (module docstring).
        horizon_steps: Steps planned at once (the evaluation episode length).
        budget_passes: Planning passes on blocks where the budget allowance is linearised (1: nominal = the
            cheapest configuration's trajectory; 2: then the oracle's own trajectory).
        n_allowance: Allowance grid points on blocks with a budget and a supply (module docstring); 0: linearise
            the allowance there too (the former method, kept to measure what the axis is worth).
        n_doomed: Spare-SoC points below the survival cliff (on [−1, 0)).
        cache_size: Plans kept (each ``(H+1)·n_temp·n_backlog·(n_soc+n_doomed)`` float32, × ``n_allowance``
            on a block with the allowance axis).
        masked: Plan and act within the env's action masks (module docstring; ``oracle-masked``).
    """

    name = "oracle"

    def __init__(self, env, n_soc: int = 101, n_temp: int = 25, n_backlog: int = 7,
                 n_doomed: int = 10, horizon_steps: int = 720, budget_passes: int = 2,
                 cache_size: int = 2, masked: bool = False, n_allowance: int = N_ALLOWANCE):
        self.env = env.unwrapped
        self.envs = [self.env]
        self.dyn = Dynamics(self.env.costs, self.env.params)
        #: the traces the oracle plans on: the env's, then the randomised variants met (module docstring)
        self.traces = list(self.env.traces)
        self.n_base = len(self.traces)
        self.variants: dict[tuple, int] = {}  # (base index, shift, scale) -> index into self.traces
        self._base_of: dict[int, int] = {}  # variant index -> base index
        self.padded = PaddedTraces(self.traces)
        c = self.env.costs
        self.n_actions = len(c.names)
        self.actions = np.arange(self.n_actions)
        self.n_soc, self.n_temp, self.n_backlog = int(n_soc), int(n_temp), int(n_backlog)
        self.n_doomed = max(1, int(n_doomed))
        self.fast_shift = True  # False: element-wise lookup everywhere (same values; for tests)
        self.horizon_steps, self.budget_passes = int(horizon_steps), int(budget_passes)
        self.n_allowance = max(0, int(n_allowance))
        self.cheapest = smallest_config(c)
        self.roles = np.asarray(c.roles, dtype=np.int64)  # processors each action needs (outages mask them)
        self.max_token_w = float(np.max(c.tps * c.ept_j))
        self.w_death = float(self.env.w.death)
        self.cache: OrderedDict[tuple, OraclePlan] = OrderedDict()
        self.cache_size = int(cache_size)
        self.current: dict[int, OraclePlan] = {}
        self.plans: list[dict] = []  # one record per plan made: trace, start, horizon, plan_s, value0
        self.masked = bool(masked)
        if self.masked:
            self.name = "oracle-masked"
            if self.env.params.min_dwell_steps > 1:
                raise ValueError("oracle-masked: the dwell rule (min_dwell_steps "
                                 f"{self.env.params.min_dwell_steps}) depends on the steps since the last switch, "
                                 "which is not a state of the DP; evaluate it with min_dwell_steps 0")

    # ---- binding -----------------------------------------------------------------------------
    def bind(self, envs) -> OracleController:
        """Act on ``envs`` (one env, or a list indexed like the VecEnv's sub-envs)."""
        self.envs = [e.unwrapped for e in (envs if isinstance(envs, (list, tuple)) else [envs])]
        self.current.clear()
        return self

    @staticmethod
    def true_state(env) -> dict:
        """The bound env's state the oracle acts from (``MicroLLMPowerEnv.sim_state``)."""
        return env.sim_state()

    def _sim(self, k: int, i: int, soc, temp_c, backlog, config, allowance_j,
             actions: np.ndarray, objective: tuple = (1.0, 0.0, float("nan"), -1)) -> StepResult:
        """One step of the dynamics from a batch of states on trace k, row i, under ``objective``."""
        n = len(actions)
        s = self.dyn.state(n, soc, temp_c, backlog, allowance_j, config)
        kk, ii = np.full(n, k), np.full(n, i)
        wq, we, qmin, until_row = objective
        x = self.padded.inputs(kk, ii, (wq, we, qmin, 1.0 if i < until_row else 0.0))
        return self.dyn.step(s, actions, x, self.padded.plant(kk))[1]

    def _trace_index(self, env) -> int:
        for k, t in enumerate(self.env.traces):
            if t is env.trace:
                return k
        names = [t.name for t in self.env.traces]
        return names.index(env.trace.name)  # a different env object over the same traces

    def base_index(self, k: int) -> int:
        """The env's trace that trace ``k`` of ``self.traces`` is (a variant of)."""
        return k if k < self.n_base else self._base_of[k]

    def _variant(self, k: int, shift_c: float, scale: float) -> int:
        """Index in ``self.traces`` of trace ``k`` with its ambient raised by ``shift_c`` and its capacity × ``scale``
        (``k`` itself when neither applies); made on first use (module docstring, "Randomised episodes")."""
        if shift_c == 0.0 and scale == 1.0:
            return k
        key = (k, float(shift_c), float(scale))
        if key not in self.variants:
            if len(self.variants) >= MAX_VARIANTS:  # start afresh: plans refer to indices that are about to go
                del self.traces[self.n_base:]
                self.variants.clear()
                self.cache.clear()
                self.current.clear()
            tr = self.traces[k]
            self.traces.append(dataclasses.replace(
                tr, name=f"{tr.name} (ambient {shift_c:+.2f} C, capacity x{scale:.4f})",
                ambient_c=[a + shift_c for a in tr.ambient_c], capacity_j=tr.capacity_j * scale))
            self.variants[key] = len(self.traces) - 1
            self._base_of = {v: kk for (kk, _, _), v in self.variants.items()}
            if self.padded.count == len(self.traces) - 1 and self.padded.count < len(self.padded.n):
                self.padded.append(self.traces[-1])  # one row, in the room made for the variants
            else:  # the first variant, or the first after a fresh start: room for MAX_VARIANTS, made once
                self.padded = PaddedTraces(self.traces, spare=MAX_VARIANTS - 1)
        return self.variants[key]

    # ---- planning ----------------------------------------------------------------------------
    def plan(self, k: int, start: int, horizon: int, soc: float, temp_c: float, backlog: float = 0.0,
             config: int | None = None, allowance_j: float = 0.0, episode_start: int | None = None,
             objective: tuple = (1.0, 0.0, float("nan"), -1)) -> OraclePlan:
        """Backward DP for trace ``k`` rows ``start … start+H−1`` (H = min(horizon, rows left)).

        The start state only sets the temperature grid's range and the budget linearisation's
        nominal trajectory; the value function covers the whole grid.
        """
        t0 = time.perf_counter()
        tr = self.traces[k]
        H = int(min(horizon, tr.n - start))
        rows = np.arange(start, start + H)
        dev = tr.device
        amb = np.asarray(tr.ambient_c)[rows]
        base = np.asarray(tr.base_w)[rows]
        t_hot = float(np.max(amb + dev.r_th_c_per_w * (dev.idle_power_w + base + self.max_token_w)))
        t_lo, t_hi = min(temp_c, float(amb.min())), max(temp_c, t_hot)
        if t_hi <= dev.t_max_c:  # never above the trip point: temperature changes nothing
            temp_grid = np.array([temp_c])
        else:
            temp_grid = _warped_grid(t_lo, t_hi, dev.t_max_c, TEMP_SCALE_C, self.n_temp)
        cap_b = self.env.backlog_cap
        backlog_grid = _warped_grid(0.0, cap_b, 0.0, BACKLOG_SCALE_TOKENS, self.n_backlog)
        h, hd = 1.0 / (self.n_soc - 1), 1.0 / self.n_doomed
        spare_grid = np.concatenate([(np.arange(self.n_doomed) - self.n_doomed) * hd, np.arange(self.n_soc) * h])
        plan = OraclePlan(k=k, start=start, horizon=H, spare_grid=spare_grid, temp_grid=temp_grid,
                          backlog_grid=backlog_grid, values=np.zeros(0), soc_need=np.zeros(0),
                          h_alive=h, h_doomed=hd,
                          episode_start=start if episode_start is None else episode_start,
                          objective=tuple(objective))
        if self.masked:
            deadline_s = self._deadline_s(k, plan.objective[3])
            q_min = plan.objective[2] if self.env.params.floor_rule else float("nan")  # the floor rule
            plan.mask_cases = [self._mask_cases(k, i, plan.episode_start, deadline_s, q_min) for i in rows]
        a0 = self.env.full_config if config is None else int(config)
        budget = np.asarray(tr.budget_w)[rows]
        has_budget = bool(np.any(budget == budget))
        # without any supply the battery only discharges and the linearisation is exact from
        # any nominal trajectory: one pass is enough
        exact = not np.any(np.asarray(tr.supply_w)[rows] > 0)
        passes = max(1, self.budget_passes) if has_budget and not exact else 1
        axis = has_budget and not exact and self.n_allowance > 0
        if axis:  # the allowance as a state (filled step by step by _backward), on a copy of the empty plan
            plan_axis = dataclasses.replace(plan, allowance_grid=np.zeros((H + 1, self.n_allowance)))
        for p in range(passes):
            if has_budget:
                policy = None if p == 0 else plan
                plan.nominal_soc, plan.nominal_allowance_j, _ = self._nominal(
                    k, start, H, soc, temp_c, backlog, a0, allowance_j, policy, plan.objective)
            self._backward(plan)
        budget_method = "linearised" if has_budget else "none"
        if axis:
            self._backward(plan_axis)
            # keep the plan that does better from the state planned from: each plan's greedy steps, simulated
            # exactly (the dynamics are deterministic given the trace), over the block
            state = (soc, temp_c, backlog, a0, allowance_j)
            got = {"linearised": self._rollout(plan, state), "allowance-axis": self._rollout(plan_axis, state)}
            if got["allowance-axis"] > got["linearised"]:
                plan, budget_method = plan_axis, "allowance-axis"
            plan.budget_rollouts = got
        plan.value0 = float(self._interp(plan, 0, np.array([soc]), np.array([temp_c]), np.array([backlog]),
                                         np.array([allowance_j]))[0])
        plan.plan_s = time.perf_counter() - t0
        plan.info = {"trace": tr.name, "start": start, "horizon": H, "passes": passes,
                     "grid": [self.n_soc, len(temp_grid), len(backlog_grid)],
                     "budget_method": budget_method, "budget_rollouts": plan.budget_rollouts,
                     "soc_need0": float(self._need(plan, 0, temp_c, backlog))}
        self.plans.append({**plan.info, "plan_s": plan.plan_s, "value0": plan.value0})
        return plan

    def _backward(self, plan: OraclePlan) -> None:
        """Fill ``plan.values`` and ``plan.soc_need`` by backward induction (module docstring)."""
        k, H = plan.k, plan.horizon
        tr = self.traces[k]
        tg, bg, xg, ag = plan.temp_grid, plan.backlog_grid, plan.spare_grid, plan.allowance_grid
        nT, nB, nX, A = len(tg), len(bg), len(xg), self.n_actions
        nA = 1 if ag is None else ag.shape[1]
        it, ib, ia = (x.ravel() for x in np.meshgrid(np.arange(nT), np.arange(nB), self.actions, indexing="ij"))
        node = it * nB + ib
        temp_p, back_p = tg[it], bg[ib]
        P = len(ia)

        def per_row(v):  # a per-pair array, once per allowance grid point (rows are pair-major)
            return v if nA == 1 else np.repeat(v, nA, axis=0)

        xg32 = xg.astype(np.float32)
        V = np.zeros((H + 1, nT, nB, nA, nX), dtype=np.float32)
        need = np.full((H + 1, nT, nB), SOC_EPS)
        grace = self.env.params.budget_grace_s
        if ag is not None:
            # the allowance axis at step t spans what the rest of the block can do to it, around the point where
            # overdraws start to count (c = −B·grace): below c − gain_t the allowance cannot climb back to c, above
            # c + spend_t it cannot fall to c, so V is flat beyond both and clamping there is exact
            b_w = float(np.nanmax(np.asarray(tr.budget_w)[plan.start:plan.start + H]))
            c_j, scale_j = -b_w * grace, max(ALLOWANCE_SCALE_STEPS * b_w * self.env.params.step_s, 1e-3)
            gain = spend = 0.0
            ag[H] = _warped_grid(c_j - 1.0, c_j + 1.0, c_j, scale_j, nA)
        for t in range(H - 1, -1, -1):
            i = plan.start + t
            # from soc = 0 with a zero allowance: δ > 0, rewards, next temperature / backlog
            obj = plan.objective
            up = self._sim(k, i, 0.0, temp_p, back_p, ia, 0.0, ia, obj)
            # the SoC- and allowance-free part (the reserve term depends on the SoC after the step)
            r_base = up.reward - up.r_budget - up.r_death - up.r_reserve
            soc_up, d_allow = up.soc, up.budget_left_j  # d_allow: the allowance's change, B·dt − E_llm
            temp_n, back_n = up.temp_c, up.backlog
            # from soc = 1 with an exhausted allowance: δ < 0, and the overdraw penalty
            down = self._sim(k, i, 1.0, temp_p, back_p, ia, -NO_LIMIT_J, ia, obj)
            pen = down.r_budget
            delta = np.where(soc_up > 0.0, soc_up, down.soc - 1.0)
            # the next state's cell in (T, backlog) and its bilinear weights
            t0_, t1_, wt = _locate(tg, temp_n)
            b0_, b1_, wb = _locate(bg, back_n)
            corners = ((t0_ * nB + b0_, (1 - wt) * (1 - wb)), (t0_ * nB + b1_, (1 - wt) * wb),
                       (t1_ * nB + b0_, wt * (1 - wb)), (t1_ * nB + b1_, wt * wb))
            # survival need, exact in SoC: s + δ must reach the next state's need
            need1 = need[t + 1].reshape(-1)
            need_next = sum(need1[c] * w for c, w in corners)
            # (capped at 1: above it every state dies and the cap only keeps x' on the grid)
            off = self._unavailable(k, i)  # actions on a processor that is down at this step
            need_a = need_next - delta
            if off is not None:  # they cannot be what keeps the battery alive
                need_a = np.where(off[ia], np.inf, need_a)
            need[t] = np.clip(need_a.reshape(nT, nB, A).min(-1), SOC_EPS, 1.0)
            need_now = need[t].reshape(-1)[node]
            # V_{t+1} on the spare-SoC grid at the next (T, backlog): blend of the 4 corners
            V1 = V[t + 1].reshape(nT * nB, nA * nX)
            W = V1[corners[0][0]] * corners[0][1].astype(np.float32)[:, None]
            for c, w in corners[1:]:
                if w.any():  # skips the empty corners of a one-point temperature axis
                    W += V1[c] * w.astype(np.float32)[:, None]
            Wb = W = W.reshape(P * nA, nX)
            if ag is not None:  # and at the next allowance, A + (B·dt − E_llm): the same shift for every SoC
                gain += max(0.0, float(d_allow.max()))
                spend += max(0.0, -float(d_allow.min()))
                ag[t] = _warped_grid(c_j - gain - 1.0, c_j + spend + 1.0, c_j, scale_j, nA)
                a0_, a1_, wa = _locate(ag[t + 1], ag[t][None, :] + d_allow[:, None])  # (P, nA)
                first = (np.arange(P) * nA)[:, None]
                wa = wa.astype(np.float32).reshape(-1, 1)
                W = Wb[(first + a0_).ravel()]  # whole rows: a gather of contiguous n_spare blocks
                W += wa * (Wb[(first + a1_).ravel()] - W)
            cont, dead = self._continuation(W, per_row(need_now + delta), per_row(need_next), plan,
                                            fast=self.fast_shift)
            keep = self._keep(plan, i)
            if keep < 1.0:  # the session may end in this step: what follows counts only if it goes on
                cont *= np.float32(keep)
            r32 = per_row(r_base.astype(np.float32))[:, None]
            cont += r32
            K = dead.shape[1]
            cont[:, :K] = np.where(dead, r32 - np.float32(self.w_death), cont[:, :K])
            Q = cont
            bud = tr.budget_w[i]
            if bud == bud and np.any(pen < 0):
                if ag is not None:  # exact: overdrawn after the step when A + (B·dt − E) + B·grace < 0
                    over = (ag[t][None, :] + d_allow[:, None] + bud * grace) < 0  # (P, nA)
                    Q += np.where(over, pen[:, None], 0.0).astype(np.float32).reshape(-1, 1)
                else:
                    # allowance before the step ≈ â_t + cap·(soc − ŝ_t); violated after it when
                    # allowance + (B·dt − E) + B·grace < 0  ⇔  soc < threshold
                    thr = (plan.nominal_soc[t]
                           - (plan.nominal_allowance_j[t] + d_allow + bud * grace) / tr.capacity_j)
                    below = xg32[None, :] < (thr - need_now).astype(np.float32)[:, None]  # soc < thr
                    Q += np.where(below, pen.astype(np.float32)[:, None], np.float32(0.0))
            if i < obj[3]:  # last-until: below the reserve after the step, soc + δ < reserve
                lim = per_row((self.env.params.reserve_soc - delta - need_now).astype(np.float32))
                Q += np.where(xg32[None, :] < lim[:, None], np.float32(-self.env.params.weights.reserve),
                              np.float32(0.0))
            if off is not None:
                Q[per_row(off[ia])] = -np.inf
            cases = plan.mask_cases[t] if plan.mask_cases else None
            if cases is not None:  # the env's action mask at each grid point: (hot, low) picks the case
                hot = (temp_p > tr.device.t_max_c - HOT_MARGIN_C).astype(np.int64)
                low = (xg[None, :] + per_row(need_now)[:, None] < cases[2]) & cases[1]
                allowed = np.where(low, per_row(cases[0][hot, 1, ia])[:, None],
                                   per_row(cases[0][hot, 0, ia])[:, None])
                Q[~allowed] = -np.inf
            V[t] = Q.reshape(nT, nB, A, nA, nX).max(2)
        plan.values, plan.soc_need = V, need

    def _continuation(self, W: np.ndarray, soc_gain: np.ndarray, need_next: np.ndarray,
                      plan: OraclePlan, fast: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """V_{t+1} after the step from every spare-SoC grid point, for every pair.

        Grid point x_j of a pair's node is soc = need_now + x_j; the step takes it to
        soc' = min(soc + δ, 1), i.e. spare x' = min(x_j + soc_gain, 1) − need_next with
        ``soc_gain = need_now + δ`` (δ does not depend on SoC). Away from the cliff and the
        clamp at 1 this is a shift by the same number of cells for every alive grid point of a
        pair, so the fast path slices rows instead of gathering elements; the first K columns
        (doomed grid points and those that may land across the cliff) and the clamped tail use
        the general lookup (``fast=False``: the general lookup everywhere — same result).

        Args:
            W: (pairs, n_spare) float32, V_{t+1} blended to each pair's next (T, backlog).
            soc_gain: (pairs,) need_now + δ, float64.
            need_next: (pairs,) the survival need at the next state, float64.

        Returns:
            ``cont`` (pairs, n_spare) float32 and ``dead`` (pairs, K) bool: battery death in
            the step (soc + δ ≤ 0; only ever within the first K columns).
        """
        xg = plan.spare_grid.astype(np.float32)
        P, nX, J, h = W.shape[0], W.shape[1], self.n_doomed, plan.h_alive
        shift = (soc_gain - need_next) / h  # spare change in alive cells (≤ 0 but where capped)
        # alive columns that may land below the cliff, or die: x_j + soc_gain − need_next < 0
        L = int(np.ceil(max(0.0, -float(shift.min())))) + 1
        m = np.floor(shift)
        groups = np.unique(m)
        K = J + L if fast else nX
        if K >= nX or len(groups) > FAST_MAX_GROUPS:
            K = nX
        v = xg[None, :K] + soc_gain.astype(np.float32)[:, None]  # soc + δ
        dead = v <= 0.0
        np.minimum(v, 1.0, out=v)
        v -= (need_next - SEAM_TOL).astype(np.float32)[:, None]  # x' (+ round-off tolerance)
        if K == nX:
            return self._spare_lookup(W, v, plan), dead
        cont = np.empty((P, nX), dtype=np.float32)
        cont[:, :K] = self._spare_lookup(W, v, plan)
        pad = int(max(0.0, groups.max())) + 2
        Wp = np.concatenate([W, np.repeat(W[:, -1:], pad, 1)], 1)  # x' beyond 1: the last point
        frac = (shift - m).astype(np.float32)[:, None]
        for g in groups:
            rows = np.flatnonzero(m == g)
            lo = K + int(g)
            Wr = Wp[rows]
            base = Wr[:, lo:lo + nX - K]
            cont[rows, K:] = base + frac[rows] * (Wr[:, lo + 1:lo + 1 + nX - K] - base)
        # clamp at full: soc + δ > 1 ⇒ x' = 1 − need_next whatever the grid point
        tail = xg[None, K:] > (1.0 - soc_gain).astype(np.float32)[:, None]
        if tail.any():
            top = (1.0 - need_next + SEAM_TOL).astype(np.float32)[:, None]
            np.copyto(cont[:, K:], self._spare_lookup(W, top, plan), where=tail)
        return cont, dead

    def _spare_lookup(self, W: np.ndarray, x: np.ndarray, plan: OraclePlan) -> np.ndarray:
        """Row-wise linear interpolation of ``W`` (rows, n_spare) at spare SoC ``x`` (rows, m),
        never across the survival cliff at x = 0: x ≥ 0 uses the alive points (spacing h),
        x < 0 the doomed points (spacing h_d) and at most the last doomed one. ``x`` is
        overwritten (it is a temporary of the caller)."""
        J, nX = self.n_doomed, W.shape[1]
        alive = x >= 0.0
        x *= np.where(alive, np.float32(1.0 / plan.h_alive), np.float32(1.0 / plan.h_doomed))
        x += np.float32(J)
        np.clip(x, 0.0, nX - 1, out=x)
        i0 = x.astype(np.int32)  # floor: x ≥ 0
        x -= i0  # the weight of the upper point
        i1 = np.minimum(i0 + 1, nX - 1)
        np.copyto(i1, np.minimum(i1, J - 1), where=~alive)
        offs = (np.arange(W.shape[0], dtype=np.int32) * nX)[:, None]
        i0 += offs
        i1 += offs
        lo = W.take(i0)
        lo += x * (W.take(i1) - lo)
        return lo

    def _interp(self, plan: OraclePlan, t: int, soc, temp_c, backlog, allowance_j) -> np.ndarray:
        """V_t at arrays of states: bilinear in (T, backlog) (trilinear with the allowance, on a block that has
        its axis), linear in spare SoC (never across the survival cliff)."""
        V = plan.values[t]
        t0, t1, wt = _locate(plan.temp_grid, temp_c)
        b0, b1, wb = _locate(plan.backlog_grid, backlog)
        if plan.allowance_grid is None:  # one allowance point: the four (T, backlog) corners
            along = ((np.zeros(np.shape(t0), dtype=np.intp), 1.0),)
        else:
            a0, a1, wa = _locate(plan.allowance_grid[t], np.broadcast_to(allowance_j, np.shape(t0)))
            along = ((a0, 1 - wa), (a1, wa))
        corners = [(ti, bi, ai, w * v) for ti, bi, w in ((t0, b0, (1 - wt) * (1 - wb)), (t0, b1, (1 - wt) * wb),
                                                           (t1, b0, wt * (1 - wb)), (t1, b1, wt * wb))
                   for ai, v in along]
        # float64 and no tolerance here: the realised trajectory must never round its way below
        # the need (the DP's float32 tolerance is covered by the SOC_EPS margin at the end)
        x = np.minimum(soc, 1.0) - self._need(plan, t, temp_c, backlog)
        rows = np.stack([V[ti, bi, ai] for ti, bi, ai, _ in corners]).astype(np.float64)  # (4 or 8, n, n_spare)
        out = np.zeros(np.shape(soc))
        for c, (_, _, _, w) in enumerate(corners):
            out += w * self._spare_lookup(rows[c], x.reshape(-1, 1).copy(), plan)[:, 0]
        return out

    def _need(self, plan: OraclePlan, t: int, temp_c, backlog):
        """Least SoC from which the end of the plan can be reached alive, at (T, backlog)."""
        t0, t1, wt = _locate(plan.temp_grid, temp_c)
        b0, b1, wb = _locate(plan.backlog_grid, backlog)
        n = plan.soc_need[t]
        return ((1 - wt) * ((1 - wb) * n[t0, b0] + wb * n[t0, b1])
                + wt * ((1 - wb) * n[t1, b0] + wb * n[t1, b1]))

    def q_values(self, plan: OraclePlan, t: int, soc: float, temp_c: float, backlog: float, config: int,
                 allowance_j: float) -> np.ndarray:
        """Q_t(state, a) for every action: the env's reward from this exact state (switch costs
        included) plus the interpolated V_{t+1} of the next state (0 after death)."""
        r = self._sim(plan.k, plan.start + t, soc, temp_c, backlog, config, allowance_j, self.actions, plan.objective)
        cont = self._interp(plan, t + 1, r.soc, r.temp_c, r.backlog, r.budget_left_j)
        q = r.reward + np.where(r.dead, 0.0, self._keep(plan, plan.start + t) * cont)
        if self.w_death != self.env.w.death:  # a planner with its own price of death (HazardOracle) acts by it too
            q = q - (self.w_death - float(self.env.w.death)) * r.dead
        off = self._unavailable(plan.k, plan.start + t)
        if off is not None:
            q = np.where(off, -np.inf, q)
        cases = plan.mask_cases[t] if plan.mask_cases else None
        if cases is not None:
            hot = int(temp_c > self.traces[plan.k].device.t_max_c - HOT_MARGIN_C)
            q = np.where(cases[0][hot, int(bool(soc < cases[2]) and cases[1])], q, -np.inf)
        return q

    def _deadline_s(self, k: int, until_row: int) -> float:
        """The episode's deadline as the env has it (``runtime.dynamics.episode_objective``): the trace's, else for
        last-until the episode's end (``until_row`` rows); NaN: none."""
        d = float(self.traces[k].deadline_s)
        if d != d and until_row >= 0:
            d = until_row * self.env.params.step_s
        return d

    def _mask_cases(self, k: int, i: int, episode_start: int,
                    deadline_s: float = float("nan"),
                    q_min: float = float("nan")) -> tuple[np.ndarray, bool, float] | None:
        """The env's action mask at row ``i`` of trace ``k`` for the four (hot, low) cases: ``(M, low_ok, low_soc)``
        with ``M[hot, low]`` (2, 2, n_actions) from ``Feasibility.mask`` itself, whether the supply lets
        ``low`` happen at all (low = SoC below ``low_soc`` and ``low_ok``), and ``low_soc``: the reserve, raised by
        the battery saver (``runtime.rules.saver_soc``, as the env; up to ``deadline_s`` with
        ``EnvParams.saver_to_deadline``); ``q_min`` the episode's quality floor (``EnvParams.floor_rule``; NaN:
        none), held where it is in force (``runtime.rules.floor_in_force``). None: nothing is masked at this
        row. As the env: the demand the rule reads is the last step's (the first row's own on the first row).
        Not among them: the budget rule (``EnvParams.budget_rule``), whose mask depends on the allowance, a state of
        the plan rather than of (hot, low); the masked oracle plans a budget as a cost, as the oracle does."""
        tr, dev, rules = self.traces[k], self.traces[k].device, self.env.rules
        bw = float(tr.bandwidth_mbps[i])
        down = int(self.padded.procs_down[k, i])
        first = i == episode_start
        demand = float(tr.demand_tps[i if first else i - 1])
        base_w = float(tr.base_w[i]) + dev.idle_power_w
        supply_w = float(tr.supply_w[i])
        fits = rules.fits(dev.memory_mb * 1e6)
        t_max, margin, reserve = dev.t_max_c, HOT_MARGIN_C, self.env.reserve_soc
        M = np.empty((2, 2, self.n_actions), dtype=bool)
        q_min = floor_in_force(q_min, float(tr.budget_w[i]))
        for hot in (0, 1):
            for low in (0, 1):
                # the mask reads temperature and SoC only through these two tests (runtime.rules)
                temp = t_max if hot else t_max - margin - 1.0
                soc = -1.0 if low else 2.0
                M[hot, low] = rules.mask(demand, temp, float(tr.ambient_c[i]), t_max, dev.r_th_c_per_w, base_w,
                                         soc, reserve, supply_w, bandwidth_mbps=bw, fits=fits, down=down,
                                         q_min=q_min)
        low_ok = supply_w < base_w + demand * rules.ept_min
        p = self.env.params
        horizon = saver_horizon_s(p.saver_s, deadline_s - i * p.step_s, p.saver_to_deadline)
        lo = saver_soc(reserve, horizon, tr.capacity_j, base_w, demand, rules.ept_min, supply_w, p.saver_floor_frac)
        return M, bool(low_ok), float(lo)

    def _keep(self, plan: OraclePlan, i: int) -> float:
        """The chance that the plan's episode goes on after row ``i``, given that it reached it (1: the plan knows
        where it ends; :class:`HazardOracle` weighs a session that may end at any step)."""
        return 1.0

    def _unavailable(self, k: int, i: int) -> np.ndarray | None:
        """Actions that need a processor that is down at row ``i`` of trace ``k`` (None: all available)."""
        down = int(self.padded.procs_down[k, i])
        return (self.roles & down) != 0 if down else None

    def _rollout(self, plan: OraclePlan, state: tuple) -> float:
        """The return of ``plan``'s greedy steps over its block from ``state`` (soc, temp_c, backlog, config,
        allowance_j), simulated exactly."""
        return self._nominal(plan.k, plan.start, plan.horizon, *state, plan, plan.objective)[2]

    def _nominal(self, k, start, H, soc, temp_c, backlog, config, allowance_j, policy: OraclePlan | None,
                 objective: tuple = (1.0, 0.0, float("nan"), -1)):
        """SoC and allowance before each step along the cheapest configuration's trajectory
        (``policy`` None) or the oracle's own (greedy on ``policy``'s values), and the trajectory's return."""
        s_hat, a_hat, ret = np.zeros(H), np.zeros(H), 0.0
        state = (soc, temp_c, backlog, config, allowance_j)
        for t in range(H):
            s_hat[t], a_hat[t] = state[0], state[4]
            if policy is None:
                a = self.cheapest
            else:
                a = int(np.argmax(self.q_values(policy, t, *state)))
            r = self._sim(k, start + t, *state, np.array([a]), objective)
            ret += float(r.reward[0])
            state = (float(r.soc[0]), float(r.temp_c[0]), float(r.backlog[0]), a, float(r.budget_left_j[0]))
            if r.dead[0]:
                s_hat[t + 1:], a_hat[t + 1:] = 0.0, state[4]
                break
        return s_hat, a_hat, ret

    # ---- acting ------------------------------------------------------------------------------
    def _position(self, env) -> tuple[dict, int, int, int, int, int, tuple]:
        """Where the bound env is: its true state, trace index, row, episode start row, the start and length of the
        block covering the row, and the objective the plan is made for."""
        st = self.true_state(env)
        k = self._variant(self._trace_index(env), st.get("ambient_shift_c", 0.0), st.get("capacity_scale", 1.0))
        i, i0 = st["row"], st["episode_start"]
        block = i0 + self.horizon_steps * ((i - i0) // self.horizon_steps)
        H = int(min(self.horizon_steps, self._rows(env, k) - block))
        obj = (*st.get("objective_inputs", (1.0, 0.0, float("nan"))), int(st.get("until_row", -1)))
        return st, k, i, i0, block, H, obj

    def _rows(self, env, k: int) -> int:
        """The rows a plan may cover on trace ``k``: the bound env's trace's (a subclass may plan past them)."""
        return env.trace.n

    def plan_for(self, env, env_index: int = 0) -> tuple[OraclePlan, int]:
        """The plan covering the bound env's current row (planned now if needed) and the step
        index into it."""
        st, k, i, i0, block, H, obj = self._position(env.unwrapped)
        plan = self.current.get(env_index)
        if plan is None or (plan.k, plan.start, plan.horizon, plan.episode_start, _okey(plan.objective)) != \
                (k, block, H, i0, _okey(obj)):
            key = (k, block, H, i0, round(st["soc"], 9), round(st["temp_c"], 6), round(st["backlog"], 6), _okey(obj))
            plan = self.cache.get(key) if i == block else None
            if plan is None:
                plan = self.plan(k, block, H, st["soc"], st["temp_c"], st["backlog"], st["config"],
                                 st["allowance_j"], episode_start=i0, objective=obj)
                if i == block:
                    self.cache[key] = plan
                    while len(self.cache) > self.cache_size:
                        self.cache.popitem(last=False)
            self.current[env_index] = plan
        return plan, i - block

    def act_env(self, env, env_index: int = 0) -> int:
        plan, t = self.plan_for(env, env_index)
        st = self.true_state(env.unwrapped)
        q = self.q_values(plan, t, st["soc"], st["temp_c"], st["backlog"], st["config"], st["allowance_j"])
        if self.masked:  # the bound env's own mask (the DP's agrees with it; tests/test_oracle_masked.py)
            q = np.where(env.unwrapped.action_masks(), q, -np.inf)
        return int(np.argmax(q))

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        """SB3 signature; the observation only sets the batch size — the oracle acts from the
        bound envs' true state (index j of the batch → ``envs[j]``)."""
        obs = np.asarray(observation)
        single = obs.ndim == 1
        n = 1 if single else obs.shape[0]
        if n > len(self.envs):
            raise ValueError(f"oracle bound to {len(self.envs)} env(s) but got a batch of {n}: call bind()")
        acts = np.array([self.act_env(self.envs[j], j) for j in range(n)], dtype=np.int64)
        return (acts[0] if single else acts), state


class ChargerBlindOracle(OracleController):
    """The oracle without foresight of chargers (``oracle-charger-blind``): an expert that knows no more about
    the next plug-in than the device does.

    The plain oracle plans with the whole trace, so on a phone at 19 % it runs the full model when a charger
    arrives in 80 minutes and int4 when none does; the observation cannot tell the two apart, and a student
    cloning it learns their average (on the real phone traces the students die on exactly such episodes, where
    the oracle survives). This expert plans each stretch as if no charger were plugged in later than now: on
    every row after the next plug-in (``plugged`` going 0 → 1) of a trace with a charger, the supply is taken
    as 0 W. When a charger really is plugged in, it re-plans from that row with what is then known. Everything
    else (demand, weather, the end of the block) it still knows, as the oracle does.

    Solar nodes keep the supply as the trace has it: their ``plugged`` is daylight, which a device can forecast
    from the clock (and ``lookahead`` forecasts supply). Same grid and arguments as the oracle; the masked
    variant is not offered (``_mask_cases`` reads the trace's own supply).
    """

    name = "oracle-charger-blind"

    def __init__(self, env, **kwargs):
        if kwargs.get("masked"):
            raise ValueError("oracle-charger-blind has no masked variant")
        super().__init__(env, **kwargs)
        pl = np.asarray(self.padded.plugged) > 0
        charger = np.array([t.device_kind != "solar-node" for t in self.env.traces])
        rise = np.zeros_like(pl)
        rise[:, 1:] = pl[:, 1:] & ~pl[:, :-1]
        #: per trace, the rows where a charger is plugged in (none for a solar node)
        self.plug_rows = [np.flatnonzero(rise[k]) if charger[k] else np.zeros(0, np.int64)
                          for k in range(len(charger))]

    def next_plug_in(self, k: int, i: int) -> int:
        """The first row after ``i`` where a charger is plugged in on trace ``k`` (a row past the trace: none)."""
        r = self.plug_rows[self.base_index(k)]
        j = int(np.searchsorted(r, i, side="right"))
        return int(r[j]) if j < r.size else int(self.padded.supply.shape[1])

    def plan(self, k: int, start: int, horizon: int, *args, **kwargs) -> OraclePlan:
        """The oracle's plan with the supply after the next plug-in taken as 0 W (restored afterwards)."""
        j = self.next_plug_in(k, start)
        sup = self.padded.supply
        if j >= sup.shape[1]:
            plan = super().plan(k, start, horizon, *args, **kwargs)
        else:
            keep = sup[k, j:].copy()
            try:
                sup[k, j:] = 0.0
                plan = super().plan(k, start, horizon, *args, **kwargs)
            finally:
                sup[k, j:] = keep
        plan.info["blind_from"] = j
        return plan

    def plan_for(self, env, env_index: int = 0) -> tuple[OraclePlan, int]:
        """As the oracle's, and a fresh plan from the current row when a charger was plugged in since the
        current plan was made."""
        st, k, i, i0, block, H, obj = self._position(env.unwrapped)
        end = block + H
        plan = self.current.get(env_index)
        stale = plan is None or (plan.k, plan.episode_start, _okey(plan.objective)) != (k, i0, _okey(obj)) \
            or not plan.start <= i < plan.start + plan.horizon or plan.start + plan.horizon != end \
            or i >= plan.info["blind_from"]
        if stale:
            plan = self.plan(k, i, end - i, st["soc"], st["temp_c"], st["backlog"], st["config"],
                             st["allowance_j"], episode_start=i0, objective=obj)
            self.current[env_index] = plan
        return plan, i - plan.start


#: device kinds whose replayed session ends where its log ends (a phone's or laptop's battery session); a solar
#: node's trace is its station's whole record, and its episode ends only at the episode's cap
SESSION_KINDS = ("phone", "laptop")


def extend_session(tr: TraceArrays, rows: int) -> TraceArrays:
    """``tr`` with ``rows`` more rows, as a planner that does not know where the session ends would expect them: no
    charger (supply 0 W, unplugged), the trace's mean demand and own load, its last ambient and link."""
    if rows <= 0:
        return tr
    last = tr.n - 1

    def more(col, value):
        return list(col) + [value] * rows

    return dataclasses.replace(
        tr, n=tr.n + rows, supply_w=more(tr.supply_w, 0.0), plugged=more(tr.plugged, 0.0),
        ambient_c=more(tr.ambient_c, tr.ambient_c[last]), demand_tps=more(tr.demand_tps, float(np.mean(tr.demand_tps))),
        bandwidth_mbps=more(tr.bandwidth_mbps, tr.bandwidth_mbps[last]), budget_w=more(tr.budget_w, tr.budget_w[last]),
        base_w=more(tr.base_w, float(np.mean(tr.base_w))),
        procs_down=None if tr.procs_down is None else more(tr.procs_down, 0))


class ForesightFreeOracle(ChargerBlindOracle):
    """The oracle without foresight of chargers or of the session's end (``oracle-blind``): it knows what a device
    knows of both.

    As :class:`ChargerBlindOracle` for chargers; and on a phone's or laptop's trace (a battery session, which ends
    where its log ends) it plans as if the session went on to the episode's cap (``horizon_steps``), with no
    charger, the session's mean demand and own load (:func:`extend_session`). Its plan for the rows the trace has is
    then the best plan for a session of unknown end. It still knows the demand, weather and own load within the
    session, as the charger-blind oracle does. A death the policies have where this planner survives is a death
    that control, not foresight, would have avoided (``benchmarks/foresight_free.py``). Scores stay normalised by
    the plain oracle. No masked variant.
    """

    name = "oracle-blind"

    def __init__(self, env, **kwargs):
        super().__init__(env, **kwargs)
        self.traces = [extend_session(t, self.horizon_steps) if t.device_kind in SESSION_KINDS else t
                       for t in self.traces]
        self.padded = PaddedTraces(self.traces)

    def _rows(self, env, k: int) -> int:
        """The extended trace's rows: the plan runs past the session's end."""
        return self.traces[k].n


def rows_on_battery(plugged) -> np.ndarray:
    """Per row, the rows since the stretch on battery it is in began (0 on its first row), −1 where plugged in."""
    on = np.asarray(plugged) <= 0
    out = np.full(on.size, -1, dtype=np.int64)
    run = 0
    for j, o in enumerate(on):
        run = run + 1 if o else 0
        if o:
            out[j] = run - 1
    return out


def on_battery_stretches(traces: list[TraceArrays]) -> list[int]:
    """Lengths in rows of the phones' and laptops' stretches on battery: from the log's start or an unplug to the next
    plug-in or the log's end (a session as a device sees it: it ends where a charger comes or the log stops)."""
    out = []
    for t in traces:
        if t.device_kind not in SESSION_KINDS:
            continue
        el = rows_on_battery(t.plugged)
        last = (el >= 0) & (np.append(el[1:], -1) < 0)  # a stretch's last row
        out += [int(x) + 1 for x in el[last]]
    return out


def session_end_rate_per_h(traces: list[TraceArrays], step_s: float) -> float:
    """Stretches on battery ended per hour on battery (:func:`on_battery_stretches`); NaN when there are none."""
    lengths = on_battery_stretches(traces)
    return len(lengths) / (sum(lengths) * step_s / 3600.0) if lengths else float("nan")


def keep_after_elapsed(lengths: list[int], tail_keep: float) -> np.ndarray:
    """``keep[e]``: the empirical chance that a stretch on battery goes on after its row ``e`` (rows from 0), given
    that it reached row ``e``, from the stretches' ``lengths`` in rows; the last entry, ``tail_keep``, holds past the
    longest stretch."""
    L = np.asarray(lengths, dtype=np.int64)
    if L.size == 0 or L.min() < 1:
        raise ValueError("keep_after_elapsed: needs at least one stretch, each at least one row long")
    reached = np.bincount(L, minlength=L.max() + 1)[::-1].cumsum()[::-1][1:]  # reached[e]: stretches longer than e
    ends = np.bincount(L - 1, minlength=L.max())  # ends[e]: stretches whose last row is e
    return np.append(1.0 - ends / reached, float(tail_keep))


class HazardOracle(ForesightFreeOracle):
    """The foresight-free oracle that weighs the chance that the session ends (``oracle-hazard``): the plan that
    maximises the *expected* return of a device that knows of its session's end only what past sessions say.

    As :class:`ForesightFreeOracle` (no charger later than now, each phone's and laptop's session planned as if it
    could go on to the episode's cap), and on those traces the value after each row counts with the probability
    ``keep`` that the session goes on past it: ``V_t = max_a [r_t + (1 − death) · keep_t · V_{t+1}]``, the expected
    return when nothing is earned or lost after the session ends. A death ``k`` rows ahead then costs about
    ``w_death · keep^k``: delaying it is worth the chance that the session ends meanwhile, which the plain
    foresight-free oracle, sure of dying on a session it cannot outlast, does not weigh. The survival need is unchanged
    (it does not depend on the value). Solar nodes are planned as the charger-blind oracle plans them.

    Args:
        session_end_per_h: ``survival="exponential"``: a constant rate of sessions ended per hour on battery,
            ``keep = exp(−rate · step_s)``; None: :func:`session_end_rate_per_h` of ``stretches``.
        survival: ``"exponential"``, or ``"empirical"``: ``keep`` by the rows since the stretch on battery began,
            from the lengths of ``stretches``' stretches (:func:`keep_after_elapsed`; the exponential's past the
            longest), so that a session that has lasted long is expected to go on longer.
        stretches: The traces whose sessions the chance is learned from; None: the train split of the env's trace
            set (the env's own traces when it is the train split or was given trace objects): never the split it
            is scored on.
        death_weight: The price of a death in the plan (None: the env's ``w_death``); the acting step prices a death
            in its own step the same. A reference for how high a price would make the plan hedge.
        n_doomed: Spare-SoC points below the survival cliff; None: as many as above it (``n_soc − 1``). On a session
            it cannot outlast, every state is below the cliff of the extended plan, so the value there needs the
            alive grid's spacing, not the oracle's ten points (with ten, a test trace's return is 8 % below the
            oracle's where it should equal it).
    """

    name = "oracle-hazard"

    def __init__(self, env, session_end_per_h: float | None = None, survival: str = "exponential",
                 stretches: list | None = None, death_weight: float | None = None, n_doomed: int | None = None,
                 **kwargs):
        if n_doomed is None:
            n_doomed = int(kwargs.get("n_soc", 101)) - 1
        super().__init__(env, n_doomed=n_doomed, **kwargs)
        if survival not in ("exponential", "empirical"):
            raise ValueError(f"oracle-hazard: survival {survival!r}; choose exponential or empirical")
        step_s = float(self.env.params.step_s)
        if stretches is None:
            source = getattr(self.env, "trace_source", None)
            stretches = self.env.traces if self.env.split == "train" or isinstance(source, (list, tuple)) \
                else prepare_traces(source, "train", step_s)
        src = list(stretches)
        rate = session_end_rate_per_h(src, step_s) if session_end_per_h is None else float(session_end_per_h)
        if not rate >= 0.0:  # NaN (no session to learn from) or negative
            raise ValueError(f"oracle-hazard: session-end rate {rate} per hour; fix: pass session_end_per_h >= 0 or "
                             "stretches with phone or laptop sessions (the training units' traces)")
        #: sessions ended per hour on battery, and the chance that a session goes on after one row at that rate
        self.session_end_per_h = rate
        self.keep_per_step = float(np.exp(-rate * step_s / 3600.0))
        #: survival="empirical": the chance by rows since the stretch on battery began (None: the constant one)
        self.keep_after = keep_after_elapsed(on_battery_stretches(src), self.keep_per_step) \
            if survival == "empirical" else None
        self.survival = survival
        if death_weight is not None:
            self.w_death = float(death_weight)
        #: per (extended) base trace, the rows since its stretch on battery began, at each row (−1: plugged in)
        self.elapsed = [rows_on_battery(t.plugged) for t in self.traces[:self.n_base]]

    def _keep(self, plan: OraclePlan, i: int) -> float:
        k = plan.k
        if self.traces[k].device_kind not in SESSION_KINDS:
            return 1.0
        if self.keep_after is None:
            return self.keep_per_step
        el = self.elapsed[self.base_index(k)]
        j = self.next_plug_in(k, plan.start)
        # the plan does not know of the next plug-in: from there its stretch on battery goes on (no foresight of the
        # plug-in through the elapsed time either)
        e = int(el[i]) if i < j else int(el[j - 1]) + 1 + i - j
        return float(self.keep_after[min(max(e, 0), len(self.keep_after) - 1)])



__all__ = ["ChargerBlindOracle", "ForesightFreeOracle", "HazardOracle", "OracleController", "OraclePlan",
           "extend_session", "keep_after_elapsed", "on_battery_stretches", "rows_on_battery", "session_end_rate_per_h"]
