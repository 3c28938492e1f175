"""Importers on small fixture files written here in the real formats; the real-data build."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.dynamics import DEVICES
from traces import TraceSet, shared_traces_dir
from traces.build_real import build_real
from traces.importers import (
    detect_format,
    import_5g_power,
    import_android_batteryapp,
    import_bandwidth,
    import_irradiance,
    import_linux_power_supply,
    import_pvdaq,
    route_unit,
)
from traces.importers.android import SELF_HEATING, self_heating_c
from traces.importers.solar import MAX_IRRADIANCE_W_M2, detect_sample_period_s

FIX = Path(__file__).parent / "fixtures" / "traces"


def test_detect_format_on_fixtures() -> None:
    assert detect_format(next((FIX / "android").glob("*.csv"))) == "android-batteryapp"
    assert detect_format(next((FIX / "android-adb").glob("*.csv"))) == "android-batteryapp"
    assert detect_format(FIX / "linux" / "my-laptop" / "battery-synthetic.log") == "linux-power-supply"
    assert detect_format(next((FIX / "solar-nsrdb").glob("*.csv"))) == "nsrdb-irradiance"
    assert detect_format(next((FIX / "pvdaq").glob("*.csv"))) == "pvdaq"
    assert detect_format(FIX / "bandwidth" / "norway" / "norway_tram_1_0") == "bandwidth"
    assert detect_format(FIX / "bandwidth" / "lumos5g" / "4G" / "4g_trace_walking_12345_a") == "bandwidth"
    assert detect_format(FIX / "5g" / "data-processed" / "merged_aa-hb" / "HB-1.csv") == "5g-power"
    assert detect_format(FIX / "make_fixtures.py") is None


def test_android_batteryapp_session() -> None:
    (tr,) = import_android_batteryapp(FIX / "android")
    tr.validate()
    m = tr.meta
    assert m.device_kind == "phone" and m.unit == "android-0123456789abcdef"
    assert m.capacity_wh == pytest.approx(4000 * 3.85 / 1000)  # Redmi Note 7 from the model table
    assert m.initial_soc == pytest.approx(0.79)  # first level reading (int %) / 100
    assert len(tr) == 239  # duplicate + level-less rows dropped, out-of-order row sorted in
    assert np.all(np.diff(tr.time_s) > 0)
    assert tr.plugged[:140].max() == 0 and tr.plugged[-50:].min() == 1  # status 3 -> 2
    unpl = tr.plugged == 0
    assert np.all(tr.supply_w[unpl] == 0) and np.all(tr.supply_w[~unpl] > 0)
    # Discharge energy matches the level drop x capacity within the 1 % quantisation.
    e_wh = float(np.sum(tr.base_load_w[unpl] * tr.hold_s[unpl])) / 3600
    drop = (tr.soc_frac[0] - tr.soc_frac[int(np.argmax(~unpl)) - 1]) * m.capacity_wh
    assert 0.5 * drop < e_wh < 2.0 * drop + 0.02 * m.capacity_wh
    raw = import_android_batteryapp(FIX / "android", self_heating=None)[0]
    assert raw.ambient_c.min() >= 31.0  # the battery temperature
    # The corrected ambient is below it by R_th x (low-passed base + idle) -- never above.
    rise = raw.ambient_c - tr.ambient_c
    assert np.all(rise >= SELF_HEATING.r_th_c_per_w * (tr.base_load_w.min() + SELF_HEATING.idle_power_w) - 1e-6)
    assert np.all(rise <= SELF_HEATING.r_th_c_per_w * (tr.base_load_w.max() + SELF_HEATING.idle_power_w) + 1e-6)
    assert "minus modelled self-heating" in m.notes and "minus" not in raw.meta.notes
    assert tr.bandwidth_mbps[0] == 50.0 and tr.bandwidth_mbps[-1] == 0.0  # Wi-Fi then offline
    assert tr.demand_tps.max() > tr.demand_tps.min()  # from usage + screen
    assert m.seed is None  # usage signals present: no seeded demand


def test_self_heating_inverts_an_independent_thermal_integration() -> None:
    # Irregular log grid; a phone in a room warming from 22 to 26 C, load stepping 0.5 -> 3 -> 1 W.
    rng = np.random.default_rng(0)
    t_log = np.cumsum(rng.uniform(5.0, 40.0, 400))
    t_log -= t_log[0]
    amb = lambda t: 22.0 + 4.0 * t / t_log[-1]  # noqa: E731
    p_at = lambda t: np.where(t < 2000, 0.5, np.where(t < 5000, 3.0, 1.0))  # noqa: E731
    p_log = p_at(t_log)
    # Reference: Euler at 0.05 s with the log's sample-and-hold power (what the importer assumes).
    p_hold = lambda t: p_log[np.searchsorted(t_log, t, side="right") - 1]  # noqa: E731
    r, tau = SELF_HEATING.r_th_c_per_w, SELF_HEATING.tau_s
    temp = amb(0.0) + r * (p_log[0] + SELF_HEATING.idle_power_w)
    tt, dt, batt = 0.0, 0.05, [temp]
    for k in range(1, t_log.size):
        while tt < t_log[k] - 1e-9:
            h = min(dt, t_log[k] - tt)
            temp += h * (amb(tt) + r * (p_hold(tt) + SELF_HEATING.idle_power_w) - temp) / tau
            tt += h
        batt.append(temp)
    est = np.asarray(batt) - self_heating_c(t_log, p_log, SELF_HEATING)
    # Recovers the room temperature to within the slow ambient drift's lag (4 C over ~2.4 h x tau).
    assert np.max(np.abs(est - amb(t_log))) < 0.15
    assert np.max(np.asarray(batt) - amb(t_log)) > 10.0  # the uncorrected error it removes


def test_android_adb_style_log() -> None:
    (tr,) = import_android_batteryapp(FIX / "android-adb", capacity_wh=18.0)
    tr.validate()
    assert tr.meta.capacity_wh == 18.0 and tr.meta.extra["time_kind"] == "clock"
    assert tr.ambient_c.max() < 40  # 0.1 deg C converted
    assert tr.plugged.max() == 0  # no status column, level only falls
    assert tr.duration_s == pytest.approx(90 * 60, rel=0.05)
    e_wh = float(np.sum(tr.base_load_w * tr.hold_s)) / 3600
    assert e_wh == pytest.approx(0.29 * 18.0, rel=0.35)


def test_linux_power_supply_log() -> None:
    trs = import_linux_power_supply(FIX / "linux")
    assert len(trs) == 2  # split at the 3-h suspend gap
    for t in trs:
        t.validate()
        assert t.meta.unit == "my-laptop-battery-synthetic" and t.meta.capacity_wh == pytest.approx(45.0)
        assert t.meta.seed is not None  # demand seeded (no usage columns)
    first, second = trs
    assert first.meta.initial_soc == pytest.approx(39.9 / 45.0, abs=0.01)
    # ~90-110 mWh per minute, the whole laptop: the env adds the platform idle to the base load itself
    assert 4.0 < np.median(first.base_load_w) + DEVICES["laptop"].idle_power_w < 7.5
    assert second.plugged.max() == 1 and second.supply_w.max() > 30  # 600 mWh/min charging = 36 W
    # Same file, same result (seed from the file name).
    again = import_linux_power_supply(FIX / "linux" / "my-laptop" / "battery-synthetic.log")
    assert np.array_equal(again[0].demand_tps, first.demand_tps)


def test_irradiance_import() -> None:
    trs = import_irradiance(FIX / "solar-nsrdb", window_h=48, windows=2, panel_area_m2=0.1,
                            panel_efficiency=0.2)
    assert len(trs) == 2
    t = trs[0]
    t.validate()
    assert t.meta.unit == "nsrdb-999001" and t.meta.extra["sample_period_s"] == 3600.0
    assert t.supply_w.max() == pytest.approx(950.0 * 0.1 * 0.2, rel=0.05)  # 95,000 uW/cm2 = 950 W/m2
    assert t.supply_w[:6].max() == 0 and t.plugged[12] == 1
    assert detect_sample_period_s(np.tile(np.r_[np.zeros(1440), np.ones(1440)], 5)) == 30.0


def test_pvdaq_import() -> None:
    trs = import_pvdaq(FIX / "pvdaq", peak_w=8.0, window_h=24, windows=0)
    assert len(trs) >= 2
    for t in trs:
        t.validate()
        assert t.meta.unit == "pvdaq-site-9"
        assert t.supply_w.min() == 0.0  # negative night readings clipped
        assert t.supply_w.max() <= 8.0 * 1.01
        assert 10 < t.ambient_c.mean() < 26  # the file's ambient column
    assert trs[0].meta.extra["sample_period_s"] == 900.0


def test_bandwidth_import_both_formats() -> None:
    trs = import_bandwidth(FIX / "bandwidth")
    names = {t.name for t in trs}
    assert {"4g-trace-walking-12345-a", "norway-tram-1-0"} <= names
    for t in trs:
        t.validate()
    lum = next(t for t in trs if t.name == "4g-trace-walking-12345-a")
    assert len(lum) == 200 and lum.bandwidth_mbps.min() == 0.0 and lum.meta.unit == "lumos-4g-walking-a"
    nor = next(t for t in trs if t.name == "norway-tram-1-0")
    assert len(nor) == 150  # the garbage line is skipped
    assert route_unit("test_fcc_trace_1234_http---www.example.com_0") == "fcc-1234"
    assert route_unit("5g_trace_12_driving") == "lumos-5g-driving"


def test_5g_power_table() -> None:
    tab = import_5g_power(FIX / "5g")
    assert [Path(s).name for s in tab["sources"]] == ["aa-hb_combined.csv"]  # merged copy skipped
    nr = tab["networks"]["aa-hb:NR"]
    assert nr["downlink_nj_per_bit"] == pytest.approx(2.0, rel=0.1)  # 2 mW per Mbit/s = 2 nJ/bit
    assert nr["uplink_nj_per_bit"] == pytest.approx(15.0, rel=0.1)
    assert nr["idle_w"] == pytest.approx(4.06, abs=0.1)


def test_import_cli(tmp_path: Path) -> None:
    cli = importlib.import_module("traces.import")
    assert cli.main(["android-batteryapp", str(FIX / "android"), "--out", str(tmp_path / "a")]) == 0
    ts = TraceSet.load(tmp_path / "a")
    assert len(ts) == 1 and ts.entries[0].split == "test"  # a single unit goes to test
    assert cli.main(["auto", str(FIX / "bandwidth"), "--out", str(tmp_path / "b"), "--split", "train"]) == 0
    assert len(TraceSet.load(tmp_path / "b").split("train")) == 4
    assert cli.main(["5g-power", str(FIX / "5g"), "--out", str(tmp_path / "r")]) == 0
    assert "networks" in json.loads((tmp_path / "r" / "radio_energy_per_bit.json").read_text())
    assert cli.main(["pvdaq", str(FIX / "android"), "--out", str(tmp_path / "x")]) == 1  # bad input file


def test_build_real_on_fixtures(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shutil.copytree(FIX, shared)
    (shared / "make_fixtures.py").unlink()
    ts = build_real(shared, tmp_path / "real", progress=False, verbose=False)
    kinds = {e.meta.device_kind for e in ts.entries}
    assert kinds == {"phone", "laptop", "solar-node"}
    assert (tmp_path / "real" / "radio_energy_per_bit.json").exists()
    back = TraceSet.load(tmp_path / "real")
    for t in back:
        t.validate()
        assert t.meta.extra.get("bandwidth_routes") is not None or t.meta.device_kind == "phone"


@pytest.mark.skipif(not (shared_traces_dir() / "README.md").exists(),
                    reason=f"shared real traces not found at {shared_traces_dir()} "
                           "(set WATTWISE_SHARED_TRACES to run)")
def test_build_real_from_shared_traces(tmp_path: Path) -> None:
    ts = build_real(shared_traces_dir(), tmp_path / "real", limit_per_format=6, progress=False, verbose=False)
    back = TraceSet.load(tmp_path / "real")
    assert len(back) == len(ts) > 10
    assert {"phone", "laptop", "solar-node"} <= {e.meta.device_kind for e in back.entries}
    split_of: dict[str, str] = {}
    for e in back.entries:
        assert split_of.setdefault(e.meta.unit, e.split) == e.split  # units never straddle splits
    for t in back.split("test"):
        t.validate()
    info = json.loads((tmp_path / "real" / "manifest.json").read_text())["info"]
    assert info["files_by_format"]["android-batteryapp"] == 6
    assert (tmp_path / "real" / "radio_energy_per_bit.json").exists()


def test_a_replay_with_the_model_off_reproduces_the_logged_charge() -> None:
    """The battery logs' consumption already holds the platform idle, and their charge power is what was stored: the
    importers write base load and supply so that the env (which adds the idle and stores η of a surplus) replays the
    log's own SoC, discharging and charging."""
    trs = import_linux_power_supply(FIX / "linux") + import_android_batteryapp(FIX / "android") \
        + import_android_batteryapp(FIX / "android-adb")
    assert {t.meta.device_kind for t in trs} == {"laptop", "phone"} and any(t.plugged.max() == 1 for t in trs)
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from replay_soc import replay  # the env's battery with the model off

    for tr in trs:
        sim, logged = replay(tr), tr.soc_frac
        assert np.nanmax(np.abs(sim[:-1] - logged[1:])) < 0.016, tr.name


def test_android_level_of_one_percent_is_a_percentage(tmp_path) -> None:
    """A phone logged at 1 % and then 0 % (its last minutes) is not a fraction 1.0 -> 0.0."""
    rows = ["ID,level,temperature,voltage,status,usage,isInteractive,brandModel,Timestamp"]
    rows += [f"abcdef0123456789,{1 if k < 120 else 0},35.0,3.55,3,40,true,google-Nexus 5X,{1594113568585 + k * 10000}"
             for k in range(130)]
    (tmp_path / "abcdef0123456789-2020-07-07-10-00-00.csv").write_text("\n".join(rows) + "\n")
    (tr,) = import_android_batteryapp(tmp_path)
    assert tr.meta.initial_soc == pytest.approx(0.01) and np.nanmax(tr.base_load_w) < 2.0


def test_pvdaq_skips_a_window_with_impossible_irradiance(tmp_path) -> None:
    """Irradiance far above what sunlight reaches is a sensor fault: its window is skipped with a warning naming the
    file and the time; the other windows keep their names."""
    t0 = 1685577600  # 2023-06-01 00:00 UTC
    day = [max(0.0, 1000.0 * np.sin(np.pi * (h - 6) / 12)) for h in np.arange(0, 24, 0.25)]
    vals = day + [v * 5.0 for v in day] + day  # the second day's sensor reads five times the sun
    lines = ["measured_on,poa_irradiance"] + [f"{t0 + 900 * k},{v:.1f}" for k, v in enumerate(vals)]
    (tmp_path / "system_99_poa_irradiance.csv").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"system_99_poa_irradiance.csv: 1 window\(s\) skipped .* w1 at 2023-06-02"):
        trs = import_pvdaq(tmp_path, window_h=24, windows=0)
    assert [t.name.rsplit("-", 1)[1] for t in trs] == ["w0", "w2"]
    assert max(t.supply_w.max() for t in trs) <= MAX_IRRADIANCE_W_M2 * 0.05 * 0.18


def test_a_clock_set_back_is_warned_about_with_the_file_and_the_fix(tmp_path) -> None:
    """Naive local times across the autumn daylight-saving change repeat an hour with other readings: the importer
    says so (file, time, fix) instead of silently dropping and interleaving rows."""
    import datetime as dt
    import zoneinfo

    tz, t0 = zoneinfo.ZoneInfo("Europe/Berlin"), dt.datetime(2020, 10, 24, 23, 0, tzinfo=dt.UTC)
    rows, e = ["time,status,energy_full,energy_now"], 40e6
    for k in range(240):  # 4 h at 1 min across 03:00 CEST -> 02:00 CET, a steady 8 W discharge
        local = (t0 + dt.timedelta(minutes=k)).astimezone(tz).replace(tzinfo=None)
        rows.append(f"{local.isoformat(sep=' ')},Discharging,50000000,{int(e)}")
        e -= 8.0 / 60 * 1e6
    (tmp_path / "bat.csv").write_text("\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match=r"bat.csv: 60 row\(s\) share a time .* 2020-10-25 02:00:00 .* fix: log UTC"):
        import_linux_power_supply(tmp_path)
