"""Smoke test of the built wheel, run by ``make wheel-smoke`` from outside the source tree.

An editable install reads the source folders, so it hides files that the wheel leaves out
(package data, a module missing from ``packages.find``) and imports that only work from the
repository root. This script runs in a fresh venv where textgym is the installed wheel and
checks: the ``textgym`` console script, ``gym.make("TextGen-v0")`` with the packaged task data,
and one tiny training iteration through ``textgym train``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    import gymnasium as gym

    import agents
    import textgym

    venv = Path(sys.prefix).resolve()
    for module in (textgym, agents):
        where = Path(module.__file__).resolve()
        if venv not in where.parents:
            raise SystemExit(f"{module.__name__} was imported from {where}, not from the wheel")
    bin_dir = Path(sys.executable).parent
    help_text = subprocess.run(
        [bin_dir / "textgym", "--help"], check=True, capture_output=True, text=True
    ).stdout
    for command in ("train", "feedback", "info"):
        if command not in help_text:
            raise SystemExit(f"`textgym --help` does not list {command!r}:\n{help_text}")

    env = gym.make("TextGen-v0")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    textgym.make_task("summarize").split("train")  # package data: tasks/data/*.json

    with tempfile.TemporaryDirectory() as run_dir:
        subprocess.run(
            [bin_dir / "textgym", "train", "--model", "tiny", "--batch-size", "2",
             "--max-new-tokens", "2", "--iterations", "1", "--eval-every", "0",
             "--no-progress", "--report-to", "none", "--run-dir", run_dir],
            check=True,
        )  # fmt: skip
        if not (Path(run_dir) / "policy" / "config.json").is_file():
            raise SystemExit("one training iteration did not save the policy")
    print(f"wheel smoke test passed: textgym {textgym.__version__} from {venv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
