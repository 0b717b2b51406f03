"""Run outputs: metrics CSV and experiment trackers, sample tables, the reward plot, atomic files."""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from textgym.io import atomic_write

TRACKER_DIR = "tb"
"""TensorBoard's event files go to run_dir/tb (where a resume purges the lost iterations)."""


def parse_report_to(spec: str) -> tuple[str, ...]:
    """The tracker names of a ``report_to`` value: comma-separated names of accelerate's
    trackers (``accelerate.tracking.LOGGER_TYPE_TO_CLASS``, which also holds trackers
    registered with ``accelerate.tracking.register_tracker_class``), "all" (every installed
    one) or "none" / "" (metrics.csv only).

    Names are checked only where accelerate is installed; without it the trainer warns and
    writes metrics.csv alone.

    >>> parse_report_to("tensorboard, trackio")
    ('tensorboard', 'trackio')
    >>> parse_report_to("none")
    ()
    >>> parse_report_to("tensorbord")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: report_to: unknown tracker(s) ['tensorbord']; valid: aim, all, clearml, comet_ml, dvclive, mlflow, none, ..., tensorboard, trackio, wandb (comma-separated)
    """
    if not isinstance(spec, str):
        raise ValueError(
            f"report_to must be a comma-separated string such as 'tensorboard,trackio', got {spec!r}"
        )
    names = tuple(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
    if names == ("none",):
        return ()
    try:
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS
    except ImportError:
        return names
    valid = sorted([*LOGGER_TYPE_TO_CLASS, "all", "none"])
    unknown = [n for n in names if n not in LOGGER_TYPE_TO_CLASS and n != "all"]
    if unknown:
        raise ValueError(
            f"report_to: unknown tracker(s) {unknown}; valid: {', '.join(valid)} (comma-separated)"
        )
    return names


def _hparam(value: Any) -> bool | int | float | str:
    """A config value as trackers take hyperparameters (TensorBoard refuses None and lists)."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def start_trackers(
    names: Sequence[str],
    run_dir: Path,
    *,
    project: str,
    config: Mapping[str, Any],
    start_step: int = 0,
) -> list[Any]:
    """Start accelerate trackers (``accelerate.tracking.GeneralTracker``) for ``names``.

    TensorBoard writes to ``run_dir/tb`` and purges events from ``start_step`` on (a resumed
    run does not show the lost iterations twice); every other tracker files the run under
    ``project`` with the run directory's name: a resumed trackio run continues that run, the
    others start a new one. The config goes to each tracker as hyperparameters. Trackers that
    are not installed are skipped with a warning.
    """
    if not names:
        return []
    try:
        from accelerate import PartialState
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
        from accelerate.utils import LoggerType
    except ImportError:
        warnings.warn(
            f"accelerate is not installed (pip install 'textgym[train]'); not reporting to "
            f"{', '.join(names)} (metrics.csv only)",
            stacklevel=2,
        )
        return []
    PartialState()  # accelerate's trackers log through its state
    installed = {str(t) for t in get_available_trackers()}
    builtin = set(LoggerType.list())  # the rest of LOGGER_TYPE_TO_CLASS: registered by the user
    chosen = sorted({n for n in names if n != "all"} | (installed if "all" in names else set()))
    for name in chosen:
        if name in builtin and name not in installed:
            package = "textgym[train]" if name == "tensorboard" else name.replace("_", "-")
            warnings.warn(
                f"tracker {name!r} is not installed (pip install '{package}'); not reporting to it",
                stacklevel=2,
            )
    run_name = run_dir.resolve().name
    kwargs: dict[str, dict[str, Any]] = {
        "tensorboard": {"purge_step": start_step or None},
        "wandb": {"name": run_name},
        "trackio": {"name": run_name, "resume": "allow" if start_step else "never"},
        "mlflow": {"run_name": run_name},
        "swanlab": {"experiment_name": run_name},
    }
    hparams = {key: _hparam(value) for key, value in config.items()}
    trackers = []
    for name in (n for n in chosen if n not in builtin or n in installed):
        cls = LOGGER_TYPE_TO_CLASS[name]
        if name == "tensorboard":
            tracker = cls(TRACKER_DIR, run_dir, **kwargs[name])
        elif cls.requires_logging_directory:
            tracker = cls(project, run_dir, **kwargs.get(name, {}))
        else:
            tracker = cls(project, **kwargs.get(name, {}))
        tracker.start()
        if not (start_step and name == "tensorboard"):  # run_dir/tb holds them already
            tracker.store_init_configuration(hparams)
        trackers.append(tracker)
    return trackers


class MetricsLogger:
    """One row of metrics per iteration to ``metrics.csv`` (rewritten atomically; the record
    a resume restores) and to experiment trackers (:func:`start_trackers`).

    ``rows`` restores a resumed run's history; the trackers start from the iteration after
    its last row.
    """

    def __init__(
        self,
        run_dir: Path,
        report_to: Sequence[str] = (),
        rows: Sequence[dict[str, Any]] = (),
        write: bool = True,
        *,
        project: str = "textgym",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.write = write  # False: keep the rows in memory only (processes other than 0)
        self.rows: list[dict[str, Any]] = [dict(r) for r in rows]
        start = int(self.rows[-1]["iteration"]) + 1 if self.rows else 0
        self.trackers = start_trackers(
            report_to, run_dir, project=project, config=config or {}, start_step=start
        )

    def log(self, iteration: int, metrics: dict[str, float]) -> None:
        row = {"iteration": iteration, **metrics}
        if self.rows and self.rows[-1]["iteration"] == iteration:
            self.rows[-1].update(row)
        else:
            self.rows.append(row)
        for tracker in self.trackers:
            tracker.log(metrics, step=iteration)
        if self.write:
            self.write_csv()

    def text(self, tag: str, markdown: str, iteration: int) -> None:
        """A markdown text (a table of samples) to TensorBoard's text tab; other trackers
        take metrics only (the samples are also under run_dir/samples)."""
        for tracker in self.trackers:
            if tracker.name == "tensorboard":
                tracker.log({tag: markdown}, step=iteration)

    def write_csv(self) -> None:
        keys: list[str] = []
        for row in self.rows:
            keys.extend(k for k in row if k not in keys)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.run_dir / "metrics.csv", buf.getvalue())

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def samples_table(
    prompts: Sequence[str], completions: Sequence[str], rewards: Sequence[float], limit: int = 8
) -> str:
    """A markdown table of (prompt, completion, reward) rows."""

    def cell(text: str, width: int) -> str:
        text = " ".join(text.split()).replace("|", "\\|")
        return text if len(text) <= width else text[: width - 1] + "…"

    lines = ["| prompt | completion | reward |", "|---|---|---|"]
    for p, c, r in list(zip(prompts, completions, rewards, strict=True))[:limit]:
        lines.append(f"| {cell(p, 60)} | {cell(c, 100)} | {r:.3f} |")
    return "\n".join(lines)


def plot_rewards(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """PNG of train/reward (and eval/reward where present) against iteration, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("train/reward", "-"), ("eval/reward", "o--")):
        points = [(r["iteration"], r[key]) for r in rows if r.get(key) not in (None, "")]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, [float(y) for y in ys], style, label=key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("reward")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # SFT and DPO log no reward: nothing to label
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
