"""Schema, storage, validation errors, resampling, splits, generators, default set."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest

from traces import (
    Trace,
    TraceMeta,
    TraceSet,
    TraceValidationError,
    assign_splits,
    default_trace_set_dir,
    load_trace,
    make_trace,
    save_trace,
)
from traces import generators as gen
from traces.generate import build_default_set
from traces.generate import main as generate_main
from traces.store import MANIFEST, trace_to_csv_text

META = TraceMeta(capacity_wh=15.0, initial_soc=0.8, device_kind="phone", source="test", license="CC0-1.0",
                 unit="u1")
HEADER = "time_s,supply_w,plugged,ambient_c,demand_tps,bandwidth_mbps"


def small_trace(n: int = 50, step: float = 10.0, **kw: object) -> Trace:
    t = np.arange(n) * step
    cols = dict(supply_w=np.where(t > 200, 12.5, 0.0), plugged=(t > 200).astype(float),
                ambient_c=25.0 + 0.01 * t, demand_tps=(t % 60) * 2.0, bandwidth_mbps=20.0)
    cols.update(kw)  # type: ignore[arg-type]
    return make_trace("small", META, t, **cols)  # type: ignore[arg-type]


def write_csv(path: Path, rows: list[str], header: str = HEADER, meta: bool = True) -> Path:
    lines = []
    if meta:
        lines.append('# meta: {"capacity_wh": 15, "initial_soc": 0.5, "device_kind": "phone", '
                     '"source": "t", "license": "x", "unit": "u"}')
    lines.append(header)
    path.write_text("\n".join(lines + rows) + "\n")
    return path


def good_rows(n: int = 10) -> list[str]:
    return [f"{i * 10},0,0,25,10,5" for i in range(n)]


# --- round trip --------------------------------------------------------------------------------
def test_round_trip_csv_and_gz(tmp_path: Path) -> None:
    tr = small_trace(budget_w=np.full(50, 2.5), soc_frac=np.linspace(0.8, 0.7, 50))
    for name in ("a.csv", "a.csv.gz"):
        p = save_trace(tr, tmp_path / name)
        back = load_trace(p)
        assert back.name == "small"
        assert back.meta == tr.meta
        for c, v in tr.columns().items():
            np.testing.assert_allclose(getattr(back, c), v, atol=1e-4, equal_nan=True)
        # Saving what was loaded reproduces the bytes (storage precision is a fixed point).
        save_trace(back, tmp_path / ("b" + name[1:]))
        assert (tmp_path / ("b" + name[1:])).read_bytes() == p.read_bytes()
    assert "base_load_w" not in (tmp_path / "a.csv").read_text().splitlines()[2]  # all-NaN left out


def test_trace_is_immutable() -> None:
    tr = small_trace()
    with pytest.raises(ValueError):
        tr.supply_w[0] = 3.0
    with pytest.raises(AttributeError):
        tr.name = "x"  # type: ignore[misc]


def test_sidecar_meta_and_meta_argument(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "x.csv", good_rows(), meta=False)
    with pytest.raises(TraceValidationError, match="no metadata"):
        load_trace(p)
    assert load_trace(p, meta=META).meta.unit == "u1"
    (tmp_path / "x.meta.json").write_text('{"capacity_wh": 40, "initial_soc": 1, "device_kind": "laptop", '
                                          '"source": "s", "license": "l", "unit": "me"}')
    assert load_trace(p).meta.device_kind == "laptop"


# --- validation errors: one per kind --------------------------------------------------------------
@pytest.mark.parametrize(
    ("rows", "header", "pattern"),
    [
        (["0,0,0,25,10,5", "10,nan,0,25,10,5", "20,0,0,25,10,5"], HEADER,
         r"bad\.csv row 2 \(line 4\): supply_w is nan"),
        (["0,0,0,25,10,5", "10,,0,25,10,5", "20,0,0,25,10,5"], HEADER, r"row 2 .*supply_w is nan"),
        (["0,0,0,25,10,5", "10,-3.2,0,25,10,5", "20,0,0,25,10,5"], HEADER,
         r"row 2 .*supply_w is -3.2; power must be >= 0"),
        (["0,0,0,25,10,5", "10,0,0,25,10,5", "10,0,0,25,10,5"], HEADER, r"row 3 .*time_s 10.* duplicate"),
        (["0,0,0,25,10,5", "20,0,0,25,10,5", "10,0,0,25,10,5"], HEADER, r"row 3 .*earlier than the previous"),
        (good_rows(10) + ["5000,0,0,25,10,5"], HEADER, r"row 11 .*jumps 4910 s.*gap exceeds the 100 s limit"),
        (["0,0,25,10,5", "10,0,25,10,5"], "time_s,supply_w,ambient_c,demand_tps,bandwidth_mbps",
         r"missing column 'plugged'"),
        (["0,4500,1,25,10,5", "10,5200,1,25,10,5"], HEADER,
         r"supply_w median 4850 looks like mW; fix: divide by 1000"),
        (["0,1,1,298,10,5", "10,1,1,298,10,5"], HEADER, r"ambient_c .* looks like kelvin"),
        (["0,1,1,25,10,45000000", "10,1,1,25,10,45000000"], HEADER, r"bandwidth_mbps .* looks like bit/s"),
        (["0,1,2,25,10,5", "10,1,1,25,10,5"], HEADER, r"row 1 .*plugged is 2; plugged must be 0 or 1"),
        (["0,1,1,25,abc,5", "10,1,1,25,10,5"], HEADER,
         r"row 1 \(line 3\): demand_tps is 'abc', not a number"),
        (["0,1,1,25,10", "10,1,1,25,10,5"], HEADER, r"row 1 .*has 5 fields, the header has 6"),
        (["1600000000000,1,1,25,10,5", "1600000010000,1,1,25,10,5"], HEADER, r"Unix milliseconds"),
        (["0,1,1,25,10,5"], HEADER, r"at least 2"),
    ],
)
def test_validation_errors_name_file_row_column(tmp_path: Path, rows: list[str], header: str,
                                                pattern: str) -> None:
    p = write_csv(tmp_path / "bad.csv", rows, header=header)
    with pytest.raises(TraceValidationError, match=pattern) as ei:
        load_trace(p)
    assert "bad.csv" in str(ei.value)
    assert "fix:" in str(ei.value)


def test_missing_column_with_unit_hint(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "mw.csv", ["0,1000,0,25,10,5", "10,900,0,25,10,5"],
                  header="time_s,supply_mw,plugged,ambient_c,demand_tps,bandwidth_mbps")
    with pytest.raises(TraceValidationError, match=r"supply_mw.*1000.*supply_w"):
        load_trace(p)


def test_gap_limit_configurable(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "g.csv", ["0,0,0,25,10,5", "10,0,0,25,10,5", "200,0,0,25,10,5"])
    assert len(load_trace(p)) == 3  # default limit: max(10 x median step (100 s), 60 s) = 1000 s
    with pytest.raises(TraceValidationError, match="gap exceeds the 50 s limit"):
        load_trace(p, max_gap_s=50)


def test_meta_validation(tmp_path: Path) -> None:
    bad = dict(META.to_dict(), initial_soc=80)
    with pytest.raises(TraceValidationError, match="divide a percentage by 100"):
        TraceMeta.from_dict(bad)
    with pytest.raises(TraceValidationError, match="looks like mWh"):
        TraceMeta.from_dict(dict(META.to_dict(), capacity_wh=15000))
    with pytest.raises(TraceValidationError, match="lacks 'unit'"):
        TraceMeta.from_dict({k: v for k, v in META.to_dict().items() if k != "unit"})


# --- resampling ---------------------------------------------------------------------------------
def test_resample_conserves_energy_and_uses_majority() -> None:
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.uniform(0.5, 3.0, 500))
    t -= t[0]
    supply = rng.uniform(0, 10, 500)
    tr = make_trace("irr", META, t, supply_w=supply, plugged=(supply > 5).astype(float), ambient_c=20.0,
                    demand_tps=rng.uniform(0, 100, 500), bandwidth_mbps=3.0)
    r = tr.resample(7.0)
    assert np.allclose(np.diff(r.time_s), 7.0) and r.time_s[0] == 0.0
    assert len(r) == int(tr.duration_s // 7.0)
    covered = len(r) * 7.0
    # Energy over the covered span equals the original integral up to the covered time.
    hold = tr.hold_s
    edges = np.concatenate([[0], np.cumsum(hold)])
    f = np.concatenate([[0], np.cumsum(supply * hold)])
    assert r.supply_energy_j == pytest.approx(np.interp(covered, edges, f), rel=1e-9)
    assert set(np.unique(r.plugged)) <= {0.0, 1.0}
    # Upsampling a uniform trace keeps values (zero-order hold).
    up = small_trace().resample(2.0)
    assert len(up) == 250 and up.supply_energy_j == pytest.approx(small_trace().supply_energy_j)


def test_resample_optional_nan_and_plugged_majority() -> None:
    t = np.arange(6) * 10.0
    tr = make_trace("o", META, t, supply_w=0.0, plugged=[0, 1, 1, 0, 0, 0], ambient_c=20.0, demand_tps=1.0,
                    bandwidth_mbps=1.0, budget_w=[1, 1, np.nan, np.nan, np.nan, 2])
    r = tr.resample(30.0)
    assert r.plugged.tolist() == [1.0, 0.0]
    assert r.budget_w[0] == pytest.approx(1.0)  # 2/3 covered -> mean of the covered part
    assert np.isnan(r.budget_w[1])  # 1/3 covered -> NaN
    assert tr.duration_s == 60.0


# --- trace sets and splits ----------------------------------------------------------------------
def test_assign_splits_by_unit_deterministic() -> None:
    units = [f"user{i}" for i in range(20)]
    a = assign_splits(units, seed=1)
    assert a == assign_splits(list(reversed(units)), seed=1)
    assert set(a.values()) == {"train", "val", "test"}
    assert assign_splits(["only"]) == {"only": "test"}
    assert sorted(assign_splits(["a", "b"]).values()) == ["test", "train"]


def test_trace_set_round_trip_and_unit_integrity(tmp_path: Path) -> None:
    trs = [small_trace().replace(name=f"t{i}", meta=TraceMeta(**{**META.to_dict(), "unit": f"u{i // 2}"}))
           for i in range(10)]
    ts = TraceSet.from_traces(trs, name="s", seed=3)
    ts.save(tmp_path / "set")
    back = TraceSet.load(tmp_path / "set")
    assert back.names == ts.names
    for s in ("train", "val", "test"):
        assert [t.name for t in back.split(s)] == [t.name for t in ts.split(s)]
    units = {s: back.units(s) for s in ("train", "val", "test")}
    assert not (set(units["train"]) & set(units["test"])) and not (set(units["val"]) & set(units["test"]))
    assert back.split("train", step_s=20.0)[0].step_s == 20.0
    # A manifest that puts one unit in two splits is rejected.
    text = (tmp_path / "set" / MANIFEST).read_text()
    first_split = back.entries[0].split
    other = "train" if first_split != "train" else "test"
    bad = text.replace(f'"split": "{first_split}"', f'"split": "{other}"', 1)
    (tmp_path / "set" / MANIFEST).write_text(bad)
    with pytest.raises(TraceValidationError, match="in both"):
        TraceSet.load(tmp_path / "set")


# --- generators and the default set -------------------------------------------------------------
@pytest.mark.parametrize("scenario", sorted(gen.SCENARIOS))
def test_generators_deterministic_per_seed(scenario: str) -> None:
    fn = gen.SCENARIOS[scenario]
    a, b, c = fn(7), fn(7), fn(8)
    a.validate()
    assert trace_to_csv_text(a) == trace_to_csv_text(b)
    assert trace_to_csv_text(a) != trace_to_csv_text(c)
    assert a.meta.seed == 7 and a.meta.extra["scenario"] == scenario
    assert a.demand_tps.max() > 0


def test_generator_parameters_respected() -> None:
    tr = gen.must_last_until(3, duration_h=2.0, deadline_h=1.5, budget_w=1.2, with_budget=True)
    assert tr.meta.deadline_s == 5400.0 and tr.duration_s == pytest.approx(7200.0)
    assert np.allclose(tr.budget_w, 1.2) and tr.supply_w.max() == 0.0
    night = gen.solar_node(1, duration_h=24, start_hour=0.0, step_s=600)
    assert night.supply_w[:6].max() == 0.0  # midnight to 1 am: dark
    assert night.supply_w.max() > 0.5
    assert gen.solar_node(1, storage="supercap").meta.capacity_wh < 0.5


def test_default_set_is_committed_and_regenerates_identically(tmp_path: Path) -> None:
    committed = default_trace_set_dir()
    assert (committed / MANIFEST).exists(), "run: python -m traces.generate --out traces/data/default"
    build_default_set().save(tmp_path / "fresh")
    cmp = filecmp.dircmp(committed, tmp_path / "fresh")
    assert not cmp.left_only and not cmp.right_only
    _, mismatch, errors = filecmp.cmpfiles(committed, tmp_path / "fresh", cmp.common_files, shallow=False)
    assert not mismatch and not errors, mismatch
    assert generate_main(["--out", str(committed), "--check"]) == 0
    size = sum(p.stat().st_size for p in committed.iterdir())
    assert size < 2_000_000


def test_extra_val_keeps_the_default_set_and_adds_val_units(tmp_path: Path) -> None:
    base, more = build_default_set(), build_default_set(extra_val=1)
    split = {e.name: e.split for e in more.entries}
    assert all(split[e.name] == e.split for e in base.entries)  # test and train splits unchanged
    added = [e for e in more.entries if e.name not in {b.name for b in base.entries}]
    assert len(added) == len(gen.DEFAULT_SET_PLAN) and all(e.split == "val" for e in added)
    assert {e.meta.extra["scenario"] for e in added} == set(gen.SCENARIOS)
    assert len({e.meta.seed for e in more.entries}) == len(more.entries)  # no seed reused
    for e in base.entries[:3]:  # the same traces, value for value
        assert np.array_equal(base.get(e.name).supply_w, more.get(e.name).supply_w)
    assert generate_main(["--extra-val", "1", "--out", str(tmp_path / "v")]) == 0
    assert len(TraceSet.load(tmp_path / "v").split("val")) == len(base.split("val")) + len(added)
    with pytest.raises(ValueError, match="more traces per scenario"):
        gen.default_set_traces(extra=1000)


def test_default_set_loads_fast_and_has_all_splits() -> None:
    ts = TraceSet.load(default_trace_set_dir())
    assert 24 <= len(ts) <= 40
    kinds = {e.meta.device_kind for e in ts.entries}
    assert {"phone", "laptop", "solar-node"} <= kinds
    for s in ("train", "val", "test"):
        assert ts.split(s), s
    scen = {e.meta.extra["scenario"] for e in ts.entries if e.split == "test"}
    assert len(scen) == len(gen.SCENARIOS)  # every scenario is evaluated held-out
    assert any(t.meta.deadline_s for t in ts) and any(t.has_budget for t in ts)


@pytest.mark.parametrize("col", ["budget_w", "base_load_w"])
def test_an_infinity_in_an_optional_column_is_refused_not_taken_as_absent(col):
    """NaN means "absent" in an optional column; an infinity is a glitch, named with its row and the fix."""
    x = np.full(50, np.nan)
    x[31] = np.inf
    with pytest.raises(TraceValidationError, match=rf"row 32: {col} is inf.*NaN"):
        small_trace(**{col: x}).validate()
    x[31] = np.nan
    small_trace(**{col: x}).validate()  # all absent is fine
