"""Rewards that degenerate text cannot win: a reference LM's fluency, and keyword sentences.

:class:`LMFluency` scores each completion by the reference LM's log-probability of it as a
whole assistant message (its closing end-of-message token included), summed over the tokens
and divided by its number of WORDS, mapped linearly onto [0, 1]. :class:`KeywordSentence`
(the keywords task's default reward) multiplies keyword coverage by that fluency and by the
fraction of distinct word trigrams.

Why this score. Measured with SmolLM2-135M-Instruct on 8 keyword prompts (``make_table`` in
``benchmarks/keyword_fluency.py``; nats):

* the log-prob conditional on the prompt cannot tell a list from a sentence: copying the
  prompt's words is cheap, and "Duck, Lion, Cook" is likelier than a real sentence (-2.4 vs
  -2.7 per token);
* the unconditional mean per TOKEN separates them by 0.06 at the worst pair: the commas of a
  list are cheap tokens that dilute the 10-15 nats each keyword costs;
* per WORD, a keyword's cost is shared by the few words of a list but by the ten cheap words of
  a sentence: sentences score -6.1 to -4.2 per word, lists of the same words -11.3 or lower;
* a sentence cut mid-way is 18 to 29 nats unlikely to end there, a whole one 2 to 5: the
  end token's log-prob gets its own ramp, from 0 at -12 to 1 at -6, so that a long completion
  cut at the token limit cannot hide its unlikely end among many cheap words;
* repeated words are likely under any LM (the model predicts the loop), hence the distinct
  trigram factor.

The fluency ramps from 0 at ``floor`` (-9) to 1 at ``full`` (-6): the 8 sentences of the table
earn 0.96 to 1 and every list 0 (the closest list is 2.2 nats per word below the floor); a
longer sentence gains nothing once it is fluent. A short sentence of rare words can fall
below ``full`` ("She will teach us to fly an orange kite.": -7.0, fluency 0.66). What the
score does not catch: keywords joined by filler ("The duck and the lion and the cook.", -6.9
to -5.0 per word, fluency 0.7 to 1).
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

import numpy as np

from textgym.rewards.base import ComponentReward, register_reward
from textgym.rewards.metrics import RepetitionPenalty, SoftKeywordCoverage

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

DEFAULT_MODEL = "smollm2-135m"
_WORD = re.compile(r"[^\W_]+")
_MARK = "\x00completion\x00"


@functools.lru_cache(maxsize=2)
def _shared_lm(name: str, device: str | None) -> torch.nn.Module:
    """One frozen copy of a named LM per process and device: every env of a vector shares it."""
    from textgym.reference import load_reference

    return load_reference(name, device)


def message_frame(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], int]:
    """``(header ids, end id)``: what opens an assistant message, and the token that ends it.

    The header is what the tokenizer's chat template puts before an assistant message, after
    the last EOS token there (a default system turn is dropped: SmolLM2's makes lists likelier,
    3.2 instead of 5.1 nats per word below the worst sentence), else the BOS token, else a
    newline. The end is the EOS token, the token that ends an episode.

    >>> from textgym.models import shared_tokenizer
    >>> tok = shared_tokenizer("smollm2-135m")
    >>> header, end = message_frame(tok)
    >>> tok.decode(header), tok.decode([end])
    ('<|im_start|>assistant\\n', '<|im_end|>')
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("fluency: the tokenizer has no EOS token to end a message with")
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(
            [{"role": "assistant", "content": _MARK}], tokenize=False
        )
        head = rendered.split(_MARK)[0].rsplit(tokenizer.eos_token, 1)[-1].lstrip("\n")
    else:
        head = tokenizer.bos_token or "\n"
    return tokenizer(head, add_special_tokens=False)["input_ids"], int(tokenizer.eos_token_id)


class LMFluency:
    """A reference LM's log-probability per word of each completion, and of its end, in [0, 1].

    ``per_word = (log p(completion tokens, then EOS | message header)) / number of words``
    under ``model``, NOT conditioned on the prompt (which makes a copied list of its words
    likely), and ``end = log p(EOS | header, completion)``. The score is
    ``ramp(per_word, floor, full) * ramp(end, end_floor, end_full)`` with
    ``ramp(x, a, b) = clip((x - a) / (b - a), 0, 1)``. A completion with no word scores 0. All
    completions of a call go through one forward (or ``batch_size`` rows per forward).

    Args:
        model: a causal LM: a name, path or alias for :func:`textgym.models.load_model`, or a
            module (default SmolLM2-135M-Instruct). Loaded on first use, once per process.
        tokenizer: its tokenizer (name, path or object); default: ``model`` when that is a name.
        floor: the per-word log-prob (nats) that scores 0.
        full: the per-word log-prob that scores 1 (> ``floor``). The defaults come from the
            table in this module's docstring (SmolLM2-135M-Instruct); measure again for
            another LM.
        end_floor: the end token's log-prob that scores 0 (a text cut mid-way).
        end_full: the end token's log-prob that scores 1 (> ``end_floor``).
        batch_size: rows per forward (>= 1), or None for every row of a call in one.
        device: where a named model runs (default CPU).

    >>> from textgym.models import shared_tokenizer, tiny_model
    >>> tok = shared_tokenizer("smollm2-135m")
    >>> fluency = LMFluency(model=tiny_model(tok), tokenizer=tok)
    >>> fluency(["p", "p"], ["", "..."], None).tolist()  # no word: 0 without a forward
    [0.0, 0.0]
    >>> fluency.per_word(["a b", "a"]).shape
    (2,)
    """

    name = "lm_fluency"

    def __init__(
        self,
        *,
        model: str | torch.nn.Module = DEFAULT_MODEL,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
        floor: float = -9.0,
        full: float = -6.0,
        end_floor: float = -12.0,
        end_full: float = -6.0,
        batch_size: int | None = None,
        device: str | None = None,
    ) -> None:
        for label, value in (
            ("floor", floor),
            ("full", full),
            ("end_floor", end_floor),
            ("end_full", end_full),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"fluency: {label} must be a number of nats, got {value!r}")
        for low, high, unit in ((floor, full, ""), (end_floor, end_full, "end_")):
            if not -float("inf") < low < high < float("inf"):
                raise ValueError(
                    f"fluency: need finite {unit}floor < {unit}full (nats), got "
                    f"{unit}floor={low!r}, {unit}full={high!r}"
                )
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"fluency: batch_size must be an int >= 1 or None, got {batch_size!r}")
        if tokenizer is None:
            if not isinstance(model, str):
                raise ValueError("fluency: pass tokenizer= when model is a module, not a name")
            tokenizer = model
        if isinstance(tokenizer, str):
            from textgym.models import shared_tokenizer

            tokenizer = shared_tokenizer(tokenizer)
        self.model_name = model if isinstance(model, str) else type(model).__name__
        self._model = model
        self.device = device
        self.tokenizer = tokenizer
        self.header, self.end = message_frame(tokenizer)
        self.floor = float(floor)
        self.full = float(full)
        self.end_floor = float(end_floor)
        self.end_full = float(end_full)
        self.batch_size = batch_size

    @property
    def model(self) -> torch.nn.Module:
        """The reference LM, loaded on first use (building the reward stays cheap)."""
        if isinstance(self._model, str):
            self._model = _shared_lm(self._model, self.device)
        return self._model

    def message_logprobs(self, texts: list[str]) -> list[np.ndarray]:
        """Per-token log-probs of each text's tokens and then EOS, after the message header."""
        import torch

        from textgym.lm import sequence_logprobs

        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        rows = [self.header + ids + [self.end] for ids in encoded]
        out: list[np.ndarray] = []
        device = next(self.model.parameters()).device
        step = self.batch_size or max(1, len(rows))
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            width = max(len(r) for r in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            targets = torch.zeros(len(chunk), width, dtype=torch.bool)
            for i, row in enumerate(chunk):  # left-padded, as every textgym forward
                ids[i, width - len(row) :] = torch.tensor(row)
                mask[i, width - len(row) :] = 1
                targets[i, width - len(row) + len(self.header) :] = True
            with torch.no_grad():
                lp = sequence_logprobs(self.model, ids.to(device), mask.to(device), targets)
            flat = lp.double().cpu().numpy()
            offset = 0
            for row in chunk:
                n = len(row) - len(self.header)
                out.append(flat[offset : offset + n])
                offset += n
        return out

    def measure(self, completions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(per_word, end)`` (B,) each: the log-prob per word of each completion as a whole
        message, and that of its end token; -inf for a completion with no word."""
        texts = [c.strip() for c in completions]
        words = np.array([len(_WORD.findall(t)) for t in texts])
        per_word, end = np.full(len(texts), -np.inf), np.full(len(texts), -np.inf)
        scored = np.flatnonzero(words > 0)
        if scored.size:
            logprobs = self.message_logprobs([texts[i] for i in scored])
            per_word[scored] = [lp.sum() / words[i] for i, lp in zip(scored, logprobs, strict=True)]
            end[scored] = [lp[-1] for lp in logprobs]
        return per_word, end

    def per_word(self, completions: list[str]) -> np.ndarray:
        """Log-prob per word (B,) of each completion as a whole message; -inf with no word."""
        return self.measure(completions)[0]

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray:
        per_word, end = self.measure(list(completions))
        words = np.clip((per_word - self.floor) / (self.full - self.floor), 0.0, 1.0)
        ending = np.clip((end - self.end_floor) / (self.end_full - self.end_floor), 0.0, 1.0)
        return (words * ending).astype(np.float32)

    def __repr__(self) -> str:
        return (
            f"LMFluency(model={self.model_name!r}, floor={self.floor:g}, full={self.full:g}, "
            f"end_floor={self.end_floor:g}, end_full={self.end_full:g})"
        )


class KeywordSentence(ComponentReward):
    """Keyword coverage that only a fluent sentence earns: ``coverage * fluency * distinct``.

    * ``keyword_coverage_soft``: :class:`~textgym.rewards.metrics.SoftKeywordCoverage`;
    * ``lm_fluency``: :class:`LMFluency` (a list of the keywords scores 0);
    * ``distinct``: the fraction of distinct word trigrams, ``1 +``
      :class:`~textgym.rewards.metrics.RepetitionPenalty` ``(n=3)`` (a loop scores low).

    Each factor is reported as a component (``train/reward/<name>`` while training). The
    result is in [0, 1]. ``fluency`` options (``model``, ``floor``, ...) go to
    :class:`LMFluency`.

    >>> from textgym.models import shared_tokenizer, tiny_model
    >>> tok = shared_tokenizer("smollm2-135m")
    >>> reward = KeywordSentence(model=tiny_model(tok), tokenizer=tok)
    >>> sorted(reward.components(["p"], ["Duck"], None, keywords=[["duck"]]))
    ['distinct', 'keyword_coverage_soft', 'lm_fluency']
    >>> reward(["p"], [""], None, keywords=[["duck"]]).tolist()
    [0.0]
    """

    name = "keyword_sentence"

    def __init__(self, *, partial_weight: float = 0.5, **fluency: Any) -> None:
        self.coverage = SoftKeywordCoverage(partial_weight=partial_weight)
        self.fluency = LMFluency(**fluency)
        self.repetition = RepetitionPenalty(n=3)

    def components(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> dict[str, np.ndarray]:
        return {
            "keyword_coverage_soft": self.coverage(prompts, completions, references, **meta),
            "lm_fluency": self.fluency(prompts, completions, references),
            "distinct": 1.0 + self.repetition(prompts, completions, references),
        }

    def combine(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        product = parts["keyword_coverage_soft"] * parts["lm_fluency"] * parts["distinct"]
        return product.astype(np.float32)

    def __repr__(self) -> str:
        return f"KeywordSentence({self.fluency!r})"


register_reward("lm_fluency", LMFluency)
register_reward("keyword_sentence", KeywordSentence)
