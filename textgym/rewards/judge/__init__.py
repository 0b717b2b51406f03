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

Modules, one idea each: :mod:`~textgym.rewards.judge.prompts` (rubrics, templates, scales,
few-shot examples, the chats a judge sees), :mod:`~textgym.rewards.judge.verdicts` (parsing
free-text answers), :mod:`~textgym.rewards.judge.local` and :mod:`~textgym.rewards.judge.remote` (the backends),
:mod:`~textgym.rewards.judge.reward` (the reward and its registration as ``"judge"``) and
:mod:`~textgym.rewards.judge.preferences` (pairwise preferences and the feedback store).
Importing this package registers the reward; it loads neither torch nor the store.
"""

from textgym.rewards.judge.local import LocalJudge
from textgym.rewards.judge.preferences import (
    Preference,
    PreferenceStore,
    add_preferences_to_store,
    combine_orders,
    judge_rater,
)
from textgym.rewards.judge.prompts import (
    DEFAULT_EXAMPLES,
    DEFAULT_PAIR_TEMPLATE,
    DEFAULT_RUBRIC,
    DEFAULT_SYSTEM,
    DEFAULT_TEMPLATE,
    LOCAL_SCALE,
    PAIR_LABELS,
    REMOTE_SCALE,
    Conversation,
    JudgePrompts,
    format_rubric,
)
from textgym.rewards.judge.remote import JudgeConnectionError, RemoteJudge
from textgym.rewards.judge.reward import JudgeReward, make_judge
from textgym.rewards.judge.verdicts import parse_verdict

__all__ = [
    "DEFAULT_EXAMPLES",
    "DEFAULT_PAIR_TEMPLATE",
    "DEFAULT_RUBRIC",
    "DEFAULT_SYSTEM",
    "DEFAULT_TEMPLATE",
    "LOCAL_SCALE",
    "PAIR_LABELS",
    "REMOTE_SCALE",
    "Conversation",
    "JudgeConnectionError",
    "JudgePrompts",
    "JudgeReward",
    "LocalJudge",
    "Preference",
    "PreferenceStore",
    "RemoteJudge",
    "add_preferences_to_store",
    "combine_orders",
    "format_rubric",
    "judge_rater",
    "make_judge",
    "parse_verdict",
]
