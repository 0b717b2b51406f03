"""``textgym bench``: a grid of algorithms x tasks x seeds under one budget, evaluated alike.

Every run gets the same budget of environment tokens (generated tokens, the unit an LM agent
pays for) and/or seconds of training, then the same held-out evaluation
(:func:`agents.evaluation.evaluate`: same prompts, greedy decoding, KL and perplexity against
the same reference model). Layout of the output directory::

    OUT/bench.json                          the latest settings; every command run here
    OUT/results.csv                         one row per finished run (rebuilt after each run)
    OUT/<task>/<algo>/seed<k>/result.json   config, versions, device, budget used, eval metrics
    OUT/<task>/<algo>/seed<k>/curve.csv     reward vs environment tokens and seconds
    OUT/<task>/<algo>/seed<k>/samples.jsonl held-out prompts, completions, references
    OUT/<task>/<algo>/seed<k>/train/        the algorithm's own logs (metrics.csv, ...)

``result.json`` is written last and atomically: a run that has it is finished and skipped on
a rerun, so an interrupted grid resumes where it stopped (a run interrupted midway restarts,
or continues from its last checkpoint with ``save_every``).

Every on-policy algorithm of :mod:`agents.registry` is a bench algorithm without a line here;
what is not an agents trainer (the untrained baseline, the stable-baselines3 runs) is a row of
:data:`~agents.bench.adapters.ADAPTERS` (see :mod:`agents.bench.adapters` for the rule).

Modules: :mod:`~agents.bench.config` (the grid's and a run's settings),
:mod:`~agents.bench.adapters` (how each kind of run is trained), :mod:`~agents.bench.grid`
(running and evaluating the grid), :mod:`~agents.bench.results` (``result.json``, CSV files,
the recorded environment) and :mod:`~agents.bench.cli` (``textgym bench``).
"""

from agents.bench.adapters import ADAPTERS, Trained, bench_algorithms
from agents.bench.cli import add_parser, parse_options, parse_seeds
from agents.bench.config import BenchConfig, RunSpec, bench_command
from agents.bench.grid import run_grid
from agents.bench.results import load_results, write_results_csv

__all__ = [
    "ADAPTERS",
    "BenchConfig",
    "RunSpec",
    "Trained",
    "add_parser",
    "bench_algorithms",
    "bench_command",
    "load_results",
    "parse_options",
    "parse_seeds",
    "run_grid",
    "write_results_csv",
]
