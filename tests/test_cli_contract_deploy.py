"""The command-line contract of ``deploy.py``: ``--help`` works for every subcommand, and bad arguments
fail fast — before any model or policy is loaded — with one line naming the argument, never a traceback.

Exit status (documented in ``deploy.py --help`` and docs/runtime.md): 2 for a bad argument value
(argparse style: ``deploy.py run: error: argument --max-tokens: 0 is out of range; allowed: [1, inf]``),
1 for a missing or unreadable input file or an output that exists without ``--force``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TRACE = REPO / "traces" / "data" / "default" / "phone-00.csv"
RUN = ["run", "--policy", "policy-not-needed.npz", "--no-status"]
REPLAY = [*RUN, "--sensors", f"replay:{TRACE}"]


def deploy(*argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "deploy.py"), *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO))


@pytest.mark.parametrize("argv", [["--help"], ["export", "--help"], ["run", "--help"], ["bench", "--help"]])
def test_help_exits_0(argv: list[str]) -> None:
    r = deploy(*argv)
    assert r.returncode == 0, r.stderr
    assert "usage: deploy.py" in r.stdout and "Traceback" not in r.stderr


BAD = [
    # (argv, exit status, text the one-line message must contain)
    (["export"], 2, "run_dir"),
    (["export", "runs/x", "--device-kind", "toaster"], 2, "--device-kind"),
    (["export", "/nonexistent/run"], 1, "run_dir"),
    (["run"], 2, "--policy"),
    ([*RUN, "--max-tokens", "0"], 2, "--max-tokens"),
    ([*RUN, "--max-tokens", "-5"], 2, "--max-tokens"),
    ([*RUN, "--max-tokens", "many"], 2, "--max-tokens"),
    ([*RUN, "--every-tokens", "-1"], 2, "--every-tokens"),
    ([*RUN, "--every-tokens", "0"], 2, "--every-tokens"),
    ([*RUN, "--every-ms", "-1"], 2, "--every-ms"),
    ([*RUN, "--temperature", "-1"], 2, "--temperature"),
    ([*RUN, "--min-dwell", "-3"], 2, "--min-dwell"),
    ([*RUN, "--battery-saver-min", "-5"], 2, "--battery-saver-min"),
    ([*RUN, "--battery-saver-min", "inf"], 2, "--battery-saver-min"),
    ([*RUN, "--budget-w", "-5"], 2, "--budget-w"),
    ([*RUN, "--deadline-s", "-1"], 2, "--deadline-s"),
    ([*RUN, "--device-kind", "toaster"], 2, "--device-kind"),
    ([*RUN, "--speed", "0"], 2, "--speed"),
    ([*RUN, "--speed", "inf"], 2, "--speed"),
    ([*RUN, "--threads", "0"], 2, "--threads"),
    ([*RUN, "--seed", "-1"], 2, "--seed"),
    ([*RUN, "--capacity-wh", "0"], 2, "--capacity-wh"),
    ([*RUN, "--ambient-c", "500"], 2, "--ambient-c"),
    ([*RUN, "--replay-end", "forever"], 2, "--replay-end"),
    ([*RUN, "--sensors", "bogus"], 2, "--sensors"),
    ([*REPLAY, "--start-s", "1e9"], 2, "--start-s"),
    ([*REPLAY, "--start-s", "-1"], 2, "--start-s"),
    ([*REPLAY, "--objective", "last-until"], 2, "has no deadline; pass --until"),
    ([*RUN, "--objective", "last-until", "--until", "+0"], 2, "after now"),
    ([*RUN, "--split-server", "ws://10.0.0.7:8765", "--split-token-file", "t"], 2, "clear text"),
    ([*RUN, "--sensors", "replay:/nonexistent/trace.csv"], 1, "--sensors"),
    ([*RUN, "--prompts", "/nonexistent/prompts.txt"], 1, "--prompts"),
    ([*RUN, "--checkpoint", "/nonexistent/model.pt"], 1, "--checkpoint"),
    ([*RUN, "--telemetry", "/nonexistent/folder/t.jsonl"], 1, "--telemetry"),
    ([*RUN, "--device-config", "/nonexistent/device.json"], 1, "--device-config"),
    (["bench"], 2, "--policy"),
    (["bench", "--policy", "p.npz", "--decisions", "0"], 2, "--decisions"),
    (["bench", "--policy", "p.npz", "--decisions", "-1"], 2, "--decisions"),
    (["bench", "--policy", "/nonexistent/p.npz", "--decisions", "10"], 1, "--policy"),
]


@pytest.mark.parametrize("argv,code,needle", BAD, ids=[" ".join(a[:1] + a[4:] if a[0] == "run" else a)[:60]
                                                       for a, _, _ in BAD])
def test_bad_arguments_fail_fast_with_one_line(argv: list[str], code: int, needle: str) -> None:
    r = deploy(*argv, timeout=20.0)
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert needle in lines[0] and "error" in lines[0], lines[0]
    if code == 2 and "--" in needle and "required" not in lines[0]:
        assert "allowed" in lines[0] or "choose from" in lines[0] or "use live" in lines[0], lines[0]
    assert r.stdout == ""


def test_existing_outputs_are_refused_without_force(tmp_path: Path) -> None:
    tel = tmp_path / "t.jsonl"
    tel.write_text("keep\n")
    r = deploy(*RUN, "--telemetry", str(tel))
    assert r.returncode == 1 and "already exists" in r.stderr and "--force" in r.stderr
    assert tel.read_text() == "keep\n" and "Traceback" not in r.stderr


def test_serve_split_exits_with_the_servers_status(tmp_path):
    tok = tmp_path / "token"
    tok.write_text("t0ken-" + "3f9a" * 8)
    tok.chmod(0o644)  # world-readable: refused, exit 1
    r = deploy("serve-split", "--token-file", str(tok), "--port", "0")
    assert r.returncode == 1 and "world-readable" in r.stderr
    r = deploy("serve-split", "--token-file", str(tok), "--host", "0.0.0.0")
    assert r.returncode == 2 and "requires TLS" in r.stderr
