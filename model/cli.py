"""cleanrl-style command lines from dataclasses: each field's docstring becomes its --help."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap


def field_docs(cls) -> dict[str, str]:
    """The string literal under each dataclass field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body, docs = tree.body[0].body, {}
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = str(b.value.value)
    return docs


def _add_fields(p: argparse.ArgumentParser, cls, default_obj, prefix: str, dests: dict) -> None:
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if default_obj is not None:
            default = getattr(default_obj, f.name)
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(default):  # nested: --env.step-s, --env.weights.death (tyro's style)
            _add_fields(p, type(default), default, f"{name}.", dests)
            continue
        flag = "--" + name.replace("_", "-")
        dest = name.replace(".", "__")
        dests[dest] = name
        doc = docs.get(f.name)
        if doc:  # a docstring is prose, not an argparse template: "100 % accuracy" must print as written
            doc = doc.replace("%", "%%")
        if isinstance(default, bool):
            p.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=default, help=doc)
        elif default is None:
            p.add_argument(flag, dest=dest, default=None, help=doc)
        else:
            p.add_argument(flag, dest=dest, type=type(default), default=default, help=doc)


def _build(cls, values: dict, prefix: str = ""):
    kw = {}
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if dataclasses.is_dataclass(default):
            kw[f.name] = _build(type(default), values, f"{name}.")
        else:
            kw[f.name] = values[name]
    try:
        return cls(**kw)
    except ValueError as exc:
        if not prefix:
            raise
        # a nested dataclass validates itself with its own field names: say them as the flags
        import re

        msg = str(exc)
        for f in sorted(dataclasses.fields(cls), key=lambda f: -len(f.name)):
            msg = re.sub(rf"(?<![\w.-]){re.escape(f.name)}\b", "--" + (prefix + f.name).replace("_", "-"), msg)
        raise ValueError(msg) from None


def parse_dataclass_args(cls, argv: list[str] | None = None, description: str | None = None):
    """Parse ``argv`` into an instance of dataclass ``cls`` (bool fields become --flag / --no-flag;
    fields that are dataclasses themselves become dotted flags, e.g. ``--env.step-s``)."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    dests: dict[str, str] = {}
    _add_fields(p, cls, None, "", dests)
    ns = vars(p.parse_args(argv))
    try:
        return _build(cls, {dests[d]: v for d, v in ns.items()})
    except ValueError as exc:  # a dataclass's own validation (e.g. EnvParams): say it as a usage error
        p.error(str(exc))


# ---- argparse types: a bad value is a usage error (exit 2) naming the allowed range -------------

def _num(kind: type, lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False):
    """An argparse ``type=`` that parses ``kind`` and checks ``lo ≤ x ≤ hi`` (open ends if asked)."""
    import math

    lb = "(" if lo_open else "["
    rb = ")" if hi_open else "]"
    rng = f"{lb}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{rb}"

    def parse(text: str):
        try:
            x = kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}; "
                                             f"allowed: {rng}") from None
        if kind is float and not math.isfinite(x):
            raise argparse.ArgumentTypeError(f"{text!r} is not finite; allowed: {rng}")
        if lo is not None and (x < lo or (lo_open and x == lo)) or hi is not None and (x > hi or (hi_open and x == hi)):
            raise argparse.ArgumentTypeError(f"{text} is out of range; allowed: {rng}")
        return x

    parse.__name__ = f"{kind.__name__} in {rng}"
    return parse


def int_in(lo: int | None = None, hi: int | None = None):
    """Integer in [lo, hi]."""
    return _num(int, lo, hi)


def float_in(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False):
    """Finite float in [lo, hi] (``lo_open``/``hi_open`` exclude the ends)."""
    return _num(float, lo, hi, lo_open, hi_open)


positive_int = int_in(1)
nonneg_int = int_in(0)
positive_float = float_in(0.0, None, lo_open=True)
nonneg_float = float_in(0.0)


def check_value(flag: str, value, parse):
    """``value`` (already a Python value, e.g. a dataclass field) checked with an argparse range
    type such as ``int_in(0)``; returns the parsed value.

    Raises:
        ValueError: ``argument FLAG: ... allowed: [lo, hi]`` (``parse_dataclass_args`` turns it into
            a usage error, exit 2).
    """
    if isinstance(value, bool):
        raise ValueError(f"argument {flag}: {value!r} is not a number")
    try:
        return parse(str(value))
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"argument {flag}: {exc}") from None
