"""Online correction of the profile's per-configuration latency and power (numpy + stdlib only).

The profile was measured on one machine; the device the runtime runs on is rarely that machine.
:class:`OnlineCorrection` keeps, per configuration, a robust running ratio *measured / predicted*
for the decode latency (ms per token) and for the model's own power (W), and derives the
corrected decode time and energy per token (energy = power × time, so the energy ratio is the
product of the two ratios).

The estimator (:class:`RobustLogRatio`), per configuration and per quantity, works on
``x = log(measured / predicted)`` (a 3× slowdown and a 3× speed-up are symmetric, and ratios
multiply):

* **warm-up** — the first :data:`MIN_SAMPLES` samples are kept; the estimate is their median. The
  configuration's own ratio is *trusted* (used) only from :data:`MIN_SAMPLES` samples on: a median
  of 5 ignores up to 2 wild samples (a page fault, a token that waited for I/O).
* **tracking** — from then on an exponentially weighted Huber M-estimate:
  ``m += ALPHA · clip(x − m, ±HUBER_K · s)`` with a robust scale ``s`` (exponentially weighted mean
  absolute deviation × √(π/2), floored at :data:`SCALE_FLOOR`, seeded with the warm-up MAD). One
  outlier moves ``m`` by at most ``ALPHA · HUBER_K · s`` (≈ 1 % at the floor); a lasting change (the
  host throttles) inflates ``s`` geometrically, so the estimate follows it within tens of samples.
* **clamp** — the ratio is clamped to ``[1/RATIO_CLAMP, RATIO_CLAMP]``: beyond 8× the profile
  belongs to another machine or the measurement is broken, and no extrapolation that far is made.

A configuration with too few samples of its own **borrows**: the mean log-ratio of the nearest
trusted configurations (Euclidean distance of the configuration features, all those at the
minimum distance) *of the same precision* (bits: a precision has its own kernels, so its slowdown
is shared); without one, the **precision's** ratio — the same estimator fed with every sample of
every configuration of that precision, trusted after ``MIN_SAMPLES`` of them, and shaped by size as below;
without it, the **global** ratio — fed with every sample of every configuration; without a trusted global ratio,
1 (the profile as it is). The precision's level matters while few configurations have samples of
their own: a host whose int8 kernels are slower, relative to the profile's, than its fp32 ones
(this project's 2-core hosts against the reference profile, docs/sim2real.md) is followed per
precision after a handful of samples, where the global ratio would mix the precisions.

Within a precision the ratio also depends on size: on those hosts the reference profile is right for the
six-layer fp32 model and 1.5× too fast for the small fp32 ones (fixed costs per token weigh more in a small
model). So the precision's level is a **size curve**, not one ratio, once it can be fitted: the pooled ratio plus
``b·(z − z̄)``, with ``z`` the log of the profile's prediction and ``b`` the weighted least-squares slope of the
configurations' residuals (the median of each one's last ``MIN_SAMPLES`` log-ratios less the pooled estimate just
after each was added, so that a host that speeds up or slows down moves the level, not the shape; weight = its
samples up to ``MIN_SAMPLES``). It is fitted once the pooled ratio is trusted and at least
:data:`CURVE_MIN_CONFIGS` configurations of the precision have samples; with predictions spanning less than
:data:`CURVE_MIN_SPREAD` in log units it is flat, and its slope is clipped to ±:data:`CURVE_MAX_SLOPE`. A
configuration with a few samples of its own (fewer than ``MIN_SAMPLES``) pools its residual (less the group's mean)
with the curve, the curve counting as :data:`CURVE_PRIOR_SAMPLES` samples: one wild first sample moves it by a
sixth of its deviation, not all of it. A uniform slowdown fits a flat curve: the pooled ratio again. The curve is
what the quick calibration fits per precision (``model.profile --calibrate``), learned from the runtime's own
samples. Borrowing from a trusted configuration of the same precision still comes first: it follows a host whose
speed changes within a few samples, where the curve's residuals lag.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Samples before a ratio is trusted (median of the warm-up: tolerates 2 outliers in 5).
MIN_SAMPLES = 5
#: Weight of a new sample once warmed up (memory ≈ 1/ALPHA = 10 samples).
ALPHA = 0.1
#: Huber clip, in robust standard deviations of log-ratio.
HUBER_K = 2.0
#: Floor of the robust scale in log units (≈ 2 % timing jitter): the clip never freezes the estimate.
SCALE_FLOOR = 0.02
#: The ratio is clamped to [1/RATIO_CLAMP, RATIO_CLAMP].
RATIO_CLAMP = 8.0
_LOG_CLAMP = math.log(RATIO_CLAMP)
#: Configurations of a precision with samples before its size curve is fitted (a line through two is exact).
CURVE_MIN_CONFIGS = 3
#: Weighted standard deviation of the log predictions below which the curve is flat (no size to regress on).
CURVE_MIN_SPREAD = 0.05
#: The size curve's slope is clipped to ±this (log ratio per log of predicted cost): no steeper law is extrapolated.
CURVE_MAX_SLOPE = 1.0
#: An untrusted configuration's own samples are pooled with its size curve's prediction, which counts as this many
#: samples: with 1 of its own it weighs 1/6, with 4 of them 4/9; at MIN_SAMPLES its own estimate takes over.
CURVE_PRIOR_SAMPLES = float(MIN_SAMPLES)
_SQRT_HALF_PI = math.sqrt(math.pi / 2.0)  # mean absolute deviation → standard deviation (Gaussian)


class RobustLogRatio:
    """The robust running estimate of one log-ratio (module docstring)."""

    __slots__ = ("n", "m", "s", "_warm")

    def __init__(self) -> None:
        self.n = 0
        self.m = 0.0
        self.s = SCALE_FLOOR
        self._warm: list[float] = []

    @property
    def trusted(self) -> bool:
        return self.n >= MIN_SAMPLES

    def add(self, x: float) -> None:
        """One sample of log(measured / predicted)."""
        self.n += 1
        if self.n <= MIN_SAMPLES:
            w = self._warm
            w.append(x)
            w.sort()
            k = len(w)
            self.m = w[k // 2] if k % 2 else 0.5 * (w[k // 2 - 1] + w[k // 2])
            if k == MIN_SAMPLES:
                mad = sorted(abs(v - self.m) for v in w)[k // 2]
                self.s = max(SCALE_FLOOR, 1.4826 * mad)
                self._warm = []
            return
        r = x - self.m
        c = HUBER_K * self.s
        self.m += ALPHA * (c if r > c else -c if r < -c else r)
        a = abs(r)
        self.s = max(SCALE_FLOOR, (1.0 - ALPHA) * self.s + ALPHA * _SQRT_HALF_PI * (a if a < 3.0 * c else 3.0 * c))

    @property
    def log_ratio(self) -> float:
        return min(_LOG_CLAMP, max(-_LOG_CLAMP, self.m))

    @property
    def ratio(self) -> float:
        return math.exp(self.log_ratio)


def precision_of(space: Any) -> list[Any]:
    """Each configuration's precision group (its weight bits; 0 for a space without that knob): the groups within
    which the correction borrows and pools (``runtime.configspace.ConfigSpace``)."""
    return [space.values_of(i).get("bits", 0) for i in range(len(space))]


def _keep_last(values: list[float], x: float) -> None:
    """Append ``x``, keeping the last ``MIN_SAMPLES`` values."""
    values.append(x)
    if len(values) > MIN_SAMPLES:
        del values[0]


def _valid(v: float | None) -> bool:
    return v is not None and v == v and 0.0 < v < math.inf


class OnlineCorrection:
    """Per-configuration measured/predicted ratios of decode latency and model power.

    Args:
        names: Configuration names (index i = configuration i).
        decode_ms: The profile's decode latency per configuration (ms per token).
        power_w: The profile's model power per configuration (W).
        energy_j_per_token: The profile's energy per token per configuration (J).
        features: (n, f) configuration features (distance for borrowing); default: none (every
            configuration of the same precision is equally near).
        precision: Precision group per configuration (e.g. bits); default: one group.
        precision_level: Use each precision's pooled ratio before the global one (default); False gives the
            estimator before 2026-12-04 (borrowed, else global), for comparisons.
        size_curve: The precision's level as a size curve (default); False gives the estimator of 2026-12-04
            (borrowed, else the precision's pooled ratio), for comparisons. Needs ``precision_level``.
    """

    def __init__(self, names: Sequence[str], decode_ms: Sequence[float], power_w: Sequence[float],
                 energy_j_per_token: Sequence[float], features: np.ndarray | None = None,
                 precision: Sequence[Any] | None = None, precision_level: bool = True,
                 size_curve: bool = True) -> None:
        self.precision_level = bool(precision_level)
        self.size_curve = bool(size_curve) and self.precision_level
        self.names = list(names)
        n = len(self.names)
        self.decode_ms = np.asarray(decode_ms, dtype=np.float64).reshape(n)
        self.power_w = np.asarray(power_w, dtype=np.float64).reshape(n)
        self.ept_j = np.asarray(energy_j_per_token, dtype=np.float64).reshape(n)
        self.features = np.zeros((n, 0)) if features is None else np.asarray(features, dtype=np.float64).reshape(n, -1)
        self.precision = list(precision) if precision is not None else [0] * n
        self.lat = [RobustLogRatio() for _ in range(n)]
        self.pow = [RobustLogRatio() for _ in range(n)]
        self.lat_all, self.pow_all = RobustLogRatio(), RobustLogRatio()
        # the precision groups (index per configuration) and their pooled estimators
        keys, first, self._group = np.unique([hash(p) for p in self.precision], return_index=True,
                                             return_inverse=True)
        self._group_label = {g: str(self.precision[int(i)]) for g, i in enumerate(first)}
        self.lat_prec = [RobustLogRatio() for _ in keys]
        self.pow_prec = [RobustLogRatio() for _ in keys]
        self.samples = 0
        # the size variable of each quantity's curve: log of the profile's prediction (0 where it has none)
        self._z_lat = np.log(np.where(self.decode_ms > 0, self.decode_ms, 1.0))
        self._z_pow = np.log(np.where(self.power_w > 0, self.power_w, 1.0))
        # per configuration, its last MIN_SAMPLES log-ratios less its precision's pooled estimate (the size curve)
        self._res_lat: list[list[float]] = [[] for _ in range(n)]
        self._res_pow: list[list[float]] = [[] for _ in range(n)]
        self._cache: tuple[np.ndarray, np.ndarray, tuple, tuple] | None = None
        # (n, n): distances between configurations and "same precision" (the borrowing rule)
        self._dist = np.linalg.norm(self.features[:, None, :] - self.features[None, :, :], axis=2)
        self._same = self._group[:, None] == self._group[None, :]

    @classmethod
    def from_policy(cls, pf: Any) -> OnlineCorrection:
        """From a :class:`runtime.policy.PolicyFile` (its per-configuration arrays and space)."""
        prec = precision_of(pf.space)
        return cls(pf.names, 1000.0 / np.asarray(pf.decode_tokens_per_s, dtype=np.float64), pf.power_w,
                   pf.energy_j_per_token, pf.config_features, prec)

    def __len__(self) -> int:
        return len(self.names)

    # ---- input --------------------------------------------------------------------------------
    def observe(self, config_index: int, latency_ms: float | None = None, power_w: float | None = None) -> bool:
        """One measurement while configuration ``config_index`` ran: the decode latency (ms per
        token) and/or the model's own power (W, the device's power less idle and other load).
        Missing, non-finite or non-positive values are ignored; returns whether anything was used."""
        i = int(config_index)
        used = False
        if _valid(latency_ms) and self.decode_ms[i] > 0:
            x = math.log(latency_ms / self.decode_ms[i])
            self.lat[i].add(x)
            pool = self.lat_prec[self._group[i]]
            pool.add(x)
            _keep_last(self._res_lat[i], x - pool.m)
            self.lat_all.add(x)
            used = True
        if _valid(power_w) and self.power_w[i] > 0:
            x = math.log(power_w / self.power_w[i])
            self.pow[i].add(x)
            pool = self.pow_prec[self._group[i]]
            pool.add(x)
            _keep_last(self._res_pow[i], x - pool.m)
            self.pow_all.add(x)
            used = True
        if used:
            self.samples += 1
            self._cache = None
        return used

    # ---- ratios -------------------------------------------------------------------------------
    def _curves(self, est: list[RobustLogRatio], prec: list[RobustLogRatio], res: list[list[float]],
                z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log ratio (n,) from its precision's size curve, whether that precision's curve was fitted (n,)).

        Per precision group with a trusted pooled ratio and samples of at least ``CURVE_MIN_CONFIGS``
        configurations: each configuration's residual (the median of its samples' log-ratios less the pooled
        estimate just after each was added, so that a host that speeds up or slows down moves the level, not the
        shape), a weighted least-squares slope on ``z`` (module docstring), anchored at the pooled ratio."""
        n = len(est)
        out, fitted = np.zeros(n), np.zeros(n, bool)
        if not self.size_curve:
            return out, fitted
        cnt = np.fromiter((e.n for e in est), float, n)
        for g, pool in enumerate(prec):
            members = self._group == g
            has = members & (cnt > 0)
            if not pool.trusted or has.sum() < CURVE_MIN_CONFIGS:
                continue
            idx = np.flatnonzero(has)
            r = np.array([float(np.median(res[i])) for i in idx])
            w = np.minimum(cnt[idx], MIN_SAMPLES)
            zg = z[idx]
            zbar = float((w * zg).sum() / w.sum())
            rbar = float((w * r).sum() / w.sum())
            var = float((w * (zg - zbar) ** 2).sum() / w.sum())
            b = 0.0
            if var >= CURVE_MIN_SPREAD ** 2:
                b = float((w * (zg - zbar) * (r - rbar)).sum() / w.sum()) / var
                b = min(CURVE_MAX_SLOPE, max(-CURVE_MAX_SLOPE, b))
            shape = b * (z[members] - zbar)
            # an untrusted configuration's own samples (their residual about the group's) pooled with the curve
            own = np.zeros(n)
            own[idx] = r - rbar
            k = cnt[members]
            dev = (k * own[members] + CURVE_PRIOR_SAMPLES * shape) / (k + CURVE_PRIOR_SAMPLES)
            out[members] = np.clip(pool.log_ratio + dev, -_LOG_CLAMP, _LOG_CLAMP)
            fitted[members] = True
        return out, fitted

    def _resolve(self, est: list[RobustLogRatio], prec: list[RobustLogRatio],
                 glob: RobustLogRatio, res: list[list[float]],
                 z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ratios (n,), nearest (n, n) bool: the measured configurations each one borrows from, whether each
        untrusted one takes its precision's size curve (n,)).

        Vectorised over the precomputed distances: this runs on the manager's update path."""
        trusted = np.fromiter((e.trusted for e in est), bool, len(est))
        own = np.fromiter((e.log_ratio if e.trusted else 0.0 for e in est), float, len(est))
        curve, fitted = self._curves(est, prec, res, z)
        cand = self._same & trusted[None, :]
        dist = np.where(cand, self._dist, np.inf)
        near = cand & (dist <= dist.min(axis=1, initial=np.inf)[:, None] + 1e-12)
        cnt = near.sum(axis=1)
        g = glob.log_ratio if glob.trusted else 0.0
        pooled = np.array([p.log_ratio if p.trusted and self.precision_level else g
                           for p in prec])[self._group]  # the precision's, else global
        pooled = np.where(fitted, curve, pooled)  # the precision's size curve, where it was fitted
        borrowed = np.where(cnt > 0, (near * own[None, :]).sum(axis=1) / np.maximum(cnt, 1), pooled)
        use_curve = fitted & ~trusted & (cnt == 0)
        return np.exp(np.where(trusted, own, borrowed)), np.where(trusted[:, None], False, near), use_curve

    def _basis(self, est: list[RobustLogRatio], prec: list[RobustLogRatio], glob: RobustLogRatio,
               near: np.ndarray, curve: np.ndarray) -> list[str]:
        """Where each ratio comes from, in words (for state() and saved profiles)."""
        out = []
        for i, e in enumerate(est):
            if e.trusted:
                out.append("measured")
            elif curve[i]:
                out.append("curve:" + self._group_label[int(self._group[i])])
            elif near[i].any():
                out.append("borrowed:" + ",".join(self.names[j] for j in np.flatnonzero(near[i])))
            elif self.precision_level and prec[self._group[i]].trusted:
                out.append("precision:" + self._group_label[int(self._group[i])])
            else:
                out.append("global" if glob.trusted else "none")
        return out

    def _ratios(self) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        if self._cache is None:
            lr, ln, lc = self._resolve(self.lat, self.lat_prec, self.lat_all, self._res_lat, self._z_lat)
            pr, pn, pc = self._resolve(self.pow, self.pow_prec, self.pow_all, self._res_pow, self._z_pow)
            self._cache = (lr, pr, (ln, lc), (pn, pc))
        return self._cache

    def _ratios_with_basis(self) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        lr, pr, (ln, lc), (pn, pc) = self._ratios()
        return (lr, pr, self._basis(self.lat, self.lat_prec, self.lat_all, ln, lc),
                self._basis(self.pow, self.pow_prec, self.pow_all, pn, pc))

    def latency_ratios(self) -> np.ndarray:
        """(n,) measured/predicted decode latency (own, borrowed, precision's size curve or ratio, global or 1)."""
        return self._ratios()[0]

    def power_ratios(self) -> np.ndarray:
        """(n,) measured/predicted model power (own, borrowed, precision's size curve or ratio, global or 1)."""
        return self._ratios()[1]

    def latency_ratio(self, i: int) -> float:
        return float(self._ratios()[0][i])

    def power_ratio(self, i: int) -> float:
        return float(self._ratios()[1][i])

    def corrected_decode_ms(self, i: int | None = None) -> float | np.ndarray:
        """Corrected decode latency (ms per token) of configuration ``i`` (all: (n,) when None)."""
        v = self.decode_ms * self._ratios()[0]
        return v if i is None else float(v[i])

    def corrected_power_w(self, i: int | None = None) -> float | np.ndarray:
        v = self.power_w * self._ratios()[1]
        return v if i is None else float(v[i])

    def corrected_ept_j(self, i: int | None = None) -> float | np.ndarray:
        """Corrected energy per token (J): the profile's × latency ratio × power ratio."""
        lr, pr = self._ratios()[:2]
        v = self.ept_j * lr * pr
        return v if i is None else float(v[i])

    # ---- output -------------------------------------------------------------------------------
    def state(self, measured_only: bool = True) -> dict[str, Any]:
        """JSON-ready: global ratios and, per configuration (measured ones only by default), the
        ratios, their basis and the sample counts."""
        lr, pr, lb, pb = self._ratios_with_basis()
        cfgs = {}
        for i, name in enumerate(self.names):
            nl, npw = self.lat[i].n, self.pow[i].n
            if measured_only and not (nl or npw):
                continue
            cfgs[name] = {"latency_ratio": round(float(lr[i]), 5), "power_ratio": round(float(pr[i]), 5),
                          "latency_basis": lb[i], "power_basis": pb[i], "latency_samples": nl, "power_samples": npw}
        return {"samples": self.samples,
                "latency_ratio_global": round(self.lat_all.ratio, 5) if self.lat_all.trusted else None,
                "power_ratio_global": round(self.pow_all.ratio, 5) if self.pow_all.trusted else None,
                "latency_samples_global": self.lat_all.n, "power_samples_global": self.pow_all.n,
                "precision": {self._group_label[g]: {
                    "latency_ratio": round(self.lat_prec[g].ratio, 5) if self.lat_prec[g].trusted else None,
                    "power_ratio": round(self.pow_prec[g].ratio, 5) if self.pow_prec[g].trusted else None,
                    "latency_samples": self.lat_prec[g].n, "power_samples": self.pow_prec[g].n}
                    for g in range(len(self.lat_prec))},
                "configs": cfgs}

    def to_profile(self, base_profile: Mapping[str, Any], decisions: int | None = None,
                   base_sha256: str | None = None, base_label: str | None = None,
                   seconds_used: float = 0.0) -> dict[str, Any]:
        """A calibrated copy of a profile dict (the profile the policy was exported from).

        Per configuration (matched by name): decode and prefill latencies (median, p90) × the
        latency ratio, ``decode_tokens_per_s`` ÷ it, ``power_w`` × the power ratio,
        ``energy_j_per_token`` × both; each record gets its ``"correction"`` (ratios and basis) and
        ``"source"``: ``"measured"`` when its own latency or power ratio is trusted, else
        ``"predicted"`` (borrowed, curve, precision, global or none) — the profile schema's record sources. Profile
        configurations outside this space get the global ratios. The top level gets
        ``calibration`` (``source: "runtime online correction"``, decisions, samples, ratios,
        constants, ``base_profile``, the ``measured`` / ``predicted`` partition; ``budget_s`` and
        ``seconds_used`` = the span of the run, as the runtime has no time budget).
        """
        prof = copy.deepcopy(dict(base_profile))
        lr, pr, lb, pb = self._ratios_with_basis()
        idx = {n: i for i, n in enumerate(self.names)}
        gl = self.lat_all.ratio if self.lat_all.trusted else 1.0
        gp = self.pow_all.ratio if self.pow_all.trusted else 1.0
        matched = 0
        measured: list[str] = []
        predicted: list[str] = []
        for rec in prof.get("configs", []):
            i = idx.get(rec.get("name"))
            own = i is not None and (self.lat[i].trusted or self.pow[i].trusted)
            (measured if own else predicted).append(rec.get("name"))
            if i is not None:
                matched += 1
                lat, pw, lbas, pbas = float(lr[i]), float(pr[i]), lb[i], pb[i]
            else:
                lat, pw = gl, gp
                lbas = pbas = "global" if (self.lat_all.trusted or self.pow_all.trusted) else "none"
            for key in ("decode_ms_per_token_median", "decode_ms_per_token_p90", "prefill_ms_per_token_median",
                        "prefill_ms_per_token_p90"):
                if key in rec:
                    rec[key] = float(rec[key]) * lat
            if "decode_tokens_per_s" in rec:
                rec["decode_tokens_per_s"] = float(rec["decode_tokens_per_s"]) / lat
            if "power_w" in rec:
                rec["power_w"] = float(rec["power_w"]) * pw
            if "energy_j_per_token" in rec:
                rec["energy_j_per_token"] = float(rec["energy_j_per_token"]) * lat * pw
            rec["source"] = "measured" if own else "predicted"
            rec["correction"] = {"latency_ratio": round(lat, 6), "power_ratio": round(pw, 6),
                                 "latency_basis": lbas, "power_basis": pbas}
        if not matched:
            raise ValueError("the profile has none of this configuration space's configurations (another profile?)")
        st = self.state()
        if base_sha256 is None:
            import hashlib

            base_sha256 = hashlib.sha256(json.dumps(base_profile, sort_keys=True).encode()).hexdigest()
        span = max(float(seconds_used), 1e-3)
        prof["calibration"] = {
            "source": "runtime online correction",
            "base_profile": {"name": str(base_profile.get("name")), "sha256": base_sha256, "path": base_label},
            "measured": measured, "predicted": predicted, "budget_s": span, "seconds_used": span,
            "decisions": int(decisions if decisions is not None else 0),
            "samples": self.samples, "latency_ratio_global": st["latency_ratio_global"],
            "power_ratio_global": st["power_ratio_global"],
            "constants": {"min_samples": MIN_SAMPLES, "alpha": ALPHA, "huber_k": HUBER_K, "scale_floor": SCALE_FLOOR,
                          "ratio_clamp": RATIO_CLAMP},
            "configs": st["configs"],
        }
        return prof
