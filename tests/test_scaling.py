"""Tests of model.scaling: power-law recovery, table, violations and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.profile_schema import example_profile, save_profile
from model.scaling import (
    fit_power_law,
    main,
    monotonicity_violations,
    scaling_table,
)


def test_exact_data_r2_one() -> None:
    x = np.array([1e5, 3e5, 1e6, 3e6, 1e7])
    fit = fit_power_law(x, 2.5 * x**0.7)
    assert fit.a == pytest.approx(2.5, rel=1e-9)
    assert fit.b == pytest.approx(0.7, abs=1e-12)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.max_abs_residual < 1e-9
    assert fit.n == 5
    np.testing.assert_allclose(fit.predict(x), 2.5 * x**0.7, rtol=1e-9)


@pytest.mark.parametrize(("a", "b"), [(3e-4, 0.85), (12.0, -0.08), (0.2, 0.45)])
def test_recovers_known_params_from_noisy_data(a: float, b: float) -> None:
    rng = np.random.default_rng(1234)
    x = np.geomspace(1e4, 1e8, 60)
    y = a * x**b * np.exp(rng.normal(0.0, 0.05, x.size))  # 5 % log-normal noise
    fit = fit_power_law(x, y)
    assert fit.b == pytest.approx(b, abs=0.02)
    assert fit.a == pytest.approx(a, rel=0.25)
    assert fit.residuals.shape == (60,)
    assert abs(np.std(fit.residuals) - 0.05) < 0.015
    if abs(b) > 0.3:
        assert fit.r2 > 0.95


def test_constant_y_is_perfect_fit() -> None:
    fit = fit_power_law([1, 2, 4], [3.0, 3.0, 3.0])
    assert fit.b == pytest.approx(0.0, abs=1e-12) and fit.r2 == 1.0


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        ([1, 2, 0], [1, 2, 3], r"positive finite x; x\[2\] = 0"),
        ([1, 2, 3], [1, -2, 3], r"positive finite y; y\[1\] = -2"),
        ([1, 2, np.nan], [1, 2, 3], r"x\[2\] = nan"),
        ([1, 2], [1, 2, 3], "same length"),
        ([1], [1], "at least 2 points"),
        ([5, 5, 5], [1, 2, 3], "distinct x"),
    ],
)
def test_rejects_bad_input(x: list[float], y: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_power_law(x, y)


def test_scaling_table_groups_and_coverage() -> None:
    data = example_profile(12)
    data["configs"][0]["coverage_at_k"] = {"1": 0.0, "2": 0.1, "4": 0.2, "8": 0.3}  # zero -> no fit
    rows = scaling_table(data)
    lat = [r for r in rows if r.quantity == "decode_ms_per_token_median"]
    assert {r.group for r in lat} == {"cpu/bits=32", "cpu/bits=8", "cpu/bits=4"}
    assert all(r.fit is not None and r.fit.r2 >= 0.9 for r in lat)
    loss = [r for r in rows if r.quantity == "val_loss"]
    assert all(r.fit is not None and r.fit.b == pytest.approx(-0.05) for r in loss)
    cov = [r for r in rows if r.quantity == "coverage_at_k"]
    assert len(cov) == 12
    assert cov[0].fit is None and "y[0] = 0" in cov[0].note
    assert cov[1].fit is not None and cov[1].fit.b == pytest.approx(0.5)


def test_single_point_group_noted() -> None:
    rows = scaling_table(example_profile(1))
    assert rows[0].fit is None and "distinct active_params" in rows[0].note


def test_monotonicity_violations_listed() -> None:
    data = example_profile(9)
    configs = data["configs"]
    # Make the largest 8-bit config faster than the smallest 8-bit one, far beyond noise.
    big = max((c for c in configs if c["bits"] == 8), key=lambda c: c["active_params"])
    small = min((c for c in configs if c["bits"] == 8), key=lambda c: c["active_params"])
    big["decode_ms_per_token_median"] = small["decode_ms_per_token_median"] * 0.5
    big["decode_ms_per_token_p90"] = big["decode_ms_per_token_median"] * 1.01
    viol = monotonicity_violations(data)
    assert viol, "expected a violation"
    assert all(v.group == "cpu/bits=8" for v in viol)
    assert any(v.smaller == small["name"] and v.larger == big["name"] for v in viol)
    assert "params" in str(viol[0]) and "noise" in str(viol[0])
    # A wide p90 spread (noise) absorbs the same inversion.
    big["decode_ms_per_token_p90"] = small["decode_ms_per_token_median"] * 2
    assert monotonicity_violations(data) == []


def test_cli_prints_table_plot_and_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = example_profile(9)
    p = save_profile(data, tmp_path / "p.json")
    png = tmp_path / "fits.png"
    js = tmp_path / "fits.json"
    assert main([str(p), "--plot", str(png), "--json", str(js), "--strict"]) == 0
    out = capsys.readouterr().out
    assert "decode_ms_per_token_median" in out and "R2" in out and "MODELLED" in out
    assert "no violations" in out
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    assert '"rows"' in js.read_text()
    data["configs"][-1]["decode_ms_per_token_median"] = 1e-3
    data["configs"][-1]["decode_ms_per_token_p90"] = 1e-3
    p2 = save_profile(data, tmp_path / "bad.json")
    assert main([str(p2), "--strict"]) == 1
    assert "violation" in capsys.readouterr().out
