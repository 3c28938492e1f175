"""Safety of the traces commands: no silent deletes/overwrites, options checked before work starts,
recordings survive interrupts and errors, per-row bounds, clear errors naming the file."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_traces_tools import FakeClock  # the same fake clock the recorder tests use

from traces.generate import main as generate_main
from traces.importers import ImportFormatError, import_linux_power_supply
from traces.info import main as info_main
from traces.plot import main as plot_main
from traces.record import Sensors
from traces.record import main as record_main
from traces.schema import TraceMeta, TraceValidationError, make_trace
from traces.store import TraceSet, default_trace_set_dir, load_trace, save_trace, shared_traces_dir

FIX = Path(__file__).parent / "fixtures" / "traces"
LINUX_LOG = FIX / "linux" / "my-laptop" / "battery-synthetic.log"
import_cli = importlib.import_module("traces.import")


def _meta(kind: str = "phone") -> TraceMeta:
    return TraceMeta(capacity_wh=15.0, initial_soc=0.8, device_kind=kind, source="test", license="CC0-1.0",
                     unit="u1")


def _cols(n: int = 20, **over: object) -> dict[str, np.ndarray]:
    cols = {"supply_w": np.zeros(n), "plugged": np.zeros(n), "ambient_c": np.full(n, 25.0),
            "demand_tps": np.full(n, 50.0), "bandwidth_mbps": np.full(n, 20.0),
            "base_load_w": np.full(n, 1.0)}
    for k, v in over.items():
        cols[k] = np.asarray(v, dtype=np.float64)
    return cols


def _trace(kind: str = "phone", name: str = "t", n: int = 20, **over: object):
    return make_trace(name, _meta(kind), np.arange(n) * 10.0, **_cols(n, **over))


def _with(n: int, i: int, value: float, fill: float) -> np.ndarray:
    x = np.full(n, fill)
    x[i] = value
    return x


# --- 1. generate never deletes files it did not write -------------------------------------------
def test_generate_keeps_foreign_files_and_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "set"
    out.mkdir()
    mine = out / "my-own-trace.csv"
    mine.write_text("precious\n")
    assert generate_main(["--out", str(out)]) == 0  # nothing it writes exists yet: allowed
    assert mine.read_text() == "precious\n"
    n_files = len(list(out.iterdir()))
    (out / "phone-00.csv").write_text("edited by hand\n")
    assert generate_main(["--out", str(out)]) == 1  # would replace the manifest and phone-00.csv
    err = capsys.readouterr().err
    assert "--force" in err and "Traceback" not in err
    assert (out / "phone-00.csv").read_text() == "edited by hand\n"
    assert generate_main(["--out", str(out), "--force"]) == 0
    assert mine.read_text() == "precious\n" and len(list(out.iterdir())) == n_files
    assert load_trace(out / "phone-00.csv").meta.device_kind == "phone"
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files


def test_generate_scenario_refuses_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "solar.csv"
    target.write_text("mine\n")
    assert generate_main(["--scenario", "solar_node", "--out", str(target)]) == 1
    assert target.read_text() == "mine\n"
    assert generate_main(["--scenario", "solar_node", "--out", str(target), "--force"]) == 0
    assert load_trace(target).meta.device_kind == "solar-node"


# --- 2. import merges into an existing set --------------------------------------------------------
def test_import_merges_into_existing_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "set"
    assert generate_main(["--out", str(out)]) == 0
    before = TraceSet.load(out)
    assert import_cli.main(["android-batteryapp", str(FIX / "android"), "--out", str(out)]) == 0
    after = TraceSet.load(out)
    assert len(after) == len(before) + 1
    assert set(before.names) <= set(after.names)
    assert {e.name: e.split for e in before.entries}.items() <= {e.name: e.split for e in after.entries}.items()
    for t in after:  # no orphans, every entry loads
        t.validate()
    # Importing the same source again collides on the trace name: an error naming it, nothing changed.
    manifest = (out / "manifest.json").read_bytes()
    capsys.readouterr()
    assert import_cli.main(["android-batteryapp", str(FIX / "android"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "already" in err and "--force" in err and "Traceback" not in err
    assert (out / "manifest.json").read_bytes() == manifest
    assert import_cli.main(["android-batteryapp", str(FIX / "android"), "--out", str(out), "--force"]) == 0
    assert len(TraceSet.load(out)) == len(after)


def test_import_keeps_unit_split_when_merging(tmp_path: Path) -> None:
    out = tmp_path / "links"
    src = FIX / "bandwidth" / "norway"
    assert import_cli.main(["bandwidth", str(src), "--out", str(out), "--split", "train"]) == 0
    first = TraceSet.load(out)
    assert import_cli.main(["bandwidth", str(FIX / "bandwidth" / "lumos5g"), "--out", str(out)]) == 0
    merged = TraceSet.load(out)
    assert len(merged) > len(first)
    assert all(merged.entry(e.name).split == "train" for e in first.entries)


# --- 3. record checks options first and never loses a recording --------------------------------
def _sensors(calls: list[int], *, fail_at: int | None = None, exc: type[BaseException] = RuntimeError,
             power_w: float = 1.5) -> Sensors:
    clock = FakeClock()

    def sleep(s: float) -> None:
        if fail_at is not None and len(calls) >= fail_at:
            raise exc("sensor bus died")
        clock.sleep(s)

    def cpu() -> float:
        calls.append(1)
        return 30.0

    return Sensors(battery=lambda: SimpleNamespace(percent=80.0, power_plugged=False, secsleft=3600),
                   temperatures=lambda: {}, cpu_percent=cpu, battery_power_w=lambda: power_w,
                   clock=clock, sleep=sleep)


@pytest.mark.parametrize("bad", [["--capacity-wh", "50000"], ["--interval", "-1"], ["--interval", "0"],
                                 ["--duration", "0"], ["--charger-w", "800"], ["--device-kind", ""],
                                 ["--bandwidth-mbps", "1e30"]])
def test_record_rejects_bad_options_before_recording(tmp_path: Path, bad: list[str],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[int] = []
    with pytest.raises(SystemExit) as ex:
        record_main(["--out", str(tmp_path / "r.csv"), "--duration", "5", "--quiet", *bad],
                    sensors=_sensors(calls))
    assert ex.value.code == 2
    assert calls == []  # nothing was recorded
    err = capsys.readouterr().err
    assert bad[0] in err and "Traceback" not in err
    assert not (tmp_path / "r.csv").exists()


def test_record_refuses_existing_output_before_recording(tmp_path: Path) -> None:
    calls: list[int] = []
    target = tmp_path / "r.csv"
    target.write_text("mine\n")
    assert record_main(["--out", str(target), "--duration", "5", "--quiet"], sensors=_sensors(calls)) == 1
    assert calls == [] and target.read_text() == "mine\n"


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_record_saves_what_it_has_on_error_and_interrupt(tmp_path: Path, exc: type[BaseException]) -> None:
    calls: list[int] = []
    target = tmp_path / "r.csv"
    code = record_main(["--out", str(target), "--interval", "1", "--duration", "100", "--quiet"],
                       sensors=_sensors(calls, fail_at=7, exc=exc))
    assert code == (1 if exc is RuntimeError else 0)
    tr = load_trace(target)
    assert len(tr) == 7
    assert not list(tmp_path.glob(".*.tmp"))


def test_record_out_of_bounds_sensor_reading_keeps_the_recording(tmp_path: Path) -> None:
    calls: list[int] = []
    target = tmp_path / "r.csv"
    with pytest.warns(UserWarning, match="base"):
        code = record_main(["--out", str(target), "--interval", "1", "--duration", "5", "--quiet"],
                           sensors=_sensors(calls, power_w=35.0))  # a laptop's draw on the default 'phone'
    assert code == 0
    tr = load_trace(target)
    assert len(tr) == 5 and np.isnan(tr.base_load_w).all()


# --- 4. per-device-kind bounds and per-row outliers -----------------------------------------------
@pytest.mark.parametrize(("kind", "column", "value"), [
    ("phone", "bandwidth_mbps", 1e30),
    ("laptop", "bandwidth_mbps", 20_000.0),
    ("phone", "base_load_w", 350.0),
    ("phone", "supply_w", 800.0),
    ("laptop", "supply_w", 400.0),
    ("laptop", "base_load_w", 200.0),
    ("solar-node", "supply_w", 5000.0),
    ("drone", "supply_w", 5000.0),
])
def test_per_row_outlier_names_the_row(kind: str, column: str, value: float) -> None:
    fill = {"bandwidth_mbps": 20.0, "base_load_w": 1.0, "supply_w": 5.0}[column]
    over: dict[str, object] = {column: _with(20, 7, value, fill)}
    if column == "supply_w":
        over["plugged"] = np.ones(20)
    tr = _trace(kind, **over)
    with pytest.raises(TraceValidationError) as ex:
        tr.validate(file="x.csv")
    e = ex.value
    assert e.row == 8 and e.column == column and e.fix
    assert "x.csv row 8" in str(e)
    assert kind in str(e) or column == "bandwidth_mbps"


def test_bounds_allow_real_devices() -> None:
    _trace("phone", supply_w=np.full(20, 65.0), plugged=np.ones(20), base_load_w=np.full(20, 12.0)).validate()
    _trace("laptop", supply_w=np.full(20, 240.0), plugged=np.ones(20), base_load_w=np.full(20, 90.0),
           bandwidth_mbps=np.full(20, 9000.0)).validate()


def test_outlier_in_file_names_file_row_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bw.csv"
    save_trace(_trace("phone"), p)
    lines = p.read_text().splitlines()
    cells = lines[3 + 4].split(",")  # data row 5 (after 2 comment lines and the header)
    cells[5] = "1e30"
    lines[3 + 4] = ",".join(cells)
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceValidationError, match=r"bw\.csv row 5 \(line 8\): bandwidth_mbps"):
        load_trace(p)


# --- 5. linux power_supply: impossible raw values --------------------------------------------------
@pytest.mark.parametrize("bad", ["1e30", "-5"])
def test_linux_import_rejects_impossible_energy(tmp_path: Path, bad: str) -> None:
    lines = LINUX_LOG.read_text().splitlines()
    cells = lines[40].split(",")
    cells[3] = bad
    lines[40] = ",".join(cells)
    f = tmp_path / "bat.log"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportFormatError) as ex:
        import_linux_power_supply(f)
    msg = str(ex.value)
    assert "bat.log line 41" in msg and "energy_now" in msg and "fix:" in msg


# --- 6. auto import lists what it skipped ----------------------------------------------------------
def test_import_auto_lists_skipped_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "empty.csv").write_text("")
    (src / "garbage.bin").write_bytes(bytes(range(256)) * 8)
    (src / "words.csv").write_text("hello,world\nfoo,bar\n")
    assert import_cli.main(["auto", str(src), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    for name in ("empty.csv", "garbage.bin", "words.csv"):
        assert name in err
    assert "Traceback" not in err and not (tmp_path / "o" / "manifest.json").exists()
    shutil.copytree(FIX / "bandwidth" / "norway", src / "norway")
    assert import_cli.main(["auto", str(src), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "garbage.bin" in err and "skipped" in err
    assert len(TraceSet.load(tmp_path / "o")) > 0


# --- 7. clear errors naming the file -----------------------------------------------------------------
def test_binary_garbage_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "junk.csv"
    p.write_bytes(b"\xff\xfe\x00garbage\x80\x81" * 50)
    with pytest.raises(TraceValidationError, match="junk.csv"):
        load_trace(p)
    p2 = tmp_path / "junk.csv.gz"
    p2.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(TraceValidationError, match="junk.csv.gz"):
        load_trace(p2)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    p = tmp_path / "bom.csv"
    save_trace(_trace("phone"), p)
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    assert len(load_trace(p)) == 20


@pytest.mark.parametrize("cli", [info_main, plot_main])
def test_folder_without_manifest_is_a_clear_error(tmp_path: Path, cli, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "set").mkdir()
    args = [str(tmp_path / "set")] + (["--out", str(tmp_path / "x.png")] if cli is plot_main else [])
    assert cli(args) == 1
    err = capsys.readouterr().err
    assert "manifest.json" in err and str(tmp_path / "set") in err


def _copy_default(tmp_path: Path) -> Path:
    out = tmp_path / "set"
    shutil.copytree(default_trace_set_dir(), out)
    return out


@pytest.mark.parametrize("mutate", [
    lambda doc: doc.update(traces=None),
    lambda doc: doc.update(traces={"a": 1}),
    lambda doc: doc["traces"].__setitem__(0, "phone-00.csv"),
    lambda doc: doc["traces"][0].update(meta=None),
    lambda doc: doc["traces"][0].update(file=None),
])
def test_malformed_manifest_is_a_clear_error(tmp_path: Path, mutate) -> None:
    out = _copy_default(tmp_path)
    doc = json.loads((out / "manifest.json").read_text())
    mutate(doc)
    (out / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(TraceValidationError, match="manifest.json"):
        TraceSet.load(out)
    assert info_main([str(out)]) == 1


@pytest.mark.parametrize("bad", ["../../x.csv", "../outside.csv", "/etc/passwd", "sub/../../x.csv"])
def test_manifest_paths_outside_the_set_are_refused(tmp_path: Path, bad: str) -> None:
    out = _copy_default(tmp_path)
    shutil.copy(out / "phone-00.csv", tmp_path / "outside.csv")
    doc = json.loads((out / "manifest.json").read_text())
    doc["traces"][0]["file"] = bad
    (out / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(TraceValidationError, match="outside the set folder"):
        TraceSet.load(out)


def test_manifest_with_bom_loads(tmp_path: Path) -> None:
    out = _copy_default(tmp_path)
    (out / "manifest.json").write_bytes(b"\xef\xbb\xbf" + (out / "manifest.json").read_bytes())
    assert len(TraceSet.load(out)) == 35


# --- real data: the bounds accept every shared trace --------------------------------------------------
@pytest.mark.skipif(not (shared_traces_dir() / "README.md").exists(),
                    reason=f"shared real traces not found at {shared_traces_dir()} "
                           "(set WATTWISE_SHARED_TRACES to run)")
def test_bounds_accept_shared_real_traces(tmp_path: Path) -> None:
    from traces.build_real import build_real

    ts = build_real(shared_traces_dir(), tmp_path / "real", limit_per_format=4, progress=False, verbose=False)
    assert len(ts) > 0
    bad = [s for s in ts.info["skipped"] if "bound" in s or "exceeds" in s]
    assert not bad, bad
