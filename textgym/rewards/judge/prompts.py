"""What a judge is asked: rubrics and constitutions, prompt templates, verdict scales, the
few-shot demonstrations shown before each question, and :class:`JudgePrompts`, which renders
them into the chat (:data:`Conversation`) that either backend answers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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


def labels_text(labels: Sequence[str]) -> str:
    """The labels as the prompt offers them.

    >>> labels_text(["Yes", "No"]), labels_text(["1", "2", "3"])
    ('Yes or No', '1, 2 or 3')
    """
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " or " + labels[-1]


def as_scale(scale: Sequence[str] | Mapping[str, float]) -> dict[str, float]:
    """Verdict labels -> values; a list of numeric labels maps to their numbers, else 0..n-1.

    >>> as_scale(["bad", "good"]), as_scale(["1", "5"])
    ({'bad': 0.0, 'good': 1.0}, {'1': 1.0, '5': 5.0})
    """
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


@dataclass(frozen=True)
class JudgePrompts:
    """Renders the chats a judge sees: system message, few-shot turns, then the question.

    Attributes:
        rubric: the formatted rubric (:func:`format_rubric`).
        template, pair_template: the pointwise and pairwise question templates.
        system: the system message (None or empty: none).
        scale: verdict label -> value (:func:`as_scale`); labels are offered in this order.
        examples: few-shot ``(prompt, completion, score in [0, 1])``, answered with the label
            nearest to the score.
        json_answers: ask for, and demonstrate, a JSON answer (remote judges, whose free text
            :func:`~textgym.rewards.judge.verdicts.parse_verdict` reads); else the bare label,
            whose next-token probability a local judge reads.

    >>> prompts = JudgePrompts("Be right.", DEFAULT_TEMPLATE, DEFAULT_PAIR_TEMPLATE, None,
    ...                        LOCAL_SCALE, (), json_answers=False)
    >>> print(prompts.conversation("2 + 2?", "4")[0]["content"])
    Rubric: Be right.
    Question: 2 + 2?
    Response: 4
    <BLANKLINE>
    Is the response a good answer to the question according to the rubric? Answer Yes or No.
    """

    rubric: str
    template: str
    pair_template: str
    system: str | None
    scale: Mapping[str, float]
    examples: Sequence[tuple[str, str, float]]
    json_answers: bool

    @property
    def labels(self) -> list[str]:
        """The verdict labels, in scale order."""
        return list(self.scale)

    def _format_suffix(self, key: str, labels: Sequence[str]) -> str:
        if not self.json_answers:
            return ""
        return (
            f'\n\nReply with a JSON object only: {{"{key}": <one of {", ".join(labels)}>, '
            '"reason": "<one short sentence>"}'
        )

    def _answer(self, key: str, label: str) -> str:
        return json.dumps({key: label}) if self.json_answers else label

    def _nearest_label(self, score01: float) -> str:
        lo, hi = min(self.scale.values()), max(self.scale.values())
        target = lo + score01 * (hi - lo)
        return min(self.labels, key=lambda lab: abs(self.scale[lab] - target))

    def _head(self) -> Conversation:
        return [{"role": "system", "content": self.system}] if self.system else []

    def _single_user(self, prompt: str, completion: str) -> str:
        text = self.template.format(
            rubric=self.rubric,
            prompt=prompt,
            completion=completion,
            labels=labels_text(self.labels),
        )
        return text + self._format_suffix("score", self.labels)

    def _pair_user(self, prompt: str, first: str, second: str) -> str:
        text = self.pair_template.format(
            rubric=self.rubric, prompt=prompt, a=first, b=second, labels=labels_text(PAIR_LABELS)
        )
        return text + self._format_suffix("winner", PAIR_LABELS)

    def conversation(self, prompt: str, completion: str) -> Conversation:
        """The chat for judging one completion: system, few-shot turns, the question."""
        conv = self._head()
        for p, c, s in self.examples:
            conv.append({"role": "user", "content": self._single_user(p, c)})
            conv.append(
                {"role": "assistant", "content": self._answer("score", self._nearest_label(s))}
            )
        conv.append({"role": "user", "content": self._single_user(prompt, completion)})
        return conv

    def pair_conversation(self, prompt: str, first: str, second: str) -> Conversation:
        """The chat for comparing two completions. Few-shot pairs come from examples that share
        a prompt: best against worst, shown in both orders so that the demonstrations favour
        neither slot."""
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
