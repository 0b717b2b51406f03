"""Rewards in TRL's calling convention and back: :func:`to_trl`, :func:`from_trl`.

TRL's trainers (``GRPOTrainer``, ``RLOOTrainer``) call each reward function by keyword::

    fn(prompts=..., completions=..., completion_ids=..., **columns) -> list[float | None]

where ``columns`` are the data set's other columns, one list entry per sample, plus TRL's
runtime objects (``trainer_state``, ``log_extra``, ``log_metric``, ``environments``).
Prompts and completions are strings, or message lists (``[{"role": ..., "content": ...}]``)
for conversational data sets. textgym calls ``fn(prompts, completions, references, **meta)``
with strings and wants one float per sample.

References travel in a column. :func:`to_trl` reads the first of :data:`REFERENCE_COLUMNS`
that the data set has (``"references"``, ``"reference"``, ``"solution"``, ``"summary"``),
or the column named by ``reference_column``; a string entry becomes a one-reference list.
:func:`from_trl` writes them back under ``reference_column`` (default ``"references"``): a
list per sample for a plural name, the first reference for any other name (TRL's
``accuracy_reward`` reads ``solution`` as one string).

Neither direction imports TRL.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from textgym.rewards.base import RewardFn, RewardSpec, make_reward, reward_name, validate_rewards

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

REFERENCE_COLUMNS: tuple[str, ...] = ("references", "reference", "solution", "summary")
"""Data set columns :func:`to_trl` reads references from, first present wins."""

TRL_RUNTIME_KEYS: frozenset[str] = frozenset(
    {"trainer_state", "log_extra", "log_metric", "environments"}
)
"""Keyword arguments TRL adds beside the data set's columns; :func:`to_trl` drops them."""

TRLRewardFunc = Callable[..., list[float]]
"""``fn(prompts, completions, completion_ids=None, **columns) -> list[float]``, called by keyword."""


def is_trl_style(fn: Any) -> bool:
    """True when ``fn``'s signature has a ``completions`` parameter and no ``references`` one.

    This is the rule :func:`textgym.rewards.make_reward` uses to wrap a callable with
    :func:`from_trl`. A callable whose signature cannot be read is taken as textgym-style.

    >>> is_trl_style(lambda completions, **kwargs: [0.0] * len(completions))
    True
    >>> is_trl_style(lambda prompts, completions, references, **meta: None)
    False
    >>> is_trl_style(lambda p, c, r, **m: None)
    False
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False
    return "completions" in params and "references" not in params


def _content_text(content: Any) -> str:
    """A message's text: its string content, or its text parts joined (multimodal messages)."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"
        )
    raise TypeError(f"message content must be a string or a list of parts, got {content!r}")


def message_text(item: str | Sequence[Mapping[str, Any]], role: str) -> str:
    """The text of a prompt or completion: a string as is, a message list's last ``role`` message.

    For a message list without a ``role`` message the last message is taken.

    >>> message_text([{"role": "system", "content": "Be brief."},
    ...               {"role": "user", "content": "Hi"}], "user")
    'Hi'
    >>> message_text([{"role": "assistant", "content": [{"type": "text", "text": "Yo"}]}], "assistant")
    'Yo'
    """
    if isinstance(item, str):
        return item
    messages = list(item)
    if not messages or not all(isinstance(m, Mapping) and "content" in m for m in messages):
        raise TypeError(
            f"expected a string or a non-empty list of {{'role', 'content'}} messages, got {item!r}"
        )
    chosen = next((m for m in reversed(messages) if m.get("role") == role), messages[-1])
    return _content_text(chosen["content"])


def _as_references(values: Sequence[Any], column: str) -> list[list[str]]:
    refs = []
    for v in values:
        if isinstance(v, str):
            refs.append([v])
        elif isinstance(v, Sequence) and all(isinstance(x, str) for x in v):
            refs.append(list(v))
        else:
            raise TypeError(
                f"reference column {column!r} must hold a string or a list of strings per sample, got {v!r}"
            )
    return refs


def to_trl(reward: RewardSpec, reference_column: str | None = None) -> TRLRewardFunc:
    """A TRL reward function computing the textgym reward ``reward``.

    ``reward`` is anything :func:`textgym.rewards.make_reward` accepts (``"rouge_l"``, a mix, a
    callable). Message-list prompts become their last user message, message-list completions
    their last assistant message. References come from ``reference_column``, else from the
    first of :data:`REFERENCE_COLUMNS` present, else None; the other columns become ``meta``
    (TRL's runtime keys are dropped). The function is named after the reward, which is the
    name TRL logs it under (``rewards/<name>/mean``).

    >>> fn = to_trl("keyword_coverage")
    >>> fn.__name__
    'keyword_coverage'
    >>> fn(prompts=["Name a fruit."], completions=[[{"role": "assistant", "content": "An apple."}]],
    ...    completion_ids=None, keywords=[["apple", "pear"]], trainer_state=None)
    [0.5]
    """
    fn = make_reward(reward)
    name = reward_name(fn)
    if reference_column == "":
        raise ValueError("reference_column must be a column name, or None to look one up")

    def trl_reward(
        prompts: Sequence[Any],
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]] | None = None,
        **columns: Any,
    ) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(
                f"{name}: got {len(prompts)} prompts for {len(completions)} completions"
            )
        meta = {k: v for k, v in columns.items() if k not in TRL_RUNTIME_KEYS}
        column = reference_column or next((c for c in REFERENCE_COLUMNS if c in meta), None)
        if reference_column is not None and column not in meta:
            raise KeyError(
                f"{name}: reference column {reference_column!r} is not among the data set "
                f"columns {sorted(meta)}"
            )
        references = _as_references(meta.pop(column), column) if column is not None else None
        values = fn(
            [message_text(p, "user") for p in prompts],
            [message_text(c, "assistant") for c in completions],
            references,
            **meta,
        )
        return validate_rewards(values, len(completions), name).tolist()

    trl_reward.__name__ = trl_reward.__qualname__ = name
    trl_reward.__doc__ = f"The textgym reward {name!r} in TRL's calling convention."
    return trl_reward


class TRLReward:
    """A textgym reward calling a TRL-style reward function (built by :func:`from_trl`).

    ``meta`` keys become keyword columns; references go under ``reference_column`` (a list per
    sample for a plural name such as ``"references"``, the first reference otherwise). With
    ``conversational=True`` prompts and completions are passed as one-message lists (user and
    assistant); with a ``tokenizer``, ``completion_ids`` are the completions' token ids, else
    None. A ``None`` score (TRL's "does not apply") counts 0, as TRL's sum over rewards does.
    """

    def __init__(
        self,
        fn: TRLRewardFunc,
        reference_column: str = "references",
        conversational: bool = False,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"from_trl needs a callable reward function, got {type(fn).__name__}")
        if not reference_column:
            raise ValueError("reference_column must be a non-empty column name, e.g. 'references'")
        self.fn = fn
        self.name = reward_name(fn)
        self.reference_column = reference_column
        self.conversational = conversational
        self.tokenizer = tokenizer

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray:
        columns = dict(meta)
        if references is not None:
            plural = self.reference_column.endswith("s")
            columns[self.reference_column] = [
                list(r) if plural else (r[0] if r else "") for r in references
            ]
        ids = (
            self.tokenizer(list(completions), add_special_tokens=False)["input_ids"]
            if self.tokenizer is not None
            else None
        )
        if self.conversational:
            trl_prompts: list[Any] = [[{"role": "user", "content": p}] for p in prompts]
            trl_completions: list[Any] = [
                [{"role": "assistant", "content": c}] for c in completions
            ]
        else:
            trl_prompts, trl_completions = list(prompts), list(completions)
        out = self.fn(
            prompts=trl_prompts, completions=trl_completions, completion_ids=ids, **columns
        )
        try:
            values = [0.0 if v is None else v for v in out]
        except TypeError as exc:
            raise TypeError(
                f"TRL reward {self.name!r} returned {type(out).__name__}, not a list of floats"
            ) from exc
        return validate_rewards(values, len(completions), self.name)

    def __repr__(self) -> str:
        return f"TRLReward({self.name})"


def from_trl(
    fn: TRLRewardFunc,
    reference_column: str = "references",
    conversational: bool = False,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> RewardFn:
    """The textgym reward calling the TRL reward function ``fn`` (a :class:`TRLReward`).

    >>> def reward_len(completions, **kwargs):
    ...     return [-abs(20 - len(c)) for c in completions]
    >>> from_trl(reward_len)(["p", "p"], ["short", "x" * 20], None).tolist()
    [-15.0, 0.0]
    >>> def accuracy(completions, solution, **kwargs):
    ...     return [float(c.strip() == s) for c, s in zip(completions, solution)]
    >>> from_trl(accuracy, reference_column="solution")(["2+2?"], ["4"], [["4", "four"]]).tolist()
    [1.0]
    """
    return TRLReward(fn, reference_column, conversational, tokenizer)
