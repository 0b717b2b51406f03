"""Device placement, mixed precision and cross-process reductions, in one place.

Everything the trainer does that depends on *where* it runs goes through :class:`Runtime`.
Under ``accelerate launch`` with N processes, :func:`make_runtime` returns a
:class:`DistributedRuntime`: ``sum`` becomes an all-reduce, the model and optimizer are
prepared by ``accelerate`` (DDP, FSDP or DeepSpeed, as the user's accelerate config says) and
``backward`` goes through the accelerator.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch
from torch import nn


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is checked to be usable.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


def amp_dtype(
    device: torch.device, mixed_precision: bool, cpu_bf16: bool = False
) -> torch.dtype | None:
    """The autocast dtype of the trainer's forwards on ``device`` (None: float32 throughout).

    >>> amp_dtype(torch.device("cpu"), True), amp_dtype(torch.device("cpu"), True, cpu_bf16=True)
    (None, torch.bfloat16)
    """
    if not mixed_precision:
        return None
    return torch.bfloat16 if device.type == "cuda" or cpu_bf16 else None


class Runtime:
    """Where the trainer's tensors live and how results are combined across processes.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        mixed_precision: bf16 autocast for forward passes on CUDA (weights and optimizer stay
            float32).
        cpu_bf16: with ``mixed_precision``, autocast on CPU as well. Off by default: it pays
            only on CPUs with native bf16 matmuls, and it changes the log-probs.

    >>> rt = Runtime("cpu")
    >>> rt.sum(torch.tensor([1.0, 2.0])).tolist()  # identity with one process
    [1.0, 2.0]
    """

    def __init__(
        self,
        device: str | torch.device = "auto",
        mixed_precision: bool = True,
        cpu_bf16: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        self.amp_dtype = amp_dtype(self.device, mixed_precision, cpu_bf16)
        self.num_processes = 1
        self.process_index = 0

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, module: nn.Module) -> nn.Module:
        return module.to(self.device)

    def prepare_training(
        self, module: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The module to run training forwards through, and the optimizer to step."""
        return module, optimizer

    def process_seed(self, seed: int) -> int:
        """This process's seed: ``seed`` itself in process 0, distinct ones in the others."""
        return seed + 100_003 * self.process_index

    def gather_object(self, obj: Any) -> list[Any]:
        """``obj`` of every process, in process order (on every process)."""
        return [obj]

    def barrier(self) -> None:
        """Wait until every process gets here."""

    def generator(self, seed: int) -> torch.Generator:
        """The sampling generator, on the device so noise is drawn where the logits are."""
        return torch.Generator(device=self.device).manual_seed(seed)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over processes (identity with one process)."""
        return tensor

    def mean(self, values: torch.Tensor) -> float:
        """Mean of ``values`` over every process (each holds as many)."""
        return float(self.sum(values.sum())) / (values.numel() * self.num_processes)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def clip_grad_norm(self, parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
        return nn.utils.clip_grad_norm_(parameters, max_norm)

    def rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)


class DistributedRuntime(Runtime):
    """One of N processes started by ``accelerate launch``; ``accelerate`` owns the rest.

    The model and optimizer go through ``Accelerator.prepare`` (DDP, FSDP or DeepSpeed by the
    user's accelerate config), so gradients are synchronised by accelerate. Losses here are
    sums over the *global* batch divided by its global token count; data-parallel wrappers
    average gradients over processes, so :meth:`backward` scales the loss by N to get the
    gradient of the global loss. On GPUs each process takes its own; with ``device="cpu"``
    (or no GPU) the processes run on the CPU and talk over gloo.
    """

    def __init__(
        self,
        device: str | torch.device = "auto",
        mixed_precision: bool = True,
        cpu_bf16: bool = False,
    ) -> None:
        from accelerate import Accelerator

        self.accelerator = Accelerator(cpu=resolve_device(device).type == "cpu")
        self.device = self.accelerator.device
        self.amp_dtype = amp_dtype(self.device, mixed_precision, cpu_bf16)
        self.num_processes = self.accelerator.num_processes
        self.process_index = self.accelerator.process_index

    def prepare_training(
        self, module: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        return self.accelerator.prepare(module, optimizer)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(tensor.to(self.device), reduction="sum")

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss * self.num_processes)

    def clip_grad_norm(self, parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
        return self.accelerator.clip_grad_norm_(parameters, max_norm)

    def gather_object(self, obj: Any) -> list[Any]:
        from accelerate.utils import gather_object

        return gather_object([obj])

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()


def launched_processes() -> int:
    """How many processes ``accelerate launch`` / ``torchrun`` started (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def make_runtime(
    device: str | torch.device = "auto", mixed_precision: bool = True, cpu_bf16: bool = False
) -> Runtime:
    """A :class:`DistributedRuntime` under a multi-process launch, else a :class:`Runtime`.

    >>> make_runtime("cpu").num_processes
    1
    """
    if launched_processes() > 1:
        return DistributedRuntime(device, mixed_precision, cpu_bf16)
    return Runtime(device, mixed_precision, cpu_bf16)


def masked_mean(
    x: torch.Tensor, mask: torch.Tensor, runtime: Runtime | None = None
) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is 1, over all processes when a runtime is given."""
    total, count = (x * mask).sum(), mask.sum()
    if runtime is not None:
        total, count = runtime.sum(total), runtime.sum(count)
    return total / count.clamp(min=1)


def whiten(
    x: torch.Tensor, mask: torch.Tensor, runtime: Runtime | None = None, shift_mean: bool = True
) -> torch.Tensor:
    """Normalise ``x`` to zero mean and unit variance over the masked entries (all processes).

    >>> w = whiten(torch.tensor([1.0, 2.0, 3.0, 99.0]), torch.tensor([1.0, 1.0, 1.0, 0.0]))
    >>> [round(v, 3) for v in w[:3].tolist()]
    [-1.225, 0.0, 1.225]
    """
    mean = masked_mean(x, mask, runtime)
    var = masked_mean((x - mean) ** 2, mask, runtime)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask
