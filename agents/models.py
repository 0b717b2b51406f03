"""The untrained LM of a run, shared by the trainers, the bench and the examples."""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedTokenizerBase

from textgym.models import load_model, tiny_model


def build_model(name: str, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> nn.Module:
    """The LM ``name`` (Hugging Face id, local directory or alias); ``"tiny"`` is a random
    2-layer model over the tokenizer's vocabulary, seeded so that a policy and its reference
    built with the same seed agree."""
    if name == "tiny":
        return tiny_model(tokenizer, seed=seed)
    return load_model(name)
