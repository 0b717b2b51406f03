"""Run by tests/test_distributed.py under ``accelerate launch --cpu --num_processes 2``.

Trains a tiny model one iteration at a time and writes, per process, a digest of the trained
parameters after every update (``OUT/rank<k>.json``). With ``--check-whiten``, it first
whitens a fixed tensor split across the processes and process 0 records the largest
difference from whitening the whole tensor in one process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

from agents import TrainConfig, Trainer, make_config
from agents.runtime import Runtime, whiten


def parameter_digest(trainer: Trainer) -> str:
    digest = hashlib.sha256()
    for name, p in sorted(trainer.policy.named_parameters()):
        digest.update(name.encode())
        digest.update(p.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def whiten_difference(runtime: Runtime) -> float:
    """Largest |distributed - single-process| whitened value over this process's shard."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(runtime.num_processes * 4, 6, generator=g) * 3 + 1  # (B, N)
    mask = (torch.rand(x.shape, generator=g) > 0.3).float()
    expected = whiten(x, mask)  # one process, the whole batch
    rows = slice(4 * runtime.process_index, 4 * (runtime.process_index + 1))
    mine = whiten(x[rows], mask[rows], runtime)
    return float((mine - expected[rows]).abs().max())


def worker_config(algo: str, run_dir: str, iterations: int) -> TrainConfig:
    return make_config(
        algo, model="tiny", task="keywords", batch_size=4, max_new_tokens=4, top_k=8,
        iterations=iterations, save_every=1, eval_every=2, eval_samples=2, progress=False,
        report_to="none", run_dir=run_dir, kl_coef=0.1, learning_rate=1e-3,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--stop-after", type=int, default=0, help="iterations before stopping")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--check-whiten", action="store_true")
    args = parser.parse_args()

    trainer = Trainer(worker_config(args.algo, args.run_dir, args.iterations), resume=args.resume)
    runtime = trainer.runtime
    report: dict = {"num_processes": runtime.num_processes, "digests": {}}
    if args.check_whiten:
        report["whiten_max_difference"] = whiten_difference(runtime)
    stop = args.stop_after or args.iterations
    while trainer.iteration < stop:
        trainer.train(num_iterations=1)
        report["digests"][trainer.iteration] = parameter_digest(trainer)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{runtime.process_index}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
