"""Run outputs: metrics CSV and TensorBoard, sample tables, the reward plot, atomic files."""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from textgym.io import atomic_write


class MetricsLogger:
    """One row of metrics per iteration to ``metrics.csv`` (rewritten atomically) and TensorBoard.

    ``rows`` restores a resumed run's history; TensorBoard events after its last iteration are
    purged so a resumed run does not show the lost iterations twice.
    """

    def __init__(
        self,
        run_dir: Path,
        tensorboard: bool = True,
        rows: Sequence[dict[str, Any]] = (),
        write: bool = True,
    ) -> None:
        self.run_dir = run_dir
        self.write = write  # False: keep the rows in memory only (processes other than 0)
        self.rows: list[dict[str, Any]] = [dict(r) for r in rows]
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn(
                    "tensorboard is not installed (pip install 'textgym[train]'); logging to CSV only",
                    stacklevel=2,
                )
            else:
                start = int(self.rows[-1]["iteration"]) + 1 if self.rows else 0
                self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start or None)

    def log(self, iteration: int, metrics: dict[str, float]) -> None:
        row = {"iteration": iteration, **metrics}
        if self.rows and self.rows[-1]["iteration"] == iteration:
            self.rows[-1].update(row)
        else:
            self.rows.append(row)
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, iteration)
            self.writer.flush()
        if self.write:
            self.write_csv()

    def text(self, tag: str, markdown: str, iteration: int) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, markdown, iteration)

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
        if self.writer is not None:
            self.writer.close()


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
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buf.getvalue())
