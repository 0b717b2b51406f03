"""griffe extension: docstrings' doctest blocks (``>>>`` lines and their output) become
fenced ``pycon`` code, so the spec sheets' examples render as code rather than as Markdown
(where ``[0.5, 1.0]`` in an output line would read as a link)."""

from __future__ import annotations

import re
from typing import Any

import griffe

PROMPT = re.compile(r"^(\s*)>>> ")


def fence_doctests(text: str) -> str:
    """Wrap each run of doctest lines (from a ``>>>`` line to the next blank line, at the
    ``>>>`` line's indentation) in a ```` ```pycon ```` fence; lines inside existing fences are
    left alone."""
    out: list[str] = []
    indent: str | None = None  # the open block's indentation, None outside a block
    in_fence = False
    for line in text.split("\n"):
        if indent is None and line.lstrip().startswith("```"):
            in_fence = not in_fence
        elif indent is None and not in_fence and (match := PROMPT.match(line)):
            indent = match.group(1)
            out.append(f"{indent}```pycon")
        elif indent is not None and not line.strip():
            out.append(f"{indent}```")
            indent = None
        out.append(line)
    if indent is not None:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>> " in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
