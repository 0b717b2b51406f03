"""The language-model engine: one forward path, token log-probs, one sampler, a prefix KV cache.

Every caller that runs a causal LM (the policy's rollout and training forward, the reference
wrappers, SFT/DPO sequence log-probs, the SB3 policy) goes through :func:`forward`, which calls
the model's OWN ``forward(input_ids, attention_mask, position_ids, past_key_values,
logits_to_keep=...)``. Whatever the model does to its logits there (Gemma-2's
``final_logit_softcapping``, Cohere's ``logit_scale``, ...) therefore applies everywhere, so the
policy, its reference and the offline trainers see the same distribution. The LM head runs only
on the positions asked for (``keep``), which is what makes a long prefill cheap; the last-layer
hidden state (for a value head) comes from the same forward (``output_hidden_states``).

Layout conventions:

- Batches are left-padded; position ids come from the attention mask (:func:`positions`), so a
  padded row gives the same logits as the same tokens alone.
- An env observation is left-padded prompt then completion: :func:`content_end` finds where each
  row's tokens end and :func:`right_align` shifts rows so they all end in the last column.

Torch is imported here; ``import textgym`` does not import this module.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, DynamicLayer


# ----------------------------------------------------------------------------- layout
def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch: ``cumsum(mask) - 1``, 0 on padding.

    >>> positions(torch.tensor([[0, 0, 1, 1, 1]])).tolist()
    [[0, 0, 0, 1, 2]]
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def content_end(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) one past the last attended column of each row (the prompt and completion are one run).

    >>> content_end(torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1]])).tolist()
    [3, 4]
    """
    width = attention_mask.shape[1]
    return width - attention_mask.flip(1).to(torch.int8).argmax(1)


def right_align(
    input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Observation layout -> a left-padded batch whose last column holds every row's last token.

    An observation has the prompt left-padded before column P and the generated tokens from
    column P on, so each row's tokens form one run of attended columns ending at
    :func:`content_end`. Shifting each row right so that run ends at the final column puts every
    last token in one place (the LM head then runs on one position); columns masked in every
    row are dropped. Returns ``(ids, mask)``, both (B, W) with W <= the observation length.

    >>> ids = torch.tensor([[0, 5, 6, 7, 0], [8, 9, 6, 0, 0]])
    >>> mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    >>> right_align(ids, mask)
    (tensor([[5, 6, 7],
            [8, 9, 6]]), tensor([[1, 1, 1],
            [1, 1, 1]]))
    """
    end = content_end(attention_mask)  # (B,)
    width = int(end.max())
    cols = torch.arange(width, device=input_ids.device)[None, :] - (width - end)[:, None]  # (B, W)
    valid = cols >= 0
    cols = cols.clamp(min=0)
    ids = input_ids[:, :width].gather(1, cols)
    mask = attention_mask[:, :width].gather(1, cols) * valid
    first = int(mask.any(0).to(torch.int8).argmax())
    return ids[:, first:], mask[:, first:]


# ----------------------------------------------------------------------------- model
def check_vocab(model: nn.Module, vocab_size: int) -> None:
    """Raise when ``model`` cannot score every action of a ``Discrete(vocab_size)`` env."""
    rows = model.get_output_embeddings().weight.shape[0]
    if rows < vocab_size:
        raise ValueError(
            f"the model has {rows} output tokens but the env's action space has {vocab_size}; "
            "use a model built for the env's tokenizer"
        )


def value_head(model: nn.Module) -> nn.Linear:
    """A scalar head on ``model``'s last hidden state, starting at exactly zero.

    Zero weights and bias: the first value estimates are 0, so they cannot swamp the
    advantages before the critic has learnt anything (the gradient still reaches the weights).

    >>> from textgym.models import shared_tokenizer, tiny_model
    >>> head = value_head(tiny_model(shared_tokenizer("smollm2-135m")))
    >>> head.in_features, head.weight.abs().sum().item()
    (64, 0.0)
    """
    head = nn.Linear(model.get_output_embeddings().weight.shape[1], 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


class LMOutput(NamedTuple):
    """What :func:`forward` returns; unpacks as ``logits, hidden, cache``."""

    logits: torch.Tensor  # (B, K, V) at the kept positions, after the model's own scaling
    hidden: torch.Tensor | None  # (B, K, H) last-layer hidden states there, when asked for
    cache: Any  # the model's KV cache after this forward, when use_cache


def forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    cache: Any = None,
    *,
    keep: int | torch.Tensor = 0,
    vocab_size: int | None = None,
    hidden: bool = False,
    use_cache: bool = False,
) -> LMOutput:
    """THE forward of a causal LM, through its own ``forward`` so its logit post-processing applies.

    Args:
        model: a Hugging Face causal LM (or a peft model wrapping one).
        input_ids: (B, T) the new tokens (after ``cache``'s, when one is given).
        attention_mask: (B, C + T) over the cached and new columns (2-D, left-padded), or a
            4-D (B, 1, T, T) block mask (packed sequences; then give ``position_ids``).
        position_ids: (B, T); default :func:`positions` of the mask's last T columns.
        cache: the KV cache of the earlier columns, or None.
        keep: the LM head runs on the last ``keep`` positions (0: all), or on the positions a
            1-D index tensor lists (``logits_to_keep``).
        vocab_size: keep only the first ``vocab_size`` logits (the tokenizer's real tokens) of
            a padded embedding matrix; None keeps all.
        hidden: also return the last-layer hidden states at the kept positions (same forward).
        use_cache: return the updated KV cache.

    >>> from textgym.models import shared_tokenizer, tiny_model
    >>> model = tiny_model(shared_tokenizer("smollm2-135m"))
    >>> ids, mask = torch.tensor([[0, 5, 6, 7]]), torch.tensor([[0, 1, 1, 1]])
    >>> out = forward(model, ids, mask, keep=1, hidden=True)
    >>> out.logits.shape, out.hidden.shape, out.cache
    (torch.Size([1, 1, 49152]), torch.Size([1, 1, 64]), None)
    >>> full = model(input_ids=ids[:, 1:]).logits[:, -1:]
    >>> bool(torch.allclose(out.logits, full, atol=1e-5))
    True
    """
    if position_ids is None:
        position_ids = positions(attention_mask)[:, -input_ids.shape[1] :]
    base = _base_model(model)
    cache_name = _cache_argument(type(base))  # the output names the cache as the input does
    past = {} if cache is None else {cache_name: cache}
    if attention_mask.dim() == 4 and attention_mask.dtype == torch.bool and _eager(base):
        # Eager attention ADDS a 4-D mask to the scores (sdpa reads a bool one as allowed/masked).
        attention_mask = torch.zeros(
            attention_mask.shape, device=attention_mask.device
        ).masked_fill(~attention_mask, torch.finfo(torch.float32).min)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=use_cache,
        logits_to_keep=keep,
        output_hidden_states=hidden,
        **past,
    )
    logits = out.logits if vocab_size is None else out.logits[..., :vocab_size]
    states = None
    if hidden:
        last = out.hidden_states[-1]  # (B, T, H), after the final norm, as the LM head sees it
        states = last[:, keep] if isinstance(keep, torch.Tensor) else last[:, -keep:]
    new_cache = out.get(cache_name) if use_cache else None
    return LMOutput(logits, states, new_cache)


def _base_model(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (whose ``forward`` takes ``**kwargs``)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _eager(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) == "eager"


@functools.cache
def _cache_argument(model_class: type) -> str:
    """``cache`` where the model's forward takes it (newer transformers), else ``past_key_values``."""
    parameters = inspect.signature(model_class.forward).parameters  # type: ignore[attr-defined]
    return "cache" if "cache" in parameters else "past_key_values"


def last_token_forward(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    vocab_size: int,
    use_cache: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Next-token logits and last hidden state for a batch of observations (full prefix).

    Returns ``(logits (B, V), hidden (B, H), cache)``: :func:`forward` over the
    :func:`right_align`-ed observations with the LM head on the last position only; ``cache`` (a
    ``DynamicCache`` over the right-aligned prefix, or None) lets :class:`PrefixCache` continue.
    """
    ids, mask = right_align(input_ids.long(), attention_mask.long())
    out = forward(model, ids, mask, keep=1, vocab_size=vocab_size, hidden=True, use_cache=use_cache)
    return out.logits[:, -1], out.hidden[:, -1], out.cache  # type: ignore[index]


def extending_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) for each observation, the longest observation of the batch that extends it.

    Observation j extends i when both hold the same tokens in every column up to i's last
    token: the same prompt and i's completion as a prefix of j's (in a causal LM, i's last-token
    logits are then j's logits at that column). Every row extends itself; among the longest
    extensions the first row is taken, so one episode's steps all point to its latest step.

    >>> ids = torch.tensor([[0, 5, 6, 0], [0, 5, 6, 7], [9, 5, 6, 0]])
    >>> mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1], [1, 1, 1, 0]])
    >>> extending_rows(ids, mask).tolist()  # row 2's prompt differs: it stands alone
    [1, 1, 2]
    """
    end = content_end(attention_mask)  # (B,)
    tokens = torch.where(attention_mask.bool(), input_ids.long(), -1)  # (B, L): padding reads -1
    compared = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < end[:, None]  # (B, L)
    # The longest extension, the first on ties: end * B - j is largest there.
    score = end * len(tokens) - torch.arange(len(tokens), device=end.device)  # (B,)
    rows = torch.empty_like(end)
    for start in range(0, len(tokens), 256):  # (256, B, L) comparisons at a time
        i = slice(start, start + 256)
        same = (tokens[i, None, :] == tokens[None, :, :]) | ~compared[i, None, :]
        extends = same.all(-1)  # (b, B): row j extends row i
        rows[i] = torch.where(extends, score[None, :], -1).argmax(1)
    return rows


def shared_prefix_forward(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`last_token_forward`'s ``(logits (B, V), hidden (B, H))``, one forward per episode.

    Steps of one episode extend one another (:func:`extending_rows`), so only the longest of
    them runs through the model and every step reads its logits at its own last column. A batch
    of S steps from E episodes costs E prefills instead of S: this is what makes training on
    single steps (stable-baselines3's minibatches) affordable for an LM. Gradients flow to the
    same weights as S separate forwards would.

    >>> from textgym.models import shared_tokenizer, tiny_model
    >>> model = tiny_model(shared_tokenizer("smollm2-135m"))
    >>> ids = torch.tensor([[0, 5, 6, 0], [0, 5, 6, 7], [9, 5, 6, 0]])
    >>> mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1], [1, 1, 1, 0]])
    >>> logits, hidden = shared_prefix_forward(model, ids, mask, 49152)
    >>> separate, _, _ = last_token_forward(model, ids, mask, 49152)
    >>> logits.shape, bool(torch.allclose(logits, separate, atol=1e-5))
    (torch.Size([3, 49152]), True)
    """
    ids, mask = input_ids.long(), attention_mask.long()
    rows = extending_rows(ids, mask)  # (B,)
    runs, run_of = rows.unique(return_inverse=True)  # (R,), (B,)
    last = content_end(mask) - 1  # (B,) each step's last column
    first = int(mask[runs].any(0).to(torch.int8).argmax())  # drop columns padded in every run
    columns, column_of = (last - first).unique(return_inverse=True)  # (C,), (B,)
    stop = int(last.max()) + 1  # columns past every step's last token are not needed
    out = forward(
        model,
        ids[runs, first:stop],
        mask[runs, first:stop],
        keep=columns,
        vocab_size=vocab_size,
        hidden=True,
    )
    return out.logits[run_of, column_of], out.hidden[run_of, column_of]  # type: ignore[index]


# ----------------------------------------------------------------------------- log-probs
def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """log softmax(logits / scale) at ``tokens``: (..., V), (...) -> (...) float32.

    >>> token_logprobs(torch.tensor([[0.0, 0.0]]), torch.tensor([1])).exp().tolist()
    [0.5]
    """
    scaled = logits.float() / scale
    picked = scaled.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - scaled.logsumexp(-1)


def sequence_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    targets: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """Log-probabilities (K,) of the K tokens ``input_ids[targets]``, each predicted from the one before.

    ``targets`` (R, T) bool marks the scored tokens (never column 0: nothing predicts it);
    the result is in row-major order of ``targets``. The LM head runs only on the columns that
    predict a target in some row (a 49k-token head over every position of a long prompt would
    dominate the cost), through the model's own forward like every other path.

    >>> from textgym.models import shared_tokenizer, tiny_model
    >>> model = tiny_model(shared_tokenizer("smollm2-135m"))
    >>> ids = torch.tensor([[5, 6, 7, 8]])
    >>> lp = sequence_logprobs(model, ids, torch.ones_like(ids), ids > 6)
    >>> logits = model(input_ids=ids).logits
    >>> bool(torch.allclose(lp, token_logprobs(logits[0, 1:3], ids[0, 2:]), atol=1e-5))
    True
    """
    predicts = targets[:, 1:]  # (R, T-1): column t predicts token t + 1
    columns = predicts.any(0).nonzero().squeeze(1)  # (C,) ascending
    logits = forward(
        model, input_ids, attention_mask, position_ids, keep=columns, vocab_size=vocab_size
    ).logits  # (R, C, V)
    return token_logprobs(logits[predicts[:, columns]], input_ids[:, 1:][predicts])


# ----------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class Sampling:
    """How actions are drawn from the policy's logits.

    ``temperature`` 0 is greedy. The policy's distribution (for log-probs, KL and entropy) is
    ``softmax(logits / temperature)`` over the whole vocabulary; ``top_k`` / ``top_p`` only
    truncate what is sampled, as in ``model.generate`` (see :func:`top_filter`).

    >>> Sampling(temperature=0.7, top_k=50).greedy
    False
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ValueError(f"temperature must be a number >= 0, got {self.temperature!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an int >= 0 (0 = no limit), got {self.top_k!r}")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def scale(self) -> float:
        """The divisor applied to logits (1 for greedy, whose log-probs use temperature 1)."""
        return float(self.temperature) if self.temperature > 0 else 1.0


def top_filter(
    logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Top-k, then top-p (nucleus) truncation of ``logits`` (..., V), as ``model.generate`` does.

    Returns ``(values, index)``. Without truncation (``top_k`` None/0/>= V and ``top_p``
    None/1) that is ``(logits, None)``. Otherwise ``values`` (..., K) are the surviving
    candidates' logits sorted best first, -inf where top-p drops one, and ``index`` their token
    ids. Top-p is taken over the distribution renormalised among the top-k: a token stays
    while the better tokens hold less than ``top_p`` of the mass (the smallest nucleus; the
    best token always stays). Only k values are sorted when ``top_k`` is given, which keeps
    sampling over a 49k vocabulary cheap.

    >>> values, index = top_filter(torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05])), 3, 0.7)
    >>> index.tolist(), values.isfinite().tolist()
    ([0, 1, 2], [True, True, False])
    """
    index = None
    if top_k and top_k < logits.shape[-1]:
        logits, index = logits.topk(top_k, dim=-1)  # sorted descending
    if top_p is not None and top_p < 1.0:
        if index is None:
            logits, index = logits.sort(dim=-1, descending=True)
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs.cumsum(-1) - probs >= top_p, float("-inf"))
    return logits, index


def top_set(logprobs: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Bool mask (..., V) of the tokens :func:`top_filter` keeps (top-k, then the top-p nucleus).

    >>> lp = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    >>> top_set(lp, 3, None).tolist(), top_set(lp, None, 0.7).tolist()
    ([True, True, True, False], [True, True, False, False])
    """
    values, index = top_filter(logprobs, top_k, top_p)
    if index is None:
        return torch.ones_like(logprobs, dtype=torch.bool)
    return torch.zeros_like(logprobs, dtype=torch.bool).scatter(-1, index, values.isfinite())


def check_top_set(top_k: int | None, top_p: float | None, vocab_size: int) -> None:
    """Raise a ValueError naming the bad argument unless :func:`top_set` can use these.

    >>> check_top_set(None, None, 10)
    Traceback (most recent call last):
    ...
    ValueError: give top_k, top_p or both to choose the allowed tokens
    """
    if top_k is None and top_p is None:
        raise ValueError("give top_k, top_p or both to choose the allowed tokens")
    if top_k is not None and (
        not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= vocab_size
    ):
        raise ValueError(f"top_k must be an int in [1, {vocab_size}], got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be a float in (0, 1], got {top_p!r}")


def sample_tokens(
    logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one token per row of ``logits`` (B, V) -> (B,) int64, exactly from the truncated softmax.

    Inverse-CDF sampling: one uniform per row, located in the cumulative probabilities
    (``searchsorted``). It samples ``softmax(logits / temperature)`` (after :func:`top_filter`)
    exactly: zero-probability tokens (masked logits) are never drawn. Over a 49k vocabulary at
    batch 16 on CPU (one torch thread) it costs about 5 ms where ``torch.multinomial`` and the
    Gumbel-max trick (one random number per logit) cost 19 ms each; ``top_k=50`` takes 3 ms.
    ``generator`` None draws from torch's global generator.

    >>> g = torch.Generator().manual_seed(0)
    >>> logits = torch.tensor([[0.0, 5.0, -1.0], [9.0, 0.0, 0.0]])
    >>> sample_tokens(logits, Sampling(temperature=0)).tolist()
    [1, 0]
    >>> sample_tokens(logits, Sampling(top_k=1), g).tolist()
    [1, 0]
    """
    if sampling.greedy:
        return logits.argmax(-1)
    scaled, index = top_filter(logits.float() / sampling.scale, sampling.top_k, sampling.top_p)
    cdf = (scaled - scaled.logsumexp(-1, keepdim=True)).exp().cumsum(-1)  # (B, V)
    u = torch.rand(len(cdf), 1, generator=generator, device=cdf.device) * cdf[:, -1:]  # (B, 1)
    # right=True: the first index whose cumulative mass exceeds u, never a zero-mass token.
    choice = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=cdf.shape[-1] - 1)
    return choice if index is None else index.gather(-1, choice[:, None]).squeeze(-1)


# ----------------------------------------------------------------------------- prefix cache
@dataclass
class _CacheState:
    ids: torch.Tensor  # (B, L) the observations last seen, one row per env slot
    mask: torch.Tensor  # (B, L)
    end: torch.Tensor  # (B,) content_end of each row
    cache: DynamicCache | None  # KV of every row's prefix, right-aligned at the last column
    attn: torch.Tensor | None  # (B, C) attention mask over the cache columns
    logits: torch.Tensor  # (B, V) next-token logits of each row's last observation
    hidden: torch.Tensor  # (B, H) last-layer hidden state at each row's last token
    version: int


class PrefixCache:
    """Next-token logits for batches of observations, reusing a KV cache per batch row (slot).

    Row i of every call is treated as the same env slot. When its observation extends the last
    one seen in that row by one token, only that token is run (one incremental forward for all
    such rows together); when it is unchanged, the stored answer is returned; otherwise (a new
    episode, or an unrelated observation) its whole prefix is run and spliced into the cache.
    Rows keep their prefix right-aligned at the last cache column; the cache is trimmed to the
    longest live prefix after every call.

    The cache is dropped when the batch shape or ``version`` changes (pass something that changes
    when the weights do, e.g. a parameter version counter). Models whose cache is not a plain
    ``DynamicCache`` (sliding-window or recurrent layers) get the full prefix every call.

    Args:
        model: a Hugging Face causal LM (eval mode is the caller's business).
        vocab_size: V, the number of logits kept (the env's action space).

    >>> from textgym.models import shared_tokenizer, tiny_model
    >>> model = tiny_model(shared_tokenizer("smollm2-135m"))
    >>> cache = PrefixCache(model, vocab_size=model.config.vocab_size)
    >>> ids, mask = torch.tensor([[0, 7, 8, 0, 0]]), torch.tensor([[0, 1, 1, 0, 0]])
    >>> _ = cache(ids, mask)
    >>> ids[0, 3], mask[0, 3] = 9, 1
    >>> logits, hidden = cache(ids, mask)
    >>> full, _, _ = last_token_forward(model, ids, mask, model.config.vocab_size)
    >>> cache.incremental_rows, bool(torch.allclose(logits, full, atol=1e-4))
    (1, True)
    """

    def __init__(self, model: nn.Module, vocab_size: int) -> None:
        self.model = model
        self.vocab_size = vocab_size
        self.incremental = True
        self.incremental_rows = 0  # rows answered by one-token forwards (a statistic)
        self.full_rows = 0  # rows whose whole prefix was run
        self._state: _CacheState | None = None

    def reset(self) -> None:
        """Forget every cached prefix."""
        self._state = None

    @torch.no_grad()
    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, version: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, V), hidden (B, H))`` at the last token of each observation row."""
        ids, mask = input_ids.long(), attention_mask.long()  # (B, L)
        end = content_end(mask)  # (B,)
        st = self._state
        if st is None or st.ids.shape != ids.shape or st.version != version:
            return self._start(ids, mask, end, version)
        cols = torch.arange(ids.shape[1], device=ids.device)[None, :]
        seen = cols < st.end[:, None]
        same_prefix = (((ids == st.ids) & (mask == st.mask)) | ~seen).all(1)  # (B,)
        step = same_prefix & (end == st.end + 1)
        full = ~(step | (same_prefix & (end == st.end)))
        if step.any():
            self._step(st, ids, mask, end, step)
        if full.any():
            self._splice(st, ids, mask, full)
        self._trim(st)
        st.ids, st.mask, st.end = ids.clone(), mask.clone(), end
        return st.logits, st.hidden

    def _start(
        self, ids: torch.Tensor, mask: torch.Tensor, end: torch.Tensor, version: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, hidden, cache = last_token_forward(
            self.model, ids, mask, self.vocab_size, use_cache=self.incremental
        )
        self.full_rows += ids.shape[0]
        if not self.incremental or not _plain_cache(cache):
            self.incremental = False
            return logits, hidden
        _, attn = right_align(ids, mask)
        self._state = _CacheState(
            ids.clone(), mask.clone(), end, cache, attn, logits.clone(), hidden.clone(), version
        )
        return self._state.logits, self._state.hidden

    def _step(
        self,
        st: _CacheState,
        ids: torch.Tensor,
        mask: torch.Tensor,
        end: torch.Tensor,
        step: torch.Tensor,
    ) -> None:
        """One forward of one new token per row; rows not stepping get a masked dummy column."""
        last = (end - 1)[:, None]  # (B, 1)
        tokens = torch.where(step[:, None], ids.gather(1, last), 0)  # (B, 1)
        st.attn = torch.cat([st.attn, step.long()[:, None]], 1)  # (B, C+1)
        out = forward(
            self.model,
            tokens,
            st.attn,
            (mask.sum(1, keepdim=True) - 1).clamp(min=0),
            st.cache,
            keep=1,
            vocab_size=self.vocab_size,
            hidden=True,
            use_cache=True,
        )
        st.logits[step] = out.logits[step, -1]
        st.hidden[step] = out.hidden[step, -1]  # type: ignore[index]
        self.incremental_rows += int(step.sum())

    def _splice(
        self, st: _CacheState, ids: torch.Tensor, mask: torch.Tensor, full: torch.Tensor
    ) -> None:
        """Run the whole prefix of the ``full`` rows and write their KV at the cache's end."""
        rows = full.nonzero().squeeze(1)
        logits, hidden, cache = last_token_forward(
            self.model, ids[rows], mask[rows], self.vocab_size, use_cache=True
        )
        _, sub_attn = right_align(ids[rows], mask[rows])
        width, columns = sub_attn.shape[1], st.attn.shape[1]
        layers = st.cache.layers  # type: ignore[union-attr]
        if columns < width:  # make room on the left for a longer prefix
            grow = width - columns
            for layer in layers:
                layer.keys = nn.functional.pad(layer.keys, (0, 0, grow, 0))
                layer.values = nn.functional.pad(layer.values, (0, 0, grow, 0))
            st.attn = nn.functional.pad(st.attn, (grow, 0))
        for layer, new in zip(layers, cache.layers, strict=True):
            layer.keys[rows, :, -width:] = new.keys
            layer.values[rows, :, -width:] = new.values
        st.attn[rows] = 0
        st.attn[rows, -width:] = sub_attn
        st.logits[rows] = logits
        st.hidden[rows] = hidden
        self.full_rows += rows.numel()

    @staticmethod
    def _trim(st: _CacheState) -> None:
        """Drop leading cache columns that no row attends to."""
        first = int(st.attn.any(0).to(torch.int8).argmax())  # type: ignore[union-attr]
        if first:
            for layer in st.cache.layers:  # type: ignore[union-attr]
                layer.keys = layer.keys[:, :, first:]
                layer.values = layer.values[:, :, first:]
            st.attn = st.attn[:, first:]  # type: ignore[index]


def _plain_cache(cache: Any) -> bool:
    return isinstance(cache, DynamicCache) and all(
        type(layer) is DynamicLayer for layer in cache.layers
    )


__all__ = [
    "LMOutput",
    "PrefixCache",
    "Sampling",
    "check_top_set",
    "check_vocab",
    "content_end",
    "extending_rows",
    "forward",
    "last_token_forward",
    "positions",
    "right_align",
    "sample_tokens",
    "sequence_logprobs",
    "shared_prefix_forward",
    "token_logprobs",
    "top_filter",
    "top_set",
    "value_head",
]
