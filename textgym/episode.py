"""What the single and the vector env share: prompt encoding and end-of-episode scoring.

Both envs own their buffers and step logic; this module owns the two things that must behave
identically in both: how a prompt becomes left-padded token ids, and how finished episodes
become text and rewards (one batched reward call).
"""

from __future__ import annotations

import itertools
import re
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from textgym.rewards.base import RewardFn, score
from textgym.tasks.base import ChatMessages, Prompt, prompt_text

if TYPE_CHECKING:  # type hints only: importing transformers costs ~0.7 s
    from transformers import PreTrainedTokenizerBase

Truncation = Literal["left", "error"]


_PROBES = ("\ue000{}\ue001", "  probe {} text\n")
"""Two contents per message that a chat template must copy verbatim for the fast path: a
private-use sentinel (to find where the content goes) and text with outer white space (so a
template that trims or rewrites content is caught)."""


class SegmentCache:
    """Tokenize texts exactly as the Rust tokenizer does, reusing the ids of repeated segments.

    The tokenizer splits a text at its added tokens (``<|im_start|>`` and the like) before it
    normalizes or pre-tokenizes anything, so each stretch between two of them tokenizes on its
    own. Chat-templated prompts repeat most stretches (the system prompt, the role headers):
    those are tokenized once. A new stretch of a GPT-2 style byte-level BPE tokenizer
    (SmolLM2's: no normalizer, the byte-level regex, no prefix space) is cut further into
    words, before each space that precedes a non-space: that regex starts a piece there
    (``" ?\\p{L}+"`` and its kin come before the white-space rules, which leave such a space
    to the next piece) and looks at no text behind a piece. Only the new segments of a batch
    go to the tokenizer, in one call. :meth:`build` returns None for a tokenizer where this
    may not hold (added tokens that strip or normalize, or a probe text that tokenizes
    differently), and the caller tokenizes whole texts instead.
    """

    MAX_ENTRIES = 100_000  # then start afresh: a bound on memory, not a tuning knob
    WORD_CUT = re.compile(r"(?= \S)")  # Python's \s holds every character the regex's \s does

    def __init__(
        self, encode_batch: Any, pattern: re.Pattern[str], ids: dict[str, int], words: bool
    ) -> None:
        self._encode_batch = encode_batch
        self._pattern = pattern
        self._added_ids = ids
        self.cuts_words = words
        # Stretches and words -> their ids, as tuples: the collector stops tracking those.
        self._segments: dict[str, tuple[int, ...]] = {}

    @classmethod
    def build(cls, tokenizer: PreTrainedTokenizerBase, encode_batch: Any) -> SegmentCache | None:
        added = list(getattr(tokenizer, "added_tokens_decoder", {}).values())
        if encode_batch is None or not added:
            return None
        if any(t.lstrip or t.rstrip or t.single_word or t.normalized for t in added):
            return None
        contents = sorted({t.content for t in added}, key=len, reverse=True)  # longest first
        pattern = re.compile("(" + "|".join(re.escape(c) for c in contents) + ")")
        ids = {t.content: i for i, t in tokenizer.added_tokens_decoder.items()}
        cache = cls(encode_batch, pattern, ids, cls._is_gpt2_style(tokenizer))
        mark = contents[-1]
        probes = [f"{mark}user\n Hi  there{mark}\n", f" a{mark}{mark}b c\n\n{mark} "]
        probes.append("it 's a  b   c\t d \ne 12 345x, é 漢字 🙂 !? \u00a0f \u3000g\x1c h ")
        whole = [e.ids for e in encode_batch(probes, add_special_tokens=False)]
        return cache if cache(probes) == whole else None

    @staticmethod
    def _is_gpt2_style(tokenizer: PreTrainedTokenizerBase) -> bool:
        from tokenizers.models import BPE
        from tokenizers.pre_tokenizers import ByteLevel

        backend = tokenizer.backend_tokenizer
        pre = backend.pre_tokenizer
        return (
            backend.normalizer is None
            and isinstance(pre, ByteLevel)
            and pre.use_regex
            and not pre.add_prefix_space
            and isinstance(backend.model, BPE)
            and not backend.model.dropout
        )

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens added around it)."""
        split = [self._pattern.split(text) for text in texts]  # odd places: added tokens
        segments = self._segments
        new = list({s for parts in split for s in parts[0::2] if s and s not in segments})
        if new:
            self._add(new)
        out = []
        for parts in split:
            tokens: list[int] = []
            for i, part in enumerate(parts):
                if i % 2:
                    tokens.append(self._added_ids[part])
                elif part:
                    tokens += segments[part]
            out.append(tokens)
        return out

    def _add(self, stretches: list[str]) -> None:
        """Tokenize new stretches: their new words (or the whole stretches) in one call."""
        words = {
            s: [w for w in self.WORD_CUT.split(s) if w] if self.cuts_words else [s]
            for s in stretches
        }
        new = list({w for ws in words.values() for w in ws if w not in self._segments})
        if len(self._segments) + len(new) + len(stretches) > self.MAX_ENTRIES:
            self._segments.clear()
            new = list({w for ws in words.values() for w in ws})
        if new:
            encoded = self._encode_batch(new, add_special_tokens=False)
            self._segments.update(zip(new, (tuple(e.ids) for e in encoded), strict=True))
        for stretch, ws in words.items():
            self._segments[stretch] = tuple(i for w in ws for i in self._segments[w])


class PromptEncoder:
    """Turn prompts (text or chat messages) into at most ``max_prompt_tokens`` token ids.

    Batches are cheap: :meth:`padded_batch` renders every chat template without Jinja when the
    template copies message contents verbatim (checked once per layout of roles, see
    :data:`_PROBES`), and tokenizes all new prompts with ONE call to the Rust tokenizer.
    Prompts given a cache key (task samples) are encoded once per process.

    Args:
        tokenizer: the tokenizer of the policy.
        max_prompt_tokens: the prompt budget P.
        chat_template: wrap the prompt in the tokenizer's chat template (with the generation
            prompt) when it has one; otherwise chat messages are flattened to ``role: content`` lines.
        truncation: ``"left"`` keeps the last P tokens of a longer prompt; ``"error"`` raises.
        pad_token_id: the id that fills the left padding of :meth:`padded` rows.

    >>> from textgym.models import shared_tokenizer
    >>> encoder = PromptEncoder(shared_tokenizer("smollm2-135m"), max_prompt_tokens=64)
    >>> messages = [{"role": "user", "content": "Hi there"}]
    >>> encoder.text(messages) == encoder.tokenizer.apply_chat_template(
    ...     messages, tokenize=False, add_generation_prompt=True)
    True
    >>> ids, mask = encoder.padded_batch(["Hi there", messages])
    >>> ids.shape, bool((ids[0] == ids[1]).all()), int(mask[0].sum()) == len(encoder.encode("Hi there"))
    ((2, 64), True, True)
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_prompt_tokens: int,
        chat_template: bool = True,
        truncation: Truncation = "left",
        pad_token_id: int = 0,
    ) -> None:
        if truncation not in ("left", "error"):
            raise ValueError(f"truncation must be 'left' or 'error', got {truncation!r}")
        self.tokenizer = tokenizer
        self.max_prompt_tokens = max_prompt_tokens
        self.use_chat_template = bool(chat_template and getattr(tokenizer, "chat_template", None))
        self.truncation = truncation
        self.pad_token_id = pad_token_id
        self._cache: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
        # Roles of a conversation -> the template's literal text around each content, or None
        # where the template does not copy contents verbatim (then Jinja renders each prompt).
        self._layouts: dict[tuple[str, ...], tuple[str, ...] | None] = {}
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._encode_batch = getattr(backend, "encode_batch_fast", None) or getattr(
            backend, "encode_batch", None
        )
        self._segments = SegmentCache.build(tokenizer, self._encode_batch)

    def _render(self, messages: ChatMessages) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )

    def _layout(self, messages: ChatMessages) -> tuple[str, ...] | None:
        roles = tuple(str(m["role"]) for m in messages)
        if roles in self._layouts:
            return self._layouts[roles]
        sentinel, plain = ([p.format(i) for i in range(len(roles))] for p in _PROBES)
        rendered = self._render(
            [{"role": r, "content": c} for r, c in zip(roles, sentinel, strict=True)]
        )
        pieces: list[str] = []
        for mark in sentinel:
            before, found, rendered = rendered.partition(mark)
            if not found or mark in rendered:
                pieces = []
                break
            pieces.append(before)
        layout: tuple[str, ...] | None = None
        if pieces:
            layout = (*pieces, rendered)
            plain_render = self._render(
                [{"role": r, "content": c} for r, c in zip(roles, plain, strict=True)]
            )
            if plain_render != self._fill(layout, plain):
                layout = None
        self._layouts[roles] = layout
        return layout

    @staticmethod
    def _fill(layout: tuple[str, ...], contents: Sequence[str]) -> str:
        parts = [layout[0]]
        for content, literal in zip(contents, layout[1:], strict=True):
            parts += (content, literal)
        return "".join(parts)

    def text(self, prompt: Prompt) -> str:
        """The exact string that is tokenized for ``prompt``."""
        if not self.use_chat_template:
            return prompt_text(prompt)
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        layout = self._layout(messages)
        if layout is None:
            return self._render(messages)
        return self._fill(layout, [str(m["content"]) for m in messages])

    def encode_batch(self, prompts: Sequence[Prompt]) -> list[np.ndarray]:
        """Token ids (int64, length <= P each) of ``prompts``, tokenized in one call."""
        for prompt in prompts:
            if not prompt_text(prompt).strip():
                raise ValueError(
                    "the prompt is empty; give a prompt with at least one visible character"
                )
        texts = [self.text(p) for p in prompts]
        special = not self.use_chat_template  # the template already has its special tokens
        if self._segments is not None and not special:
            token_lists = self._segments(texts)
        elif self._encode_batch is not None:
            token_lists = [e.ids for e in self._encode_batch(texts, add_special_tokens=special)]
        else:  # a slow (Python) tokenizer
            token_lists = [self.tokenizer.encode(t, add_special_tokens=special) for t in texts]
        out = []
        for tokens in token_lists:
            ids = np.asarray(tokens, dtype=np.int64)
            if ids.size > self.max_prompt_tokens:
                if self.truncation == "error":
                    raise ValueError(
                        f"the prompt has {ids.size} tokens, more than max_prompt_tokens="
                        f"{self.max_prompt_tokens}; raise max_prompt_tokens or use truncation='left'"
                    )
                ids = ids[-self.max_prompt_tokens :]
            out.append(ids)
        return out

    def encode(self, prompt: Prompt) -> np.ndarray:
        """Token ids (int64, length <= P) of ``prompt``."""
        return self.encode_batch([prompt])[0]

    def padded_batch(
        self, prompts: Sequence[Prompt], cache_keys: Sequence[Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, mask)``, each (R, P): the prompts left-padded, new ones encoded in one call.

        Rows with a ``cache_keys`` entry other than None are cached under it (task samples are
        encoded once per process; later resets only copy).
        """
        keys = list(cache_keys) if cache_keys is not None else [None] * len(prompts)
        P = self.max_prompt_tokens
        ids = np.full((len(prompts), P), self.pad_token_id, dtype=np.int64)  # (R, P)
        mask = np.zeros((len(prompts), P), dtype=np.int8)  # (R, P)
        missing = [r for r, key in enumerate(keys) if key is None or key not in self._cache]
        fresh = dict(zip(missing, self.encode_batch([prompts[r] for r in missing]), strict=True))
        for r, key in enumerate(keys):
            if r in fresh:
                tokens = fresh[r]
                ids[r, P - tokens.size :] = tokens
                mask[r, P - tokens.size :] = 1
                if key is not None:
                    self._cache[key] = (ids[r].copy(), mask[r].copy())
            else:
                ids[r], mask[r] = self._cache[key]
        return ids, mask

    def padded(self, prompt: Prompt, cache_key: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, mask)``, each (P,): one prompt left-padded (see :meth:`padded_batch`)."""
        ids, mask = self.padded_batch([prompt], [cache_key])
        return ids[0], mask[0]


def batch_meta(metas: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Per-sample metadata dicts -> one dict of per-sample lists (None where a sample lacks a key)."""
    keys = {k for m in metas for k in m}
    return {k: [m.get(k) for m in metas] for k in sorted(keys)}


class ByteTable(NamedTuple):
    """The bytes of every token of a byte-level BPE tokenizer, back to back: token i is
    ``data[offsets[i]:offsets[i + 1]]`` (empty for special tokens)."""

    data: np.ndarray  # uint8 (total bytes,)
    offsets: np.ndarray  # int64 (V + 1,)

    def decode(self, rows: Sequence[np.ndarray]) -> list[str]:
        """Each row's bytes read as UTF-8, all rows gathered with a few numpy operations."""
        ids = np.concatenate([np.zeros(0, np.int64), *rows])  # (N,)
        if ids.size and (ids.min() < 0 or ids.max() >= self.offsets.size - 1):
            raise KeyError("an id outside the vocabulary")
        sizes = self.offsets[ids + 1] - self.offsets[ids]  # (N,) bytes of each token
        ends = np.cumsum(sizes)  # (N,)
        # Byte k of the output is data[k + (where its token starts - where it starts in out)].
        shift = np.repeat(self.offsets[ids] - (ends - sizes), sizes)
        text = self.data[np.arange(shift.size) + shift].tobytes()
        bounds = np.concatenate([[0], ends])[np.cumsum([0, *map(len, rows)])].tolist()
        return [text[a:b].decode("utf-8", "replace") for a, b in itertools.pairwise(bounds)]


_BYTE_TABLES: weakref.WeakKeyDictionary[Any, ByteTable | None] = weakref.WeakKeyDictionary()


def _byte_level_alphabet() -> dict[str, int]:
    """Which byte each character of a byte-level BPE token (GPT-2's alphabet) stands for:
    printable Latin-1 bytes as themselves, the other bytes as chr(256), chr(257), ... in order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars = {chr(b): b for b in printable}
    others = sorted(set(range(256)) - set(printable))
    chars.update({chr(256 + n): b for n, b in enumerate(others)})
    return chars


def byte_table(tokenizer: PreTrainedTokenizerBase, backend: Any) -> ByteTable | None:
    """The :class:`ByteTable` of ``tokenizer`` when its Rust ``backend`` decodes byte-level
    BPE, else None. Built once per tokenizer and checked against the backend on probes.

    The Rust ``ByteLevel`` decoder maps each token's characters back to bytes (a token with a
    character outside the alphabet is taken as its UTF-8) and reads the joined bytes as UTF-8,
    with U+FFFD for each maximal invalid subsequence, as Python's ``errors="replace"`` does.
    """
    try:
        return _BYTE_TABLES[tokenizer]
    except KeyError:
        pass
    except TypeError:  # not weakly referable: no cache, so no table
        return None
    from tokenizers.decoders import ByteLevel

    table: ByteTable | None = None
    vocab = backend.get_vocab(with_added_tokens=True)  # token -> id
    if isinstance(backend.decoder, ByteLevel) and sorted(vocab.values()) == list(range(len(vocab))):
        alphabet = _byte_level_alphabet()
        special = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
        tokens = [b""] * len(vocab)
        for token, i in vocab.items():
            if i in special:
                continue
            if all(c in alphabet for c in token):
                tokens[i] = bytes(alphabet[c] for c in token)
            else:
                tokens[i] = token.encode()
        offsets = np.cumsum([0, *map(len, tokens)])
        table = ByteTable(np.frombuffer(b"".join(tokens), dtype=np.uint8), offsets)
        probes = np.random.default_rng(0).integers(len(vocab), size=(64, 32)).tolist()
        probes.append(sorted(tokenizer.added_tokens_decoder))
        expected = [backend.decode(row, skip_special_tokens=True) for row in probes]
        if table.decode([np.asarray(row, dtype=np.int64) for row in probes]) != expected:
            table = None
    _BYTE_TABLES[tokenizer] = table
    return table


def decode_batch(
    tokenizer: PreTrainedTokenizerBase, ids: Sequence[Sequence[int] | np.ndarray]
) -> list[str]:
    """Decode completions without special tokens, as ``batch_decode`` does, but faster.

    A byte-level BPE tokenizer decodes from its :func:`byte_table` (7x faster than a Rust
    call per row). Others call the Rust tokenizer per row, which skips transformers'
    per-item Python conversions (2x faster at B=64), unless the tokenizer post-processes
    spaces.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        table = byte_table(tokenizer, backend)
        if table is not None:
            try:
                return table.decode([np.asarray(row, dtype=np.int64) for row in ids])
            except KeyError:  # an id without a token: the tokenizer decides what it means
                pass
        return [backend.decode(list(map(int, row)), skip_special_tokens=True) for row in ids]
    return tokenizer.batch_decode([list(map(int, row)) for row in ids], skip_special_tokens=True)


def score_episodes(
    reward: RewardFn,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    completion_ids: Sequence[np.ndarray],
    references: list[list[str]],
    metas: Sequence[Mapping[str, Any]],
) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """Decode finished completions once and score them with ONE reward call.

    Returns ``(completions, total (B,), components {name: (B,)})``. References are passed as
    None when no sample has any, so reference-free rewards need not handle empty lists.
    """
    completions = decode_batch(tokenizer, completion_ids)
    refs = references if any(references) else None
    total, components = score(reward, prompts, completions, refs, **batch_meta(metas))
    return completions, total, components
