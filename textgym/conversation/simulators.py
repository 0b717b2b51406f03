"""User simulators: who answers the agent between its turns.

A simulator is a batched callable, like a reward::

    simulator(conversations: list[ChatMessages], goals: list[Any], **meta) -> list[str | None]

Each conversation is the dialogue so far from the agent's side (``"user"`` is the simulated
person, ``"assistant"`` the agent, the agent's turn last); each goal is that user's goal or
persona (the sample's ``meta["goal"]``); ``meta`` holds the other per-sample metadata, batched
(one list per key, as rewards get it). The answer is one entry per conversation: the next user
message, or None when the user ends the conversation (goal reached, gave up).

Anything else is a failure: the call raises or exceeds its time limit, returns the wrong
number of entries, or an entry that is not a string or None, or an empty string. The env applies
its ``on_user_failure`` policy to those rows (see :class:`~textgym.conversation.env.ConversationEnv`).

Built-in kinds (:func:`make_user`): ``scripted`` (the task's own Python function, deterministic
and offline), ``replay`` (the data set's logged user turns), ``lm`` (a local Hugging Face causal
LM playing the user, batched), ``remote`` (an OpenAI-compatible endpoint through the judge's
HTTP client, with its deadlines and retries) and ``human`` (a person on the console).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from textgym.models import SMOLLM2_ALIAS
from textgym.tasks.base import ChatMessages

if TYPE_CHECKING:
    from textgym.conversation.tasks import ConversationTask

END_MARKER = "<END>"
"""What an LM, remote or human user writes to end the conversation."""


class UserSimulator(Protocol):
    def __call__(
        self, conversations: list[ChatMessages], goals: list[Any], **meta: Any
    ) -> list[str | None]: ...


ScriptFn = Callable[[ChatMessages, Any], "str | None"]
"""One conversation and its goal -> the next user message, or None to end."""

ToolFn = Callable[[ChatMessages, Mapping[str, Any]], "str | None"]
"""One conversation (the agent's turn last) and its sample's meta -> the answer to an API call
in that turn (inserted as the next user-role message, in place of the user's reply, starting
with :data:`TOOL_RESULT_PREFIX`), or None when the turn calls nothing."""

TOOL_RESULT_PREFIX = "[API result"
"""How a tool's answer starts; the replay user does not count those messages as user turns."""


class ScriptedUser:
    """A plain Python function per conversation, applied to the batch (deterministic, offline).

    >>> user = ScriptedUser(lambda messages, goal: None if "yes" in messages[-1]["content"] else "Say yes.")
    >>> user([[{"role": "assistant", "content": "no"}], [{"role": "assistant", "content": "yes"}]], [None, None])
    ['Say yes.', None]
    """

    def __init__(self, fn: ScriptFn, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(
                f"ScriptedUser needs a function (messages, goal) -> str | None, got {fn!r}"
            )
        self.fn = fn
        self.name = name or f"scripted:{getattr(fn, '__name__', type(fn).__name__)}"

    def __call__(
        self, conversations: list[ChatMessages], goals: list[Any], **meta: Any
    ) -> list[str | None]:
        return [self.fn(c, g) for c, g in zip(conversations, goals, strict=True)]


class ReplayUser:
    """The data set's own next user turns (``meta["user_turns"]``: the logged user messages
    after the opening, in order); None when the log has no more, which ends the dialogue.

    >>> ReplayUser()([[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]],
    ...              [None], user_turns=[["c"]])
    ['c']
    """

    name = "replay"

    def __call__(
        self, conversations: list[ChatMessages], goals: list[Any], **meta: Any
    ) -> list[str | None]:
        logs = meta.get("user_turns")
        if logs is None or any(log is None for log in logs):
            raise ValueError(
                "the replay user needs meta['user_turns'] (the logged user turns) in every "
                "sample; this task's samples have none, so use user='scripted', 'lm' or 'remote'"
            )
        out: list[str | None] = []
        for messages, log in zip(conversations, logs, strict=True):
            # The opening holds the first user turn; later ones come from the log in order.
            asked = (
                sum(
                    m["role"] == "user" and not m["content"].startswith(TOOL_RESULT_PREFIX)
                    for m in messages
                )
                - 1
            )
            out.append(log[asked] if asked < len(log) else None)
        return out


def user_instructions(goal: Any) -> str:
    """The system prompt of an LM that plays the user with ``goal``."""
    return (
        "You are role-playing a person talking to an assistant. Stay in character and write "
        f"only your next short message. Your goal: {goal}. When your goal is met, or the "
        f"assistant cannot help, reply with {END_MARKER} and nothing else."
    )


def as_user_view(messages: ChatMessages, goal: Any) -> ChatMessages:
    """The conversation as the user's LM sees it: roles swapped, the goal as its system prompt."""
    swap = {"user": "assistant", "assistant": "user"}
    turns = [
        {"role": swap[m["role"]], "content": m["content"]} for m in messages if m["role"] in swap
    ]
    return [{"role": "system", "content": user_instructions(goal)}, *turns]


def parse_reply(text: str | None) -> str | None:
    """A raw LM/remote/console answer -> the message, None for the end marker, "" for nothing."""
    if text is None:
        return ""
    text = text.strip()
    return None if text.startswith(END_MARKER) else text.split(END_MARKER)[0].strip()


class LMUser:
    """A local Hugging Face causal LM plays the user (default SmolLM2-135M-Instruct), batched:
    one left-padded ``generate`` call per env step for every conversation that needs a reply.

    Args:
        model: HF id, local path or alias; or a loaded causal LM (then give ``tokenizer``).
        tokenizer: name or tokenizer object (default: the model's).
        max_new_tokens: the longest reply.
        temperature: 0 (default) decodes greedily, so the same agent turns give the same
            replies; > 0 samples, seeded with ``seed`` plus the number of the call.
        device: where the model runs (default CPU).
    """

    def __init__(
        self,
        model: Any = SMOLLM2_ALIAS,
        tokenizer: Any = None,
        max_new_tokens: int = 48,
        temperature: float = 0.0,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        from textgym.episode import PromptEncoder
        from textgym.models import load_model, shared_tokenizer

        if isinstance(model, str):
            self.tokenizer = shared_tokenizer(tokenizer or model)
            self.model = load_model(model, device=device)
        else:
            if tokenizer is None:
                raise ValueError("LMUser with a model object needs its tokenizer")
            self.tokenizer = (
                shared_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
            )
            self.model = model.to(device).eval()
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.calls = 0
        self.device = device
        self.encoder = PromptEncoder(
            self.tokenizer, max_prompt_tokens=1024, pad_token_id=self.tokenizer.pad_token_id
        )
        self.name = f"lm:{getattr(self.model.config, '_name_or_path', 'model') or 'model'}"

    def __call__(
        self, conversations: list[ChatMessages], goals: list[Any], **meta: Any
    ) -> list[str | None]:
        import torch

        from textgym.episode import decode_batch

        if not conversations:
            return []
        tok = self.tokenizer
        ids, mask = self.encoder.padded_batch(
            [as_user_view(c, g) for c, g in zip(conversations, goals, strict=True)]
        )
        first = int(mask.any(0).argmax())  # drop columns that are padding in every row
        ids_t = torch.as_tensor(ids[:, first:], device=self.device)
        mask_t = torch.as_tensor(mask[:, first:], device=self.device).long()
        sample = self.temperature > 0
        self.calls += 1
        # Sampling draws from its own seeded stream (seed + call number): the same agent turns
        # give the same replies, and the caller's global RNG is left as it was.
        cpu = torch.device(self.device).type == "cpu"
        with torch.no_grad(), torch.random.fork_rng(devices=[] if cpu else None):
            torch.manual_seed(self.seed + self.calls)
            out = self.model.generate(
                input_ids=ids_t,
                attention_mask=mask_t,
                max_new_tokens=self.max_new_tokens,
                do_sample=sample,
                temperature=self.temperature if sample else None,
                top_p=None,
                top_k=None,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        replies = decode_batch(tok, out[:, ids_t.shape[1] :].tolist())
        return [parse_reply(r) for r in replies]


class RemoteUser:
    """An OpenAI-compatible chat endpoint plays the user, through the remote judge's client
    (:class:`~textgym.rewards.judge.remote.RemoteJudge`: whole-request deadlines, retries with
    backoff, a size cap, concurrent requests). A request that fails after its retries gives an
    empty answer, which the env treats as a failure. Takes RemoteJudge's arguments (``url``,
    ``model``, ``api_key_env``, ``timeout``, ``max_retries``, ...).
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        from textgym.rewards.judge.remote import RemoteJudge

        self.client = RemoteJudge(url, **kwargs)
        self.name = f"remote:{self.client.name}"

    def __call__(
        self, conversations: list[ChatMessages], goals: list[Any], **meta: Any
    ) -> list[str | None]:
        views = [as_user_view(c, g) for c, g in zip(conversations, goals, strict=True)]
        return [parse_reply(text) for text in self.client.complete(views)]


class HumanUser:
    """A person types the user's turns on the console (one prompt per conversation);
    ``<END>`` or an empty line ends that conversation.

    ``input_fn`` and ``print_fn`` default to the console's; tests pass their own.
    """

    name = "human"

    def __init__(
        self, input_fn: Callable[[str], str] = input, print_fn: Callable[[str], Any] = print
    ) -> None:
        self.input_fn = input_fn
        self.print_fn = print_fn

    def __call__(
        self, conversations: list[ChatMessages], goals: list[Any], **meta: Any
    ) -> list[str | None]:
        out: list[str | None] = []
        for i, (messages, goal) in enumerate(zip(conversations, goals, strict=True)):
            self.print_fn(f"--- conversation {i} (your goal: {goal})")
            for m in messages[-2:]:
                self.print_fn(f"{m['role']}: {m['content']}")
            reply = parse_reply(self.input_fn(f"you ({END_MARKER} or empty line to end): "))
            out.append(reply or None)
        return out


USERS = ("scripted", "replay", "lm", "remote", "human")


def make_user(
    spec: str | UserSimulator | None, task: ConversationTask, **kwargs: Any
) -> UserSimulator:
    """A simulator from a kind in :data:`USERS`, a callable (used as is), or None (the task's default).

    ``kwargs`` go to the kind's constructor (e.g. ``url=`` for ``remote``, ``model=`` for ``lm``).
    """
    if spec is None:
        spec = task.default_user
    if callable(spec) and not isinstance(spec, str):
        if kwargs:
            raise TypeError(f"user_kwargs {sorted(kwargs)} given with a simulator object")
        return spec
    if spec == "scripted":
        if task.script is None:
            raise ValueError(
                f"task {task.name!r} has no scripted user; use one of 'replay', 'lm', 'remote', "
                "'human' or pass a function"
            )
        return ScriptedUser(task.script, name=f"scripted:{task.name}")
    builders: dict[str, Callable[..., UserSimulator]] = {
        "replay": ReplayUser,
        "lm": LMUser,
        "remote": RemoteUser,
        "human": HumanUser,
    }
    if spec not in builders:
        raise ValueError(
            f"unknown user simulator {spec!r}; choose one of {list(USERS)} or pass a callable"
        )
    return builders[spec](**kwargs)


def simulator_name(user: Any) -> str:
    return str(getattr(user, "name", None) or getattr(user, "__name__", type(user).__name__))
