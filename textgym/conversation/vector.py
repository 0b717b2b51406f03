"""ConversationVectorEnv: B dialogues stepped together, one simulator call per step."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from textgym.conversation.dialogue import FailurePolicy
from textgym.conversation.env import ConversationSetup
from textgym.conversation.simulators import UserSimulator
from textgym.env import check_options, check_render_mode, is_index, observation_space
from textgym.models import SMOLLM2_ALIAS
from textgym.rewards.base import RewardSpec
from textgym.tasks.base import Task
from textgym.vector import TextGenVectorEnv, parse_autoreset_mode, rows_to_reset, vector_rng

if TYPE_CHECKING:  # type hints only: importing transformers costs ~0.7 s
    from transformers import PreTrainedTokenizerBase


class ConversationVectorEnv(VectorEnv):
    """A native batch of :class:`~textgym.conversation.env.ConversationEnv` dialogues.

    All B dialogues share one token buffer; every agent turn that ends in a step is scored
    with ONE turn-reward call, every sub-env that needs a user reply gets it from ONE simulator
    call, and every dialogue that ends is scored with ONE final-reward call. Takes every
    argument of :class:`~textgym.conversation.env.ConversationEnv` plus ``num_envs`` (B),
    ``autoreset_mode`` and ``copy``, with the meaning they have for
    :class:`~textgym.vector.TextGenVectorEnv` (``"disabled"`` gives lockstep batches for a
    KV-cache policy: a finished sub-env idles until ``reset(options={"reset_mask": mask})``).

    Reset options: ``reset_mask`` (bool (B,)) and ``index`` (an int, or a list of one per reset
    row). Seeding: one generator draws every row's sample (``reset(seed=s)``), as in
    :class:`~textgym.vector.TextGenVectorEnv`.

    ``info`` is what Gymnasium's ``SyncVectorEnv`` makes of the single env's infos, in every
    autoreset mode (the per-row dicts are batched by ``VectorEnv._add_info``, the function
    ``SyncVectorEnv`` uses): with the same sample indices and actions, the two agree row by row.

    >>> import gymnasium as gym, textgym
    >>> envs = gym.make_vec("TextGen-Conversation-v0", num_envs=3, max_context_tokens=160)
    >>> obs, info = envs.reset(seed=0)
    >>> obs["input_ids"].shape
    (3, 192)
    >>> eot = envs.unwrapped.end_of_turn_token_id
    >>> obs, reward, terminated, truncated, info = envs.step(np.array([eot, 42, eot]))
    >>> info["_turn"].tolist(), envs.unwrapped.dialogues.user_calls
    ([True, False, True], 1)
    """

    def __init__(
        self,
        num_envs: int = 1,
        task: str | Task = "hidden_item",
        tokenizer: str | PreTrainedTokenizerBase = SMOLLM2_ALIAS,
        user: str | UserSimulator | None = None,
        reward: RewardSpec | None = None,
        turn_reward: RewardSpec | None = None,
        turn_cost: float | None = None,
        max_context_tokens: int = 256,
        max_turn_tokens: int = 32,
        max_turns: int = 8,
        max_total_tokens: int | None = None,
        end_of_turn_token_id: int | None = None,
        on_user_failure: FailurePolicy = "end",
        user_timeout: float | None = 60.0,
        split: str = "train",
        vocab_size: int | None = None,
        task_kwargs: Mapping[str, Any] | None = None,
        user_kwargs: Mapping[str, Any] | None = None,
        reward_kwargs: Mapping[str, Any] | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        copy: bool = True,
        render_mode: str | None = None,
    ) -> None:
        if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        self.autoreset_mode = parse_autoreset_mode(autoreset_mode)
        self.metadata = {"autoreset_mode": self.autoreset_mode, "render_modes": ["ansi"]}
        self.render_mode = check_render_mode(
            render_mode, self.metadata["render_modes"], "ConversationVectorEnv"
        )
        setup = ConversationSetup.build(
            num_envs, task, tokenizer, user, reward, turn_reward, turn_cost, max_context_tokens,
            max_turn_tokens, max_turns, max_total_tokens, end_of_turn_token_id, on_user_failure,
            user_timeout, split, vocab_size, task_kwargs, user_kwargs, reward_kwargs,
        )  # fmt: skip
        self.num_envs = num_envs
        self.task, self.split, self.tokenizer = setup.task, setup.split, setup.tokenizer
        self.vocab_size, self._real_vocab = setup.vocab_size, setup.real_vocab
        self.user, self.dialogues = setup.user, setup.dialogues
        self.end_of_turn_token_id = self.dialogues.eot
        self.pad_token_id = self.dialogues.pad
        self.max_context_tokens, self.max_turn_tokens = max_context_tokens, max_turn_tokens
        self.max_turns, self.max_total_tokens = max_turns, max_total_tokens
        self.copy = copy

        length = max_context_tokens + max_turn_tokens
        self.single_observation_space = observation_space(length, self.vocab_size)
        self.single_action_space = spaces.Discrete(self.vocab_size)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._active = np.zeros(num_envs, dtype=bool)
        self._needs_reset = np.zeros(num_envs, dtype=bool)  # NEXT_STEP: reset at the next step
        self._np_random, _ = seeding.np_random()
        self._started = False

    @property
    def active(self) -> np.ndarray:
        """Bool (B,): the sub-envs with a dialogue in progress (a copy)."""
        return self._active.copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if seed is not None:
            self._np_random, self._np_random_seed = vector_rng(seed)
        options = dict(check_options(options))
        unknown = set(options) - {"reset_mask", "index"}
        if unknown:
            raise ValueError(
                f"unknown reset option(s) {sorted(unknown)}; allowed: reset_mask, index"
            )
        rows = rows_to_reset(options.pop("reset_mask", None), self.num_envs, self._started)
        self._start(rows, options.get("index"))
        self._started = True
        info: dict[str, Any] = {}
        for i in rows:
            self._add_info(info, self.dialogues.reset_info(i), i)
        return self._observation(), info

    def _start(self, rows: np.ndarray, index: Any) -> None:
        """Begin dialogues in ``rows``: sample ``index`` (one, or one per row) or drawn ones."""
        samples = self.task.split(self.split)
        if index is None:
            indices = [int(i) for i in self._np_random.integers(len(samples), size=rows.size)]
        else:
            given = (
                list(index) if isinstance(index, (list, tuple, np.ndarray)) else [index] * rows.size
            )
            if len(given) != rows.size:
                raise ValueError(
                    f"reset option 'index' as a list needs one entry per reset sub-env ({rows.size})"
                )
            for i in given:
                if not is_index(i) or not 0 <= i < len(samples):
                    raise ValueError(f"index {i!r} must be an int in [0, {len(samples)})")
            indices = [int(i) for i in given]
        self.dialogues.start(rows, [samples[i] for i in indices], indices)
        self._active[rows] = True
        self._needs_reset[rows] = False

    def step(
        self, actions: Any
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("step() called before reset(); call reset() first")
        # The same action checks as TextGen-v0's vector env (num_envs and _real_vocab).
        actions = TextGenVectorEnv._check_actions(self, actions)  # type: ignore[arg-type]
        info: dict[str, Any] = {}
        restarting = np.flatnonzero(self._needs_reset)
        stepping = self._active & ~self._needs_reset
        reset_infos: dict[int, dict[str, Any]] = {}
        if restarting.size:  # NEXT_STEP: these rows start afresh and ignore their action
            self._start(restarting, None)
            reset_infos = {i: self.dialogues.reset_info(i) for i in restarting}
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        ended = np.zeros(self.num_envs, dtype=bool)
        step_infos: dict[int, dict[str, Any]] = {}
        if stepping.any():
            rewards, ended, step_infos = self.dialogues.step(actions, stepping)
        self._active &= ~ended
        observation = self._observation()
        same_step = self.autoreset_mode == AutoresetMode.SAME_STEP
        if same_step and ended.any():
            finished = np.flatnonzero(ended)
            final_obs = {i: {k: v[i].copy() for k, v in observation.items()} for i in finished}
            self._start(finished, None)
            reset_infos = {i: self.dialogues.reset_info(i) for i in finished}
            observation = self._observation()
        for i in range(self.num_envs):  # in SyncVectorEnv's order, so dtypes agree
            if same_step and ended[i]:
                self._add_info(info, {"final_obs": final_obs[i], "final_info": step_infos[i]}, i)
            if i in reset_infos:
                self._add_info(info, reset_infos[i], i)
            elif i in step_infos:
                self._add_info(info, step_infos[i], i)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._needs_reset |= ended
        return observation, rewards, ended, np.zeros(self.num_envs, dtype=bool), info

    def _observation(self) -> dict[str, np.ndarray]:
        ids, mask = self.dialogues.ids, self.dialogues.mask
        if self.copy:
            return {"input_ids": ids.copy(), "attention_mask": mask.copy()}
        return {"input_ids": ids, "attention_mask": mask}

    def render(self) -> tuple[str, ...] | None:
        if self.render_mode != "ansi":
            return None
        return tuple(self.dialogues.render(i) for i in range(self.num_envs))
