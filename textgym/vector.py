"""TextGenVectorEnv: B text-generation episodes stepped with numpy array operations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from textgym.env import (
    check_options,
    check_render_mode,
    is_index,
    observation_space,
    resolve_tokenizer,
    resolve_vocab,
    validate_lengths,
)
from textgym.episode import PromptEncoder, Truncation, score_episodes
from textgym.models import SMOLLM2_ALIAS
from textgym.rewards.base import RewardSpec, make_reward
from textgym.tasks.base import Sample, Task, make_task, prompt_text

if TYPE_CHECKING:  # type hints only: importing transformers costs ~0.7 s
    from transformers import PreTrainedTokenizerBase


def parse_autoreset_mode(mode: AutoresetMode | str) -> AutoresetMode:
    """An :class:`AutoresetMode` from itself, its value ("NextStep") or name ("next_step")."""
    if isinstance(mode, AutoresetMode):
        return mode
    key = str(mode).replace("_", "").lower()
    for member in AutoresetMode:
        if key in (member.value.lower(), member.name.replace("_", "").lower()):
            return member
    allowed = [m.name.lower() for m in AutoresetMode]
    raise ValueError(f"autoreset_mode must be one of {allowed} or an AutoresetMode, got {mode!r}")


def vector_rng(seed: Any) -> tuple[np.random.Generator, int]:
    """The one generator a native vector env draws every row from, seeded with ``seed``."""
    if not is_index(seed):
        raise TypeError(
            f"seed must be an int or None, got {type(seed).__name__} {seed!r}: one "
            "generator draws every row (as Gymnasium's CartPoleVectorEnv); use "
            "vectorization_mode='sync' for one seed per sub-env"
        )
    return seeding.np_random(int(seed))


def rows_to_reset(mask: Any, num_envs: int, started: bool) -> np.ndarray:
    """The sub-env indices a ``reset_mask`` option selects (every row when it is None)."""
    if mask is None:
        return np.arange(num_envs)
    mask = np.asarray(mask)
    if mask.shape != (num_envs,) or mask.dtype != bool:
        raise ValueError(
            f"reset_mask must be a bool array of shape ({num_envs},), got {mask.dtype} {mask.shape}"
        )
    if not mask.any():
        raise ValueError(
            "reset_mask has no True entry, so there is nothing to reset; "
            "mark at least one sub-env True"
        )
    if not started and not mask.all():
        raise ValueError(
            "the first reset() must reset every sub-env; omit reset_mask or pass all True"
        )
    return np.flatnonzero(mask)


class TextGenVectorEnv(VectorEnv):
    """A native batch of :class:`~textgym.env.TextGenEnv` episodes.

    Observations, actions, rewards and flags are arrays with a leading batch axis B; the spaces
    are the single env's batched. All episodes that end in one step are decoded and scored with
    ONE reward call. Takes every argument of :class:`~textgym.env.TextGenEnv` plus:

    - ``num_envs`` (B).
    - ``autoreset_mode``: Gymnasium's ``NEXT_STEP`` (default), ``SAME_STEP`` (final observation
      and info under ``info["final_obs"]``/``info["final_info"]``) or ``DISABLED``. With
      DISABLED, a finished sub-env idles (its actions are ignored, reward 0, both flags False)
      until ``reset(options={"reset_mask": mask})``: this gives lockstep batches whose rows
      all append at the same column, which a KV-cache policy wants.
    - ``copy``: return copies of the observation buffers (default True); False returns the
      internal buffers, which the next step overwrites.

    Reset options (a dict or None): ``reset_mask`` (bool (B,) with at least one True),
    ``prompt`` (one prompt, or a list of one per reset row), ``index`` (an int, or a list of
    one per reset row, of sample indices of the split).

    ## Info: the same as ``gym.make_vec(..., vectorization_mode="sync")``
    ``info`` is exactly what Gymnasium's ``SyncVectorEnv`` makes of the single env's infos
    (see :class:`~textgym.env.TextGenEnv`), key for key, dtype for dtype, in every autoreset
    mode: each key is a (B,) array with its ``_key`` mask of the rows that gave it.

    - Rows that (re)start an episode give ``prompt``, ``index`` (int64; an object array of
      None for ``options["prompt"]``) and ``prompt_tokens`` (int64): after ``reset()``, and
      under NEXT_STEP in the step that restarts them (reward 0, flags False).
    - Rows that finish give ``prompt``, ``completion``, ``references``, ``num_tokens`` (int64),
      ``finish_reason`` and ``reward_components``: a dict ``{name: float64 (B,), "_name":
      mask}``, masked as a whole by ``_reward_components``. Under NEXT_STEP and DISABLED they
      are top-level; under SAME_STEP they are only in ``final_info`` (with ``final_obs``), and
      the top level holds the reset info of the rows restarted in that step.
    - Under NEXT_STEP a step can hold both kinds (rows that finish and rows that restart), so
      ``prompt`` may mix both, as in ``SyncVectorEnv``: ``_completion`` marks the finished rows.

    ## Seeding (the convention of Gymnasium's native ``CartPoleVectorEnv``)
    One generator draws the samples of every row: ``reset(seed=s)`` seeds it with the int s,
    and ``np_random_seed`` is s. ``SyncVectorEnv`` instead seeds sub-env i with s + i, so the
    two draw different prompts from the same seed (they agree on a one-sample task or under
    ``options["index"]``); a list of per-row seeds is refused with a message.

    >>> import gymnasium as gym, textgym
    >>> envs = gym.make_vec("TextGen-v0", num_envs=3, max_new_tokens=2)
    >>> obs, info = envs.reset(seed=0)
    >>> obs["input_ids"].shape
    (3, 130)
    >>> eos = envs.unwrapped.eos_token_id
    >>> obs, reward, terminated, truncated, info = envs.step(np.array([eos, 42, 42]))
    >>> terminated.tolist(), info["_completion"].tolist()
    ([True, False, False], [True, False, False])
    """

    def __init__(
        self,
        num_envs: int = 1,
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
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        copy: bool = True,
        render_mode: str | None = None,
    ) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        validate_lengths(max_prompt_tokens, max_new_tokens)
        self.autoreset_mode = parse_autoreset_mode(autoreset_mode)
        self.metadata = {"autoreset_mode": self.autoreset_mode, "render_modes": ["ansi"]}
        self.render_mode = check_render_mode(
            render_mode, self.metadata["render_modes"], "TextGenVectorEnv"
        )
        self.num_envs = num_envs
        self.task = make_task(task, **dict(task_kwargs or {}))
        self.split = split
        self.task.split(split)
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
        self.encoder = PromptEncoder(
            self.tokenizer, max_prompt_tokens, chat_template, truncation, self.pad_token_id
        )
        self.copy = copy

        length = max_prompt_tokens + max_new_tokens
        self.single_observation_space = observation_space(length, self.vocab_size)
        self.single_action_space = spaces.Discrete(self.vocab_size)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

        B = num_envs
        self._ids = np.full((B, length), self.pad_token_id, dtype=np.int64)  # (B, P+N)
        self._mask = np.zeros((B, length), dtype=np.int8)  # (B, P+N)
        self._num_generated = np.zeros(B, dtype=np.int64)
        self._active = np.zeros(B, dtype=bool)
        self._needs_reset = np.zeros(B, dtype=bool)  # NEXT_STEP: reset these at the next step
        self._samples: list[Sample | None] = [None] * B
        self._prompts: list[str] = [""] * B  # prompt_text of each row's sample
        self._rows = np.arange(B)
        self._zeros_f = np.zeros(B, dtype=np.float64)
        self._false = np.zeros(B, dtype=bool)
        self._np_random, _ = seeding.np_random()
        self._started = False

    @property
    def active(self) -> np.ndarray:
        """Bool (B,): the sub-envs with an episode in progress (a copy)."""
        return self._active.copy()

    # -- reset -------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if seed is not None:
            self._np_random, self._np_random_seed = vector_rng(seed)
        options = dict(check_options(options))
        unknown = set(options) - {"reset_mask", "prompt", "index"}
        if unknown:
            raise ValueError(
                f"unknown reset option(s) {sorted(unknown)}; allowed: reset_mask, prompt, index"
            )
        if "prompt" in options and "index" in options:
            raise ValueError("reset options take 'prompt' or 'index', not both")
        rows = rows_to_reset(options.pop("reset_mask", None), self.num_envs, self._started)
        info: dict[str, Any] = {}
        self._reset_rows(rows, options, info)
        self._started = True
        return self._observation(), info

    def _reset_rows(
        self, rows: np.ndarray, options: Mapping[str, Any], info: dict[str, Any]
    ) -> None:
        """Start new episodes in ``rows`` and put their reset info into ``info``."""
        samples = self.task.split(self.split)
        if "prompt" in options:
            prompts = self._per_row(options["prompt"], rows, "prompt")
            chosen = [(Sample(p), None) for p in prompts]
            indices: list[int | None] = [None] * rows.size
        else:
            if "index" in options:
                given = self._per_row(options["index"], rows, "index")
                for index in given:
                    if not is_index(index) or not 0 <= index < len(samples):
                        raise ValueError(f"index {index!r} must be an int in [0, {len(samples)})")
            else:
                given = self._np_random.integers(len(samples), size=rows.size)
            indices = [int(i) for i in given]
            chosen = [(samples[i], (self.split, i)) for i in indices]
        ids, mask = self.encoder.padded_batch(
            [sample.prompt for sample, _ in chosen], [key for _, key in chosen]
        )
        P = self.max_prompt_tokens
        self._ids[rows, :P] = ids  # (R, P)
        self._mask[rows, :P] = mask
        self._ids[rows, P:] = self.pad_token_id
        self._mask[rows, P:] = 0
        prompts = [prompt_text(sample.prompt) for sample, _ in chosen]
        for i, (sample, _), prompt in zip(rows, chosen, prompts, strict=True):
            self._samples[i] = sample
            self._prompts[i] = prompt
        self._num_generated[rows] = 0
        self._active[rows] = True
        self._needs_reset[rows] = False
        self._put_info(info, "prompt", rows, prompts)
        # int64 as SyncVectorEnv batches Python ints; an object array of None for given prompts.
        self._put_info(info, "index", rows, indices, None if indices[0] is None else np.int64)
        self._put_info(info, "prompt_tokens", rows, mask.sum(axis=1), np.int64)

    @staticmethod
    def _per_row(value: Any, rows: np.ndarray, name: str) -> list[Any]:
        """One value for every reset row: a list of len(rows), or one value repeated.

        A list of chat-message dicts is one prompt; a list of strings or of message lists is
        one prompt per row.
        """
        is_list = isinstance(value, (list, tuple, np.ndarray)) and (
            name == "index" or (len(value) > 0 and isinstance(value[0], (str, list)))
        )
        if not is_list:
            return [value] * rows.size
        if len(value) != rows.size:
            raise ValueError(
                f"reset option {name!r} as a list needs one entry per reset sub-env ({rows.size})"
            )
        return list(value)

    # -- step --------------------------------------------------------------------------------
    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("step() called before reset(); call reset() first")
        actions = self._check_actions(actions)
        info: dict[str, Any] = {}
        restarting = np.flatnonzero(self._needs_reset)
        if restarting.size:  # NEXT_STEP autoreset: these rows start afresh and ignore their action
            self._reset_rows(restarting, {}, info)
            self._active[restarting] = False  # not stepped this call
        stepping = self._active
        if not stepping.any():
            self._active[restarting] = True
            return (
                self._observation(),
                self._zeros_f.copy(),
                self._false.copy(),
                self._false.copy(),
                info,
            )
        slots = self.max_prompt_tokens + self._num_generated
        if stepping.all():  # the common case: no boolean-mask copies
            self._ids[self._rows, slots] = actions
            self._mask[self._rows, slots] = 1
        else:
            self._ids[self._rows[stepping], slots[stepping]] = actions[stepping]
            self._mask[self._rows[stepping], slots[stepping]] = 1
        self._num_generated += stepping
        hit_eos = stepping & (actions == self.eos_token_id)
        ended = hit_eos | (stepping & (self._num_generated >= self.max_new_tokens))
        rewards = np.zeros(self.num_envs, dtype=np.float64)  # as SyncVectorEnv
        same_step = self.autoreset_mode == AutoresetMode.SAME_STEP
        if ended.any():
            # SAME_STEP keeps the final info apart, as SyncVectorEnv does.
            final: dict[str, Any] = {} if same_step else info
            self._finish(np.flatnonzero(ended), hit_eos, rewards, final)
            self._active[ended] = False
        self._active[restarting] = True
        terminated = ended
        observation = self._observation()
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._needs_reset |= ended
        elif same_step and ended.any():
            info["final_obs"] = np.array([None] * self.num_envs, dtype=object)
            for i in np.flatnonzero(ended):
                info["final_obs"][i] = {k: v[i].copy() for k, v in observation.items()}
            info["_final_obs"] = ended.copy()
            info["final_info"], info["_final_info"] = final, ended.copy()
            self._reset_rows(np.flatnonzero(ended), {}, info)
            observation = self._observation()
        return observation, rewards, terminated, self._false.copy(), info

    def _check_actions(self, actions: Any) -> np.ndarray:
        arr = np.asarray(actions)
        # What action_space (MultiDiscrete) contains: shape (B,), a dtype that casts to int64.
        if arr.shape != (self.num_envs,) or not np.can_cast(arr.dtype, np.int64):
            raise TypeError(
                f"actions must be an int array of shape ({self.num_envs},), got {arr.dtype} {arr.shape}"
            )
        low, high = arr.min(), arr.max()
        if low < 0 or high >= self._real_vocab:
            bad = arr[(arr < 0) | (arr >= self._real_vocab)][0]
            raise ValueError(
                f"action {bad} is outside the tokenizer's vocabulary [0, {self._real_vocab})"
            )
        return arr

    def _finish(
        self, rows: np.ndarray, hit_eos: np.ndarray, rewards: np.ndarray, info: dict[str, Any]
    ) -> None:
        """Decode and score every episode that ended this step with one reward call."""
        P = self.max_prompt_tokens
        samples = [self._samples[i] for i in rows]
        prompts = [self._prompts[i] for i in rows]
        references = [list(s.references) for s in samples]  # type: ignore[union-attr]
        ends = P + self._num_generated[rows] - hit_eos[rows]
        completion_ids = [self._ids[i, P:end] for i, end in zip(rows, ends, strict=True)]
        metas = [s.meta for s in samples]  # type: ignore[union-attr]
        completions, total, components = score_episodes(
            self.reward_fn, self.tokenizer, prompts, completion_ids, references, metas
        )
        rewards[rows] = total
        self._put_info(info, "prompt", rows, prompts)
        self._put_info(info, "completion", rows, completions)
        self._put_info(info, "references", rows, references)
        self._put_info(info, "num_tokens", rows, self._num_generated[rows], np.int64)
        reasons = ["eos" if hit_eos[i] else "length" for i in rows]  # str, as the single env's
        self._put_info(info, "finish_reason", rows, reasons)
        parts = info.setdefault("reward_components", {})
        for name, values in components.items():
            self._put_info(parts, name, rows, values, np.float64)  # Python floats batch to float64
        self._put_info(info, "_reward_components", rows, None)

    def _put_info(
        self,
        info: dict[str, Any],
        key: str,
        rows: np.ndarray,
        values: Any,
        dtype: type[np.generic] | None = None,
    ) -> None:
        """Set ``info[key][rows] = values`` and mark the rows in ``info["_" + key]``.

        Mirrors ``VectorEnv._add_info``: a new key gets a zero array of ``dtype`` (or an object
        array of None), an existing key is filled in. With ``values=None``, only the mask
        ``key`` (which must start with "_") is set: a nested dict's mask.
        """
        if values is not None:
            if key not in info:
                info[key] = (
                    np.full(self.num_envs, None, dtype=object)
                    if dtype is None
                    else np.zeros(self.num_envs, dtype=dtype)
                )
            if dtype is None:  # object values one by one: a list value must not broadcast
                for i, value in zip(rows, values, strict=True):
                    info[key][i] = value
            else:
                info[key][rows] = values
            key = "_" + key
        mask = info.setdefault(key, np.zeros(self.num_envs, dtype=bool))
        mask[rows] = True

    def _observation(self) -> dict[str, np.ndarray]:
        if self.copy:
            return {"input_ids": self._ids.copy(), "attention_mask": self._mask.copy()}
        return {"input_ids": self._ids, "attention_mask": self._mask}

    def render(self) -> tuple[str, ...] | None:
        if self.render_mode != "ansi":
            return None
        P = self.max_prompt_tokens
        return tuple(
            self.tokenizer.decode(self._ids[i, :P][self._mask[i, :P].astype(bool)])
            + "["
            + self.tokenizer.decode(self._ids[i, P : P + self._num_generated[i]])
            + "]"
            for i in range(self.num_envs)
        )
