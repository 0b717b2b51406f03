"""Docstrings of dataclass fields (the string right below each field), for ``--help`` texts.

A config dataclass documents each field in place; the command line reads those strings, so the
code and ``--help`` say the same thing.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field of ``cls`` and its bases.

    >>> from textgym.feedback.reward_model import RewardModelConfig
    >>> field_docs(RewardModelConfig)["epochs"]
    'Passes over the training set (fractions allowed).'
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = nxt.value.value
    return docs
