"""The batched core of TextGen-Conversation-v0: B dialogues as token buffers and turn logic.

Both :class:`~textgym.conversation.env.ConversationEnv` (B = 1) and
:class:`~textgym.conversation.vector.ConversationVectorEnv` step a :class:`Dialogues`, so the
single and the vector env cannot drift apart: the vector env only batches the per-row infos
the way Gymnasium's ``SyncVectorEnv`` does.

The state of a row is its context (the dialogue up to the current assistant header, in the chat
template, left-padded into the first C slots) followed by the agent's current turn (slots C,
C+1, ...). Agent tokens are kept verbatim (the actions, the end-of-turn token included), and the
env appends only the template's own text between turns, so a KV-cache policy can extend its
cache by exactly ``info["inserted_tokens"]`` tokens.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from textgym.conversation.simulators import ToolFn, UserSimulator, simulator_name
from textgym.episode import PromptEncoder, batch_meta, decode_batch
from textgym.rewards.base import RewardFn, score
from textgym.tasks.base import ChatMessages, Sample, prompt_text

if TYPE_CHECKING:  # type hints only: importing transformers costs ~0.7 s
    from transformers import PreTrainedTokenizerBase

FailurePolicy = Literal["end", "raise"]
FAILURE_POLICIES = ("end", "raise")

_SENTINEL = "\ue000{}\ue001"  # private-use text a template copies but never writes itself


class TurnTemplate:
    """The chat template's text between two turns, found once per layout of roles.

    Rendering the dialogue with sentinel contents shows what the template writes after an
    assistant turn (its end-of-turn text), around the user's message and before the next
    assistant turn (the generation prompt): the text the env inserts between agent turns.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, end_of_turn_token_id: int) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "TextGen-Conversation-v0 needs a tokenizer with a chat template (the state is "
                "the dialogue in that template); this tokenizer has none"
            )
        self.tokenizer = tokenizer
        self.end_of_turn_token_id = end_of_turn_token_id
        self.end_of_turn_text = tokenizer.decode([end_of_turn_token_id])
        self._cache: dict[tuple[str, ...], tuple[str, str]] = {}
        after_assistant, _ = self.between_turns(("user",))
        if not after_assistant.startswith(self.end_of_turn_text):
            raise ValueError(
                f"end_of_turn_token_id={end_of_turn_token_id} ({self.end_of_turn_text!r}) does "
                f"not end an assistant turn in this chat template, which writes "
                f"{after_assistant[:40]!r} after one; pass the id of the token it writes there"
            )

    @staticmethod
    def default_end_of_turn(tokenizer: PreTrainedTokenizerBase) -> int:
        """The first token the chat template writes after an assistant message (``<|im_end|>``
        for ChatML templates, ``<|eot_id|>`` for Llama 3)."""
        probe = [
            {"role": "user", "content": _SENTINEL.format(0)},
            {"role": "assistant", "content": _SENTINEL.format(1)},
        ]
        text = tokenizer.apply_chat_template(probe, tokenize=False)
        after = text.partition(_SENTINEL.format(1))[2]
        ids = tokenizer(after, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(
                "the chat template writes nothing after an assistant message, so no token ends "
                "a turn; pass end_of_turn_token_id"
            )
        return int(ids[0])

    def between_turns(self, roles: tuple[str, ...]) -> tuple[str, str]:
        """``(after_assistant, after_user)`` for a dialogue with ``roles`` followed by an
        assistant turn and a user turn: the template's text between the assistant's content and
        the user's, and after the user's content up to the next assistant content."""
        if roles not in self._cache:
            n = len(roles)
            messages = [
                {"role": r, "content": _SENTINEL.format(i)}
                for i, r in enumerate((*roles, "assistant", "user"))
            ]
            text = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            _, found_a, rest = text.partition(_SENTINEL.format(n))
            after_assistant, found_u, after_user = rest.partition(_SENTINEL.format(n + 1))
            if not (found_a and found_u):
                raise ValueError(
                    "the chat template does not copy message contents into its text, so the "
                    "env cannot insert turns; use a tokenizer whose template does (ChatML, Llama 3)"
                )
            self._cache[roles] = (after_assistant, after_user)
        return self._cache[roles]


@dataclass
class Dialogue:
    """One row's dialogue: the sample, the messages so far and the token pieces of its context."""

    sample: Sample
    index: int | None
    messages: ChatMessages
    head: np.ndarray  # the context's start: the opening, or system + the first kept user turn
    turns: list[np.ndarray] = field(default_factory=list)  # turn k: agent tokens + inserted
    first_kept: int = 0  # turns before it were dropped from the context (left truncation)
    user_turns: list[str] = field(default_factory=list)  # user replies, in order
    num_tokens: int = 0  # agent tokens over the whole dialogue
    num_turns: int = 0  # agent turns so far

    @property
    def system(self) -> ChatMessages:
        return [m for m in self.opening if m["role"] == "system"]

    @property
    def opening(self) -> ChatMessages:
        prompt = self.sample.prompt
        return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def call_user(
    user: UserSimulator,
    conversations: list[ChatMessages],
    goals: list[Any],
    meta: Mapping[str, list[Any]],
    timeout: float | None,
) -> tuple[list[Any] | None, str]:
    """``(replies, "")`` from one simulator call, or ``(None, why)`` when it raised, ran past
    ``timeout`` seconds or returned the wrong number of entries. A call past its deadline is
    abandoned (its thread keeps running in the background), never waited for."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["replies"] = user(conversations, goals, **meta)
        except Exception as exc:  # noqa: BLE001 - any simulator error goes to the failure policy
            box["error"] = f"{type(exc).__name__}: {exc}"

    if timeout is None:
        run()
    else:
        thread = threading.Thread(target=run, daemon=True, name="textgym-user-simulator")
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            return None, f"no answer within user_timeout={timeout} s"
    if "error" in box:
        return None, f"raised {box['error']}"
    replies = box["replies"]
    if not isinstance(replies, (list, tuple)) or len(replies) != len(conversations):
        got = len(replies) if isinstance(replies, (list, tuple)) else type(replies).__name__
        return None, f"returned {got} replies for {len(conversations)} conversations"
    return list(replies), ""


def dialogue_text(messages: ChatMessages) -> str:
    """Messages as ``role: content`` lines: how rewards see a dialogue (see :func:`prompt_text`)."""
    return prompt_text(messages)


class Dialogues:
    """B dialogues stepped together. The envs own the spaces, seeding and info batching.

    Args:
        tokenizer: the policy's tokenizer (with a chat template).
        num_rows: B.
        max_context_tokens: C, the context budget (left truncation of whole oldest turns).
        max_turn_tokens: N, the cap on tokens per agent turn.
        max_turns: the cap on agent turns per dialogue.
        max_total_tokens: the cap on agent tokens per dialogue (None: ``max_turns * N``).
        end_of_turn_token_id: the token that ends an agent turn.
        final_reward / turn_reward / turn_cost: the rewards (see the env's spec sheet).
        user: the simulator; user_timeout and on_user_failure: its failure policy.
        tool: the task's answers to API calls in an agent turn (see ConversationTask).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        num_rows: int,
        max_context_tokens: int,
        max_turn_tokens: int,
        max_turns: int,
        max_total_tokens: int | None,
        end_of_turn_token_id: int,
        pad_token_id: int,
        final_reward: RewardFn,
        turn_reward: RewardFn | None,
        turn_cost: float,
        user: UserSimulator,
        user_timeout: float | None,
        on_user_failure: FailurePolicy,
        tool: ToolFn | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.template = TurnTemplate(tokenizer, end_of_turn_token_id)
        # Renders whole dialogues (the opening, or system + one user turn) through the chat
        # template's verbatim fast path; the env never truncates inside a turn.
        self.encoder = PromptEncoder(tokenizer, max_prompt_tokens=1 << 30)
        self.C, self.N = max_context_tokens, max_turn_tokens
        self.max_turns = max_turns
        self.max_total_tokens = max_total_tokens
        self.eot = end_of_turn_token_id
        self.pad = pad_token_id
        self.final_reward = final_reward
        self.turn_reward = turn_reward
        self.turn_cost = turn_cost
        self.user = user
        self.user_name = simulator_name(user)
        self.user_timeout = user_timeout
        self.on_user_failure = on_user_failure
        self.tool = tool
        self.user_calls = 0  # simulator calls so far: one per step at most
        self._head_cache: dict[Any, np.ndarray] = {}

        B = num_rows
        self.ids = np.full((B, self.C + self.N), pad_token_id, dtype=np.int64)  # (B, C+N)
        self.mask = np.zeros((B, self.C + self.N), dtype=np.int8)  # (B, C+N)
        self.turn_len = np.zeros(B, dtype=np.int64)  # tokens of the current agent turn
        self.context_len = np.zeros(B, dtype=np.int64)
        self.rows: list[Dialogue | None] = [None] * B

    # -- tokens ------------------------------------------------------------------------------
    def _tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of template text (its special tokens parsed, none added), one call."""
        if not texts:
            return []
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [np.asarray(row, dtype=np.int64) for row in ids]

    def _write_context(self, i: int, context: np.ndarray) -> None:
        C = self.C
        self.ids[i] = self.pad
        self.mask[i] = 0
        self.ids[i, C - context.size : C] = context
        self.mask[i, C - context.size : C] = 1
        self.context_len[i] = context.size
        self.turn_len[i] = 0

    def _budget_error(self, needed: int, what: str) -> ValueError:
        return ValueError(
            f"max_context_tokens={self.C} is smaller than one turn: {what} takes {needed} "
            f"tokens in the chat template; raise max_context_tokens to at least {needed}"
        )

    # -- episodes ----------------------------------------------------------------------------
    def start(self, rows: Sequence[int], samples: Sequence[Sample], indices: Sequence[Any]) -> None:
        """Begin a dialogue in each row with its sample's opening (one tokenizer call)."""
        keys = [
            None if index is None else ("opening", index, id(s))
            for s, index in zip(samples, indices, strict=True)
        ]
        todo = [k for k, key in enumerate(keys) if key is None or key not in self._head_cache]
        fresh = self._tokenize([self.encoder.text(samples[k].prompt) for k in todo])
        for k, ids in zip(todo, fresh, strict=True):
            if keys[k] is not None:
                self._head_cache[keys[k]] = ids
        heads = dict(zip(todo, fresh, strict=True))
        for k, (i, sample, index) in enumerate(zip(rows, samples, indices, strict=True)):
            head = heads[k] if k in heads else self._head_cache[keys[k]]
            if head.size > self.C:
                raise self._budget_error(int(head.size), f"the opening of sample {index}")
            row = Dialogue(sample, index, [], head)
            row.messages = [dict(m) for m in row.opening]
            self.rows[i] = row
            self._write_context(i, head)

    def reset_info(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        assert row is not None
        return {
            "prompt": prompt_text(row.sample.prompt),
            "index": row.index,
            "prompt_tokens": int(self.context_len[i]),
        }

    def step(
        self, actions: np.ndarray, stepping: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, dict[int, dict[str, Any]]]:
        """Append each stepping row's token; close the turns that end and answer them.

        Returns ``(rewards (B,), ended (B,), infos)``: ``infos`` maps every row whose turn
        ended to its info dict (rows absent from it get ``{}``).
        """
        B = self.ids.shape[0]
        rows = np.flatnonzero(stepping)
        slots = self.C + self.turn_len[rows]
        self.ids[rows, slots] = actions[rows]
        self.mask[rows, slots] = 1
        self.turn_len[rows] += 1
        for i in rows:
            self.rows[i].num_tokens += 1  # type: ignore[union-attr]
        hit_eot = np.zeros(B, dtype=bool)
        hit_eot[rows] = actions[rows] == self.eot
        totals = np.array([r.num_tokens if r is not None else 0 for r in self.rows])
        over_total = np.zeros(B, dtype=bool)
        if self.max_total_tokens is not None:
            over_total[rows] = totals[rows] >= self.max_total_tokens
        turn_over = np.zeros(B, dtype=bool)
        turn_over[rows] = hit_eot[rows] | (self.turn_len[rows] >= self.N) | over_total[rows]
        rewards = np.zeros(B, dtype=np.float64)
        ended = np.zeros(B, dtype=bool)
        if not turn_over.any():
            return rewards, ended, {}
        return self._close_turns(np.flatnonzero(turn_over), hit_eot, over_total, rewards, ended)

    def _close_turns(
        self,
        rows: np.ndarray,
        hit_eot: np.ndarray,
        over_total: np.ndarray,
        rewards: np.ndarray,
        ended: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, dict[int, dict[str, Any]]]:
        C = self.C
        dialogues: list[Dialogue] = [self.rows[i] for i in rows]  # type: ignore[misc]
        agent_ids = [self.ids[i, C : C + self.turn_len[i]].copy() for i in rows]
        contents = [ids[:-1] if hit_eot[i] else ids for i, ids in zip(rows, agent_ids, strict=True)]
        texts = decode_batch(self.tokenizer, [c.tolist() for c in contents])
        before = [dialogue_text(d.messages) for d in dialogues]
        for d, text in zip(dialogues, texts, strict=True):
            d.messages.append({"role": "assistant", "content": text})
            d.num_turns += 1
        infos: dict[int, dict[str, Any]] = {}

        # Per-turn reward: one call for every turn that ended in this step.
        turn_total = np.full(rows.size, -self.turn_cost, dtype=np.float64)
        parts: dict[str, np.ndarray] = {}
        if self.turn_reward is not None:
            meta = {
                **batch_meta([d.sample.meta for d in dialogues]),
                "messages": [d.messages for d in dialogues],
            }
            total, parts = score(self.turn_reward, before, texts, None, **meta)
            turn_total += total
        parts = {**parts, "turn_cost": np.full(rows.size, 0.0 - self.turn_cost)}
        for k, (i, d) in enumerate(zip(rows, dialogues, strict=True)):
            rewards[i] = turn_total[k]
            infos[i] = {
                "turn": d.num_turns,
                "turn_tokens": int(self.turn_len[i]),
                "turn_finish_reason": "eot" if hit_eot[i] else "length",
                "turn_reward": float(turn_total[k]),
                "turn_reward_components": {n: float(v[k]) for n, v in parts.items()},
            }

        # Who ends now, who needs the user: one simulator call for all of those.
        reasons: dict[int, str] = {}
        for i in rows:
            if infos[i]["turn"] >= self.max_turns:
                reasons[i] = "max_turns"
            elif over_total[i]:
                reasons[i] = "max_total_tokens"
        errors: dict[int, str] = {}
        replies: dict[int, str] = {}
        if self.tool is not None:  # API calls in the agent's turn are answered, not the user
            for i in rows:
                d = self.rows[i]
                if i not in reasons and d is not None:
                    answer = self.tool(d.messages, d.sample.meta)
                    if answer is not None:
                        replies[i] = answer
        ask = [i for i in rows if i not in reasons and i not in replies]
        if ask:
            asked = [self.rows[i] for i in ask]
            self.user_calls += 1
            meta = batch_meta([d.sample.meta for d in asked])  # type: ignore[union-attr]
            answer, why = call_user(
                self.user,
                [[dict(m) for m in d.messages] for d in asked],  # type: ignore[union-attr]
                [d.sample.meta["goal"] for d in asked],  # type: ignore[union-attr]
                meta,
                self.user_timeout,
            )
            for k, i in enumerate(ask):
                reply = None if answer is None else answer[k]
                if answer is None:
                    errors[i] = why
                elif reply is None:
                    reasons[i] = "user_ended"
                elif not isinstance(reply, str) or not reply.strip():
                    errors[i] = f"answered {reply!r}, not a message or None"
                else:
                    replies[i] = reply
        if errors:
            if self.on_user_failure == "raise":
                i, why = next(iter(errors.items()))
                raise RuntimeError(
                    f"user simulator {self.user_name!r} failed for sub-env {i}: {why} "
                    "(on_user_failure='raise'; pass on_user_failure='end' to end such episodes "
                    "with the flagged reward component 'user_failure' instead)"
                )
            for i, why in errors.items():
                reasons[i] = "user_failure"
                infos[i]["user_error"] = f"user simulator {self.user_name!r} {why}"

        # Insert the user turns and the next assistant header.
        order = [i for i in rows if i in replies]
        pieces = []
        for i in order:
            d = self.rows[i]
            roles = tuple(m["role"] for m in d.messages[:-1])  # type: ignore[union-attr]
            after_assistant, after_user = self.template.between_turns(roles)
            if hit_eot[i]:  # the agent wrote the end-of-turn token itself
                after_assistant = after_assistant[len(self.template.end_of_turn_text) :]
            pieces.append(after_assistant + replies[i] + after_user)
        for i, inserted in zip(order, self._tokenize(pieces), strict=True):
            d = self.rows[i]
            assert d is not None
            d.messages.append({"role": "user", "content": replies[i]})
            d.user_turns.append(replies[i])
            d.turns.append(np.concatenate([self.ids[i, C : C + self.turn_len[i]], inserted]))
            dropped = self._fit_context(i, d)
            infos[i]["inserted_tokens"] = int(inserted.size)
            infos[i]["dropped_turns"] = dropped
            infos[i]["user_message"] = replies[i]

        done = [i for i in rows if i in reasons]
        if done:
            self._finish(done, reasons, rewards, infos)
            ended[done] = True
        return rewards, ended, infos

    def _fit_context(self, i: int, d: Dialogue) -> int:
        """Write row i's context, dropping its oldest turns while it exceeds C; the number
        of turns dropped now (a KV-cache policy re-encodes the row when it is not 0)."""
        start = j = d.first_kept
        head = d.head
        sizes = [t.size for t in d.turns]
        while head.size + sum(sizes[j:]) > self.C:
            if j == len(d.turns):  # only the system prompt, the last user turn and the header
                raise self._budget_error(
                    int(head.size), "the system prompt, the last user message and the header"
                )
            j += 1  # head j: the system prompt and user turn j (the opening is head 0)
            last_user = {"role": "user", "content": d.user_turns[j - 1]}
            head = self._tokenize([self.encoder.text([*d.system, last_user])])[0]
        d.first_kept, d.head = j, head
        self._write_context(i, np.concatenate([head, *d.turns[j:]]))
        return j - start

    def _finish(
        self,
        rows: list[int],
        reasons: Mapping[int, str],
        rewards: np.ndarray,
        infos: dict[int, dict[str, Any]],
    ) -> None:
        """Score every dialogue that ended in this step with ONE final-reward call."""
        dialogues: list[Dialogue] = [self.rows[i] for i in rows]  # type: ignore[misc]
        openings = [prompt_text(d.sample.prompt) for d in dialogues]
        completions = [dialogue_text(d.messages[len(d.opening) :]) for d in dialogues]
        references = [list(d.sample.references) for d in dialogues]
        meta = {
            **batch_meta([d.sample.meta for d in dialogues]),
            "messages": [d.messages for d in dialogues],
        }
        refs = references if any(references) else None
        total, parts = score(self.final_reward, openings, completions, refs, **meta)
        for k, (i, d) in enumerate(zip(rows, dialogues, strict=True)):
            rewards[i] += float(total[k])
            components = {n: float(v[k]) for n, v in parts.items()}
            components["user_failure"] = float(reasons[i] == "user_failure")
            infos[i].update(
                {
                    "messages": [dict(m) for m in d.messages],
                    "reward_components": components,
                    "num_turns": infos[i]["turn"],
                    "num_tokens": d.num_tokens,
                    "finish_reason": reasons[i],
                    "inserted_tokens": 0,
                    "dropped_turns": 0,
                }
            )

    def render(self, i: int) -> str:
        """Row i's state as text: the context, then the current turn in brackets."""
        C = self.C
        context = self.tokenizer.decode(self.ids[i, C - self.context_len[i] : C])
        turn = self.tokenizer.decode(self.ids[i, C : C + self.turn_len[i]])
        return f"{context}[{turn}]"
