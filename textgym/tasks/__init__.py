"""Tasks: where prompts, references and default rewards come from.

Embedded tasks (:mod:`textgym.tasks.embedded`, offline, no data files): ``keywords``,
``summarize``, ``dialogue``. Real data sets (:mod:`textgym.tasks.datasets`, local files or the
Hugging Face hub): ``dialogsum``, ``samsum``, ``scitldr``, ``taskmaster4``, ``dailydialog``,
``cnn_dailymail``, ``xsum``, ``imdb``; and the results grid's three, each with the reward it is
judged on: ``sst2_sentiment``, ``taskmaster4_rlhf``, ``dialogsum_rl``.

>>> task = make_task("summarize")
>>> task
Task('summarize', train=30, validation=5, test=5)
>>> print(prompt_text(task.split("test")[0].prompt)[:56])
user: Summarize this passage in one sentence.
<BLANKLINE>
Octopuses
>>> "dialogsum" in list_tasks()
True
"""

from textgym.tasks import datasets, embedded
from textgym.tasks.base import Sample, Task, list_tasks, make_task, prompt_text, register_task
from textgym.tasks.datasets import DataFormatError, default_data_dir

for _name, _builder in {**embedded.BUILDERS, **datasets.LOADERS}.items():
    register_task(_name, _builder)

__all__ = [
    "DataFormatError",
    "Sample",
    "Task",
    "default_data_dir",
    "list_tasks",
    "make_task",
    "prompt_text",
    "register_task",
]
