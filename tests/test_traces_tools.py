"""Recorder (with fake sensors), plot and info CLIs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from traces import default_trace_set_dir, load_trace
from traces.info import main as info_main
from traces.plot import main as plot_main
from traces.record import Recorder, RecorderConfig, Sensors
from traces.record import main as record_main


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def fake_sensors(**over: object) -> Sensors:
    clock = FakeClock()
    levels = iter(np.linspace(80, 79, 1000))
    base = dict(
        battery=lambda: SimpleNamespace(percent=float(next(levels)), power_plugged=False, secsleft=7200),
        temperatures=lambda: {"coretemp": [SimpleNamespace(current=41.0), SimpleNamespace(current=43.0)]},
        cpu_percent=lambda: 50.0,
        battery_power_w=lambda: 6.5,
        clock=clock,
        sleep=clock.sleep,
    )
    base.update(over)
    return Sensors(**base)  # type: ignore[arg-type]


def test_recorder_with_all_sensors() -> None:
    rec = Recorder(RecorderConfig(interval_s=1.0, duration_s=10.0, capacity_wh=50.0, device_kind="laptop"),
                   fake_sensors())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is missing: no warning
        tr = rec.run()
    tr.validate()
    assert len(tr) == 10 and np.allclose(np.diff(tr.time_s), 1.0)
    assert tr.ambient_c[0] == 42.0 and tr.plugged.max() == 0 and tr.supply_w.max() == 0
    assert tr.base_load_w[0] == 6.5 and tr.soc_frac[0] == pytest.approx(0.8)
    assert tr.demand_tps[0] == pytest.approx(110.0)  # 20 + 180 * 0.5
    assert tr.meta.initial_soc == pytest.approx(0.8) and tr.meta.extra["secsleft_last"] == 7200


def test_recorder_degrades_when_sensors_missing(tmp_path: Path) -> None:
    def broken() -> None:
        raise RuntimeError("sensor glitch")

    sensors = fake_sensors(battery=lambda: None, temperatures=lambda: {}, cpu_percent=broken,
                           battery_power_w=lambda: None)
    with pytest.warns(UserWarning) as rec_warnings:
        code = record_main(["--out", str(tmp_path / "my.csv"), "--interval", "1", "--duration", "5",
                            "--quiet", "--charger-w", "30"], sensors=sensors)
    assert code == 0
    msgs = [str(w.message) for w in rec_warnings]
    assert len(msgs) == len(set(msgs)) == 4  # each missing sensor warns exactly once
    tr = load_trace(tmp_path / "my.csv")
    assert len(tr) == 5 and tr.plugged.min() == 1 and tr.supply_w.max() == 30.0
    assert tr.ambient_c[0] == 25.0 and np.isnan(tr.soc_frac).all() and tr.meta.initial_soc == 1.0


def test_plot_trace_and_set(tmp_path: Path) -> None:
    ds = default_trace_set_dir()
    assert plot_main([str(ds / "deadline-00.csv"), "--out", str(tmp_path / "one.png")]) == 0
    args = [str(ds), "--split", "test", "--max-traces", "3", "--out", str(tmp_path / "set.png")]
    assert plot_main(args) == 0
    for name in ("one.png", "set.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_info_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert info_main([str(default_trace_set_dir())]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "test" in out and "supply Wh" in out
    assert info_main([str(default_trace_set_dir()), "--json", "--fast"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["set"]["all"]["traces"] == sum(doc["set"][s]["traces"] for s in ("train", "val", "test"))
    assert info_main([str(default_trace_set_dir() / "phone-00.csv")]) == 0
    assert json.loads(capsys.readouterr().out)["device_kind"] == "phone"
    assert info_main(["/nonexistent.csv"]) == 1  # a bad input file exits 1 (usage errors 2)
