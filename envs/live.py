"""Live mode: the same environment, but every step really runs the micro-LLM.

``LiveMicroLLMPowerEnv`` has the interface of ``MicroLLMPowerEnv``; in each step it switches the
resident model to the chosen configuration and *generates* the step's served tokens (capped at
``max_tokens_per_step`` to keep steps short), measures the decode latency per token, and reports
it in ``info["latency_ms_measured"]`` next to the profile's prediction
(``info["latency_ms_predicted"]``). The battery and thermal dynamics still use the profile's
energy figures (this machine has no energy meter).

``python -m envs.live --out docs/sim2real.md --force`` writes the sim-to-real report: per
configuration, predicted versus measured decode latency per token and the error in %
(``--force`` replaces an existing report). The profile must describe the loaded model: its
configurations must be the model's, and its ``model.checkpoint_sha256`` the checkpoint's
(``--allow-checkpoint-change`` accepts another valid checkpoint on purpose).

``--calibrated P`` also scores a calibrated profile (``python -m model.profile --calibrate``) against the same
measurements: the report gives both profiles' errors side by side. Before measuring, the host is compared with
the profile's ``machine.fingerprint`` (``model.profile.host_check_warning``): a profile from another host (or
one without a fingerprint) gets one warning line on stderr naming the calibrate command.
With two repeats or more, each profile is also scored as the runtime uses it: corrected online by the runtime
manager's estimator (``runtime.correction``), each sample predicted from the samples measured before it
(:func:`online_corrected`).
Each run adds a dated section at the top of the report; earlier sections are kept below it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from envs.power_env import MicroLLMPowerEnv


class LiveMicroLLMPowerEnv(MicroLLMPowerEnv):
    """``MicroLLMPowerEnv`` whose steps really run ``model``.

    The profile must describe the live model: every profile configuration must be a configuration
    of the model (same knob values, same canonical name), and when the model was loaded from a file
    (``model.load`` records ``checkpoint_sha256``) the profile's ``model.checkpoint_sha256`` must be
    that file's, unless ``allow_checkpoint_change``.
    """

    def __init__(self, *args, model=None, max_tokens_per_step: int = 32, context_tokens: int = 64,
                 allow_checkpoint_change: bool = False, **kw):
        super().__init__(*args, **kw)
        if int(max_tokens_per_step) < 1:
            raise ValueError(f"max_tokens_per_step {max_tokens_per_step!r}: allowed >= 1")
        from envs.tables import DEFAULT_PROFILE

        data = profile_data(kw.get("profile", args[0] if args else None) or DEFAULT_PROFILE)
        if model is None:
            import model as M

            model = M.load(M.DEFAULT_CHECKPOINT, expect_sha256=_profile_checkpoint_sha(data),
                           allow_mismatch=allow_checkpoint_change)
        self.model = model
        check_profile_matches_model(data, model, allow_checkpoint_change)
        if not 1 <= int(context_tokens) < model.config.block_size:
            raise ValueError(f"context_tokens {context_tokens!r}: allowed [1, {model.config.block_size - 1}] "
                             "(the model's context)")
        self.max_tokens = int(max_tokens_per_step)
        self.context_tokens = int(context_tokens)
        self._cache = None

    def _fresh_cache(self) -> None:
        """A new KV cache holding the same ``context_tokens``-token context (seeded, so every call alike)."""
        import torch

        m = self.model
        self._cache = m.new_cache(1, m.config.block_size)
        ctx = torch.randint(32, 127, (1, self.context_tokens), generator=torch.Generator().manual_seed(0))
        m.forward(ctx, self._cache)

    def _generate(self, n: int) -> list[float]:
        """Decode ``n`` tokens under the active configuration; per-token latencies in ms."""
        import torch

        m = self.model
        if self._cache is None or self._cache.length + n >= m.config.block_size:
            self._fresh_cache()
        out, tok = [], torch.tensor([[32]])
        for _ in range(n):
            t0 = time.perf_counter()
            logits = m.forward(tok, self._cache)
            tok = logits[:, -1:].argmax(-1)
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    def step(self, action):
        obs, reward, term, trunc, info = super().step(action)
        a = int(action)
        self.model.set_config(self.space.values_of(a))  # by knob values: names are never parsed
        n = int(min(self.max_tokens, max(1.0, info["step"].served)))
        lat = self._generate(n)
        info["latency_ms_predicted"] = float(self.costs.decode_ms[a])
        info["latency_ms_measured"] = float(np.median(lat))
        info["tokens_generated"] = n
        return obs, reward, term, trunc, info


def profile_data(profile) -> dict:
    """The profile's JSON dict, from a path, a ``model.profile_schema.Profile`` or a dict."""
    from model.profile_schema import Profile, load_profile

    if isinstance(profile, (str, Path)):
        return load_profile(profile).data
    if isinstance(profile, Profile):
        return profile.data
    return dict(profile)


def _profile_checkpoint_sha(data: dict) -> str | None:
    return (data.get("model") or {}).get("checkpoint_sha256")


def check_profile_matches_model(data: dict, model, allow_checkpoint_change: bool = False) -> None:
    """Raise ``ValueError`` unless the profile ``data`` describes ``model``: each profile configuration
    is a configuration of the model under the same canonical name (the message names the first one
    that is not), and the checkpoint the profile was measured on is the model's (when both are known)."""
    space = model.space
    for i, rec in enumerate(data.get("configs", [])):
        name = rec.get("name")
        values = {k: rec.get(k) for k in space.knob_names}
        try:
            ok = space.name_of(model.validate(values)) == name
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            c = model.config
            raise ValueError(
                f"profile configuration {name!r} (configs[{i}]: {values}) is not a configuration of the live model "
                f"({c.n_layer} layers; depths {list(c.depths)}, heads {list(c.head_fractions)}, bits {list(c.bits)}): "
                "profile and checkpoint do not match; fix: re-run python -m model.profile on this checkpoint")
    want = _profile_checkpoint_sha(data)
    have = getattr(model, "checkpoint_sha256", None)
    if want and have and want != have and not allow_checkpoint_change:
        raise ValueError(f"the profile was measured on checkpoint {want[:12]}... but the live model is "
                         f"{have[:12]}... ({getattr(model, 'checkpoint_path', '?')}); profile and checkpoint do not "
                         "match; fix: pass the checkpoint the profile was measured on, re-profile (python -m "
                         "model.profile), or accept the change with --allow-checkpoint-change")


def sim_to_real(env: LiveMicroLLMPowerEnv, tokens_per_config: int = 64, repeats: int = 3,
                calibrated: dict | None = None) -> list[dict]:
    """Predicted vs measured decode latency per configuration (median over every token).

    Measured as the profile was (``model.profile.decode_step_ms``): every sample is ``tokens_per_config``
    single-token steps on a fresh KV cache after the same ``env.context_tokens``-token context, so that the
    predicted and the measured figure are taken alike (a cache left to fill up, repeats back to back, measured
    the same configuration ~10-20 % differently, in either direction between runs: benchmarks/live_loops.py;
    its measurements also repeated less well). The repeats go round-robin over
    the configurations, so a host that slows down for a while slows every configuration a little rather than a
    few a lot. With ``calibrated`` (a calibrated profile's dict with the same configurations), each row also
    has ``calibrated_predicted_ms_per_token``, ``calibrated_error_pct`` and the record's ``calibrated_source``.
    """
    cal = {r["name"]: r for r in calibrated["configs"]} if calibrated is not None else None
    if cal is not None and set(cal) != set(env.costs.names):
        raise ValueError("the calibrated profile's configurations differ from the profile's")
    env.reset(seed=0)
    names = list(env.costs.names)
    lat: dict[str, list[float]] = {n: [] for n in names}
    order: list[tuple[int, float]] = []  # (configuration, its repeat's median ms/token), in the order measured
    for name in names:  # warm every configuration once
        env.model.set_config(name)
        env._fresh_cache()
        env._generate(4)
    for _ in range(repeats):
        for a, name in enumerate(names):
            env.model.set_config(name)
            env._fresh_cache()
            env._generate(1)  # the first step after a switch repairs nothing here, but pays the dispatch warm-up
            sample = env._generate(tokens_per_config)
            lat[name].extend(sample)
            order.append((a, float(statistics.median(sample))))
    online = {"online": online_corrected(env.costs, env.costs.decode_ms, order)}
    if cal is not None:
        online["calibrated_online"] = online_corrected(
            env.costs, [float(cal[n]["decode_ms_per_token_median"]) for n in names], order)
    rows = []
    for a, name in enumerate(names):
        pred, meas = float(env.costs.decode_ms[a]), float(statistics.median(lat[name]))
        row = {"name": name, "predicted_ms_per_token": pred, "measured_ms_per_token": meas,
               "error_pct": 100.0 * (pred - meas) / meas,
               "samples_ms": [v for c, v in order if c == a]}  # each repeat's median, round-robin order
        if cal is not None:
            cp = float(cal[name]["decode_ms_per_token_median"])
            row.update({"calibrated_predicted_ms_per_token": cp, "calibrated_error_pct": 100.0 * (cp - meas) / meas,
                        "calibrated_source": cal[name].get("source", "measured")})
        for key, per_config in online.items():
            if per_config[a] is not None:
                row[f"{key}_error_pct"] = per_config[a]
        rows.append(row)
    return rows


def online_corrected(costs, predicted_ms, order: list[tuple[int, float]],
                     precision_level: bool = True, size_curve: bool = True) -> list[float | None]:
    """The error of a profile as the runtime uses it: corrected online (``runtime.correction.OnlineCorrection``,
    the manager's estimator) by every sample measured before the one it predicts.

    ``costs`` is the environment's cost tables (``envs.tables``: names, configuration space, features).
    Each sample of ``order`` ((configuration, measured ms/token), in the order measured) is predicted by the
    profile's ``predicted_ms`` times the correction's current ratio for that configuration (its own once it has
    ``MIN_SAMPLES``, else borrowed from the nearest measured one of the same precision, else its precision's size
    curve or ratio, else the global ratio, else 1), then fed to it. A prequential figure: no sample corrects its
    own prediction.
    Per configuration: the median signed error (%) of its samples after the first round (the runtime starts
    uncorrected too), ``None`` for a configuration measured only once. ``precision_level=False``: the estimator
    without its precision level, ``size_curve=False`` without its size curve (``runtime.correction.OnlineCorrection``),
    for comparisons.
    """
    from runtime.correction import OnlineCorrection, precision_of

    n = len(costs.names)
    bits = precision_of(costs.space)
    pred = np.asarray(predicted_ms, dtype=np.float64)
    corr = OnlineCorrection(costs.names, pred, np.ones(n), np.ones(n), costs.features, bits, precision_level,
                            size_curve)
    seen = np.zeros(n, dtype=np.int64)
    errs: list[list[float]] = [[] for _ in range(n)]
    for a, meas in order:
        if seen[a] >= 1:
            guess = float(corr.corrected_decode_ms(a))
            errs[a].append(100.0 * (guess - meas) / meas)
        corr.observe(a, latency_ms=meas)
        seen[a] += 1
    return [float(np.median(e)) if e else None for e in errs]


_TITLE = "# Sim-to-real: predicted vs measured decode latency"


def _summary(errs: np.ndarray) -> str:
    return f"mean |error| {errs.mean():.1f} %, median {np.median(errs):.1f} %, max {errs.max():.1f} %"


def write_report(rows: list[dict], path: Path, meta: dict, keep_earlier: bool = True) -> None:
    """Writes the report: a dated section for this run at the top; with ``keep_earlier`` the sections of an
    existing report at ``path`` follow it (a report from before sections were dated becomes one section)."""
    errs = np.array([abs(r["error_pct"]) for r in rows])
    has_cal = "calibrated_error_pct" in rows[0] if rows else False
    fp = meta.get("host_fingerprint")
    host = (f"host {fp['cpu_model']}, {fp['cores_logical']} logical cores, torch {fp['torch_version']}, "
            f"bench_score_us {fp['bench_score_us']}" if fp else "host not recorded")
    method = ("round-robin over the configurations, each repeat on a fresh KV cache after the same 64-token context"
              if meta.get("method") == "round-robin-fresh-cache" else "KV cache filled with a 64-token context")
    load = f"; load average {meta['load_avg_1min']:.2f} at the end" if "load_avg_1min" in meta else ""
    lines = [
        _TITLE, "",
        f"## {meta['date']}: `{meta['profile']}`" + (f" vs calibrated `{meta['calibrated']}`" if has_cal else ""), "",
        f"Measured by `python -m envs.live` on {meta['date']} ({host}; {meta['threads']} torch thread(s), "
        f"{meta['tokens']} tokens × {meta['repeats']} repeats per configuration, {method}{load}).", "",
        f"Profile `{meta['profile']}`: {_summary(errs)}.",
    ]
    if has_cal:
        cerrs = np.array([abs(r["calibrated_error_pct"]) for r in rows])
        perrs = np.array([abs(r["calibrated_error_pct"]) for r in rows if r["calibrated_source"] == "predicted"])
        lines.append(f"Calibrated `{meta['calibrated']}`: {_summary(cerrs)}"
                     + (f"; its predicted configurations only: {_summary(perrs)}" if perrs.size else "") + ".")
    online = [k for k in ("online_error_pct", "calibrated_online_error_pct") if rows and k in rows[0]]
    for k in online:
        label = "Calibrated" if k.startswith("calibrated") else "Profile"
        oerrs = np.array([abs(r[k]) for r in rows if k in r])
        lines.append(f"{label} corrected online by the runtime's estimator (`runtime.correction`, each sample "
                     f"predicted from the earlier ones, after the first round): {_summary(oerrs)}.")
    cols = [("base predicted", lambda r: f"{r['predicted_ms_per_token']:.3f}"),
            ("base error %", lambda r: f"{r['error_pct']:+.1f}")]
    if "online_error_pct" in online:
        cols.append(("base + online error %", lambda r: f"{r['online_error_pct']:+.1f}" if "online_error_pct" in r
                     else ""))
    if has_cal:
        cols += [("calibrated predicted", lambda r: f"{r['calibrated_predicted_ms_per_token']:.3f}"),
                 ("calibrated error %", lambda r: f"{r['calibrated_error_pct']:+.1f}")]
        if "calibrated_online_error_pct" in online:
            cols.append(("calibrated + online error %", lambda r: f"{r['calibrated_online_error_pct']:+.1f}"
                         if "calibrated_online_error_pct" in r else ""))
        cols.append(("calibrated source", lambda r: r["calibrated_source"]))
    lines += ["", "| configuration | measured ms/token | " + " | ".join(c for c, _ in cols) + " |",
              "|---|---|" + "---|" * len(cols)]
    lines += [f"| {r['name']} | {r['measured_ms_per_token']:.3f} | " + " | ".join(f(r) for _, f in cols) + " |"
              for r in rows]
    earlier = _earlier_sections(path) if keep_earlier else ""
    from runtime.safeio import atomic_write_text

    atomic_write_text(path, "\n".join(lines) + "\n" + (("\n" + earlier) if earlier else ""))


def _earlier_sections(path: Path) -> str:
    """The sections of an existing report (without its title); an undated legacy report becomes one section."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""
    body = text.split("\n", 1)[1].lstrip("\n") if text.startswith(_TITLE) else text
    if body and not body.startswith("## "):
        import re

        d = re.search(r"on (\d{4}-\d{2}-\d{2})", body)
        body = f"## {d.group(1) if d else 'earlier'}: earlier figures\n\n" + body
    return body.rstrip("\n") + "\n" if body.strip() else ""


def main(argv: list[str] | None = None) -> None:
    from model.cli import positive_int
    from runtime.safeio import atomic_write_text, refuse_existing

    p = argparse.ArgumentParser(prog="python -m envs.live",
                                description="Sim-to-real report: profile latency vs the live model.")
    p.add_argument("--profile", default=None, help="profile JSON (default: the committed reference profile)")
    p.add_argument("--checkpoint", default=None, help="model checkpoint (default: the committed one)")
    p.add_argument("--allow-checkpoint-change", action="store_true",
                   help="accept a checkpoint whose sha256 differs from the profile's model.checkpoint_sha256")
    p.add_argument("--calibrated", default=None, metavar="P",
                   help="also score this calibrated profile (python -m model.profile --calibrate) on the same run")
    p.add_argument("--threads", type=positive_int, default=2, help="torch threads (match the profile's; >= 1)")
    p.add_argument("--tokens", type=positive_int, default=64, help="tokens per repeat per configuration (>= 1)")
    p.add_argument("--repeats", type=positive_int, default=3, help="repeats per configuration (>= 1)")
    p.add_argument("--out", default="docs/sim2real.md", help="report (Markdown; a .json beside it)")
    p.add_argument("--force", action="store_true", help="replace an existing report")
    a = p.parse_args(argv)
    out = Path(a.out)
    try:  # before the model is loaded
        for f in (out, out.with_suffix(".json")):
            refuse_existing(f, a.force, "sim-to-real report")
    except FileExistsError as exc:
        raise SystemExit(f"python -m envs.live: {exc}") from None
    import torch

    import model as M
    from envs.tables import DEFAULT_PROFILE
    from model.profile_schema import ProfileError

    try:
        prof = profile_data(a.profile or DEFAULT_PROFILE)
        torch.set_num_threads(a.threads)
        m = M.load(a.checkpoint or M.DEFAULT_CHECKPOINT, expect_sha256=_profile_checkpoint_sha(prof),
                   allow_mismatch=a.allow_checkpoint_change)
        env = LiveMicroLLMPowerEnv(model=m, profile=prof, allow_checkpoint_change=a.allow_checkpoint_change)
        cal = profile_data(a.calibrated) if a.calibrated else None
        if cal is not None:
            check_profile_matches_model(cal, m, a.allow_checkpoint_change)
    except (ProfileError, FileNotFoundError, ValueError) as exc:  # CheckpointError is a ValueError
        raise SystemExit(f"python -m envs.live: {exc}") from None
    from model.profile import host_check_warning, host_fingerprint

    fp = host_fingerprint(a.threads)
    for label, data in ((a.profile or "profiles/reference-cpu.json", prof), (a.calibrated, cal)):
        if data is not None:
            w = host_check_warning(data, a.threads, label, current=fp)
            if w:
                print(f"[envs.live] {w}", file=sys.stderr)
    max_tokens = m.config.block_size - env.context_tokens - 4
    if a.tokens > max_tokens:
        p.error(f"argument --tokens: {a.tokens} is out of range; allowed: [1, {max_tokens}] (the model's context)")
    rows = sim_to_real(env, a.tokens, a.repeats, calibrated=cal)
    meta = {"profile": a.profile or "profiles/reference-cpu.json", "threads": a.threads, "tokens": a.tokens,
            "repeats": a.repeats, "date": time.strftime("%Y-%m-%d"),
            "checkpoint_sha256": getattr(m, "checkpoint_sha256", None), "calibrated": a.calibrated,
            "host_fingerprint": fp, "load_avg_1min": os.getloadavg()[0], "method": "round-robin-fresh-cache"}
    write_report(rows, out, meta)
    earlier = []  # keep earlier runs' figures (dated by their meta) in the JSON too
    try:
        prev = json.loads(out.with_suffix(".json").read_text())
        earlier = prev.get("earlier", []) + [{"meta": prev["meta"], "rows": prev["rows"]}]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    atomic_write_text(out.with_suffix(".json"), json.dumps({"meta": meta, "rows": rows, "earlier": earlier},
                                                           indent=1))
    print(out.read_text())


if __name__ == "__main__":
    main()
