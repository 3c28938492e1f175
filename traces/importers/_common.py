"""Shared helpers for importers: tolerant text reading, time parsing, cleaning, seeds."""

from __future__ import annotations

import gzip
import hashlib
import math
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

#: File names never treated as data.
SKIP_SUFFIXES = (".md", ".json", ".py", ".png", ".jpg", ".pdf", ".zip", ".yaml", ".yml", ".txt.md")
SKIP_NAMES = ("readme", "provenance", "license", "upstream_readme")


class ImportFormatError(ValueError):
    """A source file cannot be read as the requested format (message names file, line and fix)."""


def open_text(path: Path) -> str:
    """Reads a (possibly gzipped) text file; undecodable bytes become U+FFFD; BOM dropped."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8", errors="replace")
    return text[1:] if text.startswith("\ufeff") else text


def head_lines(path: Path, n: int = 6, max_bytes: int = 65536) -> list[str]:
    """First ``n`` non-empty lines (reads at most ``max_bytes``; gz aware)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    with opener(path, "rb") as fh:  # type: ignore[operator]
        raw = fh.read(max_bytes)
    text = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
    return [ln for ln in text.splitlines() if ln.strip()][:n]


def is_data_file(path: Path) -> bool:
    """False for docs/metadata files that live beside traces."""
    low = path.name.lower()
    if path.name.startswith(".") or not path.is_file():
        return False
    if any(low.endswith(s) for s in SKIP_SUFFIXES):
        return False
    return not any(low.startswith(s) for s in SKIP_NAMES)


def list_files(path: Path, patterns: Sequence[str] = ("*",)) -> list[Path]:
    """A file itself, or every data file under a folder (recursive, sorted)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    out: set[Path] = set()
    for pat in patterns:
        out.update(p for p in path.rglob(pat) if is_data_file(p))
    return sorted(out)


def split_fields(line: str, delimiter: str | None) -> list[str]:
    """Splits a line on ``delimiter`` (None = any whitespace), stripping quotes and spaces."""
    cells = line.split(delimiter) if delimiter else line.split()
    return [c.strip().strip('"').strip("'").strip() for c in cells]


def sniff_delimiter(lines: Sequence[str]) -> str | None:
    """Comma, tab or semicolon if every sample line has it; else None (whitespace)."""
    for d in (",", "\t", ";"):
        if lines and all(d in ln for ln in lines):
            return d
    return None


def to_float(s: str) -> float:
    """Float or NaN for empty/N/A/garbage cells."""
    try:
        return float(s)
    except (TypeError, ValueError):
        return math.nan


def looks_numeric(s: str) -> bool:
    """True when the cell parses as a finite or NaN-free float."""
    return not math.isnan(to_float(s))


@dataclass
class Table:
    """A parsed text table. ``header`` is None when the file has none; ``line_nos`` 1-based."""

    header: list[str] | None
    rows: list[list[str]]
    line_nos: list[int]
    delimiter: str | None

    def col(self, i: int) -> list[str]:
        """Cells of column ``i`` ('' where a row is short)."""
        return [r[i] if i < len(r) else "" for r in self.rows]

    def floats(self, i: int) -> np.ndarray:
        """Column ``i`` as float64 (NaN where not numeric)."""
        return np.array([to_float(c) for c in self.col(i)], dtype=np.float64)


def read_table(path: Path, *, header: bool | None = None) -> Table:
    """Reads a delimited text table tolerantly.

    Header detection (``header=None``): the first line is a header when most of its cells are
    non-numeric (an empty first cell, as pandas writes for an index, counts as a name). Comment
    lines (``#``) and blank lines are skipped; rows keep their 1-based line numbers.
    """
    text = open_text(path)
    lines = text.splitlines()
    body = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("#")]
    if not body:
        raise ImportFormatError(f"{path.name}: no data lines")
    delim = sniff_delimiter([ln for _, ln in body[:20]])
    first = split_fields(body[0][1], delim)
    if header is None:
        # A header row has fewer numeric cells than the data row below it (works for ',irrad'
        # pandas headers, named CSV headers, and header-less numeric or mixed rows alike).
        n_first = sum(looks_numeric(c) for c in first)
        if len(body) > 1:
            n_second = sum(looks_numeric(c) for c in split_fields(body[1][1], delim))
            header = n_first < n_second
        else:
            header = n_first == 0
    hdr = first if header else None
    start = 1 if header else 0
    rows = [split_fields(ln, delim) for _, ln in body[start:]]
    return Table(header=hdr, rows=rows, line_nos=[n for n, _ in body[start:]], delimiter=delim)


def find_column(header: Sequence[str], aliases: Iterable[str], *, contains: bool = False) -> int | None:
    """Index of the first header cell matching an alias (case/space/underscore-insensitive)."""

    def norm(s: str) -> str:
        return re.sub(r"[\s_\-\.]+", "", s.lower())

    for a in aliases:  # exact spelling first: '_id' must not shadow 'ID'
        if a in header:
            return list(header).index(a)
    names = [norm(h) for h in header]
    for a in aliases:
        na = norm(a)
        for i, n in enumerate(names):
            if n == na or (contains and na in n):
                return i
    return None


# --- time ---------------------------------------------------------------------------------------
_TIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%d %H:%M%z", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S",
    "%d.%m.%Y %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y%m%d %H:%M:%S", "%H:%M:%S", "%H:%M",
)


def _parse_one(s: str) -> datetime | None:
    s = s.strip().replace("T", " ") if "T" in s[:20] and "-" in s[:10] else s.strip()
    try:
        return datetime.fromisoformat(s)
    except ValueError:
        pass
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(s, fmt)
        except ValueError:
            continue
    return None


def parse_times(cells: Sequence[str]) -> tuple[np.ndarray, str]:
    """Parses a time column to seconds (float64; NaN where unparseable).

    Numbers: Unix ms when > 1e11, else seconds (Unix or relative). Strings: ISO 8601 (with or
    without offset), ``M/D/YYYY H:MM``, ``HH:MM:SS`` (time of day: midnight wraps are unwrapped).
    Naive date-times are taken as UTC: only differences and the clock hour are used.

    Returns:
        (seconds, kind) with kind in ``"unix_ms"``, ``"seconds"``, ``"datetime"``, ``"clock"``.
    """
    nums = np.array([to_float(c) for c in cells])
    if np.isfinite(nums).mean() > 0.9:
        if np.nanmedian(nums) > 1e11:
            return nums / 1000.0, "unix_ms"
        return nums, "seconds"
    out = np.full(len(cells), np.nan)
    clock_only = True
    for i, c in enumerate(cells):
        d = _parse_one(c) if c else None
        if d is None:
            continue
        if d.year != 1900:
            clock_only = False
        if d.tzinfo is None:
            d = d.replace(tzinfo=UTC)
        out[i] = d.timestamp()
    if clock_only:
        # Time of day only: unwrap backwards jumps of more than 12 h as a new day.
        fin = np.isfinite(out)
        vals = out[fin]
        jumps = np.concatenate([[0.0], np.cumsum((np.diff(vals) < -43200.0) * 86400.0)])
        out[fin] = vals + jumps
        return out, "clock"
    return out, "datetime"


# --- cleaning -----------------------------------------------------------------------------------
def clean_order(t: np.ndarray, *cols: np.ndarray, source: str = "") -> tuple[np.ndarray, list[np.ndarray], int]:
    """Drops rows with NaN time, sorts by time, drops duplicate times (keeps the first).

    A dropped duplicate whose values differ from the kept row's is not a repeated sample but another one at the
    same clock time: a clock set back, typically naive local times across the autumn daylight-saving change. That
    is warned about when the caller names the ``source`` file (the importers of clock-stamped logs do), since the
    rows in between are then out of order.

    Returns:
        (t, cols, n_dropped).
    """
    ok = np.isfinite(t)
    order = np.argsort(t[ok], kind="stable")
    t2 = t[ok][order]
    cs = [c[ok][order] for c in cols]
    keep = np.concatenate([[True], np.diff(t2) > 0]) if t2.size else np.zeros(0, dtype=bool)
    dup = np.flatnonzero(~keep)
    if dup.size and cols and source:  # the importers of clock-stamped logs name their file to be warned
        prev = np.maximum.accumulate(np.where(keep, np.arange(t2.size), 0))  # the kept row each duplicate repeats
        differ = [j for j in dup if any(not (c[j] == c[prev[j]] or (c[j] != c[j] and c[prev[j]] != c[prev[j]]))
                                        for c in cs)]
        if differ:
            j = differ[0]
            warnings.warn(f"{source}: {len(differ)} row(s) share a time with an earlier row but "
                          f"carry other values (the first at "
                          f"{datetime.fromtimestamp(float(t2[j]), UTC):%Y-%m-%d %H:%M:%S} as "
                          "logged): "
                          "a clock set back, as naive local times across a daylight-saving change; the later ones "
                          "were dropped and the rows around them may be out of order; fix: log UTC or times with "
                          "their offset (2020-10-25T02:30:00+01:00)", stacklevel=2)
    dropped = int((~ok).sum() + (~keep).sum())
    return t2[keep], [c[keep] for c in cs], dropped


def segments_at_gaps(t: np.ndarray, max_gap_s: float) -> list[slice]:
    """Slices of ``t`` between gaps longer than ``max_gap_s``."""
    if t.size == 0:
        return []
    cut = np.flatnonzero(np.diff(t) > max_gap_s) + 1
    bounds = np.concatenate([[0], cut, [t.size]])
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def stable_seed(*parts: str) -> int:
    """A seed from text (e.g. the file name): same file -> same seeded demand."""
    return int(hashlib.sha256("|".join(parts).encode()).hexdigest()[:8], 16)


def slug(text: str) -> str:
    """File-name-safe lowercase id."""
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s or "trace"


def stem_of(path: Path) -> str:
    """File name without .gz and the last extension."""
    name = path.name
    if name.endswith(".gz"):
        name = name[:-3]
    return name.rsplit(".", 1)[0] if "." in name else name


def parse_bool(cells: Sequence[str]) -> np.ndarray:
    """true/false, 1/0, on/off, Awake/Dozing/Asleep -> 1/0 (NaN when unknown)."""
    on = {"true", "1", "yes", "on", "awake", "interactive", "screen_on", "t", "y"}
    off = {"false", "0", "no", "off", "dozing", "asleep", "screen_off", "f", "n"}
    out = np.full(len(cells), np.nan)
    for i, c in enumerate(cells):
        low = c.strip().lower()
        if low in on:
            out[i] = 1.0
        elif low in off:
            out[i] = 0.0
        else:
            v = to_float(low)
            if math.isfinite(v):
                out[i] = 1.0 if v > 0 else 0.0
    return out


def ffill(x: np.ndarray, default: float) -> np.ndarray:
    """Forward-fills NaN (leading NaN -> first finite value, or ``default``)."""
    x = np.array(x, dtype=np.float64)
    fin = np.isfinite(x)
    if not fin.any():
        return np.full(x.shape, default)
    idx = np.where(fin, np.arange(x.size), 0)
    np.maximum.accumulate(idx, out=idx)
    out = x[idx]
    first = int(np.flatnonzero(fin)[0])
    out[:first] = x[first]
    return out


def moving_average(x: np.ndarray, n: int) -> np.ndarray:
    """Centred moving average over ``n`` samples (edges use the available samples)."""
    if n <= 1 or x.size < 2:
        return x.copy()
    k = np.ones(min(n, x.size))  # np.convolve 'same' returns the longer length otherwise
    num = np.convolve(x, k, mode="same")
    den = np.convolve(np.ones_like(x), k, mode="same")
    return num / den


def read_provenance_license(folder: Path) -> str | None:
    """The ``License:`` statement of the nearest PROVENANCE.md at or above ``folder`` (3 levels)."""
    for p in [folder, *list(folder.parents)[:3]]:
        f = p / "PROVENANCE.md"
        if f.exists():
            for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
                m = re.search(r"license\s*:\s*(.+)", line, flags=re.I)
                if m:
                    return re.sub(r"[*`]", "", m.group(1)).strip()[:200]
    return None


Progress = Callable[[Iterable], Iterable]


def device_side_power(kind: str, measured_w: np.ndarray, charge_w: np.ndarray,
                      plugged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(base_load_w, supply_w)`` of a trace from a battery log, in the env's own terms.

    ``measured_w`` is the whole device's consumption as the battery log shows it (the discharge power while
    unplugged, an estimate while plugged), ``charge_w`` the power stored in the battery while plugged. The env
    (``runtime.dynamics.step_core``) draws ``idle + base_load_w + LLM`` and stores ``charge_efficiency`` of a
    surplus ``supply − draw``. So that a replay with the model off reproduces the log:

    * ``base_load_w = max(measured − idle, 0)``: the measured consumption already holds the platform's idle
      power, which the env adds itself (``DEVICES[kind].idle_power_w``);
    * ``supply_w = charge / η + measured`` while plugged (0 unplugged): the surplus the env stores at efficiency
      ``η`` is then the charge the log saw.
    """
    from runtime.dynamics import device_constants

    d = device_constants(kind)
    measured_w = np.asarray(measured_w, dtype=float)
    on = np.asarray(plugged, dtype=float) >= 0.5
    base = np.maximum(measured_w - d.idle_power_w, 0.0)
    supply = np.where(on, np.maximum(np.asarray(charge_w, dtype=float), 0.0) / d.charge_efficiency + measured_w, 0.0)
    return base, supply
