"""Import cost of textgym: wall time of fresh interpreters that import it or make its env.

Two snippets, each run ``--runs`` times in a fresh ``python -c`` process (after one untimed
warm-up run that fills the disk cache), reported as the median with min and max:

- ``import textgym``
- ``import gymnasium as gym, textgym; gym.make('TextGen-v0')``

``--baseline-rev REV`` also measures the tree at git revision ``REV`` (checked out with
``git worktree add`` under the system temp folder and removed afterwards), the two trees' runs
interleaved so that a change in machine load hits both alike. Load averages are printed before
and after, since on a shared machine they explain most of the spread::

    python benchmarks/import_time.py --runs 10 --baseline-rev d60ba98
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = {
    "import textgym": "import textgym",
    "gym.make('TextGen-v0')": "import gymnasium as gym, textgym; gym.make('TextGen-v0')",
}


def time_snippet(code: str, tree: Path) -> float:
    """Seconds for a fresh interpreter to run ``code`` with ``tree``'s textgym first on the path."""
    # The tree's folder goes first on sys.path, ahead of the editable install of this checkout.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    check = f"import textgym, sys; assert textgym.__file__.startswith({str(tree)!r}); {code}"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", check], cwd=tree, env=env, check=True)
    return time.perf_counter() - start


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A detached git worktree of ``rev`` in a temp folder, removed on exit."""
    path = Path(tempfile.mkdtemp(prefix=f"textgym-{rev}-"))
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(path), rev],
        check=True,
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], check=True
        )


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure(trees: dict[str, Path], runs: int) -> dict[tuple[str, str], list[float]]:
    """``runs`` timings per (tree, snippet), the trees interleaved run by run."""
    times: dict[tuple[str, str], list[float]] = {}
    for label, code in SNIPPETS.items():
        for tree in trees.values():
            time_snippet(code, tree)  # warm-up: disk cache, .pyc files
        for _ in range(runs):
            for name, tree in trees.items():
                times.setdefault((name, label), []).append(time_snippet(code, tree))
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per snippet and tree")
    parser.add_argument("--baseline-rev", help="also measure this git revision, side by side")
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        trees = {"this tree": ROOT}
        if args.baseline_rev:
            trees[args.baseline_rev] = stack.enter_context(worktree(args.baseline_rev))
        before = load_average()
        times = measure(trees, args.runs)
        after = load_average()

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.runs} runs each")
    print(f"load average (1, 5, 15 min): before {before}, after {after}")
    print(f"{'tree':<12} {'snippet':<24} {'median s':>9} {'min s':>7} {'max s':>7}")
    for (name, label), values in times.items():
        print(
            f"{name:<12} {label:<24} {statistics.median(values):>9.2f}"
            f" {min(values):>7.2f} {max(values):>7.2f}"
        )


if __name__ == "__main__":
    main()
