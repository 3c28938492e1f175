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


def parse_dataclass_args(cls, argv: list[str] | None = None, description: str | None = None):
    """Parse ``argv`` into an instance of dataclass ``cls`` (bool fields become --flag / --no-flag)."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        flag = f"--{f.name.replace('_', '-')}"
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=docs.get(f.name))
        elif default is None:
            p.add_argument(flag, default=None, help=docs.get(f.name))
        else:
            p.add_argument(flag, type=type(default), default=default, help=docs.get(f.name))
    return cls(**vars(p.parse_args(argv)))
