"""Live mode: the same environment, but every step really runs the micro-LLM.

``LiveMicroLLMPowerEnv`` has the interface of ``MicroLLMPowerEnv``; in each step it switches the
resident model to the chosen configuration and *generates* the step's served tokens (capped at
``max_tokens_per_step`` to keep steps short), measures the decode latency per token, and reports
it in ``info["latency_ms_measured"]`` next to the profile's prediction
(``info["latency_ms_predicted"]``). The battery and thermal dynamics still use the profile's
energy figures (this machine has no energy meter).

``python -m envs.live --out docs/sim2real.md`` writes the sim-to-real report: per
configuration, predicted versus measured decode latency per token and the error in %.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from envs.power_env import MicroLLMPowerEnv


class LiveMicroLLMPowerEnv(MicroLLMPowerEnv):
    def __init__(self, *args, model=None, max_tokens_per_step: int = 32, context_tokens: int = 64, **kw):
        super().__init__(*args, **kw)
        if model is None:
            import model as M

            model = M.load_default()
        self.model = model
        names = set(model.space.names)
        missing = [n for n in self.costs.names if n not in names]
        if missing:
            raise ValueError(f"the profile's configurations {missing[:3]}... are not configurations of the "
                             "live model: profile and checkpoint do not match (re-run python -m model.profile)")
        self.max_tokens = int(max_tokens_per_step)
        self.context_tokens = int(context_tokens)
        self._cache = None

    def _generate(self, n: int) -> list[float]:
        """Decode ``n`` tokens under the active configuration; per-token latencies in ms."""
        import torch

        m = self.model
        if self._cache is None or self._cache.length + n >= m.config.block_size:
            self._cache = m.new_cache(1, m.config.block_size)
            ctx = torch.randint(32, 127, (1, self.context_tokens), generator=torch.Generator().manual_seed(0))
            m.forward(ctx, self._cache)
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


def sim_to_real(env: LiveMicroLLMPowerEnv, tokens_per_config: int = 64, repeats: int = 3) -> list[dict]:
    """Predicted vs measured decode latency per configuration (median over every token)."""
    rows = []
    env.reset(seed=0)
    for a, name in enumerate(env.costs.names):
        env.model.set_config(name)
        env._generate(4)  # warm this configuration
        lat = []
        for _ in range(repeats):
            lat.extend(env._generate(tokens_per_config))
        pred, meas = float(env.costs.decode_ms[a]), float(statistics.median(lat))
        rows.append({"name": name, "predicted_ms_per_token": pred, "measured_ms_per_token": meas,
                     "error_pct": 100.0 * (pred - meas) / meas})
    return rows


def write_report(rows: list[dict], path: Path, meta: dict) -> None:
    errs = np.array([abs(r["error_pct"]) for r in rows])
    lines = [
        "# Sim-to-real: predicted vs measured decode latency", "",
        f"Profile: `{meta['profile']}`; measured by `python -m envs.live` on {meta['date']} "
        f"({meta['threads']} torch thread(s), {meta['tokens']} tokens × {meta['repeats']} repeats per configuration, "
        "KV cache filled with a 64-token context).", "",
        f"Mean |error| {errs.mean():.1f} %, median {np.median(errs):.1f} %, max {errs.max():.1f} %.", "",
        "| configuration | predicted ms/token | measured ms/token | error % |", "|---|---|---|---|",
    ]
    lines += [f"| {r['name']} | {r['predicted_ms_per_token']:.3f} | {r['measured_ms_per_token']:.3f} | "
              f"{r['error_pct']:+.1f} |" for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Sim-to-real report: profile latency vs the live model.")
    p.add_argument("--profile", default=None, help="profile JSON (default: the committed reference profile)")
    p.add_argument("--checkpoint", default=None, help="model checkpoint (default: the committed one)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (match the profile's)")
    p.add_argument("--tokens", type=int, default=64, help="tokens per repeat per configuration")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="docs/sim2real.md")
    a = p.parse_args(argv)
    import torch

    import model as M

    torch.set_num_threads(a.threads)
    m = M.load(a.checkpoint) if a.checkpoint else M.load_default()
    kw = {"profile": a.profile} if a.profile else {}
    env = LiveMicroLLMPowerEnv(model=m, **kw)
    rows = sim_to_real(env, a.tokens, a.repeats)
    meta = {"profile": a.profile or "profiles/reference-cpu.json", "threads": a.threads, "tokens": a.tokens,
            "repeats": a.repeats, "date": time.strftime("%Y-%m-%d")}
    write_report(rows, Path(a.out), meta)
    Path(a.out).with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(Path(a.out).read_text())


if __name__ == "__main__":
    main()
