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
every configuration of that precision, trusted after ``MIN_SAMPLES`` of them; without it, the
**global** ratio — fed with every sample of every configuration; without a trusted global ratio, 1
(the profile as it is). The precision's level matters while few configurations have samples of
their own: a host whose int8 kernels are slower, relative to the profile's, than its fp32 ones
(this project's 2-core hosts against the reference profile, docs/sim2real.md) is followed per
precision after a handful of samples, where the global ratio would mix the precisions.
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
    """

    def __init__(self, names: Sequence[str], decode_ms: Sequence[float], power_w: Sequence[float],
                 energy_j_per_token: Sequence[float], features: np.ndarray | None = None,
                 precision: Sequence[Any] | None = None, precision_level: bool = True) -> None:
        self.precision_level = bool(precision_level)
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
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
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
            self.lat_prec[self._group[i]].add(x)
            self.lat_all.add(x)
            used = True
        if _valid(power_w) and self.power_w[i] > 0:
            x = math.log(power_w / self.power_w[i])
            self.pow[i].add(x)
            self.pow_prec[self._group[i]].add(x)
            self.pow_all.add(x)
            used = True
        if used:
            self.samples += 1
            self._cache = None
        return used

    # ---- ratios -------------------------------------------------------------------------------
    def _resolve(self, est: list[RobustLogRatio], prec: list[RobustLogRatio],
                 glob: RobustLogRatio) -> tuple[np.ndarray, np.ndarray]:
        """(ratios (n,), nearest (n, n) bool: the measured configurations each one borrows from).

        Vectorised over the precomputed distances: this runs on the manager's update path."""
        trusted = np.fromiter((e.trusted for e in est), bool, len(est))
        own = np.fromiter((e.log_ratio if e.trusted else 0.0 for e in est), float, len(est))
        cand = self._same & trusted[None, :]
        dist = np.where(cand, self._dist, np.inf)
        near = cand & (dist <= dist.min(axis=1, initial=np.inf)[:, None] + 1e-12)
        cnt = near.sum(axis=1)
        g = glob.log_ratio if glob.trusted else 0.0
        pooled = np.array([p.log_ratio if p.trusted and self.precision_level else g
                           for p in prec])[self._group]  # the precision's, else global
        borrowed = np.where(cnt > 0, (near * own[None, :]).sum(axis=1) / np.maximum(cnt, 1), pooled)
        return np.exp(np.where(trusted, own, borrowed)), np.where(trusted[:, None], False, near)

    def _basis(self, est: list[RobustLogRatio], prec: list[RobustLogRatio], glob: RobustLogRatio,
               near: np.ndarray) -> list[str]:
        """Where each ratio comes from, in words (for state() and saved profiles)."""
        out = []
        for i, e in enumerate(est):
            if e.trusted:
                out.append("measured")
            elif near[i].any():
                out.append("borrowed:" + ",".join(self.names[j] for j in np.flatnonzero(near[i])))
            elif self.precision_level and prec[self._group[i]].trusted:
                out.append("precision:" + self._group_label[int(self._group[i])])
            else:
                out.append("global" if glob.trusted else "none")
        return out

    def _ratios(self) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        if self._cache is None:
            lr, ln = self._resolve(self.lat, self.lat_prec, self.lat_all)
            pr, pn = self._resolve(self.pow, self.pow_prec, self.pow_all)
            self._cache = (lr, pr, ln, pn)
        return self._cache

    def _ratios_with_basis(self) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
        lr, pr, ln, pn = self._ratios()
        return (lr, pr, self._basis(self.lat, self.lat_prec, self.lat_all, ln),
                self._basis(self.pow, self.pow_prec, self.pow_all, pn))

    def latency_ratios(self) -> np.ndarray:
        """(n,) measured/predicted decode latency (own, borrowed, precision, global or 1)."""
        return self._ratios()[0]

    def power_ratios(self) -> np.ndarray:
        """(n,) measured/predicted model power (own, borrowed, precision, global or 1)."""
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
        ``"predicted"`` (borrowed, precision, global or none) — the profile schema's record sources. Profile
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
