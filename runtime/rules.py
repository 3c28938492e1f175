"""Feasibility rules for configurations — shared by the environment's action mask and the
device runtime's safety shield (numpy + standard library only).

A configuration is infeasible *now* when running it at the current demand would

* keep the device above its thermal trip point: near or above ``t_max_c`` only configurations
  whose steady-state temperature ``T_amb + R_th · (P_base + P_idle + demand · e_token)`` stays
  at or below ``t_max_c`` are allowed;
* drain a battery that is already at its reserve: below ``reserve_soc`` while the supply does
  not cover the draw, only the cheapest quarter of configurations (energy per token) is allowed;
  the battery saver (``EnvParams.saver_s``) raises that reserve by the charge the device's own load and the safe
  configuration, less the supply, would take in ``saver_s`` seconds (:func:`saver_soc`); with
  ``EnvParams.saver_to_deadline`` that time reaches a deadline ahead (:func:`saver_horizon_s`), and with
  ``EnvParams.saver_floor_frac`` < 1 that charge is counted from below the reserve (down to empty);
* need a link that is down: at 0 Mbit/s a split configuration (``offload``) is not allowed;
* need a processor that is unavailable (busy, lost or quarantined; ``down``, a bit mask over
  ``runtime.placement.ROLES``): a placement on it is not allowed (the CPU is never down);
* not fit the device's memory: a configuration whose ``device_bytes`` (weights + KV cache of the
  blocks on the device) exceed the device's ``memory_mb`` is never allowed (:meth:`Feasibility.fits`);
* serve below the user's quality floor (``min-energy``; ``EnvParams.floor_rule``): of the configurations the
  rules above allow, only those whose quality is at least ``q_min`` stay allowed — when one does. The floor
  gives way to every safety rule: when none of the configurations they allow meets it, they all stay allowed
  (the user's floor is a cost then, never a death or a trip). Under a power budget it is held within the budget
  rule's mask when that rule is on (:func:`floor_within_budget`: the floor mask comes after the budget mask, so it
  never overdraws the budget; of the configurations the budget allows, those that meet the floor), and is only
  a cost, traded against the budget's, when the budget rule is off (:func:`floor_in_force`);
* overdraw the user's power budget (``max-quality``'s, or any episode's budget; ``EnvParams.budget_rule``): a
  configuration above the budget whose LLM power at the current rate would take the budget's allowance (grace
  included) below what the rule keeps in hand (``EnvParams.budget_reserve_s`` of budget) by the end of the step is
  masked, of those the rules above allow — unless none of them meets the budget,
  then the least power of them stays (:meth:`Feasibility.budget_mask`).

A split configuration's energy per token counts its radio: ``e_token + P_conn / NOMINAL_TPS`` (the
connected-state power spread over a nominal demand) for the cheap set, and ``P_conn`` is added to
its power in the thermal rule.

At least one configuration always stays allowed, so a masked policy can always act: the safe one (the
lowest energy per token on the CPU), unless the floor rule keeps others that meet the floor instead, or the
budget rule others of less power.
:class:`Feasibility` holds the rules for one set of configurations; the environment's action masks, the batched
env, the masked oracle and the runtime shield all use it.
"""

from __future__ import annotations

import math

import numpy as np

from runtime.dynamics import max_power_for_temp_w

HOT_MARGIN_C = 1.0  # start masking this far below the trip point: the model lags by τ
NO_SWITCH_YET = 1 << 30  # decisions since the last switch before the first one: no dwell at the start


def since_switch_after(since_switch, switched):
    """The dwell rule's count after one more decision: 1 when it switched (the switching decision is the first),
    else one more. Scalar (ints and a bool) or batched (arrays); the runtime manager and both environments count
    with it."""
    if isinstance(switched, np.ndarray):
        return np.where(switched, 1, since_switch + 1)
    return 1 if switched else since_switch + 1


def dwell_mask(mask: np.ndarray, current, since_switch, min_dwell: int) -> np.ndarray:
    """The dwell rule as an action mask: within ``min_dwell`` decisions of the last switch only the current
    configuration stays allowed, unless ``mask`` forbids it (then ``mask``: the other rules force a switch at once).

    The runtime manager's rule (``runtime.manager.RuntimeManager``: a policy-driven switch needs
    ``min_dwell_decisions`` decisions since the previous switch, counting the decision that switched as the first),
    for the environments (``EnvParams.min_dwell_steps``). ``since_switch`` counts the decisions since the last
    switch, the one that switched included (``NO_SWITCH_YET`` before any). Scalar (``mask`` (A,), ``current`` and
    ``since_switch`` ints) or batched (``mask`` (n, A), the others (n,)); returns a new array when it holds, else
    ``mask`` itself.
    """
    if min_dwell <= 1:
        return mask
    mask = np.asarray(mask)
    cur = np.asarray(current)
    held = (np.asarray(since_switch) < min_dwell) & np.take_along_axis(mask, cur[..., None], -1)[..., 0]
    if not np.any(held):
        return mask
    only_cur = np.arange(mask.shape[-1]) == cur[..., None]
    return np.where(held[..., None], only_cur, mask)


def saver_soc(reserve_soc, saver_s: float, capacity_j, base_w, demand_tps, ept_min: float, supply_w,
              floor_frac: float = 1.0):
    """The state of charge below which the battery rule holds: ``reserve_soc`` raised by the battery saver, the
    charge that the device's own load and the safe configuration (``base_w + demand · ept_min``), less the supply,
    would take in ``saver_s`` seconds (``EnvParams.saver_s``; 0: the reserve itself). Scalars or numpy arrays.

    ``floor_frac`` (``EnvParams.saver_floor_frac``) is where that charge is counted from, as a share of the reserve:
    1 (the default) from the reserve itself (the saver holds the battery above its reserve for ``saver_s``); 0 from
    empty (it only keeps the device alive for ``saver_s``, and the reserve may be spent within the horizon, as the
    oracle spends it). The threshold is never below the reserve.

    The environments, the oracle's masks and the runtime shield all call it; ``base_w`` is every power that is not
    the model's tokens (device base load + idle), ``capacity_j`` the battery's full charge."""
    if isinstance(saver_s, np.ndarray):  # a horizon per row (saver_horizon_s): the array path
        if not saver_s.any():
            return reserve_soc
    elif not saver_s:
        return reserve_soc
    floor = reserve_soc * floor_frac  # 1: the reserve itself, exactly
    if isinstance(base_w, np.ndarray) or isinstance(capacity_j, np.ndarray) or isinstance(saver_s, np.ndarray):
        need_w = np.maximum(base_w + demand_tps * ept_min - supply_w, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):  # a row not reset yet has capacity 0
            return np.maximum(reserve_soc, floor + np.where(capacity_j > 0, saver_s * need_w
                                                            / np.where(capacity_j > 0, capacity_j, 1.0), 0.0))
    need_w = float(base_w) + float(demand_tps) * ept_min - float(supply_w)
    if need_w <= 0.0 or not capacity_j > 0.0:
        return reserve_soc
    return max(reserve_soc, floor + saver_s * need_w / float(capacity_j))


def saver_horizon_s(saver_s: float, deadline_left_s, to_deadline: bool):
    """The battery saver's horizon, s: ``saver_s``, or with ``to_deadline`` (``EnvParams.saver_to_deadline``) the time
    left to a deadline ahead when that is longer: the user said the session goes on until then (``deploy.py run
    --until``), so the cheap set runs while the device's own load and the safe configuration would take the battery
    to its reserve before it. ``deadline_left_s`` NaN (no deadline) or ≤ 0 (passed): ``saver_s``. Scalars or numpy
    arrays; the environments, the oracle's masks and the runtime shield all call it."""
    if not to_deadline:
        return saver_s
    if isinstance(deadline_left_s, np.ndarray):
        return np.where(deadline_left_s > saver_s, deadline_left_s, saver_s)  # NaN compares False: saver_s
    return deadline_left_s if deadline_left_s > saver_s else saver_s


def floor_in_force(q_min, budget_w):
    """The quality floor the masks hold with the safety rules, before the budget rule (:meth:`Feasibility.floor_mask`;
    NaN: none): min-energy's ``q_min`` where no power budget is set (``budget_w`` NaN). Under a budget the floor is
    held only after the budget rule's mask, within what the budget allows (:func:`floor_within_budget`), and not at
    all without the budget rule: the user's power limit wins and the floor is only a cost, which the reward trades
    against the budget's overdraw. Held before the budget mask, the floor overdrew the budget on every step of the
    overlaid trace sets, which keep each trace's budget under every objective (docs/objectives.md, "The floor as a
    mask rule"). Scalars or numpy arrays; the environments, the masked oracle and the runtime shield all call it (the
    masked oracle plans a budget as a cost, so for it the floor under a budget is a cost too)."""
    if isinstance(q_min, np.ndarray) or isinstance(budget_w, np.ndarray):
        b = np.asarray(budget_w, dtype=np.float64)
        return np.where(b == b, np.nan, q_min)
    return q_min if budget_w != budget_w else float("nan")


def floor_within_budget(q_min, budget_w):
    """The quality floor the masks hold after the budget rule's mask (NaN: none): min-energy's ``q_min`` where a power
    budget is set and the budget rule holds it (the caller's to know), so that of the configurations the budget
    allows, those that meet the floor stay allowed, when one does; NaN where no budget is set (the floor was held
    before, :func:`floor_in_force`). Together the two hold the floor exactly once. Scalars or numpy arrays."""
    if isinstance(q_min, np.ndarray) or isinstance(budget_w, np.ndarray):
        b = np.asarray(budget_w, dtype=np.float64)
        return np.where(b == b, q_min, np.nan)
    return q_min if budget_w == budget_w else float("nan")


def step_down(action: int, allowed: np.ndarray, energy_j_per_token: np.ndarray, quality: np.ndarray) -> int:
    """An allowed configuration for a choice the mask forbids, for a controller without logits (a rule): the
    highest-quality allowed configuration that costs no more energy per token than the choice (ties: the
    cheaper), else the cheapest allowed one; the choice itself when it is allowed. This is how
    ``agents.evaluate`` holds a hand-written rule to the same masks as a masked policy, the way a device's
    shield would (a policy with logits takes its best allowed action instead, ``masked_argmax``)."""
    allowed = np.asarray(allowed, dtype=bool)
    if allowed[action] or not allowed.any():
        return int(action)
    ept, q = np.asarray(energy_j_per_token, dtype=np.float64), np.asarray(quality, dtype=np.float64)
    ok = np.flatnonzero(allowed & (ept <= ept[action]))
    if ok.size:
        return int(ok[np.lexsort((ept[ok], -q[ok]))[0]])
    ok = np.flatnonzero(allowed)
    return int(ok[np.argmin(ept[ok])])


class Feasibility:
    """The feasibility rules over one set of configurations (module docstring), with what they need
    precomputed: the cheapest quarter by energy per token and the safe (lowest-energy) configuration.

    The environment's action mask, the batched env's masks and the runtime shield all use this class.

    Args:
        energy_j_per_token: Per-configuration energy per token (J), (n_configs,).
        tokens_per_s: Per-configuration decode throughput (tok/s, unthrottled; None: unknown): the budget rule
            prices a configuration generating flat out at it.
    """

    CHEAP_QUANTILE = 0.25
    NOMINAL_TPS = 10.0  # tokens/s over which a split configuration's connected-state power is spread

    def __init__(self, energy_j_per_token: np.ndarray, offload: np.ndarray | None = None,
                 connected_w: float = 0.0, device_bytes: np.ndarray | None = None,
                 roles: np.ndarray | None = None, quality: np.ndarray | None = None,
                 tokens_per_s: np.ndarray | None = None) -> None:
        n = np.shape(energy_j_per_token)[0]
        # the profile's quality per configuration (the floor rule; None: no floor can be held)
        self.quality = None if quality is None else np.asarray(quality, dtype=np.float64)
        # processor roles each configuration needs (runtime.placement.role_mask; 1 = the CPU only)
        self.roles = np.ones(n, np.int64) if roles is None else np.asarray(roles, dtype=np.int64)
        self.has_place = bool((self.roles != 1).any())
        self.device_bytes = np.zeros(n) if device_bytes is None else np.asarray(device_bytes, dtype=np.float64)
        self.offload = np.zeros(n, bool) if offload is None else np.asarray(offload) > 0
        self.extra_w = np.where(self.offload, float(connected_w), 0.0)  # radio power of a split configuration
        self.ept_device = np.asarray(energy_j_per_token, dtype=np.float64)  # the model's tokens on the device
        self.ept = self.ept_device + self.extra_w / self.NOMINAL_TPS
        # the tokens/s each configuration serves flat out (the budget rule; unknown: inf)
        self.max_tps = np.full(n, np.inf) if tokens_per_s is None else np.asarray(tokens_per_s, dtype=np.float64)
        # the safe configuration runs on the device's CPU: it needs neither the link nor an accelerator
        local = ~self.offload & (self.roles == 1)
        self.safe = int(np.flatnonzero(local)[np.argmin(self.ept[local])]) if local.any() else int(np.argmin(self.ept))
        self.ept_min = float(self.ept[self.safe])
        self.cheap = self.ept <= np.quantile(self.ept, self.CHEAP_QUANTILE)
        self.cheap[self.safe] = True
        self.has_split = bool(self.offload.any())
        self.local = ~self.offload
        self.all_ok = np.ones(n, dtype=bool)
        self.all_ok.flags.writeable = False
        # dominates[i, j]: configuration i is worth running instead of j when the floor is missed anyway (floor_mask):
        # both local, i costs no more energy per token and serves at least as many tokens/s, better in one of them.
        # Split configurations (latency and radio depend on the link) neither dominate nor are dominated; without a
        # throughput table nothing is.
        self.dominates = np.zeros((n, n), dtype=bool)
        if tokens_per_s is not None:
            e, t = self.ept[:, None], self.max_tps[:, None]
            both = self.local[:, None] & self.local[None, :]
            self.dominates = both & (e <= e.T) & (t >= t.T) & ((e < e.T) | (t > t.T))
        self._dominates_i = self.dominates.astype(np.int32)  # for a matrix product (counts, no overflow)

    def fits(self, memory_bytes: float) -> np.ndarray:
        """Read-only mask of the configurations that fit ``memory_bytes`` (the safe one always stays)."""
        m = self.device_bytes <= memory_bytes
        if m.all():
            return self.all_ok
        m[self.safe] = True
        m.flags.writeable = False
        return m

    def floor_mask(self, q_min, allowed: np.ndarray) -> np.ndarray:
        """The floor rule on ``allowed`` (the other rules' mask): the allowed configurations whose quality is at
        least ``q_min`` when there are any, else the floor is missed this step whatever runs, and the allowed
        configurations that :meth:`undominated` keeps stay; ``q_min`` NaN (no floor) or no quality table: ``allowed``
        itself (not a copy). Batched: ``allowed`` (n, n_configs) and ``q_min`` (n,), row by row.

        Why the dominated ones go when the floor is missed: min-energy rewards no quality, and a step below the floor
        costs the same whichever configuration misses it. A configuration that costs more energy per token and serves
        no more tokens/s than another allowed one only spends energy, budget and heat. Held to the unpruned mask the
        goal-conditioned policies ran such configurations on the steps of an overlaid budget too tight for the floor,
        and lost most of their gap to static-smallest there (docs/objectives.md, "When the floor cannot be met")."""
        if self.quality is None:
            return allowed
        if np.ndim(allowed) == 2:  # the batched env's rows (NaN compares False: such a row keeps ``allowed``)
            q = np.asarray(q_min, dtype=np.float64)
            m = allowed & (self.quality[None, :] >= q[:, None])
            out = np.where(m.any(1, keepdims=True), m, allowed)
            missed = ~m.any(1) & (q == q)
            if missed.any():  # only those rows pay for the pruning
                out[missed] = self.undominated(out[missed])
            return out
        if q_min != q_min:
            return allowed
        m = allowed & (self.quality >= q_min)
        return m if m.any() else self.undominated(allowed)

    def undominated(self, allowed: np.ndarray) -> np.ndarray:
        """``allowed`` less every configuration another allowed one dominates (``self.dominates``: local, no more
        energy per token and no fewer tokens/s, better in one); ``allowed`` itself when none is. Never empties a
        non-empty mask (the cheapest of the fastest is never dominated). Batched: (n, n_configs), row by row."""
        a = np.asarray(allowed, dtype=bool)
        beaten = (a.astype(np.int32) @ self._dominates_i) > 0
        if not beaten.any():
            return allowed
        return a & ~beaten

    def budget_power_w(self, rate_tps):
        """Each configuration's LLM power at ``rate_tps`` tokens/s, W: the tokens' energy + a split configuration's
        connected-state radio power (its per-bit radio energy is left out: a few percent). Every configuration is
        priced at the rate, even one too slow to serve it: its tokens would queue and be served later, at its
        energy per token, so the cheapest per token is also the least power. ``inf`` (no demand known: the model
        generates flat out): each configuration at its own throughput (``tokens_per_s``). Scalar rate:
        (n_configs,); an array (n,): (n, n_configs)."""
        if np.ndim(rate_tps):
            r = np.asarray(rate_tps, dtype=np.float64)[:, None]
            r = np.where(np.isinf(r), self.max_tps[None, :], r)
            return r * self.ept_device[None, :] + self.extra_w[None, :]
        r = self.max_tps if math.isinf(rate_tps) else float(rate_tps)
        return r * self.ept_device + self.extra_w

    def budget_mask(self, rate_tps, budget_w, allowance_j, dt_s: float, allowed: np.ndarray,
                    switch_j=None, keep_s: float = 0.0, keep_tps: float = 0.0) -> np.ndarray:
        """The budget rule on ``allowed`` (the other rules' mask). A configuration is masked when its LLM power at
        ``rate_tps`` (:meth:`budget_power_w`: the demand + the backlog drained in one step), plus ``switch_j`` (its
        switch energy from the current one, J, spread over the ``dt_s`` step; None: 0), is above ``budget_w`` and
        would take ``allowance_j`` (the budget left, its grace included: what ``runtime.dynamics.step_core``'s
        overdraw test reads) below what is kept in hand by the end of the step: ``keep_s`` seconds
        (``EnvParams.budget_reserve_s``) of the budget, or of the safe configuration serving ``keep_tps`` tokens/s
        (``EnvParams.budget_reserve_tps``) when that is more. When nothing allowed stays, the allowed configurations
        of least power at the rate, the switch left out, do (the smallest overdraw from the next step on).
        ``budget_w`` NaN (no budget), or nothing masked: ``allowed`` itself (not a copy). Batched: ``allowed`` (n,
        n_configs), the others (n,), row by row; one row is the batched path's."""
        if np.ndim(allowed) == 1:
            if budget_w != budget_w:
                return allowed
            rows = allowed[None, :]
            m = self.budget_mask(np.array([rate_tps], dtype=np.float64), np.array([budget_w], dtype=np.float64),
                                 np.array([allowance_j], dtype=np.float64), dt_s, rows,
                                 None if switch_j is None else np.asarray(switch_j)[None, :], keep_s, keep_tps)
            return allowed if m is rows else m[0]
        b = np.asarray(budget_w, dtype=np.float64)
        p = steady = self.budget_power_w(rate_tps)
        if switch_j is not None:  # the switch's energy, as power over the step
            p = p + np.asarray(switch_j, dtype=np.float64) / dt_s
        keep = keep_s * np.maximum(b, keep_tps * self.ept_device[self.safe])[:, None]
        with np.errstate(invalid="ignore"):  # NaN budgets compare False: such a row keeps ``allowed``
            over = (p > b[:, None]) & (np.asarray(allowance_j, dtype=np.float64)[:, None]
                                        + (b[:, None] - p) * dt_s < keep)
        if not over.any():
            return allowed
        m = allowed & ~over
        # nothing fits: the least power once running, the switch left out. The switch is paid once, the power every
        # step the budget stays spent; priced in, staying put always looked cheapest, and a run that had stepped
        # down to a configuration dearer than the cheapest stayed on it for the rest of the episode
        pa = np.where(allowed, steady, np.inf)
        least = allowed & (pa <= pa.min(1, keepdims=True))
        return np.where(m.any(1, keepdims=True), m, least)

    def budget_floor_mask(self, rate_tps, budget_w, allowance_j, dt_s: float, allowed: np.ndarray, switch_j=None,
                          keep_s: float = 0.0, keep_tps: float = 0.0, q_min=float("nan"),
                          floor_keep_s: float | None = None, budget_masked: np.ndarray | None = None) -> np.ndarray:
        """The budget rule (:meth:`budget_mask`, keeping ``keep_s`` in hand), then min-energy's floor ``q_min`` within
        what it allows (:func:`floor_within_budget`'s; NaN: none, the budget rule alone). Holding the floor may spend
        the reserve down to ``floor_keep_s`` seconds (``EnvParams.budget_floor_reserve_s``; None or ≥ ``keep_s``: the
        same reserve): of the configurations the budget allows when only that much is kept in hand, those that meet
        the floor stay allowed, when one does; else the budget rule's mask held to the floor as :meth:`floor_mask`
        holds it. The reserve guards against a burst that may come; a step below the floor is a violation now. The
        budget itself is never overdrawn for the floor: with ``floor_keep_s`` = 0 the allowance after the step stays
        ≥ 0 (its grace included). Batched as :meth:`budget_mask`, ``q_min`` (n,). ``budget_masked``: the budget rule's
        mask of these arguments when the caller has it already (the shield keeps it for its reasons)."""
        m = (self.budget_mask(rate_tps, budget_w, allowance_j, dt_s, allowed, switch_j, keep_s, keep_tps)
             if budget_masked is None else budget_masked)
        q = np.asarray(q_min, dtype=np.float64)
        if self.quality is None or not (q == q).any():
            return m
        held = self.floor_mask(q_min, m)
        if floor_keep_s is None or floor_keep_s >= keep_s:
            return held
        loose = self.budget_mask(rate_tps, budget_w, allowance_j, dt_s, allowed, switch_j, floor_keep_s, keep_tps)
        with np.errstate(invalid="ignore"):  # NaN floors compare False: such a row keeps ``held``
            if np.ndim(allowed) == 1:
                f = loose & (self.quality >= q)
                return f if f.any() else held
            f = loose & (self.quality[None, :] >= q[:, None])
        return np.where(f.any(1, keepdims=True), f, held)

    def active(self, temp_c: float, t_max_c: float, soc: float, reserve_soc: float,
               bandwidth_mbps: float = 1.0, down: int = 0) -> bool:
        """Whether any rule can mask something now (hot, below the reserve, the link or a processor down)."""
        return (temp_c > t_max_c - HOT_MARGIN_C or soc < reserve_soc or (self.has_split and bandwidth_mbps <= 0.0)
                or (self.has_place and down != 0))

    def mask(self, demand_tps: float, temp_c: float, ambient_c: float, t_max_c: float, r_th_c_per_w: float,
             base_w: float, soc: float, reserve_soc: float, supply_w: float,
             out: np.ndarray | None = None, bandwidth_mbps: float = 1.0,
             fits: np.ndarray | None = None, down: int = 0, q_min: float = float("nan")) -> np.ndarray:
        """Boolean mask (n_configs,) of the configurations allowed right now.

        ``base_w`` is all power that is not the model's tokens (device base load + idle power).
        Before the floor rule at least the safe configuration stays allowed: when the thermal rule removes
        even it, it alone is allowed (the cheapest set always contains it; it never needs the link). Then
        ``q_min`` (the min-energy quality floor; NaN: none) keeps those that meet it (:meth:`floor_mask`).
        """
        hot = temp_c > t_max_c - HOT_MARGIN_C
        low = soc < reserve_soc and supply_w < base_w + demand_tps * self.ept_min
        if hot:
            allowed_w = max_power_for_temp_w(t_max_c, ambient_c, r_th_c_per_w) - base_w
            if demand_tps * self.ept_min > allowed_w:  # nothing fits, not even the safe one
                m = np.zeros(self.ept.shape[0], dtype=bool)
                m[self.safe] = True
            else:
                m = demand_tps * self.ept_device + self.extra_w <= allowed_w
                if low:
                    m &= self.cheap
        elif low:
            m = self.cheap.copy()
        else:
            m = self.all_ok.copy()
        if self.has_split and bandwidth_mbps <= 0.0:
            m &= self.local
        if self.has_place and down:  # processors that are busy, lost or quarantined
            m &= (self.roles & int(down)) == 0
        if fits is not None:  # the device's memory (``fits(memory_bytes)``)
            m &= fits
        m[self.safe] = True
        m = self.floor_mask(q_min, m)
        if out is None:
            return m
        out[:] = m
        return out


# ---- the schedutil-like rule, in numpy: the baseline controller and the policy's rule hint --------------------------

SCHEDUTIL_HEADROOM = 1.25  # schedutil's 25 % capacity margin (kernel: util × 1.25)
THERMAL_CAP_C = 5.0  # schedutil's thermal cap starts this far below the trip point


def local_configs(n_configs: int, offload: np.ndarray | None = None) -> np.ndarray:
    """Indices of the configurations that run entirely on the device (all, without split ones)."""
    return np.arange(n_configs) if offload is None else np.flatnonzero(np.asarray(offload) == 0)


def efficient_frontier(quality: np.ndarray, energy_j_per_token: np.ndarray,
                       offload: np.ndarray | None = None) -> np.ndarray:
    """Indices of the local configurations on the (quality ↑, energy/token ↓) Pareto frontier.

    A configuration is dropped when another one has at least its quality at no more energy per token (and is
    strictly better in one); of equal (quality, energy) duplicates the first stays. Sorted by energy per token,
    ascending — which on the frontier is also quality ascending.
    """
    quality, ept = np.asarray(quality, dtype=np.float64), np.asarray(energy_j_per_token, dtype=np.float64)
    loc = local_configs(len(quality), offload)
    q, e = np.full(len(quality), -np.inf), np.full(len(quality), np.inf)
    q[loc], e[loc] = quality[loc], ept[loc]
    keep = [j for j in loc if not np.any((q >= q[j]) & (e <= e[j]) & ((q > q[j]) | (e < e[j])))]
    keep = np.array(keep, dtype=int)
    _, first = np.unique(np.stack([q[keep], e[keep]], 1), axis=0, return_index=True)
    keep = keep[np.sort(first)]
    return keep[np.lexsort((-q[keep], e[keep]))]


class SchedutilRule:
    """schedutil-like: the lowest "frequency" (throughput) covering 1.25 × the needed token rate.

    Needed rate = the demand just seen + the backlog drained in one step. Among the efficient configurations
    (quality ↑ as throughput ↓; :func:`efficient_frontier`), pick the slowest whose throughput ≥ ``headroom`` ×
    need (else the fastest). Thermal cap, like the kernel's thermal pressure on the maximum frequency: with
    headroom h < ``thermal_cap_c`` only configurations whose token power ≤ (h / ``thermal_cap_c``) × the largest
    token power are allowed; the choice steps down the frontier until allowed (the cheapest when none is).

    One owner for the rule: ``agents.baselines.SchedutilController`` (the heuristic baseline) and the policy's
    rule hint (``EnvParams.rule_hint``: the scalar env, the batched env and the runtime manager) all call it.
    It reads only observation features (demand, backlog, thermal headroom) and the profile's tables.

    Args:
        decode_tokens_per_s, energy_j_per_token, quality: The profile's per-configuration tables.
        step_s: The decision step (the backlog is drained over one step).
        backlog_cap_tokens: The backlog the observation's ``backlog_frac`` is a fraction of.
        offload: 1 for a split configuration (the rule runs the model on the device only); None: none.
    """

    def __init__(self, decode_tokens_per_s: np.ndarray, energy_j_per_token: np.ndarray, quality: np.ndarray,
                 step_s: float, backlog_cap_tokens: float, offload: np.ndarray | None = None,
                 headroom: float = SCHEDUTIL_HEADROOM, thermal_cap_c: float = THERMAL_CAP_C) -> None:
        self.tps_all = np.asarray(decode_tokens_per_s, dtype=np.float64)
        self.ept = np.asarray(energy_j_per_token, dtype=np.float64)
        self.quality = np.asarray(quality, dtype=np.float64)
        self.front = efficient_frontier(self.quality, self.ept, offload)  # energy ascending
        self.dt, self.backlog_cap = float(step_s), float(backlog_cap_tokens)
        self.headroom, self.thermal_cap_c = float(headroom), float(thermal_cap_c)

    @property
    def front(self) -> np.ndarray:
        """The configurations the rule chooses among, by energy per token ascending (settable: e.g. the CPU's)."""
        return self._front

    @front.setter
    def front(self, front: np.ndarray) -> None:
        self._front = np.asarray(front, dtype=int)
        self.tps, self.front_ept = self.tps_all[self._front], self.ept[self._front]

    def need_tps(self, demand_tps, backlog_frac):
        """Tokens/s to serve this step: the demand just seen plus the backlog, drained now (floats or arrays)."""
        return demand_tps + backlog_frac * self.backlog_cap / self.dt

    def choose(self, demand_tps: float, backlog_frac: float, headroom_c: float) -> int:
        """The rule's configuration (an index into the tables) from three observation features."""
        need = self.need_tps(demand_tps, backlog_frac)
        tps = self.tps
        ok = np.flatnonzero(tps >= self.headroom * need)
        pos = int(ok[np.argmin(tps[ok])]) if ok.size else int(np.argmax(tps))  # position on the frontier
        if headroom_c < self.thermal_cap_c:
            tok_w = np.minimum(need, tps) * self.front_ept
            allowed = tok_w <= max(headroom_c, 0.0) / self.thermal_cap_c * tok_w.max()
            while pos > 0 and not allowed[pos]:
                pos -= 1
        return int(self.front[pos])

    def choose_batch(self, demand_tps: np.ndarray, backlog_frac: np.ndarray, headroom_c: np.ndarray) -> np.ndarray:
        """:meth:`choose` for (n,) arrays, vectorised (a parity test pins it to :meth:`choose`)."""
        need = self.need_tps(np.asarray(demand_tps, dtype=np.float64), np.asarray(backlog_frac, dtype=np.float64))
        h = np.asarray(headroom_c, dtype=np.float64)
        tps = self.tps[None, :]
        ok = tps >= self.headroom * need[:, None]
        # the slowest sufficient one (first on ties, as argmin), else the fastest
        pos = np.where(ok.any(1), np.where(ok, tps, np.inf).argmin(1), int(np.argmax(self.tps)))
        capped = h < self.thermal_cap_c
        if capped.any():
            tok_w = np.minimum(need[capped, None], tps) * self.front_ept[None, :]
            allowed = tok_w <= (np.maximum(h[capped], 0.0) / self.thermal_cap_c)[:, None] * tok_w.max(1)[:, None]
            cols = np.arange(len(self.front))[None, :]
            below = allowed & (cols <= pos[capped, None])  # allowed positions at or below the choice
            last = len(self.front) - 1 - np.argmax(below[:, ::-1], axis=1)
            pos[capped] = np.where(below.any(1), last, 0)
        return self.front[pos]

    def masked(self, choice: int, allowed: np.ndarray | None) -> int:
        """The choice held to a feasibility mask as the evaluation holds the rule (:func:`step_down`)."""
        return int(choice) if allowed is None else step_down(choice, allowed, self.ept, self.quality)

    def masked_batch(self, choice: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """:meth:`masked` per row of (n,) choices and (n, n_configs) masks."""
        out = np.asarray(choice).copy()
        for j in np.flatnonzero(~allowed[np.arange(len(out)), out]):
            out[j] = step_down(int(out[j]), allowed[j], self.ept, self.quality)
        return out
