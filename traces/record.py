"""Record a trace on your own device with psutil.

Usage::

    python -m traces.record --out my.csv --interval 1 --duration 600
    python -m traces.record --out my.csv --capacity-wh 50 --device-kind laptop --charger-w 65

Sampled each ``interval`` seconds (psutil): battery percent, plugged, secsleft
(``sensors_battery``), temperatures (``sensors_temperatures``: the mean of all readings, or of the
``--temp-sensor`` group), CPU utilisation (``cpu_percent``), and on Linux the battery power from
``/sys/class/power_supply/BAT*/power_now`` (or ``current_now x voltage_now``).

Mapping to the schema (documented defaults where a sensor is missing; each missing sensor warns
once and never stops the recording):

* ``plugged``: battery ``power_plugged``; no battery -> 1 (mains-powered device).
* ``supply_w``: ``--charger-w`` while plugged (the charger rating: what is *available*), else 0.
* ``ambient_c``: mean temperature sensor reading (device temperature, warmer than the air);
  no sensor -> ``--ambient-c`` (default 25).
* ``demand_tps``: :func:`traces.demand.from_usage` with CPU utilisation and the user taken as
  active (the recorder cannot see LLM requests; edit the column to replay a real workload).
* ``bandwidth_mbps``: ``--bandwidth-mbps`` (default 20; psutil measures traffic, not capacity).
* ``soc_frac``: battery percent / 100 (NaN without a battery); ``base_load_w``: sysfs battery power
  while discharging (NaN when unavailable).
* meta: ``--capacity-wh`` (default 15), initial SoC from the first sample (1.0 without battery),
  ``source = "recorder:<hostname>"``, extra: ``secsleft`` of the last sample, sensors missing.

Sensor functions are injectable (:class:`Sensors`) so tests run with fakes.

Safety: every option is checked (ranges, and a dry run of the schema with the device kind's
bounds) before the first sample, so a bad option never costs a recording; an existing ``--out`` is
replaced only with ``--force``. The file is written atomically every ``--checkpoint-s`` of recording
and again at the end, on Ctrl-C / SIGTERM and on an error (whatever was recorded, >= 2 samples). A
battery-power reading above the device kind's base-load bound is recorded as NaN with a warning.
Exit codes: 0 done (also after Ctrl-C), 1 an error (the samples so far are saved), 2 a usage error.
"""

from __future__ import annotations

import argparse
import glob
import math
import platform
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.cli import float_in
from runtime.safeio import ExistsError, atomic_write_text, refuse_existing
from traces.demand import from_usage
from traces.schema import MAX_BANDWIDTH_MBPS, Trace, TraceMeta, TraceValidationError, make_trace, power_bounds
from traces.store import save_trace, trace_to_csv_text


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:  # the recorder degrades to defaults without psutil
        return None
    return psutil


def _battery() -> Any:
    ps = _psutil()
    return ps.sensors_battery() if ps is not None and hasattr(ps, "sensors_battery") else None


def _temperatures() -> dict[str, list[Any]]:
    ps = _psutil()
    if ps is None or not hasattr(ps, "sensors_temperatures"):
        return {}
    return ps.sensors_temperatures() or {}


def _cpu_percent() -> float | None:
    ps = _psutil()
    return None if ps is None else float(ps.cpu_percent(interval=None))


def sysfs_battery_power_w() -> float | None:
    """Battery power from Linux sysfs (W), or None."""
    for d in sorted(glob.glob("/sys/class/power_supply/BAT*")):
        try:
            p = Path(d)
            if (p / "power_now").exists():
                return abs(int((p / "power_now").read_text().strip())) / 1e6
            if (p / "current_now").exists() and (p / "voltage_now").exists():
                i_ua = abs(int((p / "current_now").read_text().strip()))
                v_uv = int((p / "voltage_now").read_text().strip())
                return i_ua * v_uv / 1e12
        except (OSError, ValueError):
            continue
    return None


@dataclass
class Sensors:
    """Injectable sensor functions (each may return None, or raise: both mean "missing")."""

    battery: Callable[[], Any] = _battery
    temperatures: Callable[[], dict[str, list[Any]]] = _temperatures
    cpu_percent: Callable[[], float | None] = _cpu_percent
    battery_power_w: Callable[[], float | None] = sysfs_battery_power_w
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


@dataclass
class RecorderConfig:
    """Recorder settings (CLI flags of the same names)."""

    interval_s: float = 1.0
    duration_s: float = 600.0
    capacity_wh: float = 15.0
    device_kind: str = "phone"
    charger_w: float = 20.0
    ambient_c: float = 25.0
    bandwidth_mbps: float = 20.0
    temp_sensor: str | None = None
    unit: str = field(default_factory=lambda: f"recorder-{platform.node() or 'device'}")


class Recorder:
    """Samples sensors into schema columns; missing sensors warn once and use defaults."""

    def __init__(self, config: RecorderConfig | None = None, sensors: Sensors | None = None) -> None:
        self.config = config or RecorderConfig()
        self.sensors = sensors or Sensors()
        self.missing: set[str] = set()
        self.rows: list[dict[str, float]] = []
        self.secsleft: float | None = None
        self.interrupted = False

    def _warn(self, what: str, default: str) -> None:
        if what not in self.missing:
            self.missing.add(what)
            warnings.warn(f"recorder: no {what} sensor on this device; using {default}", stacklevel=3)

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception:  # a flaky sensor must not stop a long recording
            return None

    def sample(self, t_s: float) -> dict[str, float]:
        """Takes one sample at relative time ``t_s``."""
        cfg = self.config
        bat = self._call(self.sensors.battery)
        if bat is None:
            self._warn("battery", "plugged=1, soc=NaN")
            plugged, soc = 1.0, math.nan
        else:
            pp = getattr(bat, "power_plugged", None)
            if pp is None:
                self._warn("plug-state", "plugged=0")
            plugged = 1.0 if pp else 0.0
            pct = getattr(bat, "percent", None)
            soc = float(pct) / 100.0 if pct is not None else math.nan
            secs = getattr(bat, "secsleft", None)
            if isinstance(secs, (int, float)) and secs >= 0 and math.isfinite(secs):
                self.secsleft = float(secs)
        temps = self._call(self.sensors.temperatures) or {}
        readings = []
        for group, entries in temps.items():
            if cfg.temp_sensor and group != cfg.temp_sensor:
                continue
            for e in entries or []:
                cur = getattr(e, "current", None)
                if isinstance(cur, (int, float)) and -40.0 < cur < 120.0:
                    readings.append(float(cur))
        if readings:
            ambient = float(np.mean(readings))
        else:
            self._warn("temperature", f"ambient_c={cfg.ambient_c}")
            ambient = cfg.ambient_c
        cpu = self._call(self.sensors.cpu_percent)
        if cpu is None:
            self._warn("CPU utilisation", "0 %")
            cpu = 0.0
        pw = self._call(self.sensors.battery_power_w)
        if pw is None:
            self._warn("battery power", "base_load_w=NaN")
        elif not (isinstance(pw, (int, float)) and 0.0 <= pw <= power_bounds(cfg.device_kind).base_load_w):
            bound = power_bounds(cfg.device_kind).base_load_w
            if "battery-power bound" not in self.missing:
                self.missing.add("battery-power bound")
                warnings.warn(f"recorder: battery power {pw} W is outside [0, {bound:g}] W, the base-load bound "
                              f"for a {cfg.device_kind}; recorded as NaN (is --device-kind right?)", stacklevel=2)
            pw = None
        row = {
            "time_s": t_s,
            "supply_w": cfg.charger_w if plugged else 0.0,
            "plugged": plugged,
            "ambient_c": ambient,
            "demand_tps": float(from_usage(np.array([cpu / 100.0]), np.array([1.0]))[0]),
            "bandwidth_mbps": cfg.bandwidth_mbps,
            "soc_frac": soc,
            "base_load_w": (pw if (pw is not None and not plugged) else math.nan),
        }
        self.rows.append(row)
        return row

    def run(self, *, on_sample: Callable[[dict[str, float]], None] | None = None) -> Trace:
        """Samples every ``interval_s`` for ``duration_s`` (Ctrl-C stops early and keeps the data)."""
        self.record(on_sample=on_sample)
        return self.to_trace()

    def record(self, *, on_sample: Callable[[dict[str, float]], None] | None = None) -> None:
        """The sampling loop into ``self.rows``: Ctrl-C stops it (``self.interrupted``); any other
        error propagates with the rows so far kept (the CLI saves them)."""
        cfg = self.config
        start = self.sensors.clock()
        n = max(2, int(math.floor(cfg.duration_s / cfg.interval_s)))
        try:
            for k in range(n):
                target = start + k * cfg.interval_s
                now = self.sensors.clock()
                if target > now:
                    self.sensors.sleep(target - now)
                row = self.sample(round(self.sensors.clock() - start, 3) if k else 0.0)
                # A clock that did not advance (or a fake one) must still give increasing time.
                if len(self.rows) > 1 and row["time_s"] <= self.rows[-2]["time_s"]:
                    row["time_s"] = self.rows[-2]["time_s"] + cfg.interval_s
                if on_sample:
                    on_sample(row)
        except KeyboardInterrupt:
            self.interrupted = True

    def to_trace(self, name: str = "recording") -> Trace:
        """The samples so far as a Trace."""
        cfg = self.config
        if len(self.rows) < 2:
            raise ValueError("need at least 2 samples")
        cols = {k: np.array([r[k] for r in self.rows]) for k in self.rows[0]}
        soc0 = cols["soc_frac"][0]
        meta = TraceMeta(
            capacity_wh=cfg.capacity_wh,
            initial_soc=float(soc0) if np.isfinite(soc0) else 1.0,
            device_kind=cfg.device_kind,
            source=f"recorder:{platform.node() or 'device'}",
            license="own recording",
            unit=cfg.unit,
            notes="recorded with python -m traces.record; supply_w = charger rating while plugged; "
                  "demand from CPU utilisation",
            extra={"interval_s": cfg.interval_s, "secsleft_last": self.secsleft,
                   "sensors_missing": sorted(self.missing), "platform": platform.platform()},
        )
        t = cols.pop("time_s")
        return make_trace(name, meta, t, **cols)


#: Which CLI option sets each schema field (to turn a dry-run schema error into a usage error).
_OPTION_OF = {"capacity_wh": "--capacity-wh", "device_kind": "--device-kind", "unit": "--unit",
              "supply_w": "--charger-w", "ambient_c": "--ambient-c", "bandwidth_mbps": "--bandwidth-mbps",
              "initial_soc": "--capacity-wh"}


def check_config(cfg: RecorderConfig) -> None:
    """Dry run before recording: a 2-row trace with the configured constants (plugged, so the
    charger counts) must pass the schema, including the device kind's power bounds.

    Raises:
        TraceValidationError: naming the field (see :data:`_OPTION_OF` for the option).
    """
    meta = TraceMeta(capacity_wh=cfg.capacity_wh, initial_soc=1.0, device_kind=cfg.device_kind, source="dry-run",
                     license="own recording", unit=cfg.unit)
    make_trace("dry-run", meta, [0.0, cfg.interval_s], supply_w=cfg.charger_w, plugged=1.0,
               ambient_c=cfg.ambient_c, demand_tps=0.0, bandwidth_mbps=cfg.bandwidth_mbps).validate(file="options")


def _save(rec: Recorder, out: Path, *, force: bool) -> tuple[Path | None, str | None]:
    """Saves the samples so far atomically: (path, None), or (None, reason) when < 2 samples. A trace
    that fails the schema is kept as ``<stem>.unvalidated.csv`` (reason says why)."""
    if len(rec.rows) < 2:
        return None, f"only {len(rec.rows)} sample(s) recorded; nothing saved (a trace needs 2)"
    trace = rec.to_trace(name=out.stem)
    try:
        return save_trace(trace, out, force=force), None
    except TraceValidationError as exc:
        keep = out.with_name(out.stem + ".unvalidated.csv")
        refuse_existing(keep, force, "unvalidated recording")
        atomic_write_text(keep, trace_to_csv_text(trace))
        return keep, f"the recording breaks the schema ({exc}); kept unvalidated as {keep}"


def main(argv: list[str] | None = None, sensors: Sensors | None = None) -> int:
    """CLI entry point (``sensors`` lets tests inject fakes)."""
    ap = argparse.ArgumentParser(prog="python -m traces.record", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="CSV to write (schema + meta line)")
    ap.add_argument("--force", action="store_true", help="replace --out if it exists")
    ap.add_argument("--interval", type=float_in(0.0, 3600.0, lo_open=True), default=1.0,
                    help="sampling interval, s")
    ap.add_argument("--duration", type=float_in(0.0, 366 * 86400.0, lo_open=True), default=600.0,
                    help="recording length, s")
    ap.add_argument("--capacity-wh", type=float_in(0.0, 10_000.0, lo_open=True), default=15.0,
                    help="battery capacity, Wh")
    ap.add_argument("--device-kind", default="phone", help="phone, laptop, solar-node, ...")
    ap.add_argument("--charger-w", type=float_in(0.0, 1000.0), default=20.0,
                    help="charger rating while plugged, W (bounded per device kind)")
    ap.add_argument("--ambient-c", type=float_in(-60.0, 90.0), default=25.0,
                    help="ambient when no temperature sensor")
    ap.add_argument("--bandwidth-mbps", type=float_in(0.0, MAX_BANDWIDTH_MBPS), default=20.0,
                    help="link capacity to record")
    ap.add_argument("--temp-sensor", default=None, help="psutil temperature group to use (default all)")
    ap.add_argument("--unit", default=None, help="split unit id (default recorder-<hostname>)")
    ap.add_argument("--checkpoint-s", type=float_in(0.0, None), default=300.0,
                    help="save what was recorded every this many seconds of recording (0 = only at the end)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if not args.out.name.endswith((".csv", ".csv.gz")):
        ap.error(f"argument --out: {args.out} must end in .csv or .csv.gz")
    if args.duration < args.interval:
        ap.error(f"argument --duration: {args.duration:g} s is shorter than --interval {args.interval:g} s; "
                 "allowed: >= --interval")
    cfg = RecorderConfig(interval_s=args.interval, duration_s=args.duration, capacity_wh=args.capacity_wh,
                         device_kind=args.device_kind.strip(), charger_w=args.charger_w, ambient_c=args.ambient_c,
                         bandwidth_mbps=args.bandwidth_mbps, temp_sensor=args.temp_sensor)
    if args.unit is not None:
        cfg.unit = args.unit.strip()
    try:
        check_config(cfg)
    except TraceValidationError as exc:
        opt = _OPTION_OF.get(exc.column or "", "an option")
        ap.error(f"argument {opt}: {str(exc).removeprefix('options: ').removeprefix('options row 1: ')}")
    try:
        refuse_existing(args.out, args.force, "recording")
    except ExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rec = Recorder(cfg, sensors)
    if not args.quiet:
        print(f"recording {args.duration:g} s every {args.interval:g} s to {args.out} (Ctrl-C stops early)")
    last = {"t": 0.0, "force": args.force}

    def checkpoint(row: dict[str, float]) -> None:
        if args.checkpoint_s and row["time_s"] - last["t"] >= args.checkpoint_s and len(rec.rows) >= 2:
            try:
                save_trace(rec.to_trace(name=args.out.stem), args.out, force=last["force"])
                last["force"] = True  # our own file from now on
            except TraceValidationError:
                pass  # the final save keeps the data (unvalidated) and says why
            last["t"] = row["time_s"]

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    error: BaseException | None = None
    old = signal.signal(signal.SIGTERM, on_term) if _main_thread() else None
    try:
        rec.record(on_sample=checkpoint)
    except Exception as exc:  # save what we have, then report
        error = exc
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    try:
        path, problem = _save(rec, args.out, force=last["force"])
    except (OSError, ValueError) as exc:
        path, problem = None, f"could not save: {exc}"
    if error is not None:
        saved = f"; {len(rec.rows)} sample(s) saved to {path}" if path else ""
        print(f"error: recording stopped by {type(error).__name__}: {error}{saved}"
              + (f"; {problem}" if problem else ""), file=sys.stderr)
        return 1
    if problem:
        print(f"error: {args.out}: {problem}", file=sys.stderr)
        return 1
    if not args.quiet:
        missing = ", ".join(sorted(rec.missing)) or "none"
        stopped = " (stopped early)" if rec.interrupted else ""
        print(f"wrote {path}: {len(rec.rows)} samples{stopped}; missing sensors: {missing}")
    return 0


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
