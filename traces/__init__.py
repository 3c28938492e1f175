"""wattwise.traces: power, battery, thermal and network traces in one schema.

numpy + standard library only (matplotlib lazily in :mod:`traces.plot`, psutil lazily in
:mod:`traces.record`). Full documentation: ``docs/traces.md``.

Schema (:mod:`traces.schema`; units in the names)::

    time_s          seconds from the trace start (strictly increasing)
    supply_w        external power available (charger/harvester), W; 0 unplugged/dark
    plugged         1.0 connected / 0.0 not
    ambient_c       ambient (phone logs: battery) temperature, deg C
    demand_tps      tokens/s the user asks for
    bandwidth_mbps  link capacity, Mbit/s; 0 = down
    budget_w        optional user power budget, W (NaN = none)
    base_load_w     optional power of the rest of the device, W (NaN = unknown)
    soc_frac        optional measured state of charge 0..1 (NaN = not measured)

Each sample holds until the next one (zero-order hold); the last holds for the median step.

API::

    Trace(name, time_s, supply_w, plugged, ambient_c, demand_tps, bandwidth_mbps, meta,
          budget_w=None, base_load_w=None, soc_frac=None)          # frozen; read-only float64 columns
    trace.resample(step_s: float) -> Trace        # uniform grid from 0: time-averaged (energy-
                                                  # conserving) columns, plugged = majority
    trace.duration_s, trace.supply_energy_j, trace.demand_tokens, trace.step_s, trace.hold_s
    trace.validate(file=None, max_gap_s=None); trace.replace(**fields); trace.columns()
    TraceMeta(capacity_wh, initial_soc, device_kind, source, license, unit,
              deadline_s=None, notes="", seed=None, extra={})
    make_trace(name, meta, time_s, *, supply_w, plugged, ambient_c, demand_tps, bandwidth_mbps,
               budget_w=None, base_load_w=None, soc_frac=None) -> Trace   # scalars broadcast
    TraceValidationError(ValueError)              # .file .row .line .column .value .fix

    load_trace(path, *, meta=None, name=None, max_gap_s=None) -> Trace   # .csv / .csv.gz, strict
    save_trace(trace, path, *, validate=True, force=True) -> Path   # atomic
    TraceSet.load(dir) -> TraceSet                # lazy: reads manifest.json only
    ts.split("train" | "val" | "test", *, step_s=None) -> list[Trace]
    ts.get(name), ts.names, ts.entries, ts.units(split), ts.summary()
    TraceSet.from_traces(traces, *, name, splits=None, stratify=None, fractions=(.7,.15,.15), seed=0)
    ts.save(dir, *, force=False) -> Path          # CSVs + manifest.json, atomic, never deletes
    assign_splits(units, *, strata=None, fractions=(.7,.15,.15), seed=0) -> {unit: split}
    default_trace_set_dir() -> Path               # traces/data/default (committed)
    shared_traces_dir() -> Path                   # $WATTWISE_SHARED_TRACES or <repo>/../shared/traces

    traces.generators: phone_on_battery, laptop_plug_cycles, solar_node, must_last_until,
        heat_wave, flaky_link  (seed, **params) -> Trace;  SCENARIOS; default_set_traces()
    traces.demand: chat_sessions(rng, n_steps, step_s, ...), from_usage(cpu_util, interactive)
    traces.importers: import_android_batteryapp, import_linux_power_supply, import_irradiance,
        import_pvdaq, import_bandwidth (path, **opts) -> list[Trace]; import_5g_power(path) -> dict;
        detect_format(path) -> str | None
    traces.record: Recorder(RecorderConfig, Sensors).run() -> Trace

Commands::

    python -m traces.generate --out traces/data/default [--check]
    python -m traces.import <format|auto> <source> --out <set-dir>
    python -m traces.build_real --shared ../shared/traces --out data/real
    python -m traces.record --out my.csv --interval 1 --duration 600
    python -m traces.plot <trace.csv | set-dir> --out x.png
    python -m traces.info <trace.csv | set-dir> [--per-trace] [--json]
"""

from traces.schema import (
    ALL_COLUMNS,
    AMBIENT_C,
    BANDWIDTH_MBPS,
    BASE_LOAD_W,
    BUDGET_W,
    DEMAND_TPS,
    OPTIONAL_COLUMNS,
    PLUGGED,
    REQUIRED_COLUMNS,
    SCHEMA_VERSION,
    SOC_FRAC,
    SUPPLY_W,
    TIME_S,
    Trace,
    TraceMeta,
    TraceValidationError,
    make_trace,
    validate_columns,
)
from traces.store import (
    SPLITS,
    TraceEntry,
    TraceSet,
    assign_splits,
    default_trace_set_dir,
    load_trace,
    save_trace,
    shared_traces_dir,
)

__all__ = [
    "ALL_COLUMNS",
    "AMBIENT_C",
    "BANDWIDTH_MBPS",
    "BASE_LOAD_W",
    "BUDGET_W",
    "DEMAND_TPS",
    "OPTIONAL_COLUMNS",
    "PLUGGED",
    "REQUIRED_COLUMNS",
    "SCHEMA_VERSION",
    "SOC_FRAC",
    "SPLITS",
    "SUPPLY_W",
    "TIME_S",
    "Trace",
    "TraceEntry",
    "TraceMeta",
    "TraceSet",
    "TraceValidationError",
    "assign_splits",
    "default_trace_set_dir",
    "load_trace",
    "make_trace",
    "save_trace",
    "shared_traces_dir",
    "validate_columns",
]
