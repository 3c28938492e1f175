"""Split-server transport: protocol overhead, throughput, and the latency model under a shaped link.

    python benchmarks/split_server.py [--tokens 400] [--seconds 6] [--cell-tokens 30]

A ``model.split_server`` runs as a subprocess on loopback (1 torch thread, the default inline
decode path); the edge (``model.split.EdgeSide`` + codec) and ``model.split_client.SplitClient``
run here (1 torch thread). Greedy decoding throughout, after a 40-byte prompt.

1. **Protocol overhead** per decode token without shaping: the client's round trip (send ->
   reply) minus the server's compute (codec decode + its blocks, timed on the server), p50 / p99;
   also the bare transport floor (an error reply: no compute) and the server's own share
   (``server_ms - compute``: validation, framing, JSON).
2. **Throughput** in tokens/s with 1 and 8 concurrent sessions (one thread and connection each,
   pre-encoded one-token payloads so the clients cost little; positions wrap at the context).
3. **Latency model** under ``LinkShaper`` for a few split configurations at three links:
   predicted = edge compute + bytes·8/bandwidth + server compute + RTT, with the edge and server
   compute and the bytes (request + reply) the medians of an unshaped run of the same split; measured
   = edge compute + the shaped step, per token; error = |predicted − measured| / measured of the
   medians; reported per cell and as the median over cells.

The host is a shared 2-core VM (other jobs run beside it); its load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from model import load_default, split  # noqa: E402
from model.profile_schema import _cpu_model  # noqa: E402
from model.split_client import LinkShaper, SplitClient, pack_message, unpack_message  # noqa: E402

PROMPT = torch.tensor(list(b"And God said, Let there be light: and th"))
SPLITS = [("L6-H100-fp32", 2, "int8"), ("L6-H100-int8", 1, "tabq"), ("L4-H100-int4", 2, "fp16")]
LINKS = [(50.0, 10.0), (5.0, 40.0), (1.0, 80.0)]  # (Mbit/s, RTT ms)


def start_server(token_file: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "model.split_server", "--port", "0", "--token-file",
                             str(token_file), "--threads", "1", "--max-sessions", "16"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = proc.stdout.readline().decode()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split()[-1]


def pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs, float), q))


def decode_run(m, url: str, token: str, cfg: str, k: int, mode: str, n: int, shaper=None) -> list[dict]:
    """Greedy decoding of ``n`` tokens after the prompt; per token: edge ms + the step's timing."""
    edge = split.EdgeSide(m)
    rows = []
    with SplitClient(url, token, shaper=shaper, timeout_s=30) as c:
        c.open(cfg)
        ids = PROMPT
        while len(rows) < n:
            t0 = time.perf_counter()
            msg = edge.send(ids, cfg, k)
            payload = msg.ids.numpy().astype(np.uint8).tobytes() if k == 0 else split.encode(msg.x.numpy(), mode)
            edge_ms = (time.perf_counter() - t0) * 1e3
            tok, _, timing = c.step(payload, cfg, k, mode if k else None, msg.pos, msg.t)
            if msg.pos > 0:  # decode steps only (not the prompt's prefill, nor a restart after a full context)
                rows.append({"edge_ms": edge_ms, "latency_ms": edge_ms + timing["total_ms"], **timing})
            ids = torch.tensor([tok])
            if edge.length >= m.config.block_size:
                edge.reset()
                ids = PROMPT
    return rows


def overhead(m, url: str, token: str, n: int) -> dict:
    from websockets.sync.client import connect

    ws = connect(url, additional_headers={"Authorization": f"Bearer {token}"}, compression=None,
                 proxy=None).__enter__()
    bad = pack_message({"v": 1, "op": "nope"})
    floor = []
    for _ in range(n):
        t0 = time.perf_counter()
        ws.send(bad)
        unpack_message(ws.recv())
        floor.append((time.perf_counter() - t0) * 1e3)
        time.sleep(0.002)  # like decode: the link idles between messages
    ws.close()
    out = {"transport_floor_ms": {"p50": pct(floor, 50), "p99": pct(floor, 99), "n": n}}
    for cfg, k, mode in [("L6-H100-fp32", 2, "int8"), ("L6-H100-fp32", 0, None)]:
        rows = decode_run(m, url, token, cfg, k, mode, n)
        ov = [r["overhead_ms"] for r in rows]
        srv = [r["server_ms"] - r["compute_ms"] for r in rows]
        out[f"{cfg} k={k} {mode or 'ids'}"] = {
            "overhead_ms": {"p50": pct(ov, 50), "p99": pct(ov, 99)},
            "server_share_ms": {"p50": pct(srv, 50), "p99": pct(srv, 99)},
            "round_trip_ms_p50": pct([r["wire_ms"] for r in rows], 50),
            "server_compute_ms_p50": pct([r["compute_ms"] for r in rows], 50),
            "bytes_up": int(np.median([r["bytes_up"] for r in rows])),
            "bytes_down": int(np.median([r["bytes_down"] for r in rows])), "n": len(rows)}
    return out


def throughput(m, url: str, token: str, sessions: int, seconds: float) -> dict:
    cfg, k, mode = "L6-H100-fp32", 2, "int8"
    x = split.EdgeSide(m).run(PROMPT, cfg, k)
    prompt_payload = split.encode(x.numpy(), mode)
    one = split.encode(x[-1:].numpy(), mode)
    counts, lat = [0] * sessions, [[] for _ in range(sessions)]
    start, stop = threading.Barrier(sessions + 1), threading.Event()

    def worker(i: int) -> None:
        with SplitClient(url, token, timeout_s=60) as c:
            c.open(cfg)
            c.step(prompt_payload, cfg, k, mode, 0, len(PROMPT))
            pos = len(PROMPT)
            start.wait()
            while not stop.is_set():
                if pos >= m.config.block_size:
                    c.step(prompt_payload, cfg, k, mode, 0, len(PROMPT))
                    pos = len(PROMPT)
                t0 = time.perf_counter()
                c.step(one, cfg, k, mode, pos, 1)
                lat[i].append((time.perf_counter() - t0) * 1e3)
                pos += 1
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    c0 = sum(counts)
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join()
    all_lat = [v for ls in lat for v in ls]
    return {"sessions": sessions, "split": f"{cfg} k={k} {mode}", "tokens_per_s": c0 / elapsed,
            "step_latency_ms_p50": pct(all_lat, 50), "step_latency_ms_p99": pct(all_lat, 99),
            "seconds": elapsed}


def latency_model(m, url: str, token: str, n: int) -> dict:
    cells = []
    for cfg, k, mode in SPLITS:
        base = decode_run(m, url, token, cfg, k, mode, n)
        edge_ms = float(np.median([r["edge_ms"] for r in base]))
        server_ms = float(np.median([r["compute_ms"] for r in base]))
        nbytes = float(np.median([r["bytes_up"] + r["bytes_down"] for r in base]))
        overhead_ms = float(np.median([r["overhead_ms"] for r in base]))
        for bw, rtt in LINKS:
            shaper = LinkShaper(bw, rtt)
            rows = decode_run(m, url, token, cfg, k, mode, n, shaper=shaper)
            predicted = edge_ms + nbytes * 8 / (bw * 1e6) * 1e3 + server_ms + rtt
            measured = float(np.median([r["latency_ms"] for r in rows]))
            with_overhead = predicted + overhead_ms
            cells.append({"split": f"{cfg} k={k} {mode}", "bandwidth_mbps": bw, "rtt_ms": rtt,
                          "edge_ms": edge_ms, "server_compute_ms": server_ms, "bytes_per_token": nbytes,
                          "predicted_ms": predicted, "measured_ms_p50": measured,
                          "measured_ms_p90": pct([r["latency_ms"] for r in rows], 90),
                          "shaped_ms_p50": pct([r["shaped_up_ms"] + r["shaped_down_ms"] for r in rows], 50),
                          "held_ms_p50": pct([r["held_up_ms"] + r["held_down_ms"] for r in rows], 50),
                          "edge_ms_shaped_p50": pct([r["edge_ms"] for r in rows], 50),
                          "server_compute_ms_shaped_p50": pct([r["compute_ms"] for r in rows], 50),
                          "overhead_ms_shaped_p50": pct([r["overhead_ms"] for r in rows], 50),
                          "error": abs(predicted - measured) / measured,
                          "predicted_plus_overhead_ms": with_overhead, "protocol_overhead_ms": overhead_ms,
                          "error_plus_overhead": abs(with_overhead - measured) / measured, "n": len(rows)})
            print(f"  {cells[-1]['split']:<26} {bw:>5g} Mbit/s {rtt:>3g} ms: predicted {predicted:7.2f} ms, "
                  f"measured {measured:7.2f} ms ({100 * cells[-1]['error']:.1f} %)", flush=True)
    return {"cells": cells, "median_error": float(np.median([c["error"] for c in cells])),
            "max_error": float(max(c["error"] for c in cells)),
            "median_error_plus_overhead": float(np.median([c["error_plus_overhead"] for c in cells])),
            "max_error_plus_overhead": float(max(c["error_plus_overhead"] for c in cells))}


def write_md(res: dict, path: Path) -> None:
    o, lm = res["overhead"], res["latency_model"]
    lines = [f"# Split server transport ({res['date']}, {res['machine']})", "",
             f"websockets {res['websockets']}, torch threads: server 1, edge 1; load average "
             f"{res['load_average_start']} at start, {res['load_average_end']} at the end (shared host).", "",
             "## Protocol overhead per decode token (loopback, no shaping)", "",
             "| split | round trip p50 (ms) | server compute p50 (ms) | overhead p50 (ms) | overhead p99 (ms) | "
             "server's share p50 (ms) | bytes up / down |", "|---|---|---|---|---|---|---|"]
    for key, v in o.items():
        if key == "transport_floor_ms":
            continue
        lines.append(f"| {key} | {v['round_trip_ms_p50']:.3f} | {v['server_compute_ms_p50']:.3f} | "
                     f"{v['overhead_ms']['p50']:.3f} | {v['overhead_ms']['p99']:.3f} | "
                     f"{v['server_share_ms']['p50']:.3f} | {v['bytes_up']} / {v['bytes_down']} |")
    f = o["transport_floor_ms"]
    lines += ["", f"Transport floor (an error reply, no compute): p50 {f['p50']:.3f} ms, p99 {f['p99']:.3f} ms.", "",
              "## Throughput (L6-H100-fp32, k=2, int8, one-token steps)", "",
              "| sessions | tokens/s | step latency p50 (ms) | p99 (ms) |", "|---|---|---|---|"]
    for t in res["throughput"]:
        lines.append(f"| {t['sessions']} | {t['tokens_per_s']:.0f} | {t['step_latency_ms_p50']:.2f} | "
                     f"{t['step_latency_ms_p99']:.2f} |")
    lines += ["", "## Latency model under a shaped link (per decode token)", "",
              "predicted = edge compute + bytes·8/bandwidth + server compute + RTT (components: medians of an "
              "unshaped run of the same split; bytes = request + reply). \"+ overhead\" adds that run's median "
              "protocol overhead. Under shaping: the shaper's sleeps as measured (nominal: RTT + what the 1500-byte "
              "burst did not absorb), and the edge / server compute, slower after each idle wait.", "",
              "| split | link | predicted (ms) | + overhead (ms) | measured p50 (ms) | error | error + overhead | "
              "sleeps (ms) | edge / server compute (ms) unshaped → shaped |", "|---|---|---|---|---|---|---|---|---|"]
    for c in lm["cells"]:
        lines.append(f"| {c['split']} | {c['bandwidth_mbps']:g} Mbit/s, {c['rtt_ms']:g} ms | {c['predicted_ms']:.2f} | "
                     f"{c['predicted_plus_overhead_ms']:.2f} | {c['measured_ms_p50']:.2f} | {100 * c['error']:.1f} % | "
                     f"{100 * c['error_plus_overhead']:.1f} % | {c['held_ms_p50']:.2f} | {c['edge_ms']:.2f} / "
                     f"{c['server_compute_ms']:.2f} → {c['edge_ms_shaped_p50']:.2f} / "
                     f"{c['server_compute_ms_shaped_p50']:.2f} |")
    lines += ["", f"Median error {100 * lm['median_error']:.1f} % (largest {100 * lm['max_error']:.1f} %); with the "
              f"protocol overhead {100 * lm['median_error_plus_overhead']:.1f} % (largest "
              f"{100 * lm['max_error_plus_overhead']:.1f} %).", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=400, help="decode tokens per overhead run")
    p.add_argument("--seconds", type=float, default=6.0, help="per throughput run")
    p.add_argument("--cell-tokens", type=int, default=30, help="decode tokens per latency-model cell")
    p.add_argument("--out", default="benchmarks/results/split_server.json")
    a = p.parse_args()
    torch.set_num_threads(1)
    import websockets

    m = load_default()
    with tempfile.TemporaryDirectory() as d:
        token = secrets.token_hex(24)
        tf = Path(d) / "token"
        tf.write_text(token)
        tf.chmod(0o600)
        proc, url = start_server(tf)
        try:
            res = {"date": time.strftime("%Y-%m-%d"),
                   "machine": f"{_cpu_model()}, {os.cpu_count()} logical cores, Python {platform.python_version()}, "
                              f"torch {torch.__version__}",
                   "websockets": websockets.__version__, "load_average_start": [round(x, 2) for x in os.getloadavg()]}
            print("overhead ...", flush=True)
            res["overhead"] = overhead(m, url, token, a.tokens)
            print(json.dumps(res["overhead"], indent=1), flush=True)
            res["throughput"] = []
            for n in (1, 8):
                res["throughput"].append(throughput(m, url, token, n, a.seconds))
                print(res["throughput"][-1], flush=True)
            print("latency model ...", flush=True)
            res["latency_model"] = latency_model(m, url, token, a.cell_tokens)
            res["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        finally:
            proc.terminate()
            proc.wait(10)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    write_md(res, out.with_suffix(".md"))
    print(f"median latency-model error {100 * res['latency_model']['median_error']:.1f} %; wrote {out}")


if __name__ == "__main__":
    main()
