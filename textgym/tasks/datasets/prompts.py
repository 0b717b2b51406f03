"""Prompt building shared by the recipes: the instruction turn, the system turn, word caps."""

from __future__ import annotations

import re

from textgym.tasks.base import ChatMessages


def truncate_words(text: str, max_words: int | None) -> str:
    """The first ``max_words`` whitespace-separated words of ``text``, inner spacing kept.

    >>> truncate_words("one two\\nthree four", 3)
    'one two\\nthree'
    >>> truncate_words("short", None)
    'short'
    """
    if max_words is None:
        return text
    for i, match in enumerate(re.finditer(r"\S+", text)):
        if i + 1 == max_words:
            return text[: match.end()]
    return text


def user_turn(instruction: str, text: str) -> ChatMessages:
    """One user message: the instruction, a blank line, the text (the text alone without one).

    >>> user_turn("Summarize.", "A long story.")
    [{'role': 'user', 'content': 'Summarize.\\n\\nA long story.'}]
    """
    return [{"role": "user", "content": f"{instruction}\n\n{text}" if instruction else text}]


def system_turn(instruction: str) -> ChatMessages:
    """The system message that opens a dialogue prompt; none for an empty instruction.

    >>> system_turn(""), system_turn("Be kind.")
    ([], [{'role': 'system', 'content': 'Be kind.'}])
    """
    return [{"role": "system", "content": instruction}] if instruction else []
