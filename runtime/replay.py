"""Trace replay: a trace file acting as a virtual device (numpy + standard library only).

:class:`ReplaySensors` plays a ``traces`` trace (charger/harvester power, plugged, ambient
temperature, demand, bandwidth, budget, other load) on a virtual clock that runs ``speed``
times faster than the wall clock, and simulates the device's battery and temperature driven by
the power the live model draws. A laptop can thereby emulate a phone on a battery trace.

The battery and thermal equations are the environment's own (``runtime.dynamics``:
``battery_update`` / ``thermal_update``, the functions ``step_core`` calls), integrated over the
intervals between decisions with the device power ``P = P_idle + P_base(trace) + P_model``.

Trace rows hold until the next one (zero-order hold); an interval spanning several rows is
integrated row by row, so replaying the environment's resampled trace with its per-step power
reproduces the environment exactly.

The last row holds for one median step (:attr:`ReplaySensors.end_s`). Past that the trace is
*finished* (:attr:`ReplaySensors.finished`; the caller stops, ``deploy.py run --replay-end stop``)
unless the replay was built with ``loop=True``: then virtual time wraps to the trace's first row
(:attr:`ReplaySensors.laps` counts the wraps) while the battery and temperature carry on.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable
from typing import Any

from runtime.dynamics import DeviceConstants, battery_step, thermal_step
from runtime.sensors import Reading, Sensor


class ReplaySensors(Sensor):
    """A trace as a virtual device: every physical field, from the trace and a small simulation.

    Args:
        trace: A ``traces.Trace`` (``traces.load_trace(path)``) or anything with the same columns
            (``time_s``, ``supply_w``, ``plugged``, ``ambient_c``, ``demand_tps``,
            ``bandwidth_mbps``, optional ``budget_w``/``base_load_w``) and ``meta``
            (``capacity_wh``, ``initial_soc``, ``deadline_s``).
        device: Device constants (``runtime.dynamics.DeviceConstants``; e.g. from the policy
            file's ``devices`` table for ``trace.meta.device_kind``).
        speed: Virtual seconds per wall-clock second (``inf`` is not allowed; use
            ``clock=None`` and :meth:`advance_to` to step manually).
        clock: Wall clock; ``None`` = manual mode (time moves only through :meth:`advance_to`).
        start_s: Virtual start time within the trace.
        soc0: Initial SoC (default the trace's ``initial_soc``).
        temp0_c: Initial temperature (default: steady state at idle + base load).
        period_s: Read period for the hub (virtual seconds).
        loop: Wrap to the first row at the end of the trace (default: hold the last row; the
            trace is :attr:`finished`).
    """

    name = "replay"
    provides = ("soc_frac", "plugged", "temp_c", "ambient_c", "power_w", "supply_w", "bandwidth_mbps")

    def __init__(self, trace: Any, device: DeviceConstants, speed: float = 1.0,
                 clock: Callable[[], float] | None = time.monotonic, start_s: float = 0.0,
                 soc0: float | None = None, temp0_c: float | None = None, period_s: float = 0.0,
                 loop: bool = False) -> None:
        if not speed > 0 or math.isinf(speed):
            raise ValueError(f"speed must be a positive finite number, got {speed}")
        if not (math.isfinite(start_s) and start_s >= 0):
            raise ValueError(f"start_s must be a finite number >= 0, got {start_s}")
        self.trace, self.device, self.speed = trace, device, float(speed)
        self._wall = clock
        self._wall0 = clock() if clock is not None else 0.0
        super().__init__(self.now, period_s)
        self.name = f"replay:{getattr(trace, 'name', 'trace')}"
        nan = [math.nan] * len(trace.time_s)
        self._time = [float(x) for x in trace.time_s]
        self._supply = [float(x) for x in trace.supply_w]
        self._plugged = [float(x) for x in trace.plugged]
        self._ambient = [float(x) for x in trace.ambient_c]
        self._demand = [float(x) for x in trace.demand_tps]
        self._bw = [float(x) for x in trace.bandwidth_mbps]
        self._budget = [float(x) for x in trace.budget_w] if getattr(trace, "budget_w", None) is not None else nan
        base = getattr(trace, "base_load_w", None)
        self._base = [0.0 if x != x else float(x) for x in base] if base is not None else [0.0] * len(nan)
        meta = trace.meta
        self.capacity_j = float(meta.capacity_wh) * 3600.0
        self.deadline_s = float(meta.deadline_s) if getattr(meta, "deadline_s", None) is not None else math.nan
        step = (self._time[-1] - self._time[0]) / max(1, len(self._time) - 1) if len(self._time) > 1 else 1.0
        self.end_s = self._time[-1] + step  # the last row holds for the median step
        self.loop = bool(loop)
        self.period = self.end_s - self._time[0]  # one lap of the trace (loop mode)
        if not self.loop and start_s >= self.end_s:
            raise ValueError(f"start_s {start_s} is beyond the end of the trace ({self.end_s:g} s)")
        self.vt = float(start_s)
        self._vt0 = self.vt
        self.laps = 0  # loop mode: completed wraps
        self._off = 0.0  # loop mode: virtual time - trace time
        if self.loop and self.vt >= self.end_s:
            self.laps = int((self.vt - self._time[0]) // self.period)
            self._off = self.laps * self.period
        self._row = self._row_at(self.vt - self._off)
        i = self._row
        self.soc = float(meta.initial_soc if soc0 is None else soc0)
        self.model_power_w = 0.0
        self.power_w = device.idle_power_w + self._base[i]
        self.temp_c = (self._ambient[i] + device.r_th_c_per_w * self.power_w) if temp0_c is None else float(temp0_c)
        self.dead = False
        self.energy_j = 0.0

    # ---- time --------------------------------------------------------------------------------
    def now(self) -> float:
        """Virtual time in seconds (advances the simulation to it in wall-clock mode)."""
        if self._wall is not None:
            vt = self._vt0 + (self._wall() - self._wall0) * self.speed
            if vt > self.vt:
                self._advance(vt)
        return self.vt

    def advance_to(self, vt: float) -> None:
        """Manual mode: advance the simulation to virtual time ``vt`` (s)."""
        if vt > self.vt:
            self._advance(vt)

    @property
    def finished(self) -> bool:
        """True once the virtual clock passed the end of the trace (never in loop mode)."""
        return not self.loop and self.vt >= self.end_s

    @property
    def trace_end_s(self) -> float:
        """Virtual time at which the current lap of the trace ends."""
        return self.end_s + self._off

    def _row_at(self, vt: float) -> int:
        return max(0, min(len(self._time) - 1, bisect.bisect_right(self._time, vt) - 1))

    def _advance(self, vt: float) -> None:
        dev = self.device
        t = self.vt
        i = self._row
        n = len(self._time)
        while t < vt:
            if i + 1 < n:
                nxt = self._time[i + 1] + self._off
            else:
                nxt = self.end_s + self._off if self.loop else math.inf
            seg_end = vt if vt < nxt else nxt
            dt = seg_end - t
            if dt > 0:
                p = dev.idle_power_w + self._base[i] + self.model_power_w
                self.power_w = p
                self.energy_j += p * dt
                self.soc, dead = battery_step(self.soc, self._supply[i], p, dt, self.capacity_j,
                                              dev.charge_efficiency)
                self.dead = self.dead or dead
                self.temp_c = thermal_step(self.temp_c, self._ambient[i], p, dt, dev.r_th_c_per_w, dev.tau_s)
            t = seg_end
            if t >= nxt:
                i += 1
                if i >= n:  # loop mode: wrap to the first row
                    i, self.laps, self._off = 0, self.laps + 1, self._off + self.period
        self.vt, self._row = vt, i

    # ---- inputs and outputs --------------------------------------------------------------------
    def set_model_power_w(self, power_w: float) -> None:
        """The live model's power draw from now on (W); the device adds idle and base load."""
        self.model_power_w = max(0.0, float(power_w))

    def read(self) -> Reading:
        """The device's state at the current virtual time (as last advanced by :meth:`now` or
        :meth:`advance_to`: reading never moves the clock, so it never runs ahead of the caller)."""
        vt = self.vt
        i = self._row
        return Reading(vt, soc_frac=self.soc, plugged=self._plugged[i], temp_c=self.temp_c,
                       ambient_c=self._ambient[i], power_w=self.power_w, supply_w=self._supply[i],
                       bandwidth_mbps=self._bw[i])

    def bandwidth_mbps(self) -> float:
        """The link's bandwidth at the current virtual time, Mbit/s (what :meth:`read` reports)."""
        return self._bw[self._row]

    def workload(self) -> dict[str, float]:
        """The trace's workload and limits at the current virtual time.

        Returns:
            ``demand_tps``, ``budget_w`` (NaN = none), ``deadline_left_s`` (NaN = none),
            ``horizon_left_s`` (time left in the trace: for the replay's own use, never the policy's, since a
            device does not know when its session ends), ``base_w`` (idle + other load, W),
            ``capacity_j`` (battery capacity; stored energy = SoC × capacity).
        """
        i, vt = self._row, self.vt
        return {"demand_tps": self._demand[i], "budget_w": self._budget[i],
                "deadline_left_s": self.deadline_s - vt if self.deadline_s == self.deadline_s else math.nan,
                "horizon_left_s": max(0.0, self.end_s + self._off - vt),
                "base_w": self.device.idle_power_w + self._base[i],
                "capacity_j": self.capacity_j}

    def supply_ahead_w(self, n: int, step_s: float) -> list[float]:
        """Supply power at ``vt + k·step_s`` for k = 1..n (the observation's look-ahead features;
        the environment averages each step of its resampled trace, this samples the hold value)."""
        last = len(self._time) - 1
        out = []
        t0, per = self._time[0], self.period
        for k in range(1, n + 1):
            t = self.vt - self._off + k * step_s
            if self.loop and t >= self.end_s:
                t = t0 + (t - t0) % per
            out.append(self._supply[min(last, max(0, bisect.bisect_right(self._time, t) - 1))])
        return out
