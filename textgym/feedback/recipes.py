"""Reward models from public labelled data, one command each, and the rewards that use them.

Two recipes, each a data set of real labels, a fixed train / held-out split and training
settings measured to fit a CPU budget:

- ``sst2``: sentiment. SST-2 ``train.tsv`` sentences (a seeded random subset, see
  :data:`RECIPES`) against all of ``dev.tsv``; the positive class is label 1. The reward
  ``"sst2_sentiment"`` (the default of the ``sst2_sentiment`` task) is the probability that
  the prompt's opening words plus the completion are positive.
- ``taskmaster4``: Taskmaster-4's human labels of candidate agent turns (``reward_00`` to
  ``reward_04.json`` train, ``reward_05.json`` is held out, as the data set's authors split it).
  The conversation is written exactly as the ``taskmaster4_rlhf`` task writes its prompts
  (system message, ``user:`` / ``assistant:`` lines, API calls and results inline), so the
  reward ``"taskmaster4_rm"`` (that task's default: the probability of a "good" label) scores
  the policy's prompts in the format it was trained on.

``textgym feedback train-rm --data sst2`` (or ``taskmaster4``) trains one and saves it in
:func:`reward_model_dir` (``$TEXTGYM_REWARD_MODELS/<name>``, else ``runs/reward_models/<name>``
under the working directory), where the rewards look for it; ``path=`` points them elsewhere.
The data comes from the data root of :func:`textgym.tasks.datasets.default_data_dir`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textgym.feedback.reward_model import (
    LearnedReward,
    RewardModel,
    RewardModelConfig,
    ScoredText,
    evaluate,
    train_reward_model,
)
from textgym.rewards.base import register_reward
from textgym.rewards.metrics import RepetitionPenalty
from textgym.tasks.base import prompt_text
from textgym.tasks.datasets import DataFormatError, dataset_dir
from textgym.tasks.datasets.continuation import detokenize_sst2, sst2_text
from textgym.tasks.datasets.dialogue import (
    TASKMASTER4_INSTRUCTION,
    api_call_line,
    api_result_line,
    taskmaster4_system,
)
from textgym.tasks.datasets.prompts import system_turn
from textgym.tasks.datasets.records import read_tsv

REWARD_MODELS_ENV = "TEXTGYM_REWARD_MODELS"
"""Environment variable naming the folder that holds the recipes' trained reward models."""

Examples = list[ScoredText]


def reward_model_dir(name: str) -> Path:
    """Where recipe ``name``'s model is saved and looked for: ``$TEXTGYM_REWARD_MODELS/<name>``,
    else ``runs/reward_models/<name>`` under the working directory.

    >>> reward_model_dir("sst2").parts[-2:]
    ('reward_models', 'sst2')
    """
    return Path(os.environ.get(REWARD_MODELS_ENV, "runs/reward_models")) / name


# ----------------------------------------------------------------------------- the data


def sst2_examples(split: str = "train", path: str | os.PathLike[str] | None = None) -> Examples:
    """SST-2 sentences of ``split`` ("train" or "dev"), detokenized as the ``sst2_sentiment``
    task shows them, as completions with an empty prompt and the 0/1 label as target.

    ``path`` is the data root, the ``sst2`` folder or the ``.tsv`` file itself.
    """
    if split not in ("train", "dev"):
        raise ValueError(f"SST-2 split must be 'train' or 'dev', got {split!r}")
    given = Path(path) if path is not None else None
    file = given if given is not None and given.is_file() else None
    if file is None:
        file = dataset_dir("sst2", "sst2", given) / f"{split}.tsv"
    if not file.is_file():
        raise FileNotFoundError(f"SST-2: {file} not found; pass the folder with {split}.tsv")
    out = []
    for where, row in read_tsv(file):
        label = row.get("label")
        if label not in ("0", "1"):
            raise DataFormatError(f"{where}: field 'label' must be 0 or 1, got {label!r}")
        out.append(ScoredText("", detokenize_sst2(sst2_text(row, where)), float(label)))
    return out


TASKMASTER4_REWARD_FILES = tuple(f"reward_{i:02d}.json" for i in range(6))
"""The six files of ``taskmaster4/reward/``; the authors' split trains on 00-04, tests on 05."""


def taskmaster4_turns(context: list[Any], where: str) -> list[dict[str, str]]:
    """A reward row's context as the ``taskmaster4_rlhf`` task's chat messages.

    Agent text is an ``assistant`` turn; user text, agent API calls and API results are
    ``user`` turns (consecutive ones joined by line breaks), the calls and results written as
    ``api="inline"`` writes them, since the task's data stores them with the user turn.

    >>> taskmaster4_turns([{"role": "user", "text": "A latte."},
    ...     {"role": "agent", "api": {"get_menu_items": {"query": "latte"}}},
    ...     {"role": "api", "response": {"get_menu_items": {"items": []}}}], "here")[0]["content"]
    'A latte.\\n[API call get_menu_items: {"query": "latte"}]\\n[API result get_menu_items: {"items": []}]'
    """
    messages: list[dict[str, str]] = []
    for turn in context:
        role, text = _turn(turn, where)
        if messages and messages[-1]["role"] == role:
            messages[-1] = {"role": role, "content": messages[-1]["content"] + "\n" + text}
        else:
            messages.append({"role": role, "content": text})
    return messages


def _turn(turn: Any, where: str) -> tuple[str, str]:
    """(chat role, text) of one Taskmaster-4 reward turn."""
    if not isinstance(turn, dict):
        raise DataFormatError(f"{where}: a turn is {type(turn).__name__}, not a JSON object")
    if "text" in turn:
        return ("assistant" if turn.get("role") == "agent" else "user"), str(turn["text"]).strip()
    for key, line in (("api", api_call_line), ("response", api_result_line)):
        value = turn.get(key)
        if isinstance(value, dict) and len(value) == 1:
            ((name, payload),) = value.items()
            return "user", line(str(name), json.dumps(payload))
    raise DataFormatError(
        f"{where}: a turn needs 'text', or 'api' / 'response' holding one {{name: payload}} "
        f"object; got fields {sorted(turn)}"
    )


def taskmaster4_examples(
    files: tuple[str, ...] = TASKMASTER4_REWARD_FILES,
    path: str | os.PathLike[str] | None = None,
    *,
    instruction: str = TASKMASTER4_INSTRUCTION,
) -> Examples:
    """Taskmaster-4 reward rows of ``files`` (in ``taskmaster4/reward``): the conversation as the
    ``taskmaster4_rlhf`` prompt text (prompt), the candidate agent turn (completion; an API call
    is written as an ``[API call ...]`` line) and the human label, 0.0 or 1.0 (target).
    """
    folder = dataset_dir("taskmaster4", "taskmaster4/reward", path)
    system = system_turn(taskmaster4_system(instruction, "inline"))
    out = []
    for name in files:
        file = folder / name
        try:
            rows = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataFormatError(f"{file}: not a readable JSON list ({exc})") from exc
        if not isinstance(rows, list):
            raise DataFormatError(f"{file}: expected a JSON list of reward rows")
        for i, row in enumerate(rows):
            where = f"{file} item {i}"
            try:
                context = json.loads(row["context"])
                generation = json.loads(row["generation"])
                target = float(row["reward"])
            except (KeyError, TypeError, ValueError) as exc:
                raise DataFormatError(
                    f"{where}: not a Taskmaster-4 reward row (needs JSON strings 'context', "
                    f"'generation' and a number 'reward'; {type(exc).__name__}: {exc})"
                ) from None
            if target not in (0.0, 1.0):
                raise DataFormatError(f"{where}: reward must be 0.0 or 1.0, got {target}")
            if not isinstance(context, list):
                raise DataFormatError(f"{where}: 'context' must hold a JSON list of turns")
            prompt = prompt_text(system + taskmaster4_turns(context, where))
            out.append(ScoredText(prompt, _turn(generation, where)[1], target))
    return out


# ----------------------------------------------------------------------------- the recipes


@dataclass(frozen=True)
class Recipe:
    """A labelled data set, its fixed train / held-out split and its training settings.

    Attributes:
        name: the recipe (``--data NAME``) and the folder name under :func:`reward_model_dir`.
        data: ``data(path) -> (train, held_out)`` examples; ``path`` is the data root or None.
        config: :class:`RewardModelConfig` fields this recipe sets (the command line wins).
    """

    name: str
    data: Callable[[str | os.PathLike[str] | None], tuple[Examples, Examples]]
    config: Mapping[str, Any] = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    "sst2": Recipe(
        "sst2",
        lambda path: (sst2_examples("train", path), sst2_examples("dev", path)),
        # 3,000 of the 67,349 sentences: 510 CPU-seconds (dev accuracy 82.1%, AUC 0.908).
        {"kind": "binary", "max_length": 64, "learning_rate": 1e-4, "max_train_examples": 3000},
    ),
    "taskmaster4": Recipe(
        "taskmaster4",
        lambda path: (
            taskmaster4_examples(TASKMASTER4_REWARD_FILES[:5], path),
            taskmaster4_examples(TASKMASTER4_REWARD_FILES[5:], path),
        ),
        # 160 tokens keep the end of the conversation. Each good reply is also shown after
        # another conversation, labelled bad, so the model must read it: without that its
        # context accuracy was 0.52 and PPO won it with generic replies. 780 s on 2 cores
        # (held-out AUC 0.730, context accuracy 0.937; docs/tasks.md).
        {
            "kind": "binary",
            "max_length": 160,
            "epochs": 2.0,
            "learning_rate": 1e-4,
            "context_negatives": 1.0,
        },
    ),
}
"""Recipe name -> :class:`Recipe`."""


def train_recipe(
    name: str,
    out: str | os.PathLike[str] | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    **config: Any,
) -> tuple[RewardModel, dict[str, float]]:
    """Train recipe ``name`` and save the model to ``out`` (default :func:`reward_model_dir`).

    ``config`` overrides the recipe's :class:`RewardModelConfig` fields. Returns the model and
    its metrics: ``eval/...`` on the held-out set (accuracy, majority baseline, balanced
    accuracy, AUC), ``train/...`` and ``time/train_seconds``. For ``taskmaster4`` also
    ``eval_text/...``: the held-out rows whose candidate is a text reply, the only kind a
    policy writes. The metrics are saved beside the model as ``recipe_metrics.json``.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown reward-model recipe {name!r}; valid: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    if config.get("kind", "binary") != "binary":
        raise ValueError(f"recipe {name!r} has binary labels; kind={config['kind']!r} cannot fit")
    train, held_out = recipe.data(path)
    settings = RewardModelConfig(**{**recipe.config, **config})
    start = time.perf_counter()
    model, metrics = train_reward_model(train, held_out, settings)
    metrics["time/train_seconds"] = round(time.perf_counter() - start, 1)
    if name == "taskmaster4":  # the policy writes text replies, never API calls: judge those
        replies = [e for e in held_out if not e.completion.startswith("[API ")]
        text_metrics = evaluate(model, replies, batch_size=settings.eval_batch_size)
        metrics.update({k.replace("eval/", "eval_text/"): v for k, v in text_metrics.items()})
    folder = Path(out) if out is not None else reward_model_dir(name)
    model.save(folder)
    record = {"recipe": name, "config": {**recipe.config, **config}, **metrics}
    (folder / "recipe_metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    return model, metrics


# ----------------------------------------------------------------------------- the rewards


def _recipe_model(name: str, path: str | os.PathLike[str] | None) -> Path:
    folder = Path(path) if path is not None else reward_model_dir(name)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no {name} reward model at {folder}: train it with `textgym feedback train-rm "
            f"--data {name}` (it saves to {reward_model_dir(name)}), set {REWARD_MODELS_ENV} "
            "to the folder holding it, or pass path="
        )
    return folder


class RecipeReward(LearnedReward):
    """P(the positive label) from a recipe's reward model for (prompt, completion), scaled by
    :func:`word_ramp` of the completions. Subclasses name their ``recipe``; one whose model
    reads another text overrides ``__call__`` and uses :meth:`scaled`."""

    recipe = ""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        min_words: int = 1,
        device: str | None = None,
        batch_size: int = 64,
    ) -> None:
        check_min_words(min_words)
        super().__init__(
            _recipe_model(self.recipe, path), output="prob", device=device, batch_size=batch_size
        )
        self.min_words = min_words

    def scaled(self, prompts: list[str], texts: list[str], completions: list[str]) -> np.ndarray:
        """The model's probability for (prompt, text) pairs, times the completions' ramp."""
        prob = LearnedReward.__call__(self, prompts, texts, None)
        return prob * word_ramp(completions, self.min_words)

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray:
        return self.scaled(prompts, completions, completions)


class SentimentReward(RecipeReward):
    """P(positive) of the opening words plus the completion, from the ``sst2`` reward model.

    The sentence is scored whole, as SST-2 labels whole sentences: "this movie is not" +
    " good at all" is negative although the continuation alone reads positive. The opening
    comes from ``meta["opening"]`` (the ``sst2_sentiment`` task sets it); without it the
    completion alone is scored. The probability is scaled by :func:`word_ramp`: a continuation
    of fewer than ``min_words`` words gets that share of it, and an empty one 0, because the
    opening alone often reads positive and a policy would otherwise learn to stop at once (PPO
    did: greedy completions of 1.5 tokens). A completion counts as positive when the scaled
    probability is above 0.5: ``"sst2_positive"`` (``threshold=0.5``) returns that 0/1
    decision, so its mean over an evaluation is the positive rate.

    Args:
        path: the model folder; default :func:`reward_model_dir` ``("sst2")``.
        threshold: None for the probability, else 1.0 above it and 0.0 otherwise.
        min_words: words a continuation needs for the full probability (0: no scaling).
        device: torch device; default CUDA when available.
        batch_size: texts per forward pass.
    """

    name = "sst2_sentiment"
    recipe = "sst2"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        threshold: float | None = None,
        min_words: int = 5,
        device: str | None = None,
        batch_size: int = 64,
    ) -> None:
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1) or None, got {threshold!r}")
        super().__init__(path, min_words=min_words, device=device, batch_size=batch_size)
        self.threshold = threshold
        if threshold is not None:
            self.name = "sst2_positive"

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        references: list[list[str]] | None,
        **meta: Any,
    ) -> np.ndarray:
        openings = meta.get("opening") or [""] * len(completions)
        texts = [
            f"{o or ''} {c.strip()}".strip() for o, c in zip(openings, completions, strict=True)
        ]
        prob = self.scaled([""] * len(texts), texts, completions)
        if self.threshold is None:
            return prob
        return (prob > self.threshold).astype(np.float32)


class Taskmaster4Reward(RecipeReward):
    """P(a person labels the reply good), from the ``taskmaster4`` recipe's reward model,
    scaled by :func:`word_ramp` and gated by :func:`text_turn`, :func:`plain_talk` and
    :func:`loop_free`.

    Four kinds of reply score 0 whatever the model says of them, because runs showed that the
    model rates them as highly as real replies or higher:

    - a reply without a word, empty or punctuation alone (PPO learned a bare code fence);
    - a reply that is not a text turn: code, a JSON object, an ``[API ...]`` line (GRPO
      learned to answer with Python) or a bare JSON or Python value such as ``True`` (PPO
      answered 43 of 100 held-out prompts with it). The task asks for the agent's next text
      turn, and none of Taskmaster-4's 6,920 agent text turns is or holds any of these; the
      model was trained on replies that include API calls, and rated code replies 0.958
      against 0.936 for the base model's other replies, ``True`` 0.946;
    - a text turn about the ordering system's internals (:func:`plain_talk`): "To create a
      new order, you need to create an order object ...". The base model writes them after
      the API results, the model rates them as it rates real replies (0.566 against 0.549
      for the base model's other text replies) because its labels hold none, and RLOO
      climbed them (49 of 100 replies); none of the 6,920 real agent turns holds the words;
    - a reply that repeats itself, with fewer than ``min_distinct`` of its word trigrams
      distinct (:func:`loop_free`): PPO repeated "The order of the order of ..." to the length
      limit, which both recipe models rate above the real agent turn (0.946 against 0.937
      without context negatives, 0.695 against 0.579 with them), and the base model often
      says one sentence twice (0.55 to 0.75 of its trigrams distinct). Every real agent turn
      of the 6,920 keeps at least 0.857 of its trigrams distinct.

    Args:
        path: the model folder; default :func:`reward_model_dir` ``("taskmaster4")``.
        min_words: words a reply needs for the full probability (0: no scaling).
        text_only: score a reply that is not a text turn to the customer 0: code, API lines,
            bare values and talk of the system's internals (False: the model's score alone,
            for contexts whose next agent turn may be an API call).
        min_distinct: the share of distinct word trigrams below which a reply scores 0, in
            [0, 1) (0: no repetition gate).
        device: torch device; default CUDA when available.
        batch_size: texts per forward pass.
    """

    name = "taskmaster4_rm"
    recipe = "taskmaster4"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        min_words: int = 1,
        text_only: bool = True,
        min_distinct: float = 0.8,
        device: str | None = None,
        batch_size: int = 64,
    ) -> None:
        if not isinstance(text_only, bool):
            raise ValueError(f"text_only must be True or False, got {text_only!r}")
        check_min_distinct(min_distinct)
        super().__init__(path, min_words=min_words, device=device, batch_size=batch_size)
        self.text_only = text_only
        self.min_distinct = min_distinct

    def scaled(self, prompts: list[str], texts: list[str], completions: list[str]) -> np.ndarray:
        """:meth:`RecipeReward.scaled`, times :func:`text_turn` and :func:`plain_talk` of the
        completions when ``text_only`` and :func:`loop_free` of them."""
        scores = super().scaled(prompts, texts, completions) * loop_free(
            completions, self.min_distinct
        )
        if not self.text_only:
            return scores
        return scores * text_turn(completions) * plain_talk(completions)


# Markers of a reply that is not an agent's text turn: a code fence, a line that starts a
# Python import, function or class, an API line as the prompt writes them, a JSON object, or
# a JSON or Python value as the whole reply (the API results' booleans, null, a number).
_NOT_TEXT = re.compile(
    r"```"
    r"|^\s*(?:import\s+\w|from\s+[\w.]+\s+import\s|def\s+\w+\s*\(|class\s+\w+\s*[:(])"
    r"|\[API (?:call|result)\b"
    r'|\{\s*"'
    # Any case for the bare value ("True", "null"); code keywords are lower-case only, so that
    # prose such as "Import duties apply." stays a text turn.
    r"|\A\s*(?i:true|false|none|null|-?\d+(?:\.\d+)?)\s*\Z",
    re.MULTILINE,
)


def text_turn(completions: list[str]) -> np.ndarray:
    """1.0 per completion that reads as a text turn, 0.0 per one holding code, a JSON object
    or an ``[API call ...]`` / ``[API result ...]`` line, or one that is a bare JSON or
    Python value (see :class:`Taskmaster4Reward`).

    >>> text_turn(["One mocha, coming up.", "import requests", '{"order_id": "1"}',
    ...            "```python", "[API call get_menu_items: {}]", "Is {that} right?"]).tolist()
    [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    >>> text_turn(["True", " null", "12.5", "True, it is.", "None for me.", "2 lattes"]).tolist()
    [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    >>> text_turn(["Import duties apply.", "From here import nothing.", "Class A: window"]).tolist()
    [1.0, 1.0, 1.0]
    """
    return _unmatched(_NOT_TEXT, completions)


# The vocabulary of the ordering system's internals: a backtick, a snake_case name such as
# order_id, or a programming word. None of Taskmaster-4's 6,920 agent text turns holds one;
# words with an everyday sense in a coffee shop ("method" of payment, "server", "string") stay
# out so that a real reply is never gated.
_SYSTEM_TALK = re.compile(
    r"`|\b[a-z]+_[a-z_]*[a-z]\b"
    r"|(?i:\b(?:apis?|json|python|mongodb|sql|https?|urls?|endpoints?|functions?|code|snippets?"
    r"|databases?|objects?|attributes?|parameters?|variables?|booleans?|integers?|dictionary"
    r"|dictionaries|arrays?|schemas?)\b)"
)


def plain_talk(completions: list[str]) -> np.ndarray:
    """1.0 per completion in the words of a reply to a customer, 0.0 per one that talks about
    the ordering system's internals: a backtick, a snake_case name or a programming word such
    as API, JSON, function, code, database, object or attribute (see
    :class:`Taskmaster4Reward`).

    >>> plain_talk(["One mocha, coming up.", "To add it, call the `add_item` API.",
    ...             "Your order_id is 12.", "The function returns the order object.",
    ...             "What payment method would you like?", "Our server will bring it."]).tolist()
    [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    """
    return _unmatched(_SYSTEM_TALK, completions)


def _unmatched(pattern: re.Pattern[str], completions: list[str]) -> np.ndarray:
    """1.0 per completion in which ``pattern`` finds nothing, else 0.0: a gate's factor."""
    return np.array([pattern.search(c) is None for c in completions], dtype=np.float32)


def check_min_distinct(min_distinct: float) -> None:
    if isinstance(min_distinct, bool) or not isinstance(min_distinct, int | float):
        raise ValueError(f"min_distinct must be a number in [0, 1), got {min_distinct!r}")
    if not 0 <= min_distinct < 1:
        raise ValueError(
            f"min_distinct must be in [0, 1) (0: no repetition gate), got {min_distinct!r}"
        )


def loop_free(completions: list[str], min_distinct: float) -> np.ndarray:
    """1.0 per completion with at least ``min_distinct`` of its word trigrams distinct (see
    :class:`~textgym.rewards.metrics.RepetitionPenalty`), 0.0 per one that repeats itself. A
    completion of fewer than three words has no trigram to repeat and passes.

    >>> loop_free(["The order of the order of the order of the", "Yes.",
    ...            "Your mocha is ready. Your mocha is ready.",
    ...            "Your mocha is ready, and your latte is ready too."], 0.8).tolist()
    [0.0, 1.0, 0.0, 1.0]
    """
    distinct = 1.0 + RepetitionPenalty(n=3)([""] * len(completions), completions, None)
    return (distinct >= min_distinct).astype(np.float32)


def check_min_words(min_words: int) -> None:
    if not isinstance(min_words, int) or isinstance(min_words, bool) or min_words < 0:
        raise ValueError(f"min_words must be an int >= 0 (0: no scaling), got {min_words!r}")


def word_ramp(completions: list[str], min_words: int) -> np.ndarray:
    """``min(1, words / min_words)`` per completion (all 1 when ``min_words`` is 0). A word is
    a whitespace-separated run with a letter or digit in it: punctuation alone is no reply (PPO
    on Taskmaster-4 learned to answer a bare code fence, which the reward model rated as highly
    as a real reply).

    >>> word_ramp(["", "good", "a fine film, really", "```", "- ok !"], 4).tolist()
    [0.0, 0.25, 1.0, 0.0, 0.25]
    """
    if min_words == 0:
        return np.ones(len(completions), dtype=np.float32)
    words = [sum(any(ch.isalnum() for ch in w) for w in c.split()) for c in completions]
    return np.minimum(1.0, np.array(words, dtype=np.float32) / min_words)


register_reward("sst2_sentiment", SentimentReward)
register_reward("sst2_positive", lambda **kw: SentimentReward(**{"threshold": 0.5, **kw}))
register_reward("taskmaster4_rm", Taskmaster4Reward)
