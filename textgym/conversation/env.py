"""ConversationEnv: one episode is a whole dialogue with a simulated user, one token per step."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from textgym.conversation.dialogue import FAILURE_POLICIES, Dialogues, FailurePolicy, TurnTemplate
from textgym.conversation.simulators import ReplayUser, UserSimulator, make_user
from textgym.conversation.tasks import ConversationTask, list_conversation_tasks
from textgym.env import (
    TextGenEnv,
    check_options,
    check_render_mode,
    observation_space,
    resolve_tokenizer,
    resolve_vocab,
    sample_index,
)
from textgym.models import SMOLLM2_ALIAS
from textgym.rewards.base import RewardSpec, make_reward, reward_name
from textgym.tasks.base import Sample, Task, make_task

if TYPE_CHECKING:  # type hints only: importing transformers costs ~0.7 s
    from transformers import PreTrainedTokenizerBase


def _positive_int(name: str, value: Any, allow_none: bool = False) -> None:
    if allow_none and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        allowed = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


@dataclass
class ConversationSetup:
    """What the single and the vector env build the same way from their arguments."""

    task: ConversationTask
    split: str
    tokenizer: PreTrainedTokenizerBase
    vocab_size: int
    real_vocab: int
    user: UserSimulator
    dialogues: Dialogues

    @classmethod
    def build(
        cls,
        num_rows: int,
        task: str | Task,
        tokenizer: str | PreTrainedTokenizerBase,
        user: str | UserSimulator | None,
        reward: RewardSpec | None,
        turn_reward: RewardSpec | None,
        turn_cost: float | None,
        max_context_tokens: int,
        max_turn_tokens: int,
        max_turns: int,
        max_total_tokens: int | None,
        end_of_turn_token_id: int | None,
        on_user_failure: FailurePolicy,
        user_timeout: float | None,
        split: str,
        vocab_size: int | None,
        task_kwargs: Mapping[str, Any] | None,
        user_kwargs: Mapping[str, Any] | None,
        reward_kwargs: Mapping[str, Any] | None,
    ) -> ConversationSetup:
        _positive_int("max_context_tokens", max_context_tokens)
        _positive_int("max_turn_tokens", max_turn_tokens)
        _positive_int("max_turns", max_turns)
        _positive_int("max_total_tokens", max_total_tokens, allow_none=True)
        if on_user_failure not in FAILURE_POLICIES:
            raise ValueError(
                f"on_user_failure must be one of {list(FAILURE_POLICIES)}, got {on_user_failure!r}"
            )
        if user_timeout is not None and not (
            isinstance(user_timeout, (int, float))
            and math.isfinite(user_timeout)
            and user_timeout > 0
        ):
            raise ValueError(
                f"user_timeout must be a positive number of seconds or None, got {user_timeout!r}"
            )
        built = make_task(task, **dict(task_kwargs or {}))
        if not isinstance(built, ConversationTask):
            raise ValueError(
                f"task {built.name!r} is a single-turn task; TextGen-Conversation-v0 takes a "
                f"conversation task: one of {list_conversation_tasks()} or a ConversationTask"
            )
        built.split(split)  # fail early on a missing split
        cost = built.turn_cost if turn_cost is None else float(turn_cost)
        if not math.isfinite(cost):
            raise ValueError(f"turn_cost must be a finite number, got {turn_cost!r}")
        tok = resolve_tokenizer(tokenizer)
        vocab, real = resolve_vocab(tok, vocab_size)
        eot = (
            TurnTemplate.default_end_of_turn(tok)
            if end_of_turn_token_id is None
            else int(end_of_turn_token_id)
        )
        if not 0 <= eot < real:
            raise ValueError(f"end_of_turn_token_id={eot!r} is not a token id of the tokenizer")
        simulator = make_user(user, built, **dict(user_kwargs or {}))
        if isinstance(simulator, ReplayUser):
            missing = [i for i, x in enumerate(built.split(split)) if "user_turns" not in x.meta]
            if missing:
                raise ValueError(
                    f"user='replay' needs the logged user turns (meta['user_turns']) in every "
                    f"sample; task {built.name!r} has none in sample {missing[0]} of split "
                    f"{split!r}: use user='scripted', 'lm', 'remote', 'human' or a callable"
                )
        turn_spec = built.turn_reward if turn_reward is None else turn_reward
        dialogues = Dialogues(
            tok,
            num_rows,
            max_context_tokens,
            max_turn_tokens,
            max_turns,
            max_total_tokens,
            eot,
            int(tok.pad_token_id),
            make_reward(
                built.default_reward if reward is None else reward, **dict(reward_kwargs or {})
            ),
            None if turn_spec is None else make_reward(turn_spec),
            cost,
            simulator,
            user_timeout,
            on_user_failure,
            built.tool,
        )
        overhead = dialogues.encoder.text([{"role": "user", "content": "?"}])
        needed = len(tok(overhead, add_special_tokens=False)["input_ids"])
        if needed > max_context_tokens:
            raise ValueError(
                f"max_context_tokens={max_context_tokens} is smaller than one turn: a one-word "
                f"user message in the chat template takes {needed} tokens; raise max_context_tokens"
            )
        return cls(built, split, tok, vocab, real, simulator, dialogues)


class ConversationEnv(gym.Env[dict[str, np.ndarray], int]):
    """A whole dialogue with a simulated user, one agent token per step.

    ## Observation
    ``Dict(input_ids=Box(int64, (C+N,)), attention_mask=Box(int8 0/1, (C+N,)))``, the layout of
    ``TextGen-v0`` with C = ``max_context_tokens`` in place of P and N = ``max_turn_tokens``.
    The dialogue so far, in the tokenizer's chat template up to and including the header of the
    agent's current turn, is left-padded into the first C slots; the agent's turn fills slots
    C, C+1, ...; the rest is padding (``pad_token_id``, mask 0). The agent's tokens stay exactly
    as it chose them; the env writes only the template's own text between turns, so the decoded
    context equals the chat-template rendering of the messages (``info["messages"]``).

    Context budget: when a new user turn makes the dialogue longer than C tokens, the oldest
    turns are dropped whole (the context then starts with the system prompt, if any, and the
    oldest user turn kept; ``info["dropped_turns"]`` counts the turns dropped in that step).
    A budget too small for the system prompt, one user message and the header raises a
    ValueError that names the sizes.

    ## Action
    ``Discrete(V)``: the next token of the agent's turn, with the checks of ``TextGen-v0``.
    ``end_of_turn_token_id`` (default: the token the chat template writes after an assistant
    message, ``<|im_end|>`` for SmolLM2) ends the turn.

    ## Between turns
    A turn ends with the end-of-turn token, at N tokens, or at ``max_total_tokens`` agent tokens
    in the dialogue. The env scores the turn (``turn_reward``, optional, minus ``turn_cost``),
    asks the user simulator for the next message (ONE batched call in the vector env for every
    sub-env that needs one), and appends the end of the agent's turn (when the agent did not
    write the end-of-turn token itself), the user's message and the next assistant header.

    ## Reward
    0 on every step inside a turn. At the step that ends a turn: the per-turn reward (turn
    reward minus ``turn_cost``). At the last step it also gets the final reward (the task's,
    e.g. success), called as ``reward(openings, dialogues, references, messages=..., **meta)``:
    the dialogue after the opening as ``role: content`` lines, ``messages`` the whole dialogue.

    ## Episode end
    ``terminated=True`` when the user ends the conversation (the simulator answers None),
    after ``max_turns`` agent turns, at ``max_total_tokens``, or when the simulator fails under
    ``on_user_failure="end"``. Never ``truncated``: every cap is part of the task.

    ## User simulator failure
    A simulator call that raises, runs past ``user_timeout`` seconds, returns the wrong number
    of replies, or a reply that is neither a non-empty string nor None is a failure. With
    ``on_user_failure="end"`` (default) that episode ends, its final reward is scored as usual,
    ``reward_components["user_failure"]`` is 1.0 (0.0 in every other episode; it does not
    enter the reward) and ``info["user_error"]`` says what happened. With ``"raise"`` the step
    raises a RuntimeError naming the simulator. A call past its deadline is abandoned, never
    waited for, so a stuck simulator cannot hang training (``user_timeout=None`` waits).

    ## Info
    ``reset`` gives ``prompt`` (the opening as text), ``index`` and ``prompt_tokens`` (context
    tokens). Steps inside a turn give ``{}``. A step that ends a turn gives ``turn`` (agent turns
    so far), ``turn_tokens``, ``turn_finish_reason`` ("eot" or "length": cut at N tokens or
    at ``max_total_tokens``), ``turn_reward`` (the turn's reward alone; the last step's reward
    adds the final one), ``turn_reward_components`` (``{name: float}``, with ``turn_cost`` as ``-turn_cost``),
    ``inserted_tokens`` (tokens the env appended after the agent's last token: what a KV-cache
    policy prefills), ``dropped_turns`` and ``user_message``. The last step gives instead of
    the last three ``inserted_tokens=0`` and ``dropped_turns=0``, and adds ``messages`` (the
    dialogue), ``reward_components`` (the final reward's, plus ``user_failure``),
    ``num_turns``, ``num_tokens`` (agent tokens) and ``finish_reason`` ("user_ended",
    "max_turns", "max_total_tokens" or "user_failure").

    ## Arguments
    - ``task``: a conversation task name (:func:`list_conversation_tasks`, default
      ``"hidden_item"``) or a :class:`ConversationTask`; every sample's ``meta["goal"]`` is
      the user's goal.
    - ``tokenizer``: as for ``TextGen-v0``; it needs a chat template.
    - ``user``: ``"scripted"``, ``"replay"``, ``"lm"``, ``"remote"``, ``"human"`` or a
      callable (see :mod:`textgym.conversation.simulators`); default: the task's.
      ``user_kwargs`` go to its constructor.
    - ``reward`` / ``reward_kwargs``: the final reward (default: the task's).
    - ``turn_reward``: the per-turn reward, called as ``reward(dialogues_before, turns, None,
      messages=..., **meta)`` (default: the task's, often none); ``turn_cost``: subtracted at
      every turn (default: the task's).
    - ``max_context_tokens`` (C, default 256), ``max_turn_tokens`` (N, default 32),
      ``max_turns`` (default 8), ``max_total_tokens`` (default None: no cap beyond the turns).
    - ``end_of_turn_token_id``, ``vocab_size``, ``split``, ``task_kwargs``: as above / as
      for ``TextGen-v0``.
    - ``on_user_failure`` (``"end"`` or ``"raise"``), ``user_timeout`` (seconds, default 60).
    - ``render_mode``: ``"ansi"`` (returns the text) or ``"human"`` (prints it).

    ## Reset options
    ``{"index": i}`` plays sample i of the split; otherwise a sample is drawn from
    ``np_random``, so the same seed gives the same dialogues.

    ## Version history
    - v0: initial release.

    ## Example
    The embedded ``hidden_item`` task: a scripted user hides an animal and answers yes/no
    questions; the agent must name it. Reward: success minus 0.1 a turn.

    >>> import gymnasium as gym, textgym
    >>> env = gym.make("TextGen-Conversation-v0", max_context_tokens=160)
    >>> obs, info = env.reset(seed=0, options={"index": 0})
    >>> obs["input_ids"].shape
    (192,)
    >>> tok, eot = env.unwrapped.tokenizer, env.unwrapped.end_of_turn_token_id
    >>> def say(text):
    ...     for token in tok.encode(text) + [eot]:
    ...         result = env.step(token)
    ...     return result
    >>> obs, reward, terminated, truncated, info = say("Can it fly?")
    >>> info["user_message"], info["inserted_tokens"], round(reward, 2), terminated
    ('No.', 12, -0.1, False)
    >>> goal = env.unwrapped.sample.meta["goal"]
    >>> obs, reward, terminated, truncated, info = say(f"Is it the {goal['item']}?")
    >>> terminated, info["finish_reason"], info["reward_components"]["success"], round(reward, 2)
    (True, 'user_ended', 1.0, 0.9)
    """

    metadata = {"render_modes": ["ansi", "human"], "render_fps": 4}

    def __init__(
        self,
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
        render_mode: str | None = None,
    ) -> None:
        self.render_mode = check_render_mode(
            render_mode, self.metadata["render_modes"], "ConversationEnv"
        )
        setup = ConversationSetup.build(
            1, task, tokenizer, user, reward, turn_reward, turn_cost, max_context_tokens,
            max_turn_tokens, max_turns, max_total_tokens, end_of_turn_token_id, on_user_failure,
            user_timeout, split, vocab_size, task_kwargs, user_kwargs, reward_kwargs,
        )  # fmt: skip
        self.task, self.split, self.tokenizer = setup.task, setup.split, setup.tokenizer
        self.vocab_size, self._real_vocab = setup.vocab_size, setup.real_vocab
        self.user, self.dialogues = setup.user, setup.dialogues
        self.end_of_turn_token_id = self.dialogues.eot
        self.pad_token_id = self.dialogues.pad
        self.max_context_tokens, self.max_turn_tokens = max_context_tokens, max_turn_tokens
        self.max_turns, self.max_total_tokens = max_turns, max_total_tokens
        self.observation_space = observation_space(
            max_context_tokens + max_turn_tokens, self.vocab_size
        )
        self.action_space = spaces.Discrete(self.vocab_size)
        self._active = False
        self._true = np.ones(1, dtype=bool)

    @property
    def sample(self) -> Sample | None:
        """The sample of the current (or last) episode."""
        row = self.dialogues.rows[0]
        return None if row is None else row.sample

    @property
    def messages(self) -> list[dict[str, str]]:
        """The dialogue so far (the opening, then agent and user turns), a copy."""
        row = self.dialogues.rows[0]
        return [] if row is None else [dict(m) for m in row.messages]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        options = check_options(options)
        if set(options) - {"index"}:
            raise ValueError(f"reset options take only 'index', got {sorted(options)}")
        samples = self.task.split(self.split)
        index = sample_index(options, len(samples), self.np_random)
        self.dialogues.start([0], [samples[index]], [index])
        self._active = True
        return self._observation(), self.dialogues.reset_info(0)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if not self._active:
            raise RuntimeError(
                "step() called before reset() or after the episode ended; call reset() first"
            )
        # The same action checks as TextGen-v0 (they read action_space and _real_vocab).
        token = TextGenEnv._check_action(self, action)  # type: ignore[arg-type]
        rewards, ended, infos = self.dialogues.step(np.array([token]), self._true)
        self._active = not ended[0]
        return self._observation(), float(rewards[0]), bool(ended[0]), False, infos.get(0, {})

    def _observation(self) -> dict[str, np.ndarray]:
        return {
            "input_ids": self.dialogues.ids[0].copy(),
            "attention_mask": self.dialogues.mask[0].copy(),
        }

    def render(self) -> str | None:
        if self.render_mode is None:
            gym.logger.warn(
                "render() called without a render_mode; pass render_mode='ansi' or 'human'"
            )
            return None
        text = self.dialogues.render(0) if self.dialogues.rows[0] is not None else ""
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def __repr__(self) -> str:
        return (
            f"ConversationEnv(task={self.task.name!r}, user={self.dialogues.user_name!r}, "
            f"reward={reward_name(self.dialogues.final_reward)!r}, C={self.max_context_tokens}, "
            f"N={self.max_turn_tokens}, max_turns={self.max_turns})"
        )
