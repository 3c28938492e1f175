"""What the environments read once at construction: the profile's per-configuration cost tables
(indexed by the configuration space) and the resampled traces. Never read in ``step``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.configspace import ConfigSpace
from runtime.dynamics import DeviceConstants, device_constants

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = REPO / "profiles" / "reference-cpu.json"


@dataclass
class CostTables:
    """Per-configuration arrays the dynamics read, in the configuration space's index order."""

    space: ConfigSpace  # the configurations: index i is action i
    tps: np.ndarray  # decode tokens/s
    ept_j: np.ndarray  # energy per token, J
    decode_ms: np.ndarray  # decode latency per token, ms
    power_w: np.ndarray  # power while decoding, W
    quality: np.ndarray  # skill above chance, 0..1
    features: np.ndarray  # (n, n_config_features): the observation's configuration block
    switch_s: np.ndarray  # (n, n) compute time of a switch i -> j, s
    switch_j: np.ndarray  # (n, n) energy of a switch i -> j, J
    idle_w: float
    energy_source: str
    profile_name: str = ""
    # split configurations (docs/split.md); zeros for a local one, the only kind a profile without
    # ``split`` records has. Their tps/ept_j/decode_ms above are the device's share.
    offload: np.ndarray = None  # 1.0 where the configuration runs on a split server
    up_bits: np.ndarray = None  # bits sent per token (activations + framing)
    server_ms: np.ndarray = None  # the server's compute per token, ms
    device_bytes: np.ndarray = None  # memory the configuration needs on the device (weights + KV), bytes
    # placement (docs/placement.md); neutral values for a single-processor profile
    seg2_ms: np.ndarray = None  # of decode_ms: the second segment's processor, ms per token
    xfer_ms: np.ndarray = None  # of decode_ms: activations across the interconnect, ms per token
    trip1_c: np.ndarray = None  # the first segment's processor throttles at t_max + this, °C
    trip2_c: np.ndarray = None  # the second segment's processor (= trip1_c for one processor), °C
    heat_frac: np.ndarray = None  # fraction of the model's energy that heats the device's thermal node
    roles: np.ndarray = None  # int bit mask of the processor roles it needs (runtime.placement.role_mask)

    def __post_init__(self) -> None:
        n = len(self.space)
        for name in ("offload", "up_bits", "server_ms", "device_bytes", "seg2_ms", "xfer_ms", "trip1_c", "trip2_c"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(n))
        if self.heat_frac is None:
            self.heat_frac = np.ones(n)
        if self.roles is None:
            self.roles = np.ones(n, dtype=np.int64)  # the CPU
        self.has_place = bool((self.roles != 1).any())
        #: where each configuration runs when a processor it needs is down: the same depth, heads and bits
        #: all on the CPU (what the runtime's re-placement does, model.placement), else itself
        self.cpu_twin = np.arange(n)
        if "place" in self.space.knob_names:
            for i, cfg in enumerate(self.space.configs):
                if cfg.place != "cpu":
                    try:
                        self.cpu_twin[i] = self.space.index(cfg._replace(place="cpu"))
                    except Exception:  # noqa: BLE001 - no CPU record of this configuration: the cheapest CPU one
                        cpu = np.flatnonzero(self.roles == 1)
                        self.cpu_twin[i] = cpu[np.argmin(self.ept_j[cpu])] if cpu.size else i

    @property
    def names(self) -> tuple[str, ...]:
        return self.space.names

    def __len__(self) -> int:
        return len(self.space)

    def decode_table(self) -> list[dict[str, Any]]:
        return self.space.decode_table()


def load_cost_tables(profile: Any) -> CostTables:
    """Arrays from a profile (path, ``Profile`` or dict); validated by ``model.profile_schema``."""
    from model.profile_schema import Profile, load_profile, validate_profile

    if isinstance(profile, (str, Path)):
        p = load_profile(profile)
    elif isinstance(profile, Profile):
        p = profile
    else:
        validate_profile(profile, "<profile dict>")
        p = Profile(profile)
    space = p.space
    recs = [p.config(n) for n in space.names]  # the space's order, looked up by canonical name
    power = np.array([c["power_w"] for c in recs], float)
    acc = np.array([c["mc_accuracy"] for c in recs], float)
    sw = space.switch_time_s(p.data.get("switch_costs", {}))
    off = np.array([float(c.get("split", -1) != -1) for c in recs])
    up_bits = np.array([8.0 * float(c.get("up_bytes_per_token", 0.0)) for c in recs]) * off
    server_ms = np.array([float(c.get("server_ms_per_token", 0.0)) for c in recs]) * off
    place = placement_arrays(recs, p.data.get("hardware"))
    return CostTables(
        space=space,
        tps=np.array([c["decode_tokens_per_s"] for c in recs], float),
        ept_j=np.array([c["energy_j_per_token"] for c in recs], float),
        decode_ms=np.array([c["decode_ms_per_token_median"] for c in recs], float),
        power_w=power,
        quality=np.clip((acc - 0.25) / 0.75, 0.0, 1.0),
        features=np.array(space.feature_matrix()),
        switch_s=sw, switch_j=sw * power[None, :],
        idle_w=float(p.data.get("idle_power_w", 0.0)),
        energy_source=str(p.data.get("energy_source", "unknown")),
        profile_name=str(p.data.get("name", "")),
        offload=off, up_bits=up_bits, server_ms=server_ms,
        # a profile without device_bytes: the weights it reads (its KV cache is not known there)
        device_bytes=np.array([float(c.get("device_bytes", c.get("resident_bytes", 0))) for c in recs]),
        **place,
    )


def placement_arrays(recs: list, hardware: Any) -> dict[str, np.ndarray]:
    """The placement columns of :class:`CostTables` from a profile's records and its ``hardware``
    description (``runtime.hardware.Hardware.to_dict``; absent: every processor throttles at the
    device's trip point and heats it fully)."""
    from runtime.placement import PLACE_DEFAULT, role_mask

    procs = (hardware or {}).get("processors", {}) if isinstance(hardware, dict) else {}

    def trip(role: str) -> float:
        return float(procs.get(role, {}).get("trip_offset_c", 0.0))

    def share(role: str) -> float:
        return float(procs.get(role, {}).get("thermal_share", 1.0))

    n = len(recs)
    out = {k: np.zeros(n) for k in ("seg2_ms", "xfer_ms", "trip1_c", "trip2_c")}
    out["heat_frac"], out["roles"] = np.ones(n), np.ones(n, dtype=np.int64)
    for i, c in enumerate(recs):
        place = str(c.get("place", PLACE_DEFAULT))
        out["roles"][i] = role_mask(place)
        segs = c.get("segments") or []
        if not segs:
            continue
        out["trip1_c"][i] = trip(segs[0]["role"])
        out["trip2_c"][i] = trip(segs[-1]["role"])
        if len(segs) > 1:
            out["seg2_ms"][i] = float(segs[1]["decode_ms"])
            out["xfer_ms"][i] = float(c.get("xfer_ms_per_token", 0.0))
        e = float(c["energy_j_per_token"])
        if e > 0:
            heat = sum(share(s["role"]) * float(s["energy_j"]) for s in segs) + float(c.get("xfer_j_per_token", 0.0))
            out["heat_frac"][i] = min(max(heat / e, 0.0), 1.0)
    return out


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
    device: DeviceConstants
    device_kind: str
    procs_down: list = None  # per row: bit mask of unavailable processor roles (runtime.placement.outages)
    quality_floor: float = math.nan  # a user-set floor for the min-energy objective (meta.extra), NaN: none


def prepare_traces(traces: Any, split: str, step_s: float, avail: Any = None) -> list[TraceArrays]:
    """Trace set folder (its ``split``) or a list of ``traces.Trace`` → resampled arrays.

    ``avail`` (``runtime.dynamics.Availability``) adds each trace's seeded processor outages.
    Traces given as objects are validated like files (``traces.Trace.validate``: NaN/inf in a required
    column, time order, units, ranges); ``traces.TraceValidationError`` names the trace, row and column.
    """
    import traces as T

    if traces is None:
        traces = T.default_trace_set_dir()
    if isinstance(traces, (str, Path)):
        items = T.TraceSet.load(traces).split(split)
        if not items:
            raise ValueError(f"trace set {traces} has no traces in split {split!r}")
    else:
        items = list(traces)
        if not items:
            raise ValueError("traces: the list is empty; pass at least one traces.Trace or a trace-set folder")
        for k, tr in enumerate(items):  # traces from code get the checks the loader applies to files
            if not isinstance(tr, T.Trace):
                raise TypeError(f"traces[{k}]: expected a traces.Trace, got {type(tr).__name__}")
            tr.validate(file=f"trace {tr.name!r} (traces[{k}])")
    out = []
    for tr in items:
        r = tr.resample(step_s)
        n = len(r)
        nan = np.full(n, np.nan)
        base = r.base_load_w if r.base_load_w is not None else np.zeros(n)
        out.append(TraceArrays(
            name=r.name, n=n, supply_w=r.supply_w.tolist(), plugged=r.plugged.tolist(),
            ambient_c=r.ambient_c.tolist(), demand_tps=r.demand_tps.tolist(),
            bandwidth_mbps=r.bandwidth_mbps.tolist(),
            budget_w=(r.budget_w if r.budget_w is not None else nan).tolist(),
            base_w=np.nan_to_num(base, nan=0.0).tolist(),
            capacity_j=float(r.meta.capacity_wh) * 3600.0, initial_soc=float(r.meta.initial_soc),
            deadline_s=float(r.meta.deadline_s) if r.meta.deadline_s is not None else math.nan,
            device=device_constants(r.meta.device_kind), device_kind=r.meta.device_kind,
            procs_down=_outages(r.name, n, step_s, avail),
            quality_floor=float((r.meta.extra or {}).get("quality_floor", math.nan))))
    return out


def _outages(name: str, n: int, step_s: float, avail: Any) -> list:
    if avail is None or (avail.busy_per_h <= 0 and avail.lost_per_h <= 0):
        return [0] * n
    from runtime.placement import outages

    return outages(name, n, step_s, avail.busy_per_h, avail.busy_mean_s, avail.lost_per_h, avail.seed)


class PaddedTraces:
    """Traces as (n_traces, max_len) float arrays (NaN-padded) plus per-trace plant constants:
    the batched env, the oracle and the MPC gather a batch's inputs from here.

    ``spare`` rows past the traces are room for ``append`` (the oracle adds a randomised variant of a trace per
    episode: ``agents.oracle``); they hold NaN, and nothing indexes them until a trace is appended there."""

    COLUMNS = ("supply", "plugged", "ambient", "demand", "bandwidth", "budget", "base")
    #: the trace field each column holds
    FIELDS = {"supply": "supply_w", "plugged": "plugged", "ambient": "ambient_c", "demand": "demand_tps",
              "bandwidth": "bandwidth_mbps", "budget": "budget_w", "base": "base_w"}
    #: the per-trace plant constants: name -> what it is of a trace
    CONSTANTS = {
        "n": lambda t: t.n, "capacity_j": lambda t: t.capacity_j, "soc0": lambda t: t.initial_soc,
        "deadline_s": lambda t: t.deadline_s, "quality_floor": lambda t: t.quality_floor,
        "r_th": lambda t: t.device.r_th_c_per_w, "tau": lambda t: t.device.tau_s, "t_max": lambda t: t.device.t_max_c,
        "thr_k": lambda t: t.device.throttle_per_c, "thr_min": lambda t: t.device.throttle_min,
        "eta": lambda t: t.device.charge_efficiency, "idle": lambda t: t.device.idle_power_w,
        "memory_bytes": lambda t: t.device.memory_mb * 1e6}

    def __init__(self, trs: list[TraceArrays], spare: int = 0) -> None:
        L = max(t.n for t in trs)
        cap = len(trs) + int(spare)
        for name in self.COLUMNS:
            setattr(self, name, np.full((cap, L), np.nan))
        #: (n_traces, L) int: unavailable processor roles per row (0 in the padding)
        self.procs_down = np.zeros((cap, L), np.int64)
        #: row length: element (k, i) of a column is element k·L + i of its ``flat`` form (np.take on a
        #: flat index is several times faster than 2-D fancy indexing, on the batched env's hot path)
        self.L = L
        self.flat = {name: getattr(self, name).ravel() for name in self.COLUMNS}  # views: they follow the columns
        #: (n_traces·L, n_columns): one row gather gives every column of a batch of (trace, row) pairs
        self.rows = np.full((cap * L, len(self.COLUMNS)), np.nan)
        for name, of in self.CONSTANTS.items():
            vals = np.asarray([of(t) for t in trs])
            arr = np.full(cap, np.nan) if vals.dtype.kind == "f" else np.zeros(cap, vals.dtype)
            arr[:len(trs)] = vals
            setattr(self, name, arr)
        for k, t in enumerate(trs):
            self._fill(k, t)
        self.count = len(trs)  # rows filled; the rest are room for ``append``
        self.has_outages = bool(self.procs_down.any())

    def _fill(self, k: int, t: TraceArrays) -> None:
        L = self.L
        for j, name in enumerate(self.COLUMNS):
            row = getattr(self, name)[k]
            row[:t.n] = getattr(t, self.FIELDS[name])
            self.rows[k * L:(k + 1) * L, j] = row
        self.procs_down[k, :t.n] = t.procs_down if t.procs_down is not None else 0

    def append(self, t: TraceArrays) -> int:
        """Fills the next spare row with ``t``, in place, and returns its index: the table is then equal to one
        built with ``t`` last (tests/test_padded_traces.py) at the cost of one row, not of every trace. A full
        table, or a ``t`` longer than the rows, is refused (build a new one)."""
        k = self.count
        if k >= len(self.n):
            raise ValueError(f"PaddedTraces.append: all {len(self.n)} rows are filled; build a new PaddedTraces "
                             "with spare rows")
        if t.n > self.L:
            raise ValueError(f"PaddedTraces.append: a trace of {t.n} rows does not fit rows of {self.L}; "
                             "build a new PaddedTraces")
        self._fill(k, t)
        for name, of in self.CONSTANTS.items():
            getattr(self, name)[k] = of(t)
        self.has_outages = self.has_outages or bool(self.procs_down[k].any())
        self.count = k + 1
        return k

    def inputs(self, k: np.ndarray, i: np.ndarray, objective: tuple = (1.0, 0.0, float("nan"), 0.0)):
        """``runtime.dynamics.Inputs`` of rows ``i`` of traces ``k`` under ``objective`` = (w_q, w_e, q_min,
        until) (``runtime.dynamics.objective_inputs``; the default is max-quality)."""
        from runtime.dynamics import Inputs

        return Inputs(self.demand[k, i], self.supply[k, i], self.ambient[k, i], self.base[k, i], self.budget[k, i],
                      np.nan_to_num(self.bandwidth[k, i]), self.procs_down[k, i], *objective)

    def plant(self, k: Any):
        """``runtime.dynamics.Plant`` of trace(s) ``k`` (an index or an array of them)."""
        from runtime.dynamics import Plant

        return Plant(self.capacity_j[k], self.r_th[k], self.tau[k], self.t_max[k], self.thr_k[k], self.thr_min[k],
                     self.eta[k], self.idle[k])


__all__ = ["DEFAULT_PROFILE", "CostTables", "PaddedTraces", "TraceArrays", "load_cost_tables", "placement_arrays",
           "prepare_traces"]
