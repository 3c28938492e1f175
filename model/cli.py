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
    return cls(**kw)


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
