"""Transformer policy: a Hugging Face causal LM plus a value head, stepped through the vector env.

The rollout runs a :class:`~textgym.vector.TextGenVectorEnv` in lockstep (autoreset DISABLED):
the prompt is encoded once (one prefill), then every step is ONE forward pass of the whole
batch over one new token with the KV cache. As it goes it records each action's
log-probability and the value of the state. Text is never decoded by the policy: the env scores
finished episodes.

Every forward goes through :func:`textgym.lm.forward` (the model's own ``forward``, so logit
scaling and soft-capping apply, and the value head's hidden state comes from the same pass);
left-padded prompts get explicit position ids (``cumsum(mask) - 1``), so a padded row yields the
same logits as the same prompt alone.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import nn

from textgym import lm
from textgym.lm import LMOutput, Sampling, sample_tokens, token_logprobs
from textgym.models import load_model, load_tokenizer
from textgym.vector import TextGenVectorEnv


class TransformerPolicy(nn.Module):
    """A causal LM with a scalar value head on its last hidden state, and its frozen reference.

    Args:
        model: any Hugging Face causal LM (``AutoModelForCausalLM``); it is trained in place.
        reference: ``"copy"`` keeps a frozen deep copy as the KL reference; ``"adapters"``
            (the model must be a peft LoRA model) uses the same weights with the adapters
            switched off, so no second copy is held; ``None`` has no reference.
        vocab_size: keep only the first ``vocab_size`` logits (the tokenizer's real tokens) when
            the model's embedding matrix is padded beyond them; default: all.

    The value head reads the decoder's final hidden state, shares the trunk with the LM head,
    and starts at zero so that early value estimates do not swamp the advantages.

    >>> from textgym.models import load_tokenizer, tiny_model
    >>> policy = TransformerPolicy(tiny_model(load_tokenizer()), reference="copy")
    >>> ids = torch.tensor([[1, 2, 3]])
    >>> logits, values = policy(ids, torch.ones_like(ids))
    >>> logits.shape[:2], values.shape, policy.has_reference
    (torch.Size([1, 3]), torch.Size([1, 3]), True)
    """

    def __init__(
        self, model: nn.Module, reference: str | None = "copy", vocab_size: int | None = None
    ) -> None:
        super().__init__()
        if reference not in ("copy", "adapters", None):
            raise ValueError(f"reference must be 'copy', 'adapters' or None, got {reference!r}")
        if reference == "adapters" and not hasattr(model, "disable_adapter"):
            raise ValueError(
                "reference='adapters' needs a peft model (wrap it with LoRA); use 'copy' otherwise"
            )
        self.model = model
        self.vocab_size = vocab_size
        self.value_head = lm.value_head(model)
        self.reference_mode = reference
        # Held outside the module tree so .parameters(), state_dict() and optimizers skip it.
        self._reference: list[nn.Module] = []
        if reference == "copy":
            ref = copy.deepcopy(model).eval()
            ref.requires_grad_(False)
            self._reference.append(ref)

    @property
    def has_reference(self) -> bool:
        return self.reference_mode is not None

    @property
    def reference(self) -> nn.Module | None:
        """The frozen reference LM (the policy's own model when adapters are switched off)."""
        if self.reference_mode == "copy":
            return self._reference[0]
        return self.model if self.reference_mode == "adapters" else None

    @contextlib.contextmanager
    def reference_mode_on(self) -> Iterator[nn.Module]:
        """Yield the reference LM; for LoRA, the adapters are off inside the block."""
        if self.reference_mode == "adapters":
            with self.model.disable_adapter():  # type: ignore[operator]
                yield self.model
        elif self.reference_mode == "copy":
            yield self._reference[0]
        else:
            raise RuntimeError("this policy has no reference model (reference=None)")

    def _apply(self, fn: Any, recurse: bool = True) -> TransformerPolicy:
        super()._apply(fn, recurse)
        self._reference[:] = [ref._apply(fn, recurse) for ref in self._reference]
        return self

    def lm_forward(
        self,
        model: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        keep: int | None = None,
        use_cache: bool = False,
        hidden: bool = False,
    ) -> LMOutput:
        """:func:`textgym.lm.forward` of ``model`` (the policy's or the reference's) at this vocabulary.

        Returns ``(logits (B, keep, V), hidden (B, keep, H) or None, cache)``: the LM head runs
        on the last ``keep`` positions only (all when None), which is what makes a prefill of
        a long prompt cheap; ``hidden`` asks for the last-layer hidden states (the value head's
        input) from the same forward.
        """
        return lm.forward(
            model,
            input_ids,
            attention_mask,
            position_ids,
            cache,
            keep=keep or 0,
            vocab_size=self.vocab_size,
            hidden=hidden,
            use_cache=use_cache,
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        keep: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """No-cache forward: ``(logits (B, T', V), values (B, T'))`` for the last ``keep`` = T'."""
        logits, hidden, _ = self.lm_forward(
            self.model, input_ids, attention_mask, keep=keep, hidden=True
        )
        return logits, self.value_head(hidden.float()).squeeze(-1)  # type: ignore[union-attr]

    def save_pretrained(self, path: str | Path, tokenizer: Any = None) -> Path:
        """Write the LM (or its LoRA adapters), ``tokenizer`` and the value head to ``path``.

        The directory is built next to ``path`` and swapped in whole, so a crash never leaves
        half a policy; :meth:`from_pretrained` reads it back.
        """
        import shutil

        from safetensors.torch import save_file

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        self.model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        head = {k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()}
        save_file(head, str(tmp / VALUE_HEAD))
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
        return path

    @classmethod
    def from_pretrained(
        cls, path: str | Path, reference: str | None = None, device: str = "cpu"
    ) -> TransformerPolicy:
        """The policy saved in a run directory (its ``policy/``) or a policy directory.

        The LM and the value head come back with the saved weights (float32), the logits are
        cut to the saved tokenizer's vocabulary as in training, and ``reference="copy"`` adds a
        frozen copy of the reloaded LM. A directory without ``value_head.safetensors`` (any
        Hugging Face causal LM) gets the usual zero-initialised head.
        """
        directory = policy_dir(path)
        model = load_model(directory, device=device)
        policy = cls(model, reference, vocab_size=len(load_tokenizer(directory)))
        load_value_head(policy, directory)
        return policy.to(device)


VALUE_HEAD = "value_head.safetensors"
"""The value head's file in a policy directory, next to the LM's own files."""


def policy_dir(path: str | Path, option: str = "path") -> str:
    """The policy directory of ``path``: a run directory (its ``policy/``) or a policy directory.

    ``option`` names the setting ``path`` came from, for the error messages.

    >>> policy_dir("no/such/run", option="init")
    Traceback (most recent call last):
    ...
    FileNotFoundError: init='no/such/run' is not a finished run: expected no/such/run/policy/config.json or no/such/run/config.json (a directory written by save_pretrained)
    """
    run = Path(path)
    for candidate in (run / "policy", run):
        if (candidate / "adapter_config.json").is_file():
            raise ValueError(
                f"{option}={str(path)!r} holds LoRA adapters, not full weights; train without "
                "lora_r, or merge the adapters into the model first (peft's merge_and_unload)"
            )
        if (candidate / "config.json").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"{option}={str(path)!r} is not a finished run: expected "
        f"{run / 'policy' / 'config.json'} or {run / 'config.json'} (a directory written by "
        "save_pretrained)"
    )


def load_value_head(policy: TransformerPolicy, directory: str | Path) -> bool:
    """Load ``directory``'s saved value head into ``policy``; False when it has none."""
    from safetensors.torch import load_file

    file = Path(directory) / VALUE_HEAD
    if not file.is_file():
        return False
    device = policy.value_head.weight.device
    policy.value_head.load_state_dict(load_file(str(file), device=str(device)))
    return True


def load_policy(
    path: str | Path, reference: str | None = None, device: str = "cpu"
) -> tuple[TransformerPolicy, Any]:
    """``(policy, tokenizer)`` of a finished run (``run_dir`` or ``run_dir/policy``).

    >>> import tempfile
    >>> from textgym.models import shared_tokenizer, tiny_model
    >>> tokenizer = shared_tokenizer("smollm2-135m")
    >>> saved = TransformerPolicy(tiny_model(tokenizer), reference=None)
    >>> run_dir = Path(tempfile.mkdtemp())
    >>> _ = saved.save_pretrained(run_dir / "policy", tokenizer)
    >>> policy, tok = load_policy(run_dir)
    >>> ids = torch.tensor([[1, 2, 3]])
    >>> bool((policy(ids, torch.ones_like(ids))[0] == saved(ids, torch.ones_like(ids))[0]).all())
    True
    """
    directory = policy_dir(path)
    return TransformerPolicy.from_pretrained(directory, reference, device), load_tokenizer(
        directory
    )


@dataclass
class Rollout:
    """One lockstep batch of B episodes of at most N tokens (tensors on the policy's device).

    ``mask[b, t]`` is 1 where token t of row b was a real action (up to and including EOS).
    ``values`` is None when not recorded. :func:`rollout` leaves ``ref_logprobs`` None; a
    trainer with a reference fills it with :func:`evaluate_tokens` (``reference=True``): one
    batched no-cache forward of the reference per rollout instead of one per step.
    """

    prompt_ids: torch.Tensor  # (B, P') int64, left-padded, all-padding columns dropped
    prompt_mask: torch.Tensor  # (B, P') int64
    tokens: torch.Tensor  # (B, N) int64
    mask: torch.Tensor  # (B, N) float32
    logprobs: torch.Tensor  # (B, N) float32
    values: torch.Tensor | None  # (B, N) float32
    ref_logprobs: torch.Tensor | None  # (B, N) float32
    scores: torch.Tensor  # (B,) float32, the env's final rewards
    components: dict[str, np.ndarray] = field(default_factory=dict)  # reward parts, (B,) each
    prompts: list[str] = field(default_factory=list)
    completions: list[str] = field(default_factory=list)
    references: list[list[str]] = field(default_factory=list)  # each row's task references
    finish_reasons: list[str] = field(default_factory=list)

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(-1)  # (B,)

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum().item())


def check_lockstep_env(envs: Any) -> TextGenVectorEnv:
    """The unwrapped :class:`TextGenVectorEnv`, checked to be in DISABLED autoreset mode."""
    env = getattr(envs, "unwrapped", envs)
    if not isinstance(env, TextGenVectorEnv):
        raise TypeError(f"the rollout needs a TextGenVectorEnv, got {type(env).__name__}")
    if env.autoreset_mode != AutoresetMode.DISABLED:
        raise ValueError(
            f"the rollout steps envs in lockstep and needs autoreset_mode='disabled', got "
            f"{env.autoreset_mode.name.lower()}; build it with "
            "TextGenVectorEnv(..., autoreset_mode='disabled')"
        )
    return env


MIN_SHARED_PREFIX = 8  # shorter common prefixes are not worth a separate forward


def shared_prefix_length(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> int:
    """Tokens that every left-padded prompt starts with, leaving each row at least one of its own.

    >>> ids = torch.tensor([[0, 7, 8, 9, 4], [7, 8, 9, 5, 6]])
    >>> shared_prefix_length(ids, (ids > 0).long())
    3
    """
    B, P = prompt_ids.shape
    lengths = prompt_mask.sum(-1)  # (B,)
    shortest = int(lengths.min())
    start = P - lengths  # (B,) first real column of each row
    columns = start[:, None] + torch.arange(shortest, device=prompt_ids.device)  # (B, shortest)
    heads = prompt_ids.gather(1, columns)  # (B, shortest) each row's first real tokens
    agree = (heads == heads[:1]).all(0).long()  # (shortest,)
    return min(int(agree.cumprod(0).sum()), shortest - 1)


def distinct_prompts(
    prompt_ids: torch.Tensor, prompt_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ids (U, P), mask (U, P), inverse (B,))``: the U distinct prompts, and row b's index
    among them, so that ``ids[inverse]`` gives back the batch."""
    P = prompt_ids.shape[1]
    distinct, inverse = torch.unique(
        torch.cat([prompt_ids, prompt_mask], 1), dim=0, return_inverse=True
    )
    return distinct[:, :P], distinct[:, P:], inverse


def prefill(
    policy: TransformerPolicy,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    record_values: bool,
) -> tuple[LMOutput, torch.Tensor]:
    """The first step's output and the (B, P) mask of the cache's columns, computing each
    distinct prompt once and the prompts' shared opening once.

    Rows with the same prompt (a GRPO/RLOO group) are run once and their KV cache repeated.
    Prompts built from one template share their opening tokens (system prompt, instruction):
    that prefix is run at batch 1, its cache repeated over the distinct prompts, and each one's
    remaining tokens run on top of it. The cache's columns are then ``[prefix | row's padding
    | row's rest]``: positions come from the mask and padding is masked, so every logit
    equals the plain left-padded prefill's (up to float summation order).
    """
    P = prompt_ids.shape[1]
    ids, mask, inverse = distinct_prompts(prompt_ids, prompt_mask)  # (U, P), (U, P), (B,)
    L = shared_prefix_length(ids, mask) if len(ids) > 1 else 0
    if L < MIN_SHARED_PREFIX:
        out = policy.lm_forward(
            policy.model, ids, mask, keep=1, use_cache=True, hidden=record_values
        )
        columns_mask = mask
    else:
        start = P - mask.sum(-1, keepdim=True)  # (U, 1) first real column of each prompt
        first = int(start[0])
        prefix = ids[:1, first : first + L]  # (1, L)
        cache = policy.lm_forward(
            policy.model, prefix, torch.ones_like(prefix), keep=1, use_cache=True
        ).cache
        cache.batch_repeat_interleave(len(ids))
        # A prompt's own tokens are its last (length - L) columns: mask its padding AND prefix.
        rest_mask = (torch.arange(L, P, device=ids.device) >= start + L).long()  # (U, P-L)
        columns_mask = torch.cat([torch.ones_like(mask[:, :L]), rest_mask], 1)  # (U, P)
        out = policy.lm_forward(
            policy.model,
            ids[:, L:],
            columns_mask,
            cache=cache,
            keep=1,
            use_cache=True,
            hidden=record_values,
        )
    out.cache.batch_select_indices(inverse)  # (U, ...) -> (B, ...), rows back in their order
    hidden = out.hidden[inverse] if out.hidden is not None else None
    return LMOutput(out.logits[inverse], hidden, out.cache), columns_mask[inverse]


@torch.no_grad()
def rollout(
    policy: TransformerPolicy,
    envs: TextGenVectorEnv,
    sampling: Sampling,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    record_values: bool = True,
    autocast: contextlib.AbstractContextManager[Any] | None = None,
) -> Rollout:
    """Reset every sub-env, then step all B episodes in lockstep until each has ended.

    One :func:`prefill` of the prompts (their shared opening run once), then per step ONE
    forward of the policy over the new token of every episode still running, with the KV
    cache (values from the same forward when ``record_values``). Rows whose episode ended
    leave the batch (and the cache), so the forward shrinks as episodes finish. The env owns
    termination and reward: the loop stops when ``envs.active`` is all False, and the final
    reward of each row is read from ``step``'s reward where ``terminated``. ``seed`` and
    ``options`` (``index`` / ``prompt`` lists) go to ``envs.reset``.

    >>> import gymnasium as gym, textgym
    >>> from textgym.models import tiny_model
    >>> envs = gym.make_vec("TextGen-v0", num_envs=2, max_new_tokens=3, autoreset_mode="disabled")
    >>> policy = TransformerPolicy(tiny_model(envs.unwrapped.tokenizer))
    >>> batch = rollout(policy, envs, Sampling(top_k=20), torch.Generator().manual_seed(0), seed=0)
    >>> batch.tokens.shape, batch.logprobs.shape, batch.scores.shape, len(batch.completions)
    (torch.Size([2, 3]), torch.Size([2, 3]), torch.Size([2]), 2)
    """
    env = check_lockstep_env(envs)
    device = policy.value_head.weight.device
    autocast = autocast if autocast is not None else contextlib.nullcontext()
    B, P, N = env.num_envs, env.max_prompt_tokens, env.max_new_tokens
    options = {**(options or {}), "reset_mask": np.ones(B, dtype=bool)}
    obs, _ = env.reset(seed=seed, options=options)
    # Columns that are padding in every row change nothing (positions come from the mask): drop them.
    first = int(np.argmax(obs["attention_mask"][:, :P].any(0)))
    prompt_ids = torch.as_tensor(obs["input_ids"][:, first:P], device=device)  # (B, P')
    prompt_mask = torch.as_tensor(obs["attention_mask"][:, first:P], device=device).long()
    P = P - first

    tokens = torch.full((B, N), env.pad_token_id, dtype=torch.long, device=device)
    mask = torch.zeros(B, N, device=device)
    logprobs = torch.zeros(B, N, device=device)
    values = torch.zeros(B, N, device=device) if record_values else None
    scores = np.zeros(B, dtype=np.float32)
    prompts, completions, reasons = [""] * B, [""] * B, [""] * B
    references: list[list[str]] = [[] for _ in range(B)]
    components: dict[str, np.ndarray] = {}
    actions = np.full(B, env.pad_token_id, dtype=np.int64)  # ended rows' actions are ignored

    # One autocast region for the whole decode: it casts each weight to bf16 once, not per step.
    with autocast:
        (logits, hidden, cache), columns_mask = prefill(
            policy, prompt_ids, prompt_mask, record_values
        )
        attention = torch.ones(B, P + N, dtype=torch.long, device=device)  # (R, P+N), held rows
        attention[:, :P] = columns_mask
        next_position = prompt_mask.sum(-1, keepdim=True)  # (R, 1)
        rows = np.arange(B)  # the env row of each of the R rows the model batch holds
        for t in range(N):
            step_logits = logits[:, -1]  # (R, V)
            action = sample_tokens(step_logits, sampling, generator)  # (R,)
            held = torch.as_tensor(rows, device=device)
            tokens[held, t] = action
            mask[held, t] = 1.0
            logprobs[held, t] = token_logprobs(step_logits, action, sampling.scale)
            if values is not None:
                values[held, t] = policy.value_head(hidden[:, -1]).squeeze(-1).float()  # type: ignore[index]
            actions[rows] = action.cpu().numpy()
            _, reward, terminated, _, info = env.step(actions)
            if terminated.any():
                done = np.flatnonzero(terminated)
                scores[done] = reward[done]
                for i in done:
                    prompts[i] = info["prompt"][i]
                    completions[i] = info["completion"][i]
                    references[i] = list(info["references"][i])
                    reasons[i] = info["finish_reason"][i]
                for name, value in info.get("reward_components", {}).items():
                    if not name.startswith("_"):  # "_name" keys are Gymnasium's row masks
                        part = components.setdefault(name, np.zeros(B, dtype=np.float32))
                        part[done] = value[done]
            running = env.active[rows]  # (R,) bool
            if not running.any():
                break
            if not running.all():  # drop the ended rows from the batch and the cache
                keep = torch.as_tensor(np.flatnonzero(running), device=device)
                rows = rows[running]
                cache.batch_select_indices(keep)
                action, attention = action[keep], attention[keep]
                next_position = next_position[keep]
            logits, hidden, cache = policy.lm_forward(
                policy.model,
                action[:, None],  # (R, 1)
                attention[:, : P + t + 1],
                next_position + t,
                cache,
                keep=1,
                use_cache=True,
                hidden=record_values,
            )
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        tokens=tokens,
        mask=mask,
        logprobs=logprobs,
        values=values,
        ref_logprobs=None,
        scores=torch.as_tensor(scores, device=device),
        components=components,
        prompts=prompts,
        completions=completions,
        references=references,
        finish_reasons=reasons,
    )


def prompt_shared_forward(
    policy: TransformerPolicy,
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_width: int,
    hidden: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (and last hidden states) of the positions from the prompt's last one on.

    ``input_ids`` (B, T) = prompt (first ``prompt_width`` = P columns, left-padded) + the
    rest. Returns ``(logits (B, T-P+1, V), hidden (B, T-P+1, H) or None)``. When rows share a
    prompt (k completions per prompt), each distinct prompt is run once and its KV cache is
    indexed out to its rows, so the prompt costs 1/k of a plain forward. The outputs equal a
    plain forward's (up to float summation order). Used without gradients (the reference):
    a backward through the shared cache gave run-to-run float differences on CPU, which would
    break exact resume, so training keeps the plain forward.
    """
    B, T = input_ids.shape
    P = prompt_width
    ids, mask, inverse = distinct_prompts(input_ids[:, :P], attention_mask[:, :P])
    if len(ids) == B:  # nothing shared: one plain forward is cheaper
        logits, states, _ = policy.lm_forward(
            model, input_ids, attention_mask, keep=T - P + 1, hidden=hidden
        )
        return logits, states
    head = policy.lm_forward(model, ids, mask, keep=1, use_cache=T > P, hidden=hidden)
    logits, states = head.logits[inverse], head.hidden  # (B, 1, V)
    states = states[inverse] if states is not None else None
    if T == P:
        return logits, states
    head.cache.batch_select_indices(inverse)  # (U, ...) -> (B, ...)
    tail = policy.lm_forward(
        model, input_ids[:, P:], attention_mask, cache=head.cache, hidden=hidden
    )  # (B, T-P, V)
    logits = torch.cat([logits, tail.logits], 1)
    if states is not None and tail.hidden is not None:
        states = torch.cat([states, tail.hidden], 1)
    return logits, states


def evaluate_tokens(
    policy: TransformerPolicy | nn.Module,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    tokens: torch.Tensor,
    scale: float,
    reference: bool = False,
    with_entropy: bool = False,
    share_prompts: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Forward over prompt + completion; the training-time view of a rollout.

    Returns ``(logprobs (B, N), values (B, N) or None, entropy (B, N) or None)`` for every
    completion position; with ``reference=True`` the reference LM's log-probs (no values).
    The last token is never an input (nothing is predicted after it), and the LM head runs on
    the N positions that predict completion tokens only. ``share_prompts`` (reference only) runs
    each distinct prompt once (:func:`prompt_shared_forward`): equal to the plain forward up
    to float summation order, so leave it off where the policy's and the reference's
    log-probs must match bit for bit (DPO's margin at the start). ``policy`` may be a data-parallel
    wrapper of a :class:`TransformerPolicy` (training goes through its ``forward`` so that the
    wrapper synchronises gradients), except with ``reference=True``.
    """
    P = prompt_ids.shape[1]
    ids = torch.cat([prompt_ids, tokens], dim=1)[:, :-1]  # (B, P+N-1)
    attention = torch.cat([prompt_mask, torch.ones_like(tokens)], dim=1)[:, :-1]
    if reference:
        with policy.reference_mode_on() as ref:
            if share_prompts:
                logits, _ = prompt_shared_forward(policy, ref, ids, attention, P)
            else:
                logits, _, _ = policy.lm_forward(ref, ids, attention, keep=tokens.shape[1])
        return token_logprobs(logits, tokens, scale), None, None
    logits, values = policy(ids, attention, keep=tokens.shape[1])  # (B, N, V), (B, N)
    logprobs = token_logprobs(logits, tokens, scale)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            logp = torch.log_softmax(logits.float() / scale, dim=-1)
            entropy = -(logp.exp() * logp).sum(-1)  # (B, N)
    return logprobs, values, entropy
