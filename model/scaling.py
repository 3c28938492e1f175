"""QEIL-style scaling laws over a cost profile: y = a * x^b fitted in log-log space.

Fits, per (device, bits) group, decode latency, energy per token and validation loss against
active parameters, and per configuration the inference-time-scaling axis coverage@k against the
number of samples k. Also lists monotonicity violations (a bigger configuration measured faster
than a smaller one beyond noise) so they are printed rather than hidden.

CLI::

    python -m model.scaling profiles/cpu.json [--plot out.png] [--json out.json] [--strict]

numpy + standard library; matplotlib is imported only when plotting.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.profile_schema import Profile, load_profile, validate_profile

__all__ = [
    "SCALED_QUANTITIES",
    "PowerLawFit",
    "ScalingRow",
    "Violation",
    "fit_power_law",
    "main",
    "monotonicity_violations",
    "plot_scaling",
    "scaling_table",
]

#: Quantities fitted against active parameters, per (device, bits).
SCALED_QUANTITIES: tuple[str, ...] = ("decode_ms_per_token_median", "energy_j_per_token", "val_loss")
#: Acceptance threshold for the latency fit (issue: "latency fit R² >= 0.9").
LATENCY_R2_MIN = 0.9


@dataclass(frozen=True)
class PowerLawFit:
    """A least-squares fit of ``y = a * x**b`` in log-log space.

    Attributes:
        a: Prefactor (in y's unit at x = 1).
        b: Exponent.
        r2: Coefficient of determination of ``ln y`` on ``ln x`` (1.0 when ``y`` is constant and
            fitted exactly).
        residuals: ``ln y - ln ŷ`` per point (natural log; ≈ relative error for small values).
        n: Number of points.
    """

    a: float
    b: float
    r2: float
    residuals: np.ndarray = field(repr=False)
    n: int = 0

    @property
    def max_abs_residual(self) -> float:
        """Largest ``|ln y - ln ŷ|`` (0.1 ≈ 10 % off)."""
        return float(np.max(np.abs(self.residuals))) if self.residuals.size else 0.0

    def predict(self, x: Any) -> np.ndarray:
        """Returns ``a * x**b``."""
        return self.a * np.power(np.asarray(x, dtype=np.float64), self.b)

    def as_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready dict."""
        return {
            "a": self.a,
            "b": self.b,
            "r2": self.r2,
            "n": self.n,
            "max_abs_residual": self.max_abs_residual,
            "residuals": [float(r) for r in self.residuals],
        }


def fit_power_law(x: Any, y: Any) -> PowerLawFit:
    """Fits ``y = a * x**b`` by ordinary least squares on ``ln y = ln a + b ln x``.

    Args:
        x: Positive, finite values (at least two distinct).
        y: Positive, finite values, same length as ``x``.

    Returns:
        The fit with R² computed in log space.

    Raises:
        ValueError: Mismatched lengths, fewer than two points, fewer than two distinct x, or any
            non-positive / non-finite value (the message gives the first offending index).
    """
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.shape != ya.shape:
        raise ValueError(f"x and y must have the same length, got {xa.size} and {ya.size}")
    if xa.size < 2:
        raise ValueError(f"need at least 2 points to fit a power law, got {xa.size}")
    for label, arr in (("x", xa), ("y", ya)):
        bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"power-law fit needs positive finite {label}; {label}[{i}] = {float(arr[i]):g} "
                f"({bad.size} bad value(s)); drop or fix those points"
            )
    lx, ly = np.log(xa), np.log(ya)
    if np.ptp(lx) == 0.0:
        raise ValueError("need at least 2 distinct x values to fit an exponent")
    design = np.column_stack([np.ones_like(lx), lx])
    (ln_a, b), *_ = np.linalg.lstsq(design, ly, rcond=None)
    resid = ly - (ln_a + b * lx)
    ss_res = float(np.sum(resid**2))
    ss_tot = float(np.sum((ly - ly.mean()) ** 2))
    # Constant y fitted exactly is a perfect fit, not 0/0.
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res <= 1e-24 else 0.0)
    return PowerLawFit(a=float(math.exp(ln_a)), b=float(b), r2=float(r2), residuals=resid, n=int(xa.size))


@dataclass(frozen=True)
class ScalingRow:
    """One line of the scaling table.

    Attributes:
        quantity: The fitted field (y), e.g. ``decode_ms_per_token_median`` or ``coverage_at_k``.
        against: The x field (``active_params`` or ``k``).
        group: The subset, e.g. ``cpu/bits=8`` or a config name for coverage rows.
        fit: The fit, or None when it could not be made.
        note: Why there is no fit, or other remarks.
        x: The x values used.
        y: The y values used.
    """

    quantity: str
    against: str
    group: str
    fit: PowerLawFit | None
    note: str = ""
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready dict."""
        return {
            "quantity": self.quantity,
            "against": self.against,
            "group": self.group,
            "fit": self.fit.as_dict() if self.fit else None,
            "note": self.note,
            "x": list(self.x),
            "y": list(self.y),
        }


def _as_profile(profile: Profile | Mapping[str, Any] | str | os.PathLike[str]) -> Profile:
    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, Mapping):
        validate_profile(profile, f"<profile {profile.get('name')!r}>")
        return Profile(data=dict(profile))
    return load_profile(profile)


def _groups(prof: Profile) -> dict[tuple[str, int], list[int]]:
    groups: dict[tuple[str, int], list[int]] = {}
    for i, c in enumerate(prof.configs):
        groups.setdefault((str(c["device"]), int(c["bits"])), []).append(i)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1])))


def _fit_row(quantity: str, against: str, group: str, x: Sequence[float], y: Sequence[float]) -> ScalingRow:
    xs, ys = tuple(float(v) for v in x), tuple(float(v) for v in y)
    if len(set(xs)) < 2:
        return ScalingRow(quantity, against, group, None, f"needs >= 2 distinct {against} values", xs, ys)
    try:
        return ScalingRow(quantity, against, group, fit_power_law(xs, ys), "", xs, ys)
    except ValueError as exc:
        return ScalingRow(quantity, against, group, None, str(exc), xs, ys)


def scaling_table(
    profile: Profile | Mapping[str, Any] | str | os.PathLike[str],
    quantities: Iterable[str] = SCALED_QUANTITIES,
) -> list[ScalingRow]:
    """Fits the scaling laws of a profile.

    Rows: each quantity vs ``active_params`` per (device, bits) group, then coverage@k vs k per
    configuration (when ``coverage_at_k`` is present). Groups that cannot be fitted (one point,
    zero coverage, ...) get a row with ``fit=None`` and a note, so nothing disappears silently.

    Args:
        profile: A :class:`Profile`, profile dict, or path.
        quantities: Config fields to fit against active parameters.

    Returns:
        The rows, in a stable order.
    """
    prof = _as_profile(profile)
    rows: list[ScalingRow] = []
    groups = _groups(prof)
    for q in quantities:
        for (device, bits), idx in groups.items():
            x = [prof.configs[i]["active_params"] for i in idx]
            y = [prof.configs[i][q] for i in idx]
            rows.append(_fit_row(q, "active_params", f"{device}/bits={bits}", x, y))
    for c in prof.configs:
        cov = c.get("coverage_at_k")
        if not cov:
            continue
        ks = sorted(int(k) for k in cov)
        rows.append(_fit_row("coverage_at_k", "k", c["name"], ks, [cov[str(k)] for k in ks]))
    return rows


@dataclass(frozen=True)
class Violation:
    """A larger configuration measured cheaper than a smaller one beyond measured noise.

    Attributes:
        group: ``device/bits=N``.
        smaller: Name of the config with fewer active parameters.
        larger: Name of the config with more active parameters.
        smaller_params: Its active parameters.
        larger_params: Its active parameters.
        smaller_value: Measured value of the smaller config.
        larger_value: Measured value of the larger config (the lower one).
        tolerance: Noise tolerance used (same unit as the values).
    """

    group: str
    smaller: str
    larger: str
    smaller_params: int
    larger_params: int
    smaller_value: float
    larger_value: float
    tolerance: float

    def __str__(self) -> str:
        return (
            f"{self.group}: {self.larger} ({self.larger_params:,} params) = {self.larger_value:.4g} < "
            f"{self.smaller} ({self.smaller_params:,} params) = {self.smaller_value:.4g} "
            f"by {self.smaller_value - self.larger_value:.3g} > noise {self.tolerance:.3g}"
        )


def monotonicity_violations(
    profile: Profile | Mapping[str, Any] | str | os.PathLike[str],
    field_name: str = "decode_ms_per_token_median",
    p90_field: str | None = "decode_ms_per_token_p90",
    rel_tol: float = 0.0,
) -> list[Violation]:
    """Lists pairs where more active parameters measured lower ``field_name`` beyond noise.

    Within each (device, bits) group, every pair with ``params_small < params_large`` and
    ``value_large < value_small - tol`` is a violation, where ``tol`` is the larger of the two
    configs' ``p90 - median`` spreads (the measured noise) plus ``rel_tol * value_small``.
    The caller must print these; they are evidence, not errors.

    Args:
        profile: A :class:`Profile`, profile dict, or path.
        field_name: The measured value (default decode median latency).
        p90_field: Its p90 companion for the noise estimate, or None for ``rel_tol`` only.
        rel_tol: Extra relative tolerance.

    Returns:
        Violations sorted by group, then by the size of the inversion (largest first).
    """
    prof = _as_profile(profile)
    out: list[Violation] = []
    for (device, bits), idx in _groups(prof).items():
        cfgs = [prof.configs[i] for i in idx]
        for s in cfgs:
            for big in cfgs:
                if not s["active_params"] < big["active_params"]:
                    continue
                vs, vb = float(s[field_name]), float(big[field_name])
                spread = 0.0
                if p90_field:
                    spread = max(
                        float(s.get(p90_field, vs)) - vs,
                        float(big.get(p90_field, vb)) - vb,
                        0.0,
                    )
                tol = spread + rel_tol * vs
                if vb < vs - tol:
                    out.append(
                        Violation(
                            f"{device}/bits={bits}",
                            s["name"],
                            big["name"],
                            int(s["active_params"]),
                            int(big["active_params"]),
                            vs,
                            vb,
                            tol,
                        )
                    )
    out.sort(key=lambda v: (v.group, -(v.smaller_value - v.larger_value)))
    return out


def format_table(rows: Sequence[ScalingRow]) -> str:
    """Returns the scaling table as fixed-width text (a, b, R², max |residual|, n)."""
    head = (
        f"{'quantity':28s} {'vs':13s} {'group':26s} "
        f"{'a':>11s} {'b':>8s} {'R2':>7s} {'max|res|':>9s} {'n':>3s}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.fit is None:
            body = f"{'-':>11s} {'-':>8s} {'-':>7s} {'-':>9s} {len(r.x):3d}  ({r.note})"
        else:
            f = r.fit
            body = f"{f.a:11.4g} {f.b:8.4f} {f.r2:7.4f} {f.max_abs_residual:9.4f} {f.n:3d}"
        lines.append(f"{r.quantity:28s} {r.against:13s} {r.group:26s} {body}")
    return "\n".join(lines)


def plot_scaling(rows: Sequence[ScalingRow], out_path: str | os.PathLike[str], title: str = "") -> Path:
    """Draws log-log scatter plus fitted lines, one panel per quantity, to a PNG.

    Args:
        rows: Output of :func:`scaling_table`.
        out_path: PNG path (parent directories are created).
        title: Figure title.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: the CLI runs on servers and devices without displays
    import matplotlib.pyplot as plt

    quantities = list(dict.fromkeys(r.quantity for r in rows))
    n = max(1, len(quantities))
    ncols = min(2, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.0 * ncols, 4.5 * nrows), squeeze=False)
    for ax, q in zip(axes.flat, quantities, strict=False):
        qrows = [r for r in rows if r.quantity == q]
        for j, r in enumerate(qrows):
            colour = f"C{j % 10}"
            if not r.x:
                continue
            label = r.group
            if r.fit is not None:
                label += f": {r.fit.a:.3g}·x^{r.fit.b:.3f} (R²={r.fit.r2:.3f})"
                xs = np.geomspace(min(r.x), max(r.x), 50)
                ax.plot(xs, r.fit.predict(xs), "-", color=colour, lw=1.2)
            pos = [(x, y) for x, y in zip(r.x, r.y, strict=True) if x > 0 and y > 0]
            if pos:
                ax.scatter(*zip(*pos, strict=True), s=18, color=colour, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(qrows[0].against if qrows else "")
        ax.set_ylabel(q)
        ax.grid(True, which="both", alpha=0.3)
        if len(qrows) <= 12:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(quantities) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    p = Path(out_path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; see the module docstring. Returns the process exit code."""
    ap = argparse.ArgumentParser(
        prog="python -m model.scaling",
        description="Fit y = a*x^b scaling laws (latency, energy, loss, coverage@k) over a cost profile.",
    )
    ap.add_argument("profile", help="profile JSON (from python -m model.profile)")
    ap.add_argument("--plot", metavar="PNG", help="draw log-log scatter + fits to this PNG")
    ap.add_argument("--json", metavar="PATH", help="also write the table and violations as JSON")
    ap.add_argument(
        "--strict",
        action="store_true",
        help=f"exit 1 if a latency fit has R² < {LATENCY_R2_MIN} or latency monotonicity is violated",
    )
    args = ap.parse_args(argv)

    prof = _as_profile(args.profile)
    rows = scaling_table(prof)
    viol = monotonicity_violations(prof)
    src = prof.data["energy_source"]
    print(
        f"profile {prof.data['name']!r}: {len(prof)} configs, device {prof.data['device']['kind']}"
        f" ({prof.data['device']['name']}), energy_source={src}"
        + (" (energy is MODELLED, not measured)" if src == "modelled" else "")
    )
    print(format_table(rows))
    print()
    if viol:
        print(
            f"{len(viol)} latency monotonicity violation(s) (larger config faster beyond p90-median noise):"
        )
        for v in viol:
            print(f"  {v}")
    else:
        print("latency is non-decreasing in active parameters within measured noise (no violations)")
    low = [
        r
        for r in rows
        if r.quantity == "decode_ms_per_token_median" and r.fit is not None and r.fit.r2 < LATENCY_R2_MIN
    ]
    for r in low:
        print(f"latency fit R² {r.fit.r2:.3f} < {LATENCY_R2_MIN} for {r.group}")  # type: ignore[union-attr]
    if args.plot:
        print(f"plot: {plot_scaling(rows, args.plot, title=str(prof.data['name']))}")
    if args.json:
        payload = {
            "profile": prof.data["name"],
            "energy_source": src,
            "rows": [r.as_dict() for r in rows],
            "monotonicity_violations": [v.__dict__ for v in viol],
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"json: {args.json}")
    if args.strict and (viol or low):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
