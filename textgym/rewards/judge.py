"""AI feedback: a language model judges each completion against a rubric (RLAIF).

:class:`JudgeReward` renders a rubric (or a constitution: a list of principles), the prompt and
the completion into a judge prompt and asks a judge model for a verdict:

- :class:`LocalJudge`, any Hugging Face causal LM (default SmolLM2-135M-Instruct, offline). The
  score is the *expected* verdict under the judge's next-token distribution restricted to the
  verdict tokens (``"No"``/``"Yes"`` or digits), so every completion gets a score and no free
  text is parsed. SmolLM2-135M is a weak judge: it ranks clearly right, polite answers above
  gibberish and insults (``tests/test_judge.py``), but it preferred "No. Nobody cares about X,
  figure it out yourself, idiot." to "Of course! For X, start with small steps and practise a
  little every day." for 22 of 24 topics X (2 ties). Train against it for mechanics and demos;
  serve a stronger judge (:class:`RemoteJudge`) for results that matter.
- :class:`RemoteJudge`, any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp
  server, a hosted API). Requests run concurrently up to a limit, with timeouts and retries with
  exponential backoff on 429/5xx; the answer is requested as JSON and read by a tolerant parser
  (:func:`parse_verdict`). An answer that cannot be parsed, or a request that still fails after
  the retries, gets the stated ``fallback`` score; every such event is counted in
  :attr:`JudgeReward.stats`, logged, and flagged per sample in the ``<name>_fallback`` reward
  component (which the env puts into ``info["reward_components"]``).

Judgments are batched and cached by (prompt, completion, rubric): a repeated pair costs nothing.

:meth:`JudgeReward.pairwise_preferences` compares two completions of one prompt in both orders
(cancelling the judge's position bias), or by their pointwise scores for judges too small to
compare two texts, and :func:`add_preferences_to_store` writes the verdicts to the feedback store
as rankings by rater ``"ai:<judge name>"``, so the reward-model trainer learns from AI labels
exactly as from human ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from textgym.rewards.base import register_reward

logger = logging.getLogger(__name__)

Conversation = list[dict[str, str]]

DEFAULT_RUBRIC = "The response answers the question correctly, clearly and politely."
DEFAULT_SYSTEM = "You are a strict judge of answer quality."
DEFAULT_TEMPLATE = (
    "Rubric: {rubric}\nQuestion: {prompt}\nResponse: {completion}\n\n"
    "Is the response a good answer to the question according to the rubric? Answer {labels}."
)
DEFAULT_PAIR_TEMPLATE = (
    "Rubric: {rubric}\nQuestion: {prompt}\nResponse A: {a}\nResponse B: {b}\n\n"
    "Which response is better according to the rubric? Answer {labels}."
)
LOCAL_SCALE: dict[str, float] = {"Yes": 1.0, "No": 0.0}
"""Default verdicts of a local judge. SmolLM2-135M separates good from bad best as Yes/No, and
better when the prompt offers "Yes or No" than "No or Yes" (labels are shown in scale order)."""
REMOTE_SCALE: dict[str, float] = {str(i): float(i) for i in range(1, 11)}
"""Default verdicts of a remote judge: a served model can use a 1-10 scale."""
PAIR_LABELS = ("A", "B")

DEFAULT_EXAMPLES: tuple[tuple[str, str, float], ...] = (
    ("Which ocean is the largest?", "The Pacific Ocean is the largest ocean on Earth.", 1.0),
    ("Which ocean is the largest?", "Whatever, I do not want to talk to you.", 0.0),
)
"""Few-shot demonstrations ``(prompt, completion, score in [0, 1])`` shown to the judge first."""


def format_rubric(rubric: str | Sequence[str]) -> str:
    """A rubric string, or a constitution (list of principles) as a numbered list.

    >>> print(format_rubric(["Be correct.", "Be polite."]))
    The response follows these principles: (1) Be correct. (2) Be polite.
    """
    if isinstance(rubric, str):
        text = rubric.strip()
    else:
        principles = [str(p).strip() for p in rubric]
        if not principles or not all(principles):
            raise ValueError(f"a constitution needs non-empty principles, got {list(rubric)!r}")
        text = "The response follows these principles: " + " ".join(
            f"({i}) {p}" for i, p in enumerate(principles, 1)
        )
    if not text:
        raise ValueError("the judge rubric is empty; describe what a good completion does")
    return text


def _labels_text(labels: Sequence[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " or " + labels[-1]


def _as_scale(scale: Sequence[str] | Mapping[str, float]) -> dict[str, float]:
    """Verdict labels -> values; a list of numeric labels maps to their numbers, else 0..n-1."""
    if isinstance(scale, Mapping):
        out = {str(k): float(v) for k, v in scale.items()}
    else:
        labels = [str(x) for x in scale]
        try:
            out = {lab: float(lab) for lab in labels}
        except ValueError:
            out = {lab: float(i) for i, lab in enumerate(labels)}
    if len(out) < 2 or len(set(out.values())) < 2:
        raise ValueError(
            f"a judge scale needs at least two labels with different values, got {out!r}"
        )
    return out


# ----------------------------------------------------------------------------------------------
# Parsing free-text answers (remote judges)

_KEYS = ("score", "rating", "verdict", "winner", "answer", "label", "grade")


def _match_value(raw: Any, scale: Mapping[str, float]) -> float | None:
    """The scale value that ``raw`` names: a label (case-insensitive) or a number in range."""
    if isinstance(raw, bool) or raw is None:
        return None
    text = str(raw).strip().strip("\"'.*`").strip()
    for label, value in scale.items():
        if text.casefold() == label.casefold():
            return value
    try:
        number = float(text.split("/")[0])
    except ValueError:
        return None
    lo, hi = min(scale.values()), max(scale.values())
    numeric = all(re.fullmatch(r"-?\d+(\.\d+)?", lab) for lab in scale)
    return number if numeric and lo <= number <= hi else None


def _json_objects(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        found.append(obj)
    return found


def parse_verdict(text: str, scale: Mapping[str, float], key: str = "score") -> float | None:
    """Read a verdict from a judge's free-text answer; None when it names no single verdict.

    Tried in order: a JSON object (anywhere in the text, code fences allowed) with ``key`` or a
    usual synonym; ``key: value`` in prose; the whole answer being a label; exactly one distinct
    label occurring as a word. Numeric scales also accept in-range numbers such as ``7.5`` or
    ``8/10``.

    >>> scale = {str(i): float(i) for i in range(1, 11)}
    >>> parse_verdict('```json\\n{"score": 8, "reason": "clear"}\\n```', scale)
    8.0
    >>> parse_verdict("Score: 7/10. Mostly right.", scale)
    7.0
    >>> parse_verdict("Yes.", {"No": 0.0, "Yes": 1.0})
    1.0
    >>> parse_verdict("I cannot decide.", scale) is None
    True
    """
    keys = (key, *[k for k in _KEYS if k != key])
    for obj in _json_objects(text):
        if isinstance(obj, dict):
            lowered = {str(k).casefold(): v for k, v in obj.items()}
            for k in keys:
                if k in lowered:
                    value = _match_value(lowered[k], scale)
                    if value is not None:
                        return value
    for k in keys:
        m = re.search(rf"(?i)\b{k}\b\W{{0,4}}([A-Za-z]+|-?\d+(?:\.\d+)?(?:/\d+)?)", text)
        if m:
            value = _match_value(m.group(1), scale)
            if value is not None:
                return value
    value = _match_value(text, scale)
    if value is not None:
        return value
    hits = {
        v
        for label, v in scale.items()
        # a label as a word; "8." ending a sentence counts, "8.5" and "v8" do not
        if re.search(rf"(?<![\w.]){re.escape(label)}(?!\w|\.\d)", text, re.IGNORECASE)
    }
    return hits.pop() if len(hits) == 1 else None


# ----------------------------------------------------------------------------------------------
# Backends


class LocalJudge:
    """A Hugging Face causal LM read through its next-token probabilities.

    Args:
        model: alias (``"smollm2-135m"``), hub id or local directory, or a loaded causal LM.
        tokenizer: the model's tokenizer; loaded from ``model`` when it is a name.
        device: where to run (default: CPU, or the loaded model's device).
        batch_size: judge prompts per forward pass.
        max_length: judge prompts longer than this many tokens lose their beginning (the
            few-shot examples and rubric go first, the verdict question is kept).
        name: the judge's name in logs and in the feedback-store rater ``"ai:<name>"``;
            default: the model name, or the last part of a loaded model's ``name_or_path``
            (``"smollm2-135m"`` for ``load_model("smollm2-135m")``), or its class name.

    The model is loaded on first use, so building a reward costs nothing until it scores.
    """

    def __init__(
        self,
        model: Any = "smollm2-135m",
        tokenizer: Any = None,
        device: str | None = None,
        batch_size: int = 8,
        max_length: int = 1024,
        name: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 16:
            raise ValueError(f"max_length must be >= 16 tokens, got {max_length}")
        if not isinstance(model, str) and tokenizer is None:
            raise ValueError("LocalJudge: pass the tokenizer of a loaded model (tokenizer=...)")
        loaded_from = Path(str(getattr(model, "name_or_path", "") or "")).name
        self.name = (
            name or (model if isinstance(model, str) else loaded_from) or type(model).__name__
        )
        self._model = None if isinstance(model, str) else model
        self._model_name = model if isinstance(model, str) else None
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.stats: Counter = Counter()
        if tokenizer is None:
            from textgym.models import load_tokenizer

            tokenizer = load_tokenizer(model)
        self.tokenizer = tokenizer
        self._label_ids: dict[tuple[str, ...], list[list[int]]] = {}

    @property
    def model(self) -> Any:
        if self._model is None:
            from textgym.models import load_model

            self._model = load_model(self._model_name, device=self.device)
        return self._model

    def label_token_ids(self, labels: Sequence[str]) -> list[list[int]]:
        """For each label, the single tokens that spell it (with and without a leading space)."""
        key = tuple(labels)
        if key not in self._label_ids:
            out = []
            for label in labels:
                ids = {
                    ids[0]
                    for text in (label, " " + label)
                    if len(ids := self.tokenizer.encode(text, add_special_tokens=False)) == 1
                }
                if not ids:
                    raise ValueError(
                        f"judge label {label!r} is not a single token of the judge's tokenizer "
                        f"({self.name}); local judges read next-token probabilities, so use "
                        "single-token labels such as Yes/No, A/B or digits 0-9"
                    )
                out.append(sorted(ids))
            self._label_ids[key] = out
        return self._label_ids[key]

    def render(self, conversation: Conversation) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True
            )
        return "".join(f"{m['role']}: {m['content']}\n" for m in conversation) + "assistant:"

    def label_probs(self, conversations: list[Conversation], labels: Sequence[str]) -> np.ndarray:
        """P(label | judge prompt), renormalized over ``labels``: shape (B, L), rows sum to 1."""
        import torch

        label_ids = self.label_token_ids(labels)
        texts = [self.render(c) for c in conversations]
        model = self.model
        device = next(model.parameters()).device
        out = np.zeros((len(texts), len(labels)), dtype=np.float64)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
        tok = self.tokenizer
        side, tside = tok.padding_side, tok.truncation_side
        tok.padding_side, tok.truncation_side = "left", "left"
        try:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                enc = tok(
                    [texts[i] for i in idx],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    add_special_tokens=False,
                ).to(device)
                with torch.inference_mode():
                    logits = (
                        model(**enc, logits_to_keep=1, use_cache=False).logits[:, -1, :].float()
                    )  # (b, V)
                logp = torch.log_softmax(logits, dim=-1)
                per_label = torch.stack(
                    [torch.logsumexp(logp[:, ids], dim=-1) for ids in label_ids], dim=-1
                )  # (b, L)
                # mass the judge puts on the labels at all; mean = label_mass_sum / judged
                self.stats["label_mass_sum"] += float(per_label.exp().sum())
                out[idx] = torch.softmax(per_label, dim=-1).double().cpu().numpy()
                self.stats["forward_passes"] += 1
        finally:
            tok.padding_side, tok.truncation_side = side, tside
        self.stats["judged"] += len(texts)
        return out


class JudgeConnectionError(ConnectionError):
    """The judge endpoint cannot be reached (nothing listens, DNS failure, refused)."""


class RemoteJudge:
    """A judge behind an OpenAI-compatible chat-completions endpoint.

    Args:
        url: base URL such as ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended)
            or the full ``.../chat/completions`` URL.
        model: the served model's name, sent as ``"model"``.
        api_key_env: environment variable holding the API key (sent as a Bearer token); None for
            a server without authentication. A missing variable is an error at construction.
        timeout: seconds for connecting and for each read of one request.
        max_retries: retries after a timeout, a dropped connection, HTTP 429 or 5xx.
        backoff: first retry delay in seconds, doubled per retry (with up to 25% jitter);
            a ``Retry-After`` header is honoured up to ``max_backoff``.
        max_concurrency: requests in flight at once.
        max_tokens: answer length limit; temperature is 0.
        json_mode: send ``response_format={"type": "json_object"}`` (servers that support it
            then always answer JSON).
        check: probe ``GET <url>/models`` at construction, so an unreachable endpoint fails
            at once with an error naming the URL.
        seed: seeds the retry jitter.
    """

    def __init__(
        self,
        url: str,
        model: str = "default",
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_concurrency: int = 8,
        max_tokens: int = 128,
        json_mode: bool = False,
        check: bool = True,
        seed: int = 0,
    ) -> None:
        if not re.match(r"https?://[^/]+", url or ""):
            raise ValueError(f"judge url must start with http:// or https://, got {url!r}")
        if timeout <= 0 or max_retries < 0 or backoff < 0 or max_concurrency < 1 or max_tokens < 1:
            raise ValueError(
                f"invalid RemoteJudge options: timeout={timeout} (>0), max_retries={max_retries} "
                f"(>=0), backoff={backoff} (>=0), max_concurrency={max_concurrency} (>=1), "
                f"max_tokens={max_tokens} (>=1)"
            )
        base = url.rstrip("/")
        if base.endswith("/chat/completions"):
            base = base[: -len("/chat/completions")]
        self.base_url = base
        self.url = base + "/chat/completions"
        self.model = model
        self.name = f"{model}@{base}"
        self.api_key_env = api_key_env
        self.api_key: str | None = None
        if api_key_env is not None:
            self.api_key = os.environ.get(api_key_env)
            if not self.api_key:
                raise ValueError(
                    f"the judge endpoint {self.url} needs an API key in the environment variable "
                    f"{api_key_env}, which is not set; export {api_key_env}=..., or pass "
                    "api_key_env=None for a server without authentication"
                )
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_concurrency = max_concurrency
        self.max_tokens = max_tokens
        self.json_mode = json_mode
        self.stats: Counter = Counter()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        if check:
            self.check()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _auth_error(self, code: int) -> PermissionError:
        where = f"the environment variable {self.api_key_env}" if self.api_key_env else "no key"
        return PermissionError(
            f"the judge endpoint {self.url} refused the API key (HTTP {code}); it was read from "
            f"{where}; check the key and the api_key_env argument"
        )

    def check(self) -> None:
        """Probe ``GET <url>/models``; raise :class:`JudgeConnectionError` naming the URL."""
        req = urllib.request.Request(self.base_url + "/models", headers=self._headers())
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:  # the server answered: it is reachable
            if exc.code in (401, 403):
                raise self._auth_error(exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise JudgeConnectionError(
                f"cannot reach the judge endpoint {self.base_url} ({reason}); is the server "
                "running and the URL right?"
            ) from None

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.max_backoff)
            except ValueError:
                pass
        with self._lock:
            jitter = 1.0 + 0.25 * self._rng.random()
        return min(self.backoff * (2**attempt) * jitter, self.max_backoff)

    def _request(self, conversation: Conversation) -> str | None:
        """One chat completion with retries; the answer text, or None after a failure."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": conversation,
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        data = json.dumps(body).encode()
        last_error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._count("retries")
            self._count("requests")
            retry_after = None
            req = urllib.request.Request(self.url, data=data, headers=self._headers())
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as exc:
                self._count("http_errors")
                self._count(f"http_{exc.code}")
                if exc.code in (401, 403):
                    raise self._auth_error(exc.code) from None
                if exc.code == 404:
                    raise RuntimeError(
                        f"the judge endpoint {self.url} answered HTTP 404; is the URL the "
                        "OpenAI-compatible base (ending in /v1)?"
                    ) from None
                last_error = f"HTTP {exc.code}"
                if exc.code != 429 and exc.code < 500:
                    break  # the request itself is bad (e.g. too long): retrying cannot help
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
            except TimeoutError:
                self._count("timeouts")
                last_error = f"timeout after {self.timeout}s"
            except (urllib.error.URLError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, TimeoutError):
                    self._count("timeouts")
                    last_error = f"timeout after {self.timeout}s"
                else:
                    self._count("connection_errors")
                    last_error = f"connection error: {reason}"
            else:
                try:
                    return str(json.loads(raw)["choices"][0]["message"]["content"] or "")
                except (ValueError, KeyError, IndexError, TypeError):
                    self._count("malformed_responses")
                    logger.warning("judge %s: malformed response body %.200r", self.url, raw)
                    return None
            if attempt < self.max_retries:
                time.sleep(self._delay(attempt, retry_after))
        self._count("failed_requests")
        if last_error.startswith("connection error"):
            raise JudgeConnectionError(
                f"cannot reach the judge endpoint {self.url} after {self.max_retries + 1} "
                f"attempts ({last_error})"
            )
        logger.warning("judge %s: request failed after retries (%s)", self.url, last_error)
        return None

    def complete(self, conversations: list[Conversation]) -> list[str | None]:
        """Answer texts for all conversations (None where the request failed), concurrently."""
        if not conversations:
            return []
        workers = min(self.max_concurrency, len(conversations))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(self._request, conversations))


# ----------------------------------------------------------------------------------------------
# The reward


@dataclass(frozen=True)
class Preference:
    """A pairwise AI judgment of two completions of one prompt.

    Attributes:
        prompt, a, b: the prompt and the two completions.
        p_a: probability that ``a`` is better, averaged over both presentation orders.
        p_a_first: P(first shown is better) with ``a`` shown first.
        p_b_first: P(first shown is better) with ``b`` shown first.
        position_bias: how much the judge favours the first slot, ``(p_a_first + p_b_first)/2 -
            0.5``; it cancels out of ``p_a``.
        winner: ``"a"``, ``"b"`` or ``"tie"`` (``|p_a - 0.5| <= tie_margin``).
        consistent: both orders pick the same completion.
    """

    prompt: str
    a: str
    b: str
    p_a: float
    p_a_first: float
    p_b_first: float
    position_bias: float
    winner: str
    consistent: bool


def combine_orders(p_a_first: float, p_b_first: float, tie_margin: float = 0.05) -> dict[str, Any]:
    """Merge the two presentation orders of a pairwise judgment.

    >>> r = combine_orders(0.9, 0.7)  # a judge that prefers whatever comes first
    >>> round(r["p_a"], 3), round(r["position_bias"], 3), r["winner"], r["consistent"]
    (0.6, 0.3, 'a', False)
    """
    p_a = 0.5 * (p_a_first + (1.0 - p_b_first))
    winner = "tie" if abs(p_a - 0.5) <= tie_margin else ("a" if p_a > 0.5 else "b")
    return {
        "p_a": p_a,
        "p_a_first": p_a_first,
        "p_b_first": p_b_first,
        "position_bias": 0.5 * (p_a_first + p_b_first) - 0.5,
        "winner": winner,
        "consistent": (p_a_first > 0.5) == (p_b_first < 0.5),
    }


class JudgeReward:
    """Reward = a judge model's verdict on each completion under a rubric, in ``[0, 1]``.

    Args:
        rubric: what a good completion does, or a constitution (list of principles).
        judge: a model alias / hub id / local path for a :class:`LocalJudge`, or a
            :class:`LocalJudge` / :class:`RemoteJudge` instance.
        template: judge prompt with ``{rubric}``, ``{prompt}``, ``{completion}``, ``{labels}``.
        pair_template: pairwise prompt with ``{rubric}``, ``{prompt}``, ``{a}``, ``{b}``,
            ``{labels}``.
        system: system message for the judge (None: none).
        scale: verdict labels, as a list (numeric labels mean their number) or ``{label:
            value}``. Default: ``{"No": 0, "Yes": 1}`` locally, ``"1".."10"`` remotely.
        examples: few-shot demonstrations ``(prompt, completion, score in [0, 1])``, shown as
            earlier chat turns answered with the nearest label; None: :data:`DEFAULT_EXAMPLES`.
        normalize: map the expected verdict to ``[0, 1]`` (else keep the scale's units).
        fallback: score (in output units) when a remote answer cannot be parsed or its request
            failed; None: the middle of the range.
        cache_size: judgments kept (LRU); 0 disables the cache.
        tie_margin: pairwise verdicts with ``|p_a - 0.5| <= tie_margin`` are ties.
        name: the reward's name in logs and reward components.

    Returns per completion the judge's expected verdict; :attr:`stats` counts judgments, cache
    hits, requests, retries, timeouts, HTTP errors, parse failures and fallbacks.

    Example (a tiny random judge model, for speed; the default is SmolLM2-135M-Instruct):

    >>> from textgym.models import load_tokenizer, tiny_model
    >>> tok = load_tokenizer("smollm2-135m")
    >>> judge = JudgeReward("Answer correctly.", LocalJudge(tiny_model(tok), tok))
    >>> scores = judge(["What is 2 + 2?"] * 2, ["4", "potato"], None)
    >>> scores.shape, scores.dtype, bool(((0 <= scores) & (scores <= 1)).all())
    ((2,), dtype('float32'), True)
    >>> _ = judge(["What is 2 + 2?"], ["4"], None)  # cached
    >>> judge.stats["cache_hits"], judge.stats["judged"]
    (1, 2)
    """

    def __init__(
        self,
        rubric: str | Sequence[str] = DEFAULT_RUBRIC,
        judge: str | LocalJudge | RemoteJudge = "smollm2-135m",
        template: str = DEFAULT_TEMPLATE,
        pair_template: str = DEFAULT_PAIR_TEMPLATE,
        system: str | None = DEFAULT_SYSTEM,
        scale: Sequence[str] | Mapping[str, float] | None = None,
        examples: Sequence[tuple[str, str, float]] | None = None,
        normalize: bool = True,
        fallback: float | None = None,
        cache_size: int = 65536,
        tie_margin: float = 0.05,
        name: str = "judge",
    ) -> None:
        self.rubric = format_rubric(rubric)
        if isinstance(judge, str):
            judge = LocalJudge(judge)
        if not isinstance(judge, (LocalJudge, RemoteJudge)):
            raise TypeError(
                f"judge must be a model name/path, LocalJudge or RemoteJudge, got {type(judge).__name__}"
            )
        self.backend = judge
        self.remote = isinstance(judge, RemoteJudge)
        for field_name, tmpl, needed in (
            ("template", template, ("{prompt}", "{completion}")),
            ("pair_template", pair_template, ("{prompt}", "{a}", "{b}")),
        ):
            missing = [k for k in needed if k not in tmpl]
            if missing:
                raise ValueError(f"{field_name} lacks the placeholders {missing}: {tmpl!r}")
        self.template = template
        self.pair_template = pair_template
        self.system = system
        self.scale = _as_scale(
            scale if scale is not None else (REMOTE_SCALE if self.remote else LOCAL_SCALE)
        )
        self.labels = list(self.scale)
        values = np.array(list(self.scale.values()))
        self._lo, self._hi = float(values.min()), float(values.max())
        self.normalize = normalize
        out_lo, out_hi = (0.0, 1.0) if normalize else (self._lo, self._hi)
        self.fallback = 0.5 * (out_lo + out_hi) if fallback is None else float(fallback)
        if not np.isfinite(self.fallback):
            raise ValueError(f"fallback must be a finite score, got {fallback}")
        self.examples = [
            (str(p), str(c), float(s))
            for p, c, s in (DEFAULT_EXAMPLES if examples is None else examples)
        ]
        for _, _, s in self.examples:
            if not 0.0 <= s <= 1.0:
                raise ValueError(f"few-shot example scores must lie in [0, 1], got {s}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        if not 0.0 <= tie_margin < 0.5:
            raise ValueError(f"tie_margin must lie in [0, 0.5), got {tie_margin}")
        self.cache_size = cache_size
        self.tie_margin = tie_margin
        self.name = name
        if not self.remote:
            judge.label_token_ids(self.labels)  # fail now on multi-token labels
            judge.label_token_ids(PAIR_LABELS)
        self._cache: OrderedDict[tuple, tuple[float, bool]] = OrderedDict()
        self._stats: Counter = Counter()
        self._key = hashlib.sha256(
            json.dumps(
                [
                    self.rubric,
                    template,
                    pair_template,
                    system,
                    self.scale,
                    self.examples,
                    judge.name,
                ]
            ).encode()
        ).hexdigest()[:16]

    # -- prompts --------------------------------------------------------------------------------

    def _format_suffix(self, key: str, labels: Sequence[str]) -> str:
        if not self.remote:
            return ""
        return (
            f'\n\nReply with a JSON object only: {{"{key}": <one of {", ".join(labels)}>, '
            '"reason": "<one short sentence>"}'
        )

    def _answer(self, key: str, label: str) -> str:
        return json.dumps({key: label}) if self.remote else label

    def _nearest_label(self, score01: float) -> str:
        target = self._lo + score01 * (self._hi - self._lo)
        return min(self.labels, key=lambda lab: abs(self.scale[lab] - target))

    def _head(self) -> Conversation:
        return [{"role": "system", "content": self.system}] if self.system else []

    def _single_user(self, prompt: str, completion: str) -> str:
        text = self.template.format(
            rubric=self.rubric,
            prompt=prompt,
            completion=completion,
            labels=_labels_text(self.labels),
        )
        return text + self._format_suffix("score", self.labels)

    def _pair_user(self, prompt: str, first: str, second: str) -> str:
        text = self.pair_template.format(
            rubric=self.rubric, prompt=prompt, a=first, b=second, labels=_labels_text(PAIR_LABELS)
        )
        return text + self._format_suffix("winner", PAIR_LABELS)

    def conversation(self, prompt: str, completion: str) -> Conversation:
        """The chat the judge sees for one completion: system, few-shot turns, the question."""
        conv = self._head()
        for p, c, s in self.examples:
            conv.append({"role": "user", "content": self._single_user(p, c)})
            conv.append(
                {"role": "assistant", "content": self._answer("score", self._nearest_label(s))}
            )
        conv.append({"role": "user", "content": self._single_user(prompt, completion)})
        return conv

    def pair_conversation(self, prompt: str, first: str, second: str) -> Conversation:
        """The chat the judge sees to compare two completions. Few-shot pairs come from
        examples that share a prompt: best against worst, shown in both orders so that the
        demonstrations favour neither slot."""
        conv = self._head()
        by_prompt: dict[str, list[tuple[str, float]]] = {}
        for p, c, s in self.examples:
            by_prompt.setdefault(p, []).append((c, s))
        for p, items in by_prompt.items():
            best, worst = max(items, key=lambda x: x[1]), min(items, key=lambda x: x[1])
            if best[1] == worst[1]:
                continue
            for shown, label in (((best[0], worst[0]), "A"), ((worst[0], best[0]), "B")):
                conv.append({"role": "user", "content": self._pair_user(p, *shown)})
                conv.append({"role": "assistant", "content": self._answer("winner", label)})
        conv.append({"role": "user", "content": self._pair_user(prompt, first, second)})
        return conv

    # -- scoring --------------------------------------------------------------------------------

    def _to_output(self, expected: float) -> float:
        if not self.normalize:
            return expected
        return (expected - self._lo) / (self._hi - self._lo)

    def _judge(
        self, conversations: list[Conversation], labels: Sequence[str], key: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Expected label value per conversation (labels valued 0..1 for pairs) and a flag for
        each that fell back. Pairwise labels A/B are valued 1/0 (P(first is better))."""
        if not conversations:
            return np.zeros(0), np.zeros(0, dtype=bool)
        scale = self.scale if key == "score" else {"A": 1.0, "B": 0.0}
        values = np.array([scale[lab] for lab in labels])
        if isinstance(self.backend, LocalJudge):
            probs = self.backend.label_probs(conversations, labels)  # (B, L)
            return probs @ values, np.zeros(len(conversations), dtype=bool)
        answers = self.backend.complete(conversations)
        out = np.zeros(len(answers))
        fell_back = np.zeros(len(answers), dtype=bool)
        # the caller substitutes self.fallback for a failed verdict; a failed pair is a coin flip
        fallback = float("nan") if key == "score" else 0.5
        for i, text in enumerate(answers):
            value = None if text is None else parse_verdict(text, scale, key)
            if value is None:
                fell_back[i] = True
                if text is not None:
                    self._stats["parse_failures"] += 1
                    logger.debug("judge %s: cannot parse %.200r", self.name, text)
                value = fallback
            out[i] = value
        if fell_back.any():
            self._stats["fallbacks"] += int(fell_back.sum())
            logger.warning(
                "judge %s: %d of %d answers unusable (unparseable or failed requests); used the "
                "fallback score. Totals so far: %s",
                self.name,
                int(fell_back.sum()),
                len(answers),
                dict(self.stats),
            )
        return out, fell_back

    def _cached(self, key: tuple) -> tuple[float, bool] | None:
        if key in self._cache:
            self._cache.move_to_end(key)
            self._stats["cache_hits"] += 1
            return self._cache[key]
        return None

    def _store(self, key: tuple, value: tuple[float, bool]) -> None:
        if self.cache_size == 0 or value[1]:  # never cache a fallback: retry it next time
            return
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def scores_and_fallbacks(
        self, prompts: list[str], completions: list[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores (float32, (B,)) and per-sample fallback flags (bool, (B,))."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        self._stats["calls"] += 1
        results: list[tuple[float, bool] | None] = []
        todo: dict[tuple, list[int]] = {}
        for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            key = (p, c, self._key)
            hit = self._cached(key)
            results.append(hit)
            if hit is None:
                todo.setdefault(key, []).append(i)
        keys = list(todo)
        values, fell_back = self._judge(
            [self.conversation(p, c) for p, c, _ in keys], self.labels, "score"
        )
        self._stats["judged"] += len(keys)
        for key, v, fb in zip(keys, values, fell_back, strict=True):
            result = (self.fallback, True) if fb else (self._to_output(float(v)), False)
            self._store(key, result)
            for i in todo[key]:
                results[i] = result
        scores = np.array([r[0] for r in results], dtype=np.float32)  # type: ignore[index]
        flags = np.array([r[1] for r in results], dtype=bool)  # type: ignore[index]
        return scores, flags

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None = None,
        **meta: Any,
    ) -> np.ndarray:
        return self.scores_and_fallbacks(prompts, completions)[0]

    def components(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None = None,
        **meta: Any,
    ) -> dict[str, np.ndarray]:
        """``{name: score, name_fallback: 1.0 where the fallback score was used}``."""
        scores, flags = self.scores_and_fallbacks(prompts, completions)
        return {self.name: scores, f"{self.name}_fallback": flags.astype(np.float32)}

    def combine(self, parts: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.asarray(parts[self.name], dtype=np.float32)

    @property
    def stats(self) -> Counter:
        """Counters (0 when absent): calls, judged, cache_hits, parse_failures, fallbacks and the
        backend's (requests, retries, timeouts, http_errors, http_<code>, connection_errors,
        malformed_responses, failed_requests; forward_passes for a local judge)."""
        return Counter({**self.backend.stats, **self._stats})

    # -- pairwise -------------------------------------------------------------------------------

    def pairwise_preferences(
        self,
        prompts: list[str],
        a: list[str],
        b: list[str],
        method: Literal["compare", "scores"] = "compare",
        temperature: float = 0.1,
    ) -> list[Preference]:
        """Judge ``a[i]`` against ``b[i]`` for ``prompts[i]``.

        ``method="compare"`` shows the judge both completions, in both orders, and averages
        (:func:`combine_orders`) so that a preference for the first slot cancels out.
        ``method="scores"`` compares the pointwise scores instead (Bradley-Terry:
        ``p_a = sigmoid((score_a - score_b) / temperature)``), which has no position bias by
        construction and suits judges too small to compare two texts in one prompt: measured
        on 8 good/bad answer pairs, SmolLM2-135M favours the first slot by +0.06 to +0.17 and
        its combined ``"compare"`` verdicts are all ties, while ``"scores"`` picks the good
        answer 7 times out of 8.
        """
        if not len(prompts) == len(a) == len(b):
            raise ValueError(f"lengths differ: {len(prompts)} prompts, {len(a)} a, {len(b)} b")
        if method == "scores":
            if temperature <= 0:
                raise ValueError(f"temperature must be > 0, got {temperature}")
            scores, _ = self.scores_and_fallbacks(list(prompts) * 2, list(a) + list(b))
            diff = (scores[: len(a)].astype(np.float64) - scores[len(a) :]) / temperature
            p_a = 1.0 / (1.0 + np.exp(-diff))
            return [
                Preference(prompt=p, a=x, b=y, **combine_orders(q, 1.0 - q, self.tie_margin))
                for p, x, y, q in zip(prompts, a, b, p_a.tolist(), strict=True)
            ]
        if method != "compare":
            raise ValueError(f"method must be 'compare' or 'scores', got {method!r}")
        firsts: list[float | None] = []
        todo: dict[tuple, list[int]] = {}
        for i, (p, x, y) in enumerate(zip(prompts, a, b, strict=True)):
            for order, (f, s) in enumerate(((x, y), (y, x))):
                key = ("pair", p, f, s, self._key)
                hit = self._cached(key)
                firsts.append(None if hit is None else hit[0])
                if hit is None:
                    todo.setdefault(key, []).append(2 * i + order)
        keys = list(todo)
        conversations = [self.pair_conversation(k[1], k[2], k[3]) for k in keys]
        values, fell_back = self._judge(conversations, PAIR_LABELS, "winner")
        self._stats["pair_judged"] += len(keys)
        for key, v, fb in zip(keys, values, fell_back, strict=True):
            self._store(key, (float(v), bool(fb)))
            for j in todo[key]:
                firsts[j] = float(v)
        prefs = []
        for i, (p, x, y) in enumerate(zip(prompts, a, b, strict=True)):
            merged = combine_orders(firsts[2 * i], firsts[2 * i + 1], self.tie_margin)  # type: ignore[arg-type]
            prefs.append(Preference(prompt=p, a=x, b=y, **merged))
        return prefs

    def compare(
        self, prompt: str, a: str, b: str, method: Literal["compare", "scores"] = "compare"
    ) -> Preference:
        """One pairwise judgment of ``a`` against ``b`` (see :meth:`pairwise_preferences`)."""
        return self.pairwise_preferences([prompt], [a], [b], method=method)[0]

    def __repr__(self) -> str:
        return f"JudgeReward(name={self.name!r}, judge={self.backend.name!r}, labels={self.labels})"


class PreferenceStore(Protocol):
    """The part of :class:`textgym.feedback.store.FeedbackStore` that records rankings."""

    def add_sample(
        self,
        prompt: str,
        completion: str,
        *,
        task: str = "",
        model: str = "",
        meta: dict | None = None,
    ) -> int: ...

    def add_ranking(self, sample_ids: Sequence[int], *, rater: str) -> int: ...


def add_preferences_to_store(
    store: PreferenceStore,
    preferences: Sequence[Preference],
    *,
    rater: str,
    task: str = "",
    model: str = "",
    include_ties: bool = False,
) -> list[int]:
    """Write pairwise AI preferences to a feedback store; return the new ranking ids.

    Each decided preference becomes a two-item ranking (winner first) by ``rater``, so
    ``store.preference_pairs(rater=rater)`` gives them back as ``(prompt, chosen, rejected)``
    pairs for the reward-model trainer, exactly like human rankings. ``rater`` must start with
    ``"ai:"`` (see :func:`judge_rater`) so that AI labels never pass for human ones. Ties are
    skipped unless ``include_ties`` (then ``a`` goes first: a ranking cannot express a tie);
    a pair of identical completions is always skipped. ``task`` and ``model`` (the policy that
    wrote the completions) tag the stored samples.
    """
    if not rater.startswith("ai:"):
        raise ValueError(
            f"AI preferences need a rater name starting with 'ai:' (e.g. 'ai:smollm2-135m'), "
            f"got {rater!r}"
        )
    ranking_ids = []
    for pref in preferences:
        if pref.a == pref.b or (pref.winner == "tie" and not include_ties):
            continue
        best, worst = (pref.b, pref.a) if pref.winner == "b" else (pref.a, pref.b)
        ids = [
            store.add_sample(pref.prompt, text, task=task, model=model) for text in (best, worst)
        ]
        ranking_ids.append(store.add_ranking(ids, rater=rater))
    return ranking_ids


def judge_rater(judge: JudgeReward) -> str:
    """The feedback-store rater name for a judge: ``"ai:<judge name>"``."""
    return f"ai:{judge.backend.name}"


def make_judge(
    rubric: str | Sequence[str] = DEFAULT_RUBRIC,
    judge: str = "smollm2-135m",
    url: str | None = None,
    model: str = "default",
    api_key_env: str | None = "OPENAI_API_KEY",
    remote_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> JudgeReward:
    """Registry builder: a local judge by model name, or a remote one when ``url`` is given.

    ``make_reward("judge", url="http://host:8000/v1", model="qwen", api_key_env=None)``.
    """
    backend: str | RemoteJudge = judge
    if url is not None:
        backend = RemoteJudge(
            url, model=model, api_key_env=api_key_env, **dict(remote_options or {})
        )
    return JudgeReward(rubric, backend, **kwargs)


register_reward("judge", make_judge)
