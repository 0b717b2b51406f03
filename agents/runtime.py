"""Device placement, mixed precision and cross-process reductions, in one place.

Everything the trainer does that depends on *where* it runs goes through :class:`Runtime`, so
running under ``accelerate launch`` (N processes) means changing this module only: ``sum``
becomes an all-reduce, ``backward`` goes through the accelerator, and so on.
"""

from __future__ import annotations

import contextlib
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


class Runtime:
    """Where the trainer's tensors live and how results are combined across processes.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        mixed_precision: bf16 autocast for forward passes on CUDA (weights and optimizer stay
            float32); ignored on CPU, where bf16 matmuls are slower than float32.

    >>> rt = Runtime("cpu")
    >>> rt.sum(torch.tensor([1.0, 2.0])).tolist()  # identity with one process
    [1.0, 2.0]
    """

    def __init__(self, device: str | torch.device = "auto", mixed_precision: bool = True) -> None:
        self.device = resolve_device(device)
        self.amp_dtype = torch.bfloat16 if mixed_precision and self.device.type == "cuda" else None
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

    def generator(self, seed: int) -> torch.Generator:
        """The sampling generator, on the device so noise is drawn where the logits are."""
        return torch.Generator(device=self.device).manual_seed(seed)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over processes (identity with one process)."""
        return tensor

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
