"""Real data sets as tasks: local files (JSONL / JSON lists) or the Hugging Face hub.

Every loader returns a :class:`~textgym.tasks.base.Task` whose prompts are chat messages
(a user turn with the instruction and the source text, or a dialogue history ending with the
user turn to answer) and whose references are the human summaries or gold next turns.

Where the files come from (``source="local"``, the default):

1. ``path=``: a data root holding the data set's folder (``<path>/dialogsum``) or the folder
   itself (``<path>`` with ``train.jsonl`` ...);
2. else the environment variable ``TEXTGYM_DATA`` (a data root);
3. else ``../shared/data`` relative to the current directory, then relative to the repository.

``source="hub"`` calls ``datasets.load_dataset`` with the data set's hub id (``pip install
datasets``; the package is optional and not a dependency of textgym).

Splits. ``split={"train": "train.jsonl", ...}`` maps textgym split names to file names or glob
patterns inside the folder (local) or to hub split names such as ``"train[:1000]"`` (hub).
When the data has a train split but no validation or test split, the missing ones are held out
of train deterministically: a record goes to ``test`` when ``crc32(record id) / 2**32`` is below
``holdout``, to ``validation`` when it lies in ``[holdout, 2 * holdout)``, else it stays in
train. The choice depends only on the record's id (or its source text when it has none), not
on file order or ``max_samples``, so the hold-out never changes under a cap and dialogue
loaders never split one conversation across splits. ``holdout=0`` disables it.

Samples keep file order, which is the fixed evaluation order. ``max_samples`` caps each split
(reading stops once every split fed by a file is full).

Modules: :mod:`~textgym.tasks.datasets.records` (reading records, field checks),
:mod:`~textgym.tasks.datasets.loading` (the engine: folders, files, hub, hold-out, caps),
:mod:`~textgym.tasks.datasets.prompts` (prompt helpers), and the recipes
:mod:`~textgym.tasks.datasets.summarization` (one table row per summarization set),
:mod:`~textgym.tasks.datasets.dialogue` and :mod:`~textgym.tasks.datasets.continuation`.
Local ``.tsv`` files (a header row, tab-separated values; SST-2) are read as well.
"""

from collections.abc import Callable

from textgym.tasks.base import Task
from textgym.tasks.datasets.continuation import (
    IMDB_INSTRUCTION,
    SST2_INSTRUCTION,
    imdb,
    sst2_sentiment,
)
from textgym.tasks.datasets.dialogue import (
    DAILYDIALOG_INSTRUCTION,
    TASKMASTER4_API,
    TASKMASTER4_INSTRUCTION,
    dailydialog,
    detokenize,
    taskmaster4,
    taskmaster4_rlhf,
)
from textgym.tasks.datasets.loading import (
    DATA_ENV,
    SOURCES,
    DataSource,
    dataset_dir,
    default_data_dir,
)
from textgym.tasks.datasets.prompts import truncate_words
from textgym.tasks.datasets.records import DataFormatError
from textgym.tasks.datasets.summarization import (
    CNN_INSTRUCTION,
    DIALOGSUM_INSTRUCTION,
    SAMSUM_INSTRUCTION,
    SCITLDR_INSTRUCTION,
    SUMMARIZATION_SETS,
    XSUM_INSTRUCTION,
    SummarizationSet,
    dialogsum_rl,
)

LOADERS: dict[str, Callable[..., Task]] = {
    **{s.name: s for s in SUMMARIZATION_SETS},
    "taskmaster4": taskmaster4,
    "dailydialog": dailydialog,
    "imdb": imdb,
    # The three tasks of the results grid, each with the reward it is trained and judged on.
    "sst2_sentiment": sst2_sentiment,
    "taskmaster4_rlhf": taskmaster4_rlhf,
    "dialogsum_rl": dialogsum_rl,
}
"""Task name -> loader, registered by :mod:`textgym.tasks`."""

__all__ = [
    "CNN_INSTRUCTION",
    "DAILYDIALOG_INSTRUCTION",
    "DATA_ENV",
    "DIALOGSUM_INSTRUCTION",
    "IMDB_INSTRUCTION",
    "LOADERS",
    "SAMSUM_INSTRUCTION",
    "SCITLDR_INSTRUCTION",
    "SST2_INSTRUCTION",
    "SOURCES",
    "SUMMARIZATION_SETS",
    "TASKMASTER4_API",
    "TASKMASTER4_INSTRUCTION",
    "XSUM_INSTRUCTION",
    "DataFormatError",
    "DataSource",
    "SummarizationSet",
    "dailydialog",
    "dataset_dir",
    "default_data_dir",
    "detokenize",
    "dialogsum_rl",
    "imdb",
    "sst2_sentiment",
    "taskmaster4",
    "taskmaster4_rlhf",
    "truncate_words",
]
