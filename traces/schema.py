"""The one trace schema: column names, metadata, the :class:`Trace` container, validation, resampling.

A trace is a table sampled at (possibly irregular) times ``time_s``. Every sample *holds* from its
own time until the next sample's time (zero-order hold); the last sample holds for the median step.
That convention makes energies exact sums (``sum(supply_w * dt)``) and lets :meth:`Trace.resample`
conserve energy.

Only numpy and the standard library are imported here: the environment imports this at start-up.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMA_VERSION = 1

# --- column names (units in the names) ---------------------------------------------------------
TIME_S = "time_s"
SUPPLY_W = "supply_w"
PLUGGED = "plugged"
AMBIENT_C = "ambient_c"
DEMAND_TPS = "demand_tps"
BANDWIDTH_MBPS = "bandwidth_mbps"
BUDGET_W = "budget_w"
BASE_LOAD_W = "base_load_w"
SOC_FRAC = "soc_frac"

#: Columns every trace file must have, in file order.
REQUIRED_COLUMNS: tuple[str, ...] = (TIME_S, SUPPLY_W, PLUGGED, AMBIENT_C, DEMAND_TPS, BANDWIDTH_MBPS)
#: Optional columns; NaN (or the column left out of the file) means "absent".
OPTIONAL_COLUMNS: tuple[str, ...] = (BUDGET_W, BASE_LOAD_W, SOC_FRAC)
ALL_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
#: Data columns (everything but time), in file order.
DATA_COLUMNS: tuple[str, ...] = ALL_COLUMNS[1:]

#: Decimals written to CSV per column. Chosen well below measurement noise so files stay small.
CSV_DECIMALS: dict[str, int] = {
    TIME_S: 3,
    SUPPLY_W: 4,
    PLUGGED: 0,
    AMBIENT_C: 2,
    DEMAND_TPS: 2,
    BANDWIDTH_MBPS: 3,
    BUDGET_W: 4,
    BASE_LOAD_W: 4,
    SOC_FRAC: 4,
}

#: Human description of each column (used in docs and error hints).
COLUMN_DOCS: dict[str, str] = {
    TIME_S: "seconds since the trace start (strictly increasing)",
    SUPPLY_W: "external power available (charger or harvester), W; 0 when unplugged or dark",
    PLUGGED: "1 when external power is connected (charger, or harvester producing), else 0",
    AMBIENT_C: "ambient temperature, deg C (for phone logs: the battery temperature, see docs)",
    DEMAND_TPS: "tokens per second the user asks the micro-LLM for (the workload)",
    BANDWIDTH_MBPS: "link capacity to a server, Mbit/s; 0 = link down",
    BUDGET_W: "optional user-set power budget for the LLM, W; NaN = no budget",
    BASE_LOAD_W: "optional power drawn by the rest of the device (screen, radios, apps), W; NaN = unknown",
    SOC_FRAC: "optional measured battery state of charge, 0..1; NaN = not measured",
}

# Plausibility limits used by the unit checks. Far above any device this project targets, far
# below the value a unit slip produces (mW read as W is 1000x too big).
MAX_PLAUSIBLE_POWER_W = 1000.0
MAX_PLAUSIBLE_AMBIENT_C = 90.0
MIN_PLAUSIBLE_AMBIENT_C = -60.0
MAX_PLAUSIBLE_DEMAND_TPS = 100_000.0
MAX_PLAUSIBLE_BANDWIDTH_MBPS = 100_000.0
#: Per-row upper bound on link capacity for every device kind, Mbit/s (Wi-Fi 7 and 5G mmWave peak
#: at a few Gbit/s; 1e30 is a logging glitch, not a link).
MAX_BANDWIDTH_MBPS = 10_000.0


@dataclass(frozen=True)
class PowerBounds:
    """Per-row upper bounds on the power columns of one device kind, W (see docs/traces.md)."""

    supply_w: float
    base_load_w: float
    budget_w: float
    why: str


#: Upper bounds per ``meta.device_kind``. Generous for real hardware of the kind, far below what a
#: unit slip or a glitch produces. Kinds not listed get :data:`DEFAULT_POWER_BOUNDS`.
DEVICE_POWER_BOUNDS: dict[str, PowerBounds] = {
    "phone": PowerBounds(100.0, 20.0, 20.0, "the fastest phone chargers deliver < 100 W; a phone's own "
                         "draw (screen, SoC, radios) stays < 20 W"),
    "laptop": PowerBounds(300.0, 150.0, 150.0, "USB-C PD tops out at 240 W, gaming bricks at ~300 W; a "
                          "laptop's system draw stays < 150 W"),
    "solar-node": PowerBounds(200.0, 50.0, 50.0, "a node's panel is <= 1 m2 (1000 W/m2 x 20 % = 200 W); "
                              "an edge board with an accelerator draws < 50 W"),
}
#: Bounds for device kinds without their own entry (the unit-slip limit).
DEFAULT_POWER_BOUNDS = PowerBounds(MAX_PLAUSIBLE_POWER_W, MAX_PLAUSIBLE_POWER_W, MAX_PLAUSIBLE_POWER_W,
                                   "no device this project targets draws or harvests 1 kW")


def power_bounds(device_kind: str | None) -> PowerBounds:
    """The per-row power bounds of a device kind (the default for unknown kinds or None)."""
    return DEVICE_POWER_BOUNDS.get(device_kind or "", DEFAULT_POWER_BOUNDS)


#: Default gap limit is this many median steps (but at least DEFAULT_MIN_GAP_LIMIT_S).
DEFAULT_GAP_FACTOR = 10.0
DEFAULT_MIN_GAP_LIMIT_S = 60.0


class TraceValidationError(ValueError):
    """A trace file or object breaks the schema.

    The message names the file, the 1-based data row (and file line where known), the column, the
    offending value and how to fix it. The same facts are attributes for programmatic use.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        line: int | None = None,
        column: str | None = None,
        value: Any = None,
        fix: str | None = None,
    ) -> None:
        where = file or "<trace>"
        if row is not None:
            where += f" row {row}"
            if line is not None:
                where += f" (line {line})"
        text = f"{where}: {message}"
        if fix:
            text += f"; fix: {fix}"
        super().__init__(text)
        self.file = file
        self.row = row
        self.line = line
        self.column = column
        self.value = value
        self.fix = fix


@dataclass(frozen=True)
class TraceMeta:
    """Metadata of one trace.

    Attributes:
        capacity_wh: Battery (or supercapacitor) usable capacity, Wh.
        initial_soc: State of charge at ``time_s == 0``, fraction 0..1.
        device_kind: e.g. ``"phone"``, ``"laptop"``, ``"solar-node"``.
        source: Where the data came from (generator name + version, or dataset + file).
        license: License of the underlying data (``"CC0-1.0"`` for generated traces).
        unit: The split unit id (user, station, route, ...). Train/val/test never share a unit.
        deadline_s: Optional "must last until" time, seconds from start; None when absent.
        notes: Free text: assumptions made when deriving this trace.
        seed: Seed of any random process used to make (parts of) the trace; None if none.
        extra: Other provenance (panel area, file name, scenario, ...); JSON-serialisable.
    """

    capacity_wh: float
    initial_soc: float
    device_kind: str
    source: str
    license: str
    unit: str
    deadline_s: float | None = None
    notes: str = ""
    seed: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable dict (keys in field order)."""
        out = dataclasses.asdict(self)
        out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, file: str | None = None) -> TraceMeta:
        """Builds meta from a dict, validating it.

        Unknown keys are kept under ``extra`` so newer files still load.

        Raises:
            TraceValidationError: a required key is missing or a value is out of range.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        required = ("capacity_wh", "initial_soc", "device_kind", "source", "license", "unit")
        for key in required:
            if key not in data:
                raise TraceValidationError(
                    f"metadata lacks '{key}'",
                    file=file,
                    column=key,
                    fix=f"add \"{key}\" to the '# meta:' JSON line or the manifest entry",
                )
        extra = dict(data.get("extra") or {})
        extra.update({k: v for k, v in data.items() if k not in names})
        try:
            meta = cls(
                capacity_wh=float(data["capacity_wh"]),
                initial_soc=float(data["initial_soc"]),
                device_kind=str(data["device_kind"]),
                source=str(data["source"]),
                license=str(data["license"]),
                unit=str(data["unit"]),
                deadline_s=None if data.get("deadline_s") is None else float(data["deadline_s"]),
                notes=str(data.get("notes") or ""),
                seed=None if data.get("seed") is None else int(data["seed"]),
                extra=extra,
            )
        except (TypeError, ValueError) as exc:
            raise TraceValidationError(f"metadata is malformed ({exc})", file=file) from exc
        validate_meta(meta, file=file)
        return meta


def validate_meta(meta: TraceMeta, *, file: str | None = None) -> None:
    """Checks metadata ranges.

    Raises:
        TraceValidationError: naming the field, value and fix.
    """
    if not (math.isfinite(meta.capacity_wh) and meta.capacity_wh > 0):
        raise TraceValidationError(
            f"capacity_wh is {meta.capacity_wh}; the battery capacity must be > 0 Wh",
            file=file, column="capacity_wh", value=meta.capacity_wh,
            fix="state the usable capacity in Wh (mAh x nominal V / 1000)",
        )
    if meta.capacity_wh > 10_000:
        raise TraceValidationError(
            f"capacity_wh is {meta.capacity_wh}; that looks like mWh (or mAh)",
            file=file, column="capacity_wh", value=meta.capacity_wh,
            fix="give Wh: divide mWh by 1000, or mAh x nominal voltage (3.85 V) / 1000",
        )
    if not (math.isfinite(meta.initial_soc) and 0.0 <= meta.initial_soc <= 1.0):
        hint = "divide a percentage by 100" if 1.0 < meta.initial_soc <= 100.0 else "use a fraction 0..1"
        raise TraceValidationError(
            f"initial_soc is {meta.initial_soc}; state of charge must be a fraction in [0, 1]",
            file=file, column="initial_soc", value=meta.initial_soc, fix=hint,
        )
    for key in ("device_kind", "unit"):
        if not isinstance(getattr(meta, key), str) or not getattr(meta, key):
            raise TraceValidationError(
                f"{key} is {getattr(meta, key)!r}; it must be a non-empty string",
                file=file, column=key, value=getattr(meta, key),
                fix=f"set {key} (the unit decides the train/val/test split)",
            )
    if meta.deadline_s is not None and not (math.isfinite(meta.deadline_s) and meta.deadline_s >= 0):
        raise TraceValidationError(
            f"deadline_s is {meta.deadline_s}; a deadline must be >= 0 s from the trace start",
            file=file, column="deadline_s", value=meta.deadline_s, fix="use seconds from the trace start",
        )


def _as_column(values: Any, n: int | None, name: str) -> np.ndarray:
    arr = np.array(values, dtype=np.float64, copy=True).reshape(-1)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"column {name} has {arr.shape[0]} values, time_s has {n}")
    arr.flags.writeable = False  # frozen dataclass: make the columns immutable too
    return arr


@dataclass(frozen=True, eq=False)
class Trace:
    """One power/thermal/network trace in the schema (immutable; columns are read-only arrays).

    Construct with keywords. Optional columns default to all-NaN ("absent").

    Attributes:
        name: Unique name within a trace set (also the file stem).
        time_s: Sample times, s (float64, strictly increasing; need not start at 0).
        supply_w: External power available, W.
        plugged: 1.0 when external power is connected, else 0.0.
        ambient_c: Ambient temperature, deg C.
        demand_tps: Requested tokens per second.
        bandwidth_mbps: Link capacity, Mbit/s (0 = down).
        meta: :class:`TraceMeta`.
        budget_w: Optional user power budget, W (NaN = none).
        base_load_w: Optional power of the rest of the device, W (NaN = unknown).
        soc_frac: Optional measured state of charge 0..1 (NaN = not measured).
    """

    name: str
    time_s: np.ndarray
    supply_w: np.ndarray
    plugged: np.ndarray
    ambient_c: np.ndarray
    demand_tps: np.ndarray
    bandwidth_mbps: np.ndarray
    meta: TraceMeta
    budget_w: np.ndarray | None = None
    base_load_w: np.ndarray | None = None
    soc_frac: np.ndarray | None = None

    def __post_init__(self) -> None:
        t = _as_column(self.time_s, None, TIME_S)
        object.__setattr__(self, TIME_S, t)
        n = t.shape[0]
        for col in DATA_COLUMNS:
            raw = getattr(self, col)
            if raw is None:
                raw = np.full(n, np.nan)
            object.__setattr__(self, col, _as_column(raw, n, col))

    # --- basic properties ----------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.time_s.shape[0])

    def __repr__(self) -> str:
        return (
            f"Trace({self.name!r}, n={len(self)}, duration_s={self.duration_s:.0f}, "
            f"kind={self.meta.device_kind!r}, unit={self.meta.unit!r})"
        )

    @property
    def step_s(self) -> float:
        """Median sampling step, s (the hold time of the last sample)."""
        if len(self) < 2:
            return 0.0
        return float(np.median(np.diff(self.time_s)))

    @property
    def hold_s(self) -> np.ndarray:
        """How long each sample holds, s: the next sample's time minus this one's; last = step_s."""
        if len(self) == 0:
            return np.zeros(0)
        return np.append(np.diff(self.time_s), self.step_s)

    @property
    def duration_s(self) -> float:
        """Covered time span, s: last time - first time + last sample's hold (= n * step if uniform)."""
        if len(self) == 0:
            return 0.0
        return float(self.time_s[-1] - self.time_s[0] + self.step_s)

    @property
    def supply_energy_j(self) -> float:
        """External energy available over the trace, J (sum of supply_w x hold)."""
        return float(np.sum(self.supply_w * self.hold_s))

    @property
    def demand_tokens(self) -> float:
        """Total tokens requested over the trace."""
        return float(np.sum(self.demand_tps * self.hold_s))

    @property
    def base_load_energy_j(self) -> float:
        """Energy of the rest of the device where known, J (NaN samples skipped; NaN if none known)."""
        ok = np.isfinite(self.base_load_w)
        if not ok.any():
            return float("nan")
        return float(np.sum(self.base_load_w[ok] * self.hold_s[ok]))

    @property
    def has_budget(self) -> bool:
        """True when some sample carries a power budget."""
        return bool(np.isfinite(self.budget_w).any())

    def column(self, name: str) -> np.ndarray:
        """Returns a column by schema name."""
        if name not in ALL_COLUMNS:
            raise KeyError(f"unknown column {name!r}; schema columns: {', '.join(ALL_COLUMNS)}")
        return getattr(self, name)

    def columns(self) -> dict[str, np.ndarray]:
        """All columns by schema name, in file order."""
        return {c: getattr(self, c) for c in ALL_COLUMNS}

    def replace(self, **changes: Any) -> Trace:
        """Returns a copy with some fields (columns, name or meta) replaced."""
        return dataclasses.replace(self, **changes)

    def validate(self, *, file: str | None = None, max_gap_s: float | None = None) -> None:
        """Checks this trace against every schema rule (see :func:`validate_columns`)."""
        validate_meta(self.meta, file=file)
        validate_columns(self.columns(), file=file or self.name, max_gap_s=max_gap_s,
                         device_kind=self.meta.device_kind)

    # --- transformations -----------------------------------------------------------------------
    def resample(self, step_s: float) -> Trace:
        """Resamples onto a uniform grid ``0, step_s, 2*step_s, ...`` (time relative to the start).

        Rules (each sample holds until the next one, see module docstring):

        * ``supply_w``, ``ambient_c``, ``demand_tps``, ``bandwidth_mbps``, ``budget_w``,
          ``base_load_w``, ``soc_frac``: **time average** over each output step
          ``[k*step_s, (k+1)*step_s)``. Power averages conserve energy exactly; demand averages
          conserve tokens. Optional columns average over their non-NaN part and are NaN when less
          than half of the step is covered.
        * ``plugged``: **majority** over the step (1 when plugged for >= half the step).
        * The grid covers whole steps only: a trailing part shorter than ``step_s`` is dropped
          (but a trace shorter than one step yields one step averaged over what exists).
        * ``meta.deadline_s`` is kept; ``initial_soc`` is unchanged (the grid starts at the first
          sample).

        Args:
            step_s: Output step, s (> 0).

        Returns:
            A new Trace; ``len == floor(duration_s / step_s)`` (at least 1).
        """
        if not (step_s > 0 and math.isfinite(step_s)):
            raise ValueError(f"step_s must be > 0, got {step_s}")
        if len(self) == 0:
            raise ValueError(f"trace {self.name!r} is empty; cannot resample")
        hold = self.hold_s
        edges = np.concatenate([[0.0], np.cumsum(hold)])  # sample i holds over [edges[i], edges[i+1])
        total = float(edges[-1])
        n_out = max(1, int(math.floor(total / step_s + 1e-9)))
        grid = np.minimum(np.arange(n_out + 1, dtype=np.float64) * step_s, total)

        def mean_over_steps(x: np.ndarray) -> np.ndarray:
            valid = np.isfinite(x)
            integral = np.concatenate([[0.0], np.cumsum(np.where(valid, x, 0.0) * hold)])
            covered = np.concatenate([[0.0], np.cumsum(valid * hold)])
            d_int = np.diff(np.interp(grid, edges, integral))
            d_cov = np.diff(np.interp(grid, edges, covered))
            width = np.diff(grid)
            out = np.full(n_out, np.nan)
            ok = (d_cov > 0) & (d_cov >= 0.5 * width - 1e-9)
            out[ok] = d_int[ok] / d_cov[ok]
            return out

        cols: dict[str, Any] = {}
        for col in DATA_COLUMNS:
            cols[col] = mean_over_steps(getattr(self, col))
        cols[PLUGGED] = (cols[PLUGGED] >= 0.5 - 1e-12).astype(np.float64)
        # Averages of in-range values can overshoot by an ulp; keep them in range.
        cols[SOC_FRAC] = np.clip(cols[SOC_FRAC], 0.0, 1.0)
        for c in (SUPPLY_W, BUDGET_W, BASE_LOAD_W, DEMAND_TPS, BANDWIDTH_MBPS):
            cols[c] = np.maximum(cols[c], 0.0)
        return Trace(name=self.name, time_s=grid[:-1].copy(), meta=self.meta, **cols)


def make_trace(
    name: str,
    meta: TraceMeta,
    time_s: Any,
    *,
    supply_w: Any,
    plugged: Any,
    ambient_c: Any,
    demand_tps: Any,
    bandwidth_mbps: Any,
    budget_w: Any = None,
    base_load_w: Any = None,
    soc_frac: Any = None,
) -> Trace:
    """Convenience constructor with scalar broadcasting (e.g. ``ambient_c=22.0``)."""
    t = np.asarray(time_s, dtype=np.float64).reshape(-1)
    n = t.shape[0]

    def col(v: Any) -> Any:
        if v is None:
            return None
        a = np.asarray(v, dtype=np.float64)
        return np.full(n, float(a)) if a.ndim == 0 else a

    return Trace(
        name=name, time_s=t, meta=meta, supply_w=col(supply_w), plugged=col(plugged),
        ambient_c=col(ambient_c), demand_tps=col(demand_tps), bandwidth_mbps=col(bandwidth_mbps),
        budget_w=col(budget_w), base_load_w=col(base_load_w), soc_frac=col(soc_frac),
    )


# --- validation ---------------------------------------------------------------------------------
def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _nonzero_median(x: np.ndarray) -> float:
    v = np.abs(x[np.isfinite(x) & (x != 0)])
    return float(np.median(v)) if v.size else 0.0


def validate_columns(
    cols: Mapping[str, np.ndarray],
    *,
    file: str | None = None,
    max_gap_s: float | None = None,
    line_of_row: Any = None,
    device_kind: str | None = None,
) -> None:
    """Checks column arrays against the schema; raises on the first problem.

    Rules, in order:

    1. required columns present; at least 2 rows;
    2. no NaN/inf in required columns (optional columns may be NaN = absent);
    3. time strictly increasing (no duplicates), no gap longer than ``max_gap_s``;
    4. unit sanity (checked before ranges so the hint is the useful one): time in Unix ms,
       powers in mW, temperatures in K or 0.1 deg C, bandwidth in kbit/s or bit/s, SoC in %;
    5. ranges: powers >= 0, plugged in {0, 1}, demand >= 0, bandwidth >= 0, SoC in [0, 1],
       ambient within [-60, 90] deg C; per row, bandwidth <= 10 Gbit/s and the power columns below
       the bounds of ``device_kind`` (:data:`DEVICE_POWER_BOUNDS`).

    Args:
        cols: Column name -> 1-D array.
        file: File name used in messages.
        max_gap_s: Largest allowed time step, s. Default: 10 x the median step, at least 60 s.
        line_of_row: Optional callable mapping a 0-based data row to the file line number.
        device_kind: ``meta.device_kind``; selects the per-row power bounds (default bounds if None).

    Raises:
        TraceValidationError: naming file, 1-based row, column, value and fix.
    """

    def err(msg: str, *, row0: int | None = None, column: str | None = None, value: Any = None,
            fix: str | None = None) -> TraceValidationError:
        line = line_of_row(row0) if (line_of_row is not None and row0 is not None) else None
        return TraceValidationError(
            msg, file=file, row=None if row0 is None else row0 + 1, line=line,
            column=column, value=value, fix=fix,
        )

    for c in REQUIRED_COLUMNS:
        if c not in cols:
            similar = [k for k in cols if k.split("_")[0] == c.split("_")[0] and k != c]
            fix = f"add a '{c}' column ({COLUMN_DOCS[c]})"
            if similar:
                fix = f"rename/convert column '{similar[0]}' to '{c}' ({COLUMN_DOCS[c]})"
                if similar[0].lower().endswith("_mw"):
                    fix = f"column '{similar[0]}' is in mW: divide by 1000 and name it '{c}'"
            raise err(f"missing column '{c}'", column=c, fix=fix)
    t = np.asarray(cols[TIME_S], dtype=np.float64)
    if t.shape[0] < 2:
        raise err(f"has {t.shape[0]} data rows; a trace needs at least 2", fix="record for longer")

    for c in REQUIRED_COLUMNS:
        x = np.asarray(cols[c], dtype=np.float64)
        bad = ~np.isfinite(x)
        if bad.any():
            i = _first(bad)
            raise err(f"{c} is {x[i]} (missing or not finite)", row0=i, column=c, value=float(x[i]),
                      fix=f"fill or drop the row; {c} = {COLUMN_DOCS[c]}")

    # --- time ---
    if np.median(t) > 1e11:
        raise err(f"time_s values are ~{np.median(t):.3g}: that looks like Unix milliseconds",
                  row0=0, column=TIME_S, value=float(t[0]),
                  fix="divide by 1000 and subtract the first time (time_s counts seconds from the start)")
    dt = np.diff(t)
    if (dt <= 0).any():
        i = _first(dt <= 0) + 1
        kind = "duplicate" if dt[i - 1] == 0 else "earlier than the previous row"
        raise err(f"time_s {t[i]} is {kind} ({t[i - 1]} before it); time must strictly increase",
                  row0=i, column=TIME_S, value=float(t[i]),
                  fix="sort by time and drop duplicate rows")
    if t[0] < 0:
        raise err(f"time_s is {t[0]}; time must be >= 0", row0=0, column=TIME_S, value=float(t[0]),
                  fix="subtract the first time so the trace starts at 0")
    step = float(np.median(dt))
    limit = max(DEFAULT_GAP_FACTOR * step, DEFAULT_MIN_GAP_LIMIT_S) if max_gap_s is None else max_gap_s
    if (dt > limit).any():
        i = _first(dt > limit) + 1
        raise err(f"time_s jumps {dt[i - 1]:g} s after {t[i - 1]:g}; gap exceeds the {limit:g} s limit",
                  row0=i, column=TIME_S, value=float(t[i]),
                  fix="split the trace at the gap, fill it, or raise max_gap_s (--max-gap-s)")

    # --- units (before ranges: a unit slip gives a more useful hint than "out of range") ---
    power_cols = [c for c in (SUPPLY_W, BUDGET_W, BASE_LOAD_W) if c in cols]
    for c in power_cols:
        x = np.asarray(cols[c], dtype=np.float64)
        med = _nonzero_median(x)
        if med > MAX_PLAUSIBLE_POWER_W:
            raise err(f"{c} median {med:g} looks like mW", column=c, value=med,
                      fix="divide by 1000 or import with --unit mW")
    x = np.asarray(cols[AMBIENT_C], dtype=np.float64)
    med = float(np.median(x))
    if 200.0 <= med <= 350.0:
        raise err(f"ambient_c median {med:g} looks like kelvin", column=AMBIENT_C, value=med,
                  fix="subtract 273.15")
    if med > MAX_PLAUSIBLE_AMBIENT_C:
        raise err(f"ambient_c median {med:g} looks like tenths of a degree", column=AMBIENT_C, value=med,
                  fix="divide by 10")
    x = np.asarray(cols[BANDWIDTH_MBPS], dtype=np.float64)
    med = _nonzero_median(x)
    if med > MAX_PLAUSIBLE_BANDWIDTH_MBPS:
        unit = "bit/s" if med > 1e7 else "kbit/s"
        raise err(f"bandwidth_mbps median {med:g} looks like {unit}", column=BANDWIDTH_MBPS, value=med,
                  fix=f"divide by {'1e6' if unit == 'bit/s' else '1000'} or import with --unit {unit}")
    if SOC_FRAC in cols:
        x = np.asarray(cols[SOC_FRAC], dtype=np.float64)
        fin = x[np.isfinite(x)]
        if fin.size and np.max(fin) > 1.5:
            raise err(f"soc_frac max {np.max(fin):g} looks like a percentage", column=SOC_FRAC,
                      value=float(np.max(fin)), fix="divide by 100")

    # --- ranges ---
    def check_range(c: str, lo: float | None, hi: float | None, what: str, fix: str) -> None:
        if c not in cols:
            return
        x = np.asarray(cols[c], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = np.zeros(x.shape, dtype=bool)
            # 1e-9 slack: float round-off of averaged in-range values is not an error.
            if lo is not None:
                bad |= x < lo - 1e-9
            if hi is not None:
                bad |= x > hi + 1e-9
        if c in OPTIONAL_COLUMNS:  # NaN = absent; an infinity is a value, and out of range
            bad &= ~np.isnan(x)
        if bad.any():
            i = _first(bad)
            raise err(f"{c} is {x[i]:g}; {what}", row0=i, column=c, value=float(x[i]), fix=fix)

    pb = power_bounds(device_kind)
    kind = f"a {device_kind}" if device_kind else "a device of unknown kind"
    kind_fix = ("check the unit (mW -> divide by 1000), the sign, and the device kind (meta device_kind / "
                "--device-kind); drop or repair a glitched row")
    check_range(SUPPLY_W, 0.0, None, "power must be >= 0", "clip small negative readings to 0 "
                "(inverters draw at night) or check the sign convention")
    check_range(SUPPLY_W, None, pb.supply_w, f"exceeds {pb.supply_w:g} W, the supply bound for {kind} ({pb.why})",
                kind_fix)
    check_range(BUDGET_W, 0.0, None, "a power budget must be >= 0", "use NaN for no budget")
    check_range(BUDGET_W, None, pb.budget_w, f"exceeds {pb.budget_w:g} W, the budget bound for {kind}",
                "use NaN for no budget; " + kind_fix)
    check_range(BASE_LOAD_W, 0.0, None, "power must be >= 0", "clip negative estimates to 0")
    check_range(BASE_LOAD_W, None, pb.base_load_w,
                f"exceeds {pb.base_load_w:g} W, the base-load bound for {kind} ({pb.why})",
                "use NaN where the draw is unknown; " + kind_fix)
    x = np.asarray(cols[PLUGGED], dtype=np.float64)
    bad = (x != 0.0) & (x != 1.0)
    if bad.any():
        i = _first(bad)
        raise err(f"plugged is {x[i]:g}; plugged must be 0 or 1", row0=i, column=PLUGGED,
                  value=float(x[i]), fix="map charger states to 1 (connected) / 0 (not connected)")
    check_range(DEMAND_TPS, 0.0, MAX_PLAUSIBLE_DEMAND_TPS, "demand must be in [0, 1e5] tokens/s",
                "demand is tokens per second; check the unit")
    check_range(BANDWIDTH_MBPS, 0.0, None, "bandwidth must be >= 0 (0 = link down)",
                "use 0 for an outage")
    check_range(BANDWIDTH_MBPS, None, MAX_BANDWIDTH_MBPS,
                f"exceeds {MAX_BANDWIDTH_MBPS:g} Mbit/s, the link bound for every device kind",
                "check the unit (kbit/s -> divide by 1000) or drop the glitched row")
    check_range(AMBIENT_C, MIN_PLAUSIBLE_AMBIENT_C, MAX_PLAUSIBLE_AMBIENT_C,
                "ambient must be within [-60, 90] deg C", "check the unit (deg C)")
    check_range(SOC_FRAC, 0.0, 1.0, "state of charge must be in [0, 1]", "use NaN when not measured")
