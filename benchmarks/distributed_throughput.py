"""Training tokens per second with 1 and with N processes (accelerate), side by side.

Runs ``textgym train`` once directly and once under ``accelerate launch`` with N processes,
same algorithm, model and per-process batch (so N processes train on N times the episodes per
iteration), and reads the completion tokens per second of a whole iteration (rollout, reward,
update; all processes together) from each run's metrics.csv, skipping the first iteration.
On CPU, the single process gets all the threads and each of the N processes an equal share
(``--threads`` fixes the threads per process instead).

    python benchmarks/distributed_throughput.py [--processes 2] [--algo grpo] [--model tiny]
        [--batch-size 16] [--new-tokens 16] [--iterations 6]
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import mean

import torch

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tokens_per_second(processes: int, args: argparse.Namespace, threads: int) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        train = ["-m", "textgym.cli", "train", "--algo", args.algo, "--model", args.model,
                 "--batch-size", str(args.batch_size), "--max-new-tokens", str(args.new_tokens),
                 "--iterations", str(args.iterations), "--eval-every", "0", "--save-every", "0",
                 "--no-progress", "--report-to", "none", "--run-dir", run_dir]  # fmt: skip
        launcher = [sys.executable]
        if processes > 1:
            launcher += ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                         str(processes), "--num_machines", "1", "--mixed_precision", "no",
                         "--dynamo_backend", "no", "--main_process_port", str(free_port())]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(launcher + train, env=env, cwd=ROOT, check=True, capture_output=True)
        with open(Path(run_dir) / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
    return mean(float(r["time/tokens_per_s"]) for r in rows[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--algo", default="grpo")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--batch-size", type=int, default=16, help="per process")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument(
        "--threads", type=int, default=0, help="threads per process (0: cores / processes)"
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    gpus = torch.cuda.device_count()
    print(
        f"{cores} CPU cores, {gpus} GPUs; {args.algo} {args.model} batch {args.batch_size}/process"
    )
    one = tokens_per_second(1, args, args.threads or cores)
    many = tokens_per_second(args.processes, args, args.threads or max(1, cores // args.processes))
    print(f"1 process:   {one:8.1f} completion tokens/s")
    print(f"{args.processes} processes: {many:8.1f} completion tokens/s ({many / one:.2f}x)")


if __name__ == "__main__":
    main()
