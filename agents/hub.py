"""Sharing a trained policy: its model card, the command that reproduces it, and the Hub upload.

Every ``policy/`` a trainer saves gets a ``README.md`` (:func:`model_card`) in the Hugging Face
model-card format: YAML front matter (``library_name``, ``tags``, ``base_model``) the Hub reads,
then the task, algorithm, evaluation metrics, the ``textgym train`` command, the full config
and the textgym version. :func:`push_to_hub` uploads such a directory.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import textgym
from agents.config import TrainConfig
from textgym.models import ALIASES

MODEL_CARD = "README.md"


def train_command(config: TrainConfig) -> str:
    """The ``textgym train`` command line that builds ``config`` (fields left at their default
    are omitted).

    >>> from agents import make_config
    >>> train_command(make_config("grpo", task="dialogsum", learning_rate=3e-6, progress=False))
    'textgym train --algo grpo --task dialogsum --learning-rate 3e-06 --no-progress'
    """
    parts = ["textgym", "train", "--algo", config.algo]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _base_model(name: str) -> str | None:
    """The Hub id of a base model, or None for the random "tiny" model and local directories."""
    name = ALIASES.get(name.lower(), name)
    if name == "tiny" or Path(name).exists():
        return None
    return name


def model_card(config: TrainConfig, rows: Sequence[dict[str, Any]]) -> str:
    """The README.md of a policy trained with ``config``; ``rows`` are its metric rows.

    >>> from agents import make_config
    >>> card = model_card(make_config("ppo", task="keywords"), [{"iteration": 0, "eval/reward": 0.25}])
    >>> print(card[: card.index("# ")].strip())
    ---
    library_name: transformers
    base_model: HuggingFaceTB/SmolLM2-135M-Instruct
    tags:
    - textgym
    - reinforcement-learning
    - ppo
    - keywords
    ---
    """
    base = _base_model(config.model)
    front = ["---", "library_name: transformers"]
    if base:
        front.append(f"base_model: {base}")
    front.append("tags:")
    front += [f"- {tag}" for tag in ("textgym", "reinforcement-learning", config.algo, config.task)]
    front.append("---")

    evals = [r for r in rows if r.get("eval/reward") not in (None, "")]
    if evals:
        keys = [k for k in evals[-1] if k.startswith("eval/")]
        table = ["| metric | before training | final |", "|---|---|---|"]
        first = evals[0] if evals[0] is not evals[-1] else {}
        for key in keys:
            before = f"{float(first[key]):.4f}" if first.get(key) not in (None, "") else ""
            table.append(f"| {key} | {before} | {float(evals[-1][key]):.4f} |")
        metrics = (
            f"Greedy completions of {config.eval_samples} prompts of the "
            f"`{config.eval_split}` split, at iteration {evals[-1]['iteration']}:\n\n"
            + "\n".join(table)
        )
    else:
        metrics = "No evaluation was run (`eval_every = 0`)."
    init = f" warm-started from `{config.init}`" if config.init else ""
    body = f"""
# {config.algo.upper()} on {config.task}

A policy trained with textgym {textgym.__version__}:
`{config.model}`{init}, trained with **{config.algo}** on the **{config.task}** task for
{config.iterations} iterations (reward: `{config.reward or "the task's own"}`).

The directory holds the language model in Hugging Face format (`AutoModelForCausalLM`
loads it alone), its tokenizer, and the value head (`value_head.safetensors`).

## Evaluation

{metrics}

## Use

```python
from agents import load_policy

policy, tokenizer = load_policy("path/to/this/directory")
```

## Reproduce

```bash
{train_command(config)}
```

## Config

```json
{json.dumps(config.to_dict(), indent=2, default=str)}
```
"""
    return "\n".join(front) + "\n" + body


def push_to_hub(
    policy_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload textgym policy",
) -> str:
    """Upload a saved policy directory (LM, tokenizer, value head, model card) to the Hub.

    Creates ``repo_id`` when missing; returns the URL of the commit. ``token`` defaults to
    the one ``huggingface-cli login`` stored.
    """
    from huggingface_hub import HfApi

    folder = Path(policy_dir)
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"{folder} is not a saved policy (no config.json or adapter_config.json); pass a "
            "run's policy/ directory"
        )
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return str(
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message)
    )


__all__ = ["MODEL_CARD", "model_card", "push_to_hub", "train_command"]
