"""TextGenEnv: one episode generates one completion, one token per step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from textgym.episode import PromptEncoder, Truncation, score_episodes
from textgym.models import SMOLLM2_ALIAS, shared_tokenizer
from textgym.rewards.base import RewardSpec, make_reward, reward_name
from textgym.tasks.base import Prompt, Sample, Task, make_task, prompt_text

if TYPE_CHECKING:  # type hints only: importing transformers costs ~0.7 s
    from transformers import PreTrainedTokenizerBase


def resolve_tokenizer(tokenizer: str | PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A tokenizer object from a name/path/alias (loaded once per process) or the object itself."""
    if isinstance(tokenizer, str):
        return shared_tokenizer(tokenizer)
    # Imported here: a caller holding a tokenizer object has imported transformers already.
    from transformers import PreTrainedTokenizerBase

    if isinstance(tokenizer, PreTrainedTokenizerBase):
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "the tokenizer has no pad token; set tokenizer.pad_token (EOS is a common choice)"
            )
        return tokenizer
    raise TypeError(
        f"tokenizer must be a name, path or PreTrainedTokenizerBase, got {type(tokenizer).__name__}"
    )


def resolve_vocab(tokenizer: PreTrainedTokenizerBase, vocab_size: int | None) -> tuple[int, int]:
    """``(V, real)``: the action-space size and the tokenizer's real vocabulary size."""
    real = len(tokenizer)
    if vocab_size is None:
        return real, real
    if not isinstance(vocab_size, int) or vocab_size < real:
        raise ValueError(
            f"vocab_size={vocab_size!r} must be an int >= the tokenizer's {real} tokens"
        )
    return vocab_size, real


def validate_lengths(max_prompt_tokens: int, max_new_tokens: int) -> None:
    for name, value in (
        ("max_prompt_tokens", max_prompt_tokens),
        ("max_new_tokens", max_new_tokens),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_render_mode(render_mode: Any, supported: list[str], owner: str) -> str | None:
    """``render_mode`` when ``owner`` supports it; None (render nothing) with a warning otherwise.

    Gymnasium's ``make`` only warns about a mode outside ``metadata["render_modes"]``, and
    stable-baselines3's ``make_vec_env`` passes ``render_mode="rgb_array"`` to every env id,
    falling back only on a TypeError: refusing a mode would break the most common way SB3
    users build envs. The mode becomes None rather than staying set, so Gymnasium's passive
    checker (which asserts ``render_mode in render_modes`` on the first ``render()``) agrees.
    """
    if render_mode is None or render_mode in supported:
        return render_mode
    if not isinstance(render_mode, str):
        raise TypeError(
            f"render_mode must be a str or None, got {type(render_mode).__name__} {render_mode!r}"
        )
    gym.logger.warn(
        f"{owner} cannot render render_mode={render_mode!r} (it renders {supported}); "
        "render_mode is set to None and render() returns None"
    )
    return None


def check_options(options: Any) -> Mapping[str, Any]:
    """The reset options as a mapping ({} for None); anything but a mapping is a TypeError."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise TypeError(
            f"reset options must be a dict or None, got {type(options).__name__} {options!r}"
        )
    return options


def is_index(value: Any) -> bool:
    """A sample index: a Python or NumPy int, not a bool (``True`` is no sample number)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def observation_space(length: int, vocab: int) -> spaces.Dict:
    return spaces.Dict(
        {
            "input_ids": spaces.Box(0, vocab - 1, shape=(length,), dtype=np.int64),
            "attention_mask": spaces.Box(0, 1, shape=(length,), dtype=np.int8),
        }
    )


def sample_index(options: Mapping[str, Any], num_samples: int, rng: np.random.Generator) -> int:
    """The sample a single env's reset plays: ``options["index"]``, checked, or a random draw."""
    if "index" not in options:
        return int(rng.integers(num_samples))
    index = options["index"]
    if not is_index(index) or not 0 <= index < num_samples:
        raise ValueError(f"options['index']={index!r} must be an int in [0, {num_samples})")
    return int(index)


class TextGenEnv(gym.Env[dict[str, np.ndarray], int]):
    """Token-level text generation: the agent writes a completion for a task prompt, one token a step.

    ## Observation
    ``Dict(input_ids=Box(int64, (P+N,)), attention_mask=Box(int8 0/1, (P+N,)))`` with
    P = ``max_prompt_tokens`` and N = ``max_new_tokens``. The prompt is left-padded into the
    first P slots; generated tokens fill slots P, P+1, ... in order; the rest is padding
    (``pad_token_id``, mask 0).

    ## Action
    ``Discrete(V)``: the id of the next token, V = the tokenizer's vocabulary (or ``vocab_size``
    when the model's embedding matrix is larger). ``step`` takes exactly the values whose type
    ``action_space.contains`` accepts: a Python int (``True`` is 1, as for the space), a NumPy
    integer scalar or a 0-d integer array (not shape ``(1,)``); anything else is a TypeError.
    Ids outside ``[0, real vocabulary)`` raise a ValueError.

    ## Reward
    0 on every step but the last; on the last, the task reward applied to the decoded
    completion (``reward(prompts, completions, references, **meta)``). Wrappers may add
    per-token shaping.

    ## Episode end
    ``terminated=True`` when the agent emits EOS (``eos_token_id``) or after N tokens; never
    ``truncated``: the length cap is part of the task, so agents must not bootstrap past it.

    The spec has no ``max_episode_steps``, on purpose. In Gymnasium that number is where a
    ``TimeLimit`` *truncates*; here the bound is a termination, and it is the constructor
    argument N, which one registry entry cannot follow (a registered 32 would cut a
    ``max_new_tokens=64`` env at 32). The elapsed time is in the observation already:
    ``attention_mask[P:].sum()`` tokens of N. Time wrappers that need a horizon
    (``TimeAwareObservation``) work under ``gym.make(..., max_new_tokens=N,
    max_episode_steps=N)``: the cap step then reports ``terminated=True`` and
    ``truncated=True``, and terminated wins (Gymnasium's and SB3's rules do not bootstrap it).
    An outer ``TimeLimit`` shorter than N truncates the episode unscored (reward 0,
    ``info={}``): truncation means the episode goes on beyond the cut, so an agent bootstraps
    the value there, and a task score on top would count it twice. To score completions of at
    most k tokens, set ``max_new_tokens=k``.

    ## Info
    ``reset`` gives ``prompt`` (the text), ``index`` (the sample of the split, None for an
    ``options["prompt"]``) and ``prompt_tokens``. Intermediate steps give ``{}``. The final
    step gives ``prompt``, ``completion``, ``references``, ``reward_components`` (``{name:
    float}``), ``num_tokens`` and ``finish_reason`` ("eos" or "length"). The vector env gives
    these same keys, batched as ``SyncVectorEnv`` batches them.

    ## Arguments
    - ``task``: a registered task name (see :func:`textgym.tasks.list_tasks`) or a :class:`Task`.
    - ``tokenizer``: HF id, local path, alias (default ``"smollm2-135m"``) or a tokenizer.
    - ``reward``: name, ``"module:function"``, callable or ``{name: weight}`` mix; default: the task's.
    - ``max_prompt_tokens`` (P, default 128), ``max_new_tokens`` (N, default 32).
    - ``chat_template``: wrap prompts in the tokenizer's chat template (default True).
    - ``truncation``: ``"left"`` (default) keeps the end of a long prompt; ``"error"`` raises.
    - ``split``: task split to sample from (default "train").
    - ``eos_token_id``: the stop token (default: the tokenizer's EOS).
    - ``vocab_size``: action-space size when the model's vocabulary is padded beyond the tokenizer's.
    - ``task_kwargs`` / ``reward_kwargs``: options for the task and reward builders.
    - ``render_mode``: ``"ansi"`` (returns the text) or ``"human"`` (prints it); any other
      mode (such as the ``"rgb_array"`` that SB3's ``make_vec_env`` passes) warns and renders
      nothing (``render_mode`` becomes None).

    ## Reset options
    A dict (or None) with at most one key. ``{"prompt": str | chat messages}`` uses that prompt
    (no references); ``{"index": i}`` uses sample i of the split (fixed order, for evaluation;
    an int, not a bool); otherwise a sample is drawn from ``np_random``, so the same seed gives
    the same episodes. Anything else raises an error that names it.

    ## Version history
    - v0: initial release.

    ## Example
    >>> import gymnasium as gym, textgym
    >>> env = gym.make("TextGen-v0", task="keywords", max_new_tokens=4)
    >>> obs, info = env.reset(seed=0)
    >>> obs["input_ids"].shape, int(obs["attention_mask"][128:].sum())
    ((132,), 0)
    >>> for token in env.unwrapped.tokenizer.encode("a dog"):
    ...     obs, reward, terminated, truncated, info = env.step(token)
    >>> obs, reward, terminated, truncated, info = env.step(env.unwrapped.eos_token_id)
    >>> terminated, info["completion"], info["finish_reason"]
    (True, 'a dog', 'eos')
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(
        self,
        task: str | Task = "keywords",
        tokenizer: str | PreTrainedTokenizerBase = SMOLLM2_ALIAS,
        reward: RewardSpec | None = None,
        max_prompt_tokens: int = 128,
        max_new_tokens: int = 32,
        chat_template: bool = True,
        truncation: Truncation = "left",
        split: str = "train",
        eos_token_id: int | None = None,
        vocab_size: int | None = None,
        task_kwargs: Mapping[str, Any] | None = None,
        reward_kwargs: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
    ) -> None:
        render_mode = check_render_mode(render_mode, self.metadata["render_modes"], "TextGenEnv")
        validate_lengths(max_prompt_tokens, max_new_tokens)
        self.task = make_task(task, **dict(task_kwargs or {}))
        self.split = split
        self.task.split(split)  # fail early on a missing split
        self.tokenizer = resolve_tokenizer(tokenizer)
        self.reward_fn = make_reward(
            self.task.default_reward if reward is None else reward, **dict(reward_kwargs or {})
        )
        self.vocab_size, self._real_vocab = resolve_vocab(self.tokenizer, vocab_size)
        self.eos_token_id = (
            self.tokenizer.eos_token_id if eos_token_id is None else int(eos_token_id)
        )
        if self.eos_token_id is None or not 0 <= self.eos_token_id < self._real_vocab:
            raise ValueError(
                f"eos_token_id={self.eos_token_id!r} is not a token id of the tokenizer"
            )
        self.pad_token_id = int(self.tokenizer.pad_token_id)
        self.max_prompt_tokens = max_prompt_tokens
        self.max_new_tokens = max_new_tokens
        self.render_mode = render_mode
        self.encoder = PromptEncoder(
            self.tokenizer, max_prompt_tokens, chat_template, truncation, self.pad_token_id
        )

        length = max_prompt_tokens + max_new_tokens
        self.observation_space = observation_space(length, self.vocab_size)
        self.action_space = spaces.Discrete(self.vocab_size)
        self._ids = np.full(length, self.pad_token_id, dtype=np.int64)
        self._mask = np.zeros(length, dtype=np.int8)
        self._num_generated = 0
        self._active = False
        self._sample: Sample | None = None

    # -- episode -----------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self._sample, key, index = self._choose_sample(check_options(options))
        prompt_ids, prompt_mask = self.encoder.padded(self._sample.prompt, cache_key=key)
        P = self.max_prompt_tokens
        self._ids[:P], self._mask[:P] = prompt_ids, prompt_mask
        self._ids[P:], self._mask[P:] = self.pad_token_id, 0
        self._num_generated = 0
        self._active = True
        info = {
            "prompt": prompt_text(self._sample.prompt),
            "index": index,
            "prompt_tokens": int(prompt_mask.sum()),
        }
        return self._observation(), info

    def _choose_sample(self, options: Mapping[str, Any]) -> tuple[Sample, Any, int | None]:
        unknown = set(options) - {"prompt", "index"}
        if unknown or len(options) > 1:
            raise ValueError(
                f"reset options take one of 'prompt' or 'index', got {sorted(options)}"
            )
        if "prompt" in options:
            prompt: Prompt = options["prompt"]
            if not isinstance(prompt, (str, list)):
                raise TypeError(
                    f"options['prompt'] must be str or chat messages, got {type(prompt).__name__}"
                )
            return Sample(prompt), None, None
        samples = self.task.split(self.split)
        index = sample_index(options, len(samples), self.np_random)
        return samples[index], (self.split, index), index

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if not self._active:
            raise RuntimeError(
                "step() called before reset() or after the episode ended; call reset() first"
            )
        token = self._check_action(action)
        slot = self.max_prompt_tokens + self._num_generated
        self._ids[slot] = token
        self._mask[slot] = 1
        self._num_generated += 1
        if token != self.eos_token_id and self._num_generated < self.max_new_tokens:
            return self._observation(), 0.0, False, False, {}
        self._active = False
        return self._observation(), *self._finish(token == self.eos_token_id)

    def _check_action(self, action: Any) -> int:
        # The types Discrete.contains accepts: a Python int (bool included, as for the space),
        # or a NumPy integer scalar / 0-d array that casts to the space's int64.
        if not (
            isinstance(action, int)
            or (
                isinstance(action, (np.generic, np.ndarray))
                and action.shape == ()
                and np.issubdtype(action.dtype, np.integer)
                and np.can_cast(action.dtype, self.action_space.dtype)
            )
        ):
            shape = f" of shape {action.shape}" if isinstance(action, np.ndarray) else ""
            raise TypeError(
                "action must be an int token id (a Python or NumPy int, or a 0-d int array, "
                f"as action_space.contains accepts), got {type(action).__name__}{shape} {action!r}"
            )
        token = int(action)
        if not 0 <= token < self._real_vocab:
            raise ValueError(
                f"action {token} is outside the tokenizer's vocabulary [0, {self._real_vocab})"
            )
        return token

    def _finish(self, hit_eos: bool) -> tuple[float, bool, bool, dict[str, Any]]:
        assert self._sample is not None
        start = self.max_prompt_tokens
        end = start + self._num_generated - int(hit_eos)
        prompt = prompt_text(self._sample.prompt)
        references = list(self._sample.references)
        completions, total, components = score_episodes(
            self.reward_fn,
            self.tokenizer,
            [prompt],
            [self._ids[start:end]],
            [references],
            [self._sample.meta],
        )
        info = {
            "prompt": prompt,
            "completion": completions[0],
            "references": references,
            "reward_components": {k: float(v[0]) for k, v in components.items()},
            "num_tokens": self._num_generated,
            "finish_reason": "eos" if hit_eos else "length",
        }
        return float(total[0]), True, False, info

    def _observation(self) -> dict[str, np.ndarray]:
        return {"input_ids": self._ids.copy(), "attention_mask": self._mask.copy()}

    # -- rendering ---------------------------------------------------------------------------
    def render(self) -> str | None:
        if self.render_mode is None:
            gym.logger.warn(
                "render() called without a render_mode; pass render_mode='ansi' or 'human'"
            )
            return None
        start = self.max_prompt_tokens
        prompt = self.tokenizer.decode(self._ids[:start][self._mask[:start].astype(bool)])
        completion = self.tokenizer.decode(self._ids[start : start + self._num_generated])
        text = (
            f"{prompt}\x1b[1m{completion}\x1b[0m"
            if self.render_mode == "human"
            else f"{prompt}[{completion}]"
        )
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def __repr__(self) -> str:
        return (
            f"TextGenEnv(task={self.task.name!r}, reward={reward_name(self.reward_fn)!r}, "
            f"P={self.max_prompt_tokens}, N={self.max_new_tokens}, V={self.vocab_size})"
        )
