"""A local judge: a Hugging Face causal LM read through its next-token probabilities.

torch and transformers load when the judge first scores, not when this module is imported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from textgym.rewards.judge.prompts import Conversation


class LocalJudge:
    """A Hugging Face causal LM read through its next-token probabilities.

    Args:
        model: alias (``"smollm2-135m"``), hub id or local directory, or a loaded causal LM.
        tokenizer: the model's tokenizer; loaded from ``model`` when it is a name.
        device: where to run (default: CPU, or the loaded model's device).
        batch_size: judge prompts per forward pass.
        max_length: judge prompts longer than this many tokens lose their beginning (the
            few-shot examples and rubric go first, the verdict question is kept).
        name: the judge's name in logs and in the feedback-store rater ``"ai:<name>"``;
            default: the model name, or the last part of a loaded model's ``name_or_path``
            (``"smollm2-135m"`` for ``load_model("smollm2-135m")``), or its class name.

    The model is loaded on first use, so building a reward costs nothing until it scores.
    """

    def __init__(
        self,
        model: Any = "smollm2-135m",
        tokenizer: Any = None,
        device: str | None = None,
        batch_size: int = 8,
        max_length: int = 1024,
        name: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 16:
            raise ValueError(f"max_length must be >= 16 tokens, got {max_length}")
        if not isinstance(model, str) and tokenizer is None:
            raise ValueError("LocalJudge: pass the tokenizer of a loaded model (tokenizer=...)")
        loaded_from = Path(str(getattr(model, "name_or_path", "") or "")).name
        self.name = (
            name or (model if isinstance(model, str) else loaded_from) or type(model).__name__
        )
        self._model = None if isinstance(model, str) else model
        self._model_name = model if isinstance(model, str) else None
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.stats: Counter = Counter()
        if tokenizer is None:
            from textgym.models import load_tokenizer

            tokenizer = load_tokenizer(model)
        self.tokenizer = tokenizer
        self._label_ids: dict[tuple[str, ...], list[list[int]]] = {}

    @property
    def model(self) -> Any:
        if self._model is None:
            from textgym.models import load_model

            self._model = load_model(self._model_name, device=self.device)
        return self._model

    def label_token_ids(self, labels: Sequence[str]) -> list[list[int]]:
        """For each label, the single tokens that spell it (with and without a leading space)."""
        key = tuple(labels)
        if key not in self._label_ids:
            out = []
            for label in labels:
                ids = {
                    ids[0]
                    for text in (label, " " + label)
                    if len(ids := self.tokenizer.encode(text, add_special_tokens=False)) == 1
                }
                if not ids:
                    raise ValueError(
                        f"judge label {label!r} is not a single token of the judge's tokenizer "
                        f"({self.name}); local judges read next-token probabilities, so use "
                        "single-token labels such as Yes/No, A/B or digits 0-9"
                    )
                out.append(sorted(ids))
            self._label_ids[key] = out
        return self._label_ids[key]

    def render(self, conversation: Conversation) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True
            )
        return "".join(f"{m['role']}: {m['content']}\n" for m in conversation) + "assistant:"

    def label_probs(self, conversations: list[Conversation], labels: Sequence[str]) -> np.ndarray:
        """P(label | judge prompt), renormalized over ``labels``: shape (B, L), rows sum to 1."""
        import torch

        label_ids = self.label_token_ids(labels)
        texts = [self.render(c) for c in conversations]
        model = self.model
        device = next(model.parameters()).device
        out = np.zeros((len(texts), len(labels)), dtype=np.float64)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding per batch
        tok = self.tokenizer
        side, tside = tok.padding_side, tok.truncation_side
        tok.padding_side, tok.truncation_side = "left", "left"
        try:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                enc = tok(
                    [texts[i] for i in idx],
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    add_special_tokens=False,
                ).to(device)
                with torch.inference_mode():
                    logits = (
                        model(**enc, logits_to_keep=1, use_cache=False).logits[:, -1, :].float()
                    )  # (b, V)
                logp = torch.log_softmax(logits, dim=-1)
                per_label = torch.stack(
                    [torch.logsumexp(logp[:, ids], dim=-1) for ids in label_ids], dim=-1
                )  # (b, L)
                # mass the judge puts on the labels at all; mean = label_mass_sum / judged
                self.stats["label_mass_sum"] += float(per_label.exp().sum())
                out[idx] = torch.softmax(per_label, dim=-1).double().cpu().numpy()
                self.stats["forward_passes"] += 1
        finally:
            tok.padding_side, tok.truncation_side = side, tside
        self.stats["judged"] += len(texts)
        return out
