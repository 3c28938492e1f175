"""Placement profiles: every configuration × every placement a device's processors can run, with costs.

    python -m model.placement_profile --hardware phone-sd8gen2 --out profiles/phone-sd8gen2+place.json
    python -m model.placement_profile --hardware host --measured cpu=profiles/host-cpu-t2.json \\
        --measured cpu.t1=profiles/host-cpu-t1.json --out profiles/host+place.json

A placement (``runtime/placement.py``) runs contiguous segments of the running blocks on processors of
one device (``runtime/hardware.py``). This module writes a profile whose records are the base
configurations (depth × heads × bits, quality from the base profile) times every placement value the
hardware can run, with the device's whole per-token latency and energy and their division among the
segments (``segments``) and the interconnect (``xfer_ms_per_token``, ``xfer_j_per_token``).

**Costs of a segment.** Where the processor was measured on this host (``--measured ROLE=PROFILE``:
the CPU at all threads and at one thread) and the hardware is this host (``--hardware host``), a
single-processor placement takes the measured record as it is, and any other segment is projected
with the calibrated roofline below; on other hardware the measured profiles only calibrate it.
A segment is *projected* by the roofline model (``model/roofline.py``) on the processor's figures::

    flops = 2·(k·p_block + [head] p_shared) + 4·T·h·d·k
    bytes = k·r_block + [head] r_shared + 2·T·h·d·k·4
    t     = κ_bits · max(flops / peak(bits), bytes / bandwidth) / efficiency
            + overhead + k·per_layer

where ``p_block``/``r_block`` (parameters and resident bytes per block) and the shared part come from
the base profile's records by a depth fit, ``T`` is the context, ``h`` the head fraction, and the
processor's energy is ``t · active_power_w``. ``κ_bits`` **calibrates** CPU-kind processors: the
median ratio measured/roofline of this host's CPU records (per precision), i.e. the assumption that
a CPU reaches the same fraction of its roofline as this host's CPU does; the calibration error
(measured vs κ·roofline on every measured record) is written into the profile and reported. GPUs and
NPUs have no measurement here (κ = 1, uncalibrated, said in the profile). A CPU at one thread
(``cpu.t1``) has ``1/cores`` of the cluster's compute, half its bandwidth and
``0.3 + 0.7/cores`` of its active power (modelled: uncore and DRAM stay on).

**Two segments** ``A:k:B`` add the interconnect: one ``d_model`` activation (fp32; 2 bytes where
the receiving processor runs fp16 activations only) per token, ``Interconnect.transfer_ms`` and
``transfer_j``, plus each processor's ``dispatch_ms``.

**What the hardware can run.** A processor must run the configuration's weight precision
(``weight_bits``; an NPU runs no fp32 weights) and hold the weights of the whole model at that
precision plus the KV cache of its blocks within ``memory_mb``; other combinations get no record
(the space's ``measured`` rule removes them). Quality is the base configuration's: a placement keeps
the numerics (an NPU's fp16 activations are not modelled: said in the profile).

Everything projected is ``modelled``; the profile's ``placement`` block says which records were
measured and which projected, and the calibration error per processor.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.profile_schema import Profile, load_profile, save_profile, utc_now_iso
from model.split_profile import depth_fits
from runtime.configspace import KNOBS, join_fragments
from runtime.hardware import Hardware, host_hardware, load_hardware
from runtime.placement import ONE_THREAD, PLACE_DEFAULT, ROLES, PlacementError, segments

CONTEXT_TOKENS = 128  # KV context of the per-token costs (the profiles' decode prompt is 64-128 tokens)
KV_BYTES = 4  # fp32 KV cache entries
ONE_THREAD_BW_FRAC = 0.5  # modelled: one core reaches about half of a cluster's DRAM bandwidth
UNCORE_POWER_FRAC = 0.3  # modelled: share of a cluster's active power that does not scale with threads


class PlacementProfileError(ValueError):
    """Inputs that cannot make a placement profile (the message names the file or field and the fix)."""


# ---- the model's size by depth ----------------------------------------------------------------

class Projector:
    """Roofline time and energy of a segment on one processor (module docstring)."""

    def __init__(self, hw: Hardware, base: Profile, kappa: Mapping[int, float] | None = None) -> None:
        from model.roofline import peak_ops_per_s, spec_from_dict

        self.hw, self._peak = hw, peak_ops_per_s
        self.specs = {r: spec_from_dict(hw.roofline_dict(r), f"{hw.name}:{r}") for r in hw.roles}
        arch = base.data["model"]["arch"]
        self.d_model = int(arch["n_embd"])
        recs = [r for r in base.configs if int(r.get("split", -1)) == -1]
        self.params = depth_fits(recs, "active_params")
        self.bytes = depth_fits(recs, "resident_bytes")
        self.kappa = dict(kappa or {})

    def segment(self, role: str, threads: int | None, n_blocks: int, head: bool, heads: float, bits: int,
                calibrated: bool = True) -> tuple[float, float]:
        """(ms, J) per token of ``n_blocks`` blocks (plus the shared embedding/head when ``head``) on ``role``."""
        spec, proc = self.specs[role], self.hw.processors[role]
        pa, pb = self.params[(float(heads), int(bits))]
        ra, rb = self.bytes[(float(heads), int(bits))]
        flops = 2.0 * (n_blocks * pb + (pa if head else 0.0)) + 4.0 * CONTEXT_TOKENS * heads * self.d_model * n_blocks
        nbytes = n_blocks * rb + (ra if head else 0.0) + _kv_bytes(heads, self.d_model, n_blocks)
        peak, _ = self._peak(spec, int(bits))
        bw = spec.mem_bandwidth_gbs * 1e9
        power = spec.active_power_w
        if threads == 1 and proc.cores:  # one thread of a cluster (module docstring; modelled)
            peak, bw = peak / proc.cores, bw * ONE_THREAD_BW_FRAC
            power = spec.active_power_w * (UNCORE_POWER_FRAC + (1 - UNCORE_POWER_FRAC) / proc.cores)
        k = self.kappa.get(int(bits), 1.0) if (calibrated and spec.kind == "cpu") else 1.0
        t_s = k * max(flops / peak, nbytes / bw) / spec.efficiency
        t_ms = t_s * 1e3 + spec.per_token_overhead_ms + n_blocks * spec.per_layer_overhead_ms
        return t_ms, t_ms * 1e-3 * power

    def full(self, role: str, threads: int | None, depth: int, heads: float, bits: int,
             calibrated: bool = True) -> tuple[float, float]:
        return self.segment(role, threads, depth, True, heads, bits, calibrated)


# ---- calibration against the measured CPU --------------------------------------------------------

def calibrate_cpu(proj: Projector, measured: Mapping[str, Profile]) -> tuple[dict[int, float], dict[str, Any]]:
    """``κ_bits`` from this host's measured CPU records and the error of κ·roofline on each of them.

    ``proj`` must describe this host (``runtime.hardware.host_hardware``). Returns (κ per bits, report).
    """
    ratios: dict[int, list[float]] = {}
    pairs = []
    for value, prof in measured.items():
        threads = 1 if value == ONE_THREAD else None
        for r in prof.configs:
            t, _ = proj.full("cpu", threads, int(r["depth"]), float(r["heads"]), int(r["bits"]), calibrated=False)
            meas = float(r["decode_ms_per_token_median"])
            ratios.setdefault(int(r["bits"]), []).append(meas / t)
            pairs.append((value, int(r["bits"]), t, meas))
    kappa = {b: float(np.median(v)) for b, v in ratios.items()}
    report: dict[str, Any] = {"kappa_by_bits": {str(b): round(k, 4) for b, k in sorted(kappa.items())}}
    for value in measured:
        err_raw = [abs(t - m) / m for v, _, t, m in pairs if v == value]
        err_cal = [abs(kappa[b] * t - m) / m for v, b, t, m in pairs if v == value]
        report[value] = {"n": len(err_cal),
                         "roofline_median_error": float(np.median(err_raw)),
                         "roofline_worst_error": float(max(err_raw)),
                         "calibrated_median_error": float(np.median(err_cal)),
                         "calibrated_worst_error": float(max(err_cal))}
    return kappa, report


# ---- records -------------------------------------------------------------------------------------

def placement_values(hw: Hardware, max_depth: int, roles: Sequence[str] | None = None,
                     cuts: str = "all") -> list[str]:
    """Placement values over the hardware's roles: every single (``cpu.t1`` with the CPU) and the
    two-segment ones (``cuts``: ``all`` = every k, ``half`` = k = depth // 2 of the deepest, ``none``)."""
    have = [r for r in ROLES if hw.has(r) and (roles is None or r in roles)]
    out = []
    for r in have:
        out.append(r)
        if r == "cpu":
            out.append(ONE_THREAD)
    if cuts == "none":
        return out
    ks = range(1, max_depth) if cuts == "all" else [max_depth // 2]
    out += [f"{a}:{k}:{b}" for a in have for b in have if a != b for k in ks]
    return out


def _kv_bytes(heads: float, d_model: int, n_blocks: int) -> float:
    return 2.0 * CONTEXT_TOKENS * heads * d_model * n_blocks * KV_BYTES


def build(hw: Hardware, base: Profile, measured: Mapping[str, Profile] | None = None,
          roles: Sequence[str] | None = None, cuts: str = "all", name: str | None = None) -> dict[str, Any]:
    """The placement profile (module docstring) as a dict that ``model.profile_schema`` validates."""
    measured = dict(measured or {})
    for v in measured:
        if v not in ("cpu", ONE_THREAD):
            raise PlacementProfileError(f"--measured {v}=…: only the CPU is measured here (cpu, {ONE_THREAD})")
    base_recs = [r for r in base.configs if int(r.get("split", -1)) == -1 and str(r.get("place", "cpu")) == "cpu"]
    if not base_recs:
        raise PlacementProfileError(f"{base.data.get('name')}: no local configuration records to place")
    host = host_hardware()
    kappa, calib = {}, {}
    if measured:
        kappa, calib = calibrate_cpu(Projector(host, base), measured)
    proj = Projector(hw, base, kappa)
    # measured records stand for themselves only on the machine that measured them
    on_host = hw.device_kind == "host"
    by_meas = {v: {r["name"]: r for r in p.configs} for v, p in measured.items()} if on_host else {}
    ic = hw.interconnect
    max_depth = max(int(r["depth"]) for r in base_recs)
    values = placement_values(hw, max_depth, roles, cuts)
    recs, n_meas, n_proj, skipped = [], 0, 0, {}
    for r in base_recs:
        depth, heads, bits = int(r["depth"]), float(r["heads"]), int(r["bits"])
        weights_b = float(r.get("resident_bytes", 0.0))
        for v in values:
            try:
                segs = segments(v, depth)
            except PlacementError:
                continue  # a cut beyond this depth
            why = None
            for s in segs:
                p = hw.processors[s.role]
                if bits not in p.weight_bits:
                    why = f"{s.role} runs no {bits}-bit weights"
                elif weights_b + _kv_bytes(heads, proj.d_model, s.n_blocks) > p.memory_mb * 1e6:
                    why = f"{s.role} memory"
            if why:
                skipped[why] = skipped.get(why, 0) + 1
                continue
            seg_out = []
            source = "projected"
            if len(segs) == 1 and v in by_meas and r["name"] in by_meas[v]:
                m = by_meas[v][r["name"]]
                ms, j = float(m["decode_ms_per_token_median"]), float(m["energy_j_per_token"])
                seg_out.append({"role": segs[0].role, "blocks": depth, "decode_ms": ms, "energy_j": j})
                source = "measured"
                p90 = float(m["decode_ms_per_token_p90"])
            else:
                for i, s in enumerate(segs):
                    ms_s, j_s = proj.segment(s.role, s.threads, s.n_blocks, i == len(segs) - 1, heads, bits)
                    seg_out.append({"role": s.role, "blocks": s.n_blocks, "decode_ms": ms_s, "energy_j": j_s})
            xfer_ms = xfer_j = 0.0
            if len(segs) == 2:
                act_b = proj.d_model * (2 if hw.processors[segs[1].role].activation_bits[0] <= 16 else 4)
                xfer_ms = ic.transfer_ms(act_b) + sum(hw.processors[s.role].dispatch_ms for s in segs)
                xfer_j = ic.transfer_j(act_b)
            dec = sum(s["decode_ms"] for s in seg_out) + xfer_ms
            e = sum(s["energy_j"] for s in seg_out) + xfer_j
            if source == "projected":
                p90 = dec
                n_proj += 1
            else:
                n_meas += 1
            rec = copy.deepcopy(r)
            for key in ("source",):
                rec.pop(key, None)
            rec.update({
                "name": join_fragments([r["name"], KNOBS["place"].fragment(v)]), "place": v,
                "device": "+".join(dict.fromkeys(s.role for s in segs)),
                "decode_ms_per_token_median": dec, "decode_ms_per_token_p90": max(p90, dec),
                "decode_tokens_per_s": 1000.0 / dec, "energy_j_per_token": e, "power_w": e * 1000.0 / dec,
                "energy_source": "modelled" if source == "projected" else r.get("energy_source", "modelled"),
                "segments": seg_out, "xfer_ms_per_token": xfer_ms, "xfer_j_per_token": xfer_j,
                "device_bytes": weights_b + _kv_bytes(heads, proj.d_model, depth),
                "cost_source": source,
            })
            recs.append(rec)
    if not recs:
        raise PlacementProfileError(f"{hw.name}: no configuration can be placed ({skipped})")
    out = copy.deepcopy(base.data)
    out["name"] = name or f"{base.data.get('name', 'profile')}+place@{hw.name}"
    out["created_utc"] = utc_now_iso()
    out["configs"] = recs
    place_vals = list(dict.fromkeys(r["place"] for r in recs))
    space_knobs = [{"name": k, "values": list(KNOBS[k].with_values(
        sorted({r[k] for r in recs}, key=[x for x in KNOBS[k].values].index)
        if k != "depth" else sorted({r[k] for r in recs}, reverse=True)).values)}
        for k in ("depth", "heads", "bits")]
    # the records define the space (rule "measured"); place_rules() hold for them by construction
    out["config_space"] = {"knobs": space_knobs + [{"name": "place", "values": place_vals}]}
    out["hardware"] = hw.to_dict()
    if n_proj:
        out["energy_source"] = "modelled"
        if not on_host:
            out["device"] = {"kind": "projected", "name": hw.name, "spec": hw.name}
        ea = dict(out.get("energy_assumptions") or {})
        ea["placement"] = ("projected segments: roofline time x processor active power (runtime/hardware); "
                           "interconnect: bytes x energy per byte (model/placement_profile.py)")
        out["energy_assumptions"] = ea
    out["switch_costs"] = dict(out.get("switch_costs", {}))
    kv_all = _kv_bytes(1.0, proj.d_model, max_depth)
    out["switch_costs"]["place_move_ms"] = ic.transfer_ms(kv_all) + max(
        (p.dispatch_ms for p in hw.processors.values()), default=0.0)
    out["placement"] = {
        "hardware": hw.name, "values": place_vals, "cuts": cuts, "context_tokens": CONTEXT_TOKENS,
        "records_measured": n_meas, "records_projected": n_proj, "skipped": skipped,
        "calibration": calib or "none: no measured CPU profile given (κ = 1, uncalibrated roofline)",
        "uncalibrated_roles": [r for r in hw.roles if proj.specs[r].kind != "cpu"],
        "assumptions": {
            "one_thread": f"1/cores of the compute, {ONE_THREAD_BW_FRAC} of the bandwidth, "
                          f"{UNCORE_POWER_FRAC} + {1 - UNCORE_POWER_FRAC}/cores of the active power (modelled)",
            "quality": "the base configuration's: a placement keeps the numerics (NPU fp16 activations not modelled)",
            "place_move_ms": "the full model's KV cache at the context across the interconnect plus one dispatch",
        },
    }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.placement_profile", description=__doc__.split("\n")[0])
    ap.add_argument("--hardware", required=True,
                    help="a description in runtime/hardware/ (e.g. phone-sd8gen2), a JSON path, or 'host'")
    ap.add_argument("--base", default="profiles/reference-cpu.json",
                    help="the base profile: configurations, quality and the model's size by depth")
    ap.add_argument("--measured", action="append", default=[], metavar="VALUE=PROFILE",
                    help="a measured profile of this host's CPU for placement VALUE (cpu or cpu.t1); repeatable")
    ap.add_argument("--roles", default=None, help="comma-separated roles to use (default: all the hardware has)")
    ap.add_argument("--cuts", choices=("all", "half", "none"), default="all",
                    help="two-segment placements: every split point, only depth//2, or none")
    ap.add_argument("--out", required=True)
    ap.add_argument("--force", action="store_true", help="replace an existing --out")
    a = ap.parse_args(argv)
    from runtime.safeio import refuse_existing

    try:
        refuse_existing(a.out, a.force, "profile")
        hw = host_hardware() if a.hardware == "host" else load_hardware(a.hardware)
        base = load_profile(a.base)
        measured = {}
        for item in a.measured:
            if "=" not in item:
                raise PlacementProfileError(f"--measured {item!r}: write VALUE=PROFILE, e.g. cpu.t1=profiles/t1.json")
            v, path = item.split("=", 1)
            measured[v] = load_profile(path)
        roles = a.roles.split(",") if a.roles else None
        prof = build(hw, base, measured, roles, a.cuts)
    except (PlacementProfileError, FileExistsError, ValueError, OSError) as exc:
        print(f"python -m model.placement_profile: {exc}", file=sys.stderr)
        return 2
    out = save_profile(prof, a.out)
    pl = prof["placement"]
    print(f"wrote {out}: {len(prof['configs'])} configurations ({pl['records_measured']} measured, "
          f"{pl['records_projected']} projected) over {len(pl['values'])} placements on {pl['hardware']}; "
          f"skipped {pl['skipped'] or 'none'}")
    if isinstance(pl["calibration"], dict):
        for v, c in pl["calibration"].items():
            if isinstance(c, dict) and "n" in c:
                print(f"  calibration {v}: roofline median error {c['roofline_median_error']:.1%} -> "
                      f"{c['calibrated_median_error']:.1%} (worst {c['calibrated_worst_error']:.1%}) over {c['n']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["PlacementProfileError", "Projector", "build", "calibrate_cpu", "placement_values"]
_ = (math, Path, PLACE_DEFAULT)
