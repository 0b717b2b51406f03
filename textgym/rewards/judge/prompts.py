"""What a judge is asked: rubrics and constitutions, prompt templates, verdict scales and the
few-shot demonstrations shown before each question.

Both backends see the same chat (:data:`Conversation`); :class:`~textgym.rewards.judge.reward.
JudgeReward` fills the templates in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
