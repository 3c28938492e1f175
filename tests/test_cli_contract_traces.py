"""The command-line contract of every traces command, run as subprocesses.

* ``--help`` exits 0.
* A bad argument (unknown flag, value out of range, missing required argument) is a usage error:
  exit 2 and a one-line ``argument --x: ...`` message naming the argument and the allowed range.
* A bad input file (missing, not a trace, a folder without manifest.json) or an output that exists
  without ``--force`` exits 1 with one ``error: ...`` line naming the file.
* Never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
COMMANDS = ["generate", "import", "record", "info", "plot", "build_real", "objectives", "folds"]
DEFAULT_SET = REPO / "traces" / "data" / "default"
PHONE = DEFAULT_SET / "phone-00.csv"
FIX = REPO / "tests" / "fixtures" / "traces"


def run(module: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", f"traces.{module}", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd or REPO, env=env)


def test_every_command_module_exists() -> None:
    present = {p.stem for p in (REPO / "traces").glob("*.py") if not p.stem.startswith("_")}
    mains = {m for m in present if "def main(" in (REPO / "traces" / f"{m}.py").read_text()}
    assert mains == set(COMMANDS)


@pytest.mark.parametrize("module", COMMANDS)
def test_help_exits_0(module: str) -> None:
    res = run(module, "--help")
    assert res.returncode == 0, res.stderr
    assert "usage:" in res.stdout and "Traceback" not in res.stderr


# (module, args, the text the one-line message must name); {tmp} is replaced by a fresh folder.
USAGE_ERRORS = [
    ("generate", ["--seed", "-1"], "--seed"),
    ("generate", ["--seed", "abc"], "--seed"),
    ("generate", ["--scenario", "mars_rover"], "--scenario"),
    ("generate", ["--scenario", "solar_node", "--check"], "--check"),
    ("generate", ["--extra-val", "1"], "--extra-val"),
    ("generate", ["--extra-val", "1", "--scenario", "solar_node", "--out", "x.csv"], "--extra-val"),
    ("generate", ["--extra-val", "-1", "--out", "x"], "--extra-val"),
    ("generate", ["--bogus"], "--bogus"),
    ("import", ["nope", "x", "--out", "{tmp}/o"], "format"),
    ("import", ["auto", "x"], "--out"),
    ("import", ["pvdaq", "x", "--out", "{tmp}/o", "--capacity-wh", "50000"], "--capacity-wh"),
    ("import", ["pvdaq", "x", "--out", "{tmp}/o", "--capacity-wh", "0"], "--capacity-wh"),
    ("import", ["pvdaq", "x", "--out", "{tmp}/o", "--panel-efficiency", "1.5"], "--panel-efficiency"),
    ("import", ["pvdaq", "x", "--out", "{tmp}/o", "--panel-area-m2", "-1"], "--panel-area-m2"),
    ("import", ["pvdaq", "x", "--out", "{tmp}/o", "--peak-w", "nan"], "--peak-w"),
    ("import", ["pvdaq", "x", "--out", "{tmp}/o", "--windows", "-2"], "--windows"),
    ("import", ["pvdaq", "x", "--out", "{tmp}/o", "--window-h", "0"], "--window-h"),
    ("import", ["pvdaq", "x", "--out", "{tmp}/o", "--max-gap-s", "-5"], "--max-gap-s"),
    ("import", ["bandwidth", "x", "--out", "{tmp}/o", "--unit-scale", "furlongs"], "--unit-scale"),
    ("import", ["auto", "x", "--out", "{tmp}/o", "--split", "holdout"], "--split"),
    ("import", ["auto", "x", "--out", "{tmp}/o", "--unit", " "], "--unit"),
    ("record", ["--out", "{tmp}/r.csv", "--interval", "-1"], "--interval"),
    ("record", ["--out", "{tmp}/r.csv", "--interval", "0"], "--interval"),
    ("record", ["--out", "{tmp}/r.csv", "--duration", "0"], "--duration"),
    ("record", ["--out", "{tmp}/r.csv", "--duration", "1", "--interval", "5"], "--duration"),
    ("record", ["--out", "{tmp}/r.csv", "--capacity-wh", "50000"], "--capacity-wh"),
    ("record", ["--out", "{tmp}/r.csv", "--charger-w", "800"], "--charger-w"),
    ("record", ["--out", "{tmp}/r.csv", "--charger-w", "400", "--device-kind", "laptop"], "--charger-w"),
    ("record", ["--out", "{tmp}/r.csv", "--ambient-c", "300"], "--ambient-c"),
    ("record", ["--out", "{tmp}/r.csv", "--bandwidth-mbps", "1e30"], "--bandwidth-mbps"),
    ("record", ["--out", "{tmp}/r.csv", "--device-kind", ""], "--device-kind"),
    ("record", ["--out", "{tmp}/r.png"], "--out"),
    ("record", ["--interval", "1"], "--out"),
    ("info", [], "target"),
    ("info", [str(PHONE), "--bogus"], "--bogus"),
    ("plot", [str(PHONE)], "--out"),
    ("plot", [str(PHONE), "--out", "{tmp}/x.png", "--max-traces", "0"], "--max-traces"),
    ("plot", [str(DEFAULT_SET), "--out", "{tmp}/x.png", "--split", "holdout"], "--split"),
    ("build_real", ["--step-s", "0"], "--step-s"),
    ("build_real", ["--limit", "0"], "--limit"),
    ("build_real", ["--seed", "-3"], "--seed"),
    ("objectives", [str(DEFAULT_SET), "{tmp}/o", "--seed", "-1"], "--seed"),
    ("objectives", [str(DEFAULT_SET)], "out"),
    ("folds", [str(DEFAULT_SET), "--k", "2", "--out", "{tmp}/o"], "--k"),
    ("folds", [str(DEFAULT_SET)], "--out"),
]


def _fill(args: list[str], tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in args]


def _one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("usage:", " "))]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(("module", "args", "names"), USAGE_ERRORS,
                         ids=[f"{m}:{' '.join(a)[:40]}" for m, a, _ in USAGE_ERRORS])
def test_bad_argument_is_a_usage_error(tmp_path: Path, module: str, args: list[str], names: str) -> None:
    res = run(module, *_fill(args, tmp_path))
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    line = _one_error_line(res.stderr)
    assert "error:" in line and names in line, line
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "o").exists()


def _garbage(tmp: Path) -> Path:
    p = tmp / "junk.csv"
    p.write_bytes(bytes(range(256)) * 4)
    return p


def _bom_less_set(tmp: Path) -> Path:
    (tmp / "emptyset").mkdir()
    return tmp / "emptyset"


def _existing(tmp: Path) -> Path:
    p = tmp / "exists.csv"
    p.write_text("mine\n")
    return p


# (module, args builder, the file the one-line message must name)
FILE_ERRORS = [
    ("info", lambda t: [str(t / "missing.csv")], "missing.csv"),
    ("folds", lambda t: [str(_bom_less_set(t)), "--out", str(t / "o")], "manifest.json"),
    ("info", lambda t: [str(_garbage(t))], "junk.csv"),
    ("info", lambda t: [str(_bom_less_set(t))], "manifest.json"),
    ("plot", lambda t: [str(_garbage(t)), "--out", str(t / "x.png")], "junk.csv"),
    ("plot", lambda t: [str(_bom_less_set(t)), "--out", str(t / "x.png")], "manifest.json"),
    ("plot", lambda t: [str(PHONE), "--out", str(_existing(t))], "exists.csv"),
    ("generate", lambda t: ["--scenario", "solar_node", "--out", str(_existing(t))], "exists.csv"),
    ("record", lambda t: ["--out", str(_existing(t)), "--duration", "2"], "exists.csv"),
    ("import", lambda t: ["auto", str(t / "nothing-here"), "--out", str(t / "o")], "nothing-here"),
    ("import", lambda t: ["pvdaq", str(_garbage(t)), "--out", str(t / "o")], "junk.csv"),
    ("import", lambda t: ["linux-power-supply", str(FIX / "linux"), "--out", str(_existing(t))], "exists.csv"),
    ("build_real", lambda t: ["--shared", str(t / "no-such-folder"), "--out", str(t / "o")], "no-such-folder"),
    ("objectives", lambda t: [str(t / "no-such-set"), str(t / "o")], "no-such-set"),
]


@pytest.mark.parametrize(("module", "build", "names"), FILE_ERRORS,
                         ids=[f"{m}:{n}" for m, _, n in FILE_ERRORS])
def test_bad_input_file_exits_1_naming_it(tmp_path: Path, module: str, build, names: str) -> None:
    res = run(module, *build(tmp_path))
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    line = _one_error_line(res.stderr)
    assert line.startswith("error:") and names in line, line
    if (tmp_path / "exists.csv").exists():
        assert (tmp_path / "exists.csv").read_text() == "mine\n"
