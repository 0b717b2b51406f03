"""Summarization data sets: a source text to one or more reference summaries.

Every set is one row of :data:`SUMMARIZATION_SETS` (folder, field names, hub id, instruction,
hold-out share, text cleaning), read by one loader, :meth:`SummarizationSet.__call__`. Every
sample is a single user turn (the instruction, a blank line, the source text); the references
are the summaries; the default reward is ``"rouge_l"``. A new summarization set is a new row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from textgym.tasks.base import Sample, Task
from textgym.tasks.datasets.loading import DataSource, PathLike
from textgym.tasks.datasets.prompts import truncate_words, user_turn
from textgym.tasks.datasets.records import Row, require_text, require_texts


def collapse_whitespace(text: str) -> str:
    """Every run of white space as one space, none at the ends.

    >>> collapse_whitespace(" Deep  nets\\n learn. ")
    'Deep nets learn.'
    """
    return " ".join(text.split())


def clean_lines(text: str) -> str:
    """The non-blank lines of ``text``, stripped, joined with ``\\n`` (``\\r\\n`` turns too).

    >>> clean_lines("Ann: hi\\r\\n\\r\\n Bob: hey ")
    'Ann: hi\\nBob: hey'
    """
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


@dataclass(frozen=True)
class SummarizationSet:
    """One summarization data set, and its loader (call it: ``DIALOGSUM(path, max_samples=8)``).

    Attributes:
        name: the task name.
        folder: the data set's folder under the data root.
        text_field: the record field with the source text.
        summary_field: the record field with the reference summary (a string or a list).
        id_fields: fields tried in order for ``meta["id"]``; the first non-empty one (or the
            source text) also decides the record's hold-out slot.
        instruction: the default instruction that precedes the source text.
        description: the task's one-line description.
        hub_id: the Hugging Face hub id; hub_config: its configuration, if any.
        holdout: the default share of train held out per missing split.
        meta_fields: further fields copied into ``meta`` as strings (``""`` when absent).
        sentences: the text field is a list of sentences, joined with single spaces.
        clean_text: applied to the (capped) source text; clean_summary: to each reference.
        about: the local file layout and what is special about the set, for ``help``.
    """

    name: str
    folder: str
    text_field: str
    summary_field: str
    id_fields: tuple[str, ...]
    instruction: str
    description: str
    hub_id: str
    hub_config: str | None = None
    holdout: float = 0.05
    meta_fields: tuple[str, ...] = ()
    sentences: bool = False
    clean_text: Callable[[str], str] = str.strip
    clean_summary: Callable[[str], str] = str.strip
    about: str = ""

    @property
    def data(self) -> DataSource:
        """Where the records come from (standard file and hub split names)."""
        return DataSource(
            self.name,
            self.folder,
            hub_id=self.hub_id,
            hub_config=self.hub_config,
            key_fields=(*self.id_fields, self.text_field),
        )

    def __call__(
        self,
        path: PathLike | None = None,
        *,
        source: str = "local",
        split: Mapping[str, str] | None = None,
        max_samples: int | None = None,
        instruction: str | None = None,
        max_source_words: int | None = None,
        holdout: float | None = None,
        hub_id: str | None = None,
    ) -> Task:
        """The task: ``path``, ``source``, ``split``, ``max_samples`` and ``holdout`` as in
        :mod:`textgym.tasks.datasets`; ``instruction`` replaces :attr:`instruction` (``""``: the
        text alone); ``max_source_words`` caps the source text; ``hub_id`` replaces
        :attr:`hub_id`."""
        instruction = self.instruction if instruction is None else instruction

        def convert(row: Row, where: str) -> list[Sample]:
            if self.sentences:
                raw = " ".join(require_texts(row, self.text_field, where))
            else:
                raw = require_text(row, self.text_field, where)
            text = self.clean_text(truncate_words(raw, max_source_words))
            refs = tuple(
                self.clean_summary(r) for r in require_texts(row, self.summary_field, where)
            )
            meta = {f: str(row.get(f, "")) for f in self.meta_fields}
            meta["id"] = next(
                (str(row[f]) for f in self.id_fields if row.get(f) not in (None, "")), ""
            )
            return [Sample(user_turn(instruction, text), refs, meta)]

        splits = self.data.load(
            convert,
            path=path,
            source=source,
            split=split,
            max_samples=max_samples,
            holdout=self.holdout if holdout is None else holdout,
            hub_id=hub_id,
        )
        return Task(self.name, splits, default_reward="rouge_l", description=self.description)


DIALOGSUM_INSTRUCTION = "Summarize the following dialogue in one sentence."
SAMSUM_INSTRUCTION = "Summarize the following chat conversation in one or two sentences."
SCITLDR_INSTRUCTION = "Write a one-sentence TL;DR of this scientific abstract."
CNN_INSTRUCTION = "Summarize this news article in two or three sentences."
XSUM_INSTRUCTION = "Summarize this article in one sentence."

SUMMARIZATION_SETS: tuple[SummarizationSet, ...] = (
    SummarizationSet(
        name="dialogsum",
        folder="dialogsum",
        text_field="dialogue",
        summary_field="summary",
        id_fields=("fname", "id"),
        meta_fields=("topic",),
        instruction=DIALOGSUM_INSTRUCTION,
        description="Summarize a two-person dialogue in one sentence (DialogSum, CC BY-NC-SA 4.0).",
        hub_id="knkarthick/dialogsum",
        holdout=0.04,
        about="An everyday two-person dialogue (``#Person1#: ...`` lines). Local files "
        "``dialogsum/train.jsonl`` and ``dev.jsonl`` (fields ``fname, dialogue, summary, topic``) "
        "give train and validation; test is held out of train (4%, by ``fname``) unless a "
        '``test.jsonl`` is present. ``meta = {"topic", "id"}``.',
    ),
    SummarizationSet(
        name="samsum",
        folder="samsum",
        text_field="dialogue",
        summary_field="summary",
        id_fields=("id",),
        instruction=SAMSUM_INSTRUCTION,
        description="Summarize a messenger chat (SAMSum, CC BY-NC-ND 4.0).",
        hub_id="samsum",
        clean_text=clean_lines,
        about="A messenger conversation (``Name: text`` turns split by ``\\r\\n``, normalised "
        "to ``\\n``). The shared copy has only ``validation.jsonl`` (fields ``id, dialogue, "
        'summary``), so the local task has only a validation split; ``split={"train": '
        '"validation.jsonl"}`` trains on it (validation and test are then held out of it).',
    ),
    SummarizationSet(
        name="scitldr",
        folder="scitldr_a",
        text_field="source",
        summary_field="target",
        id_fields=("paper_id",),
        instruction=SCITLDR_INSTRUCTION,
        description="One-line TL;DR of a scientific abstract (SciTLDR-A, Apache-2.0).",
        hub_id="allenai/scitldr",
        hub_config="Abstract",
        sentences=True,
        clean_text=collapse_whitespace,
        clean_summary=collapse_whitespace,
        about="Fields ``source`` (list of sentences, joined with single spaces; stray line "
        "breaks inside sentences removed) and ``target`` (list of references: one in train, up "
        "to four in dev). Local ``scitldr_a/train.jsonl`` and ``dev.jsonl``; test held out of "
        "train (5%, by ``paper_id``) unless ``test.jsonl`` exists.",
    ),
    SummarizationSet(
        name="cnn_dailymail",
        folder="cnn_dailymail",
        text_field="article",
        summary_field="highlights",
        id_fields=("id",),
        instruction=CNN_INSTRUCTION,
        description="News article to highlights (CNN/DailyMail 3.0.0, Apache-2.0).",
        hub_id="abisee/cnn_dailymail",
        hub_config="3.0.0",
        about="Local ``cnn_dailymail/{train,validation,test}.jsonl`` with fields ``article``, "
        "``highlights`` (and optionally ``id``). Articles are long: ``max_source_words`` "
        "truncates them to fit the env's prompt length.",
    ),
    SummarizationSet(
        name="xsum",
        folder="xsum",
        text_field="document",
        summary_field="summary",
        id_fields=("id",),
        instruction=XSUM_INSTRUCTION,
        description="Extreme one-sentence summary of a BBC article (XSum).",
        hub_id="EdinburghNLP/xsum",
        about="Local ``xsum/{train,validation,test}.jsonl`` with fields ``document``, "
        "``summary`` (and optionally ``id``).",
    ),
)
"""The summarization data sets, one row each."""


def dialogsum_rl(
    path: PathLike | None = None, *, reward: Any = "rouge_minilm", **options: Any
) -> Task:
    """DialogSum with a reward a small model can climb: ``"rouge_minilm"`` (ROUGE-L, MiniLM
    similarity to the reference and a length term, gated against copying the dialogue;
    :mod:`textgym.rewards.summary`). The samples
    are ``dialogsum``'s; ``options`` go to its loader. Judge it on held-out ROUGE-1/2/L too,
    which the bench's evaluation reports for every task with references."""
    task = SUMMARIZATION_SETS[0](path, **options)
    return Task(
        "dialogsum_rl",
        task.splits,
        default_reward=reward,
        description="DialogSum summaries rewarded by ROUGE-L + MiniLM similarity + length, "
        "gated against copying the dialogue.",
    )
