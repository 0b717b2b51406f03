"""TRL interop: textgym rewards as TRL reward functions and back, in make_reward and GRPOTrainer."""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest

from textgym.rewards import TRLReward, from_trl, make_reward, to_trl
from textgym.rewards.trl import is_trl_style

from .conftest import char_count, make_small_task

TRL_MISSING = importlib.util.find_spec("trl") is None


def test_to_trl_reads_messages_references_and_columns():
    seen = {}

    def spy(prompts, completions, references, **meta):
        seen.update(prompts=prompts, completions=completions, references=references, meta=meta)
        return np.array([len(c) for c in completions], dtype=np.float32)

    fn = to_trl(spy)
    out = fn(
        prompts=[
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
            [{"role": "user", "content": [{"type": "text", "text": "Yo"}]}],
        ],
        completions=[
            [{"role": "assistant", "content": "abc"}],
            [{"role": "assistant", "content": "de"}],
        ],
        completion_ids=[[1, 2], [3]],
        reference=["one", "two"],
        keywords=[["a"], ["b"]],
        trainer_state=object(),
        log_metric=print,
    )
    assert out == [3.0, 2.0] and all(type(v) is float for v in out)
    assert seen["prompts"] == ["Hi", "Yo"] and seen["completions"] == ["abc", "de"]
    assert seen["references"] == [["one"], ["two"]]
    assert seen["meta"] == {"keywords": [["a"], ["b"]]}  # TRL's runtime keys are dropped
    assert fn.__name__ == "spy"


def test_to_trl_reference_columns_by_priority_and_by_name():
    rouge = to_trl("rouge_l")
    # "references" wins over "summary"; each entry may be a list of references.
    assert rouge(["p"], ["the cat sat"], references=[["the cat sat"]], summary=["dog"]) == [1.0]
    assert rouge(["p"], ["the cat sat"], summary=["the cat sat"]) == [1.0]
    named = to_trl("rouge_l", reference_column="gold")
    assert named(["p"], ["a b"], gold=["a b"], summary=["zzz"]) == [1.0]
    with pytest.raises(KeyError, match=r"reference column 'gold' is not among .*\['summary'\]"):
        named(["p"], ["a b"], summary=["a b"])
    with pytest.raises(TypeError, match="reference column 'references' must hold a string"):
        rouge(["p"], ["a"], references=[3])
    with pytest.raises(ValueError, match="got 2 prompts for 1 completions"):
        rouge(["p", "q"], ["a"])


def test_to_trl_validates_the_textgym_reward():
    fn = to_trl(lambda p, c, r, **m: np.full(len(c), np.nan))
    with pytest.raises(ValueError, match="NaN or inf at batch positions \\[0\\]"):
        fn(["p"], ["a"])
    with pytest.raises(TypeError, match="expected a string or a non-empty list"):
        to_trl("length")(["p"], [[{"role": "assistant"}]])


def test_from_trl_passes_columns_references_and_token_ids(tokenizer):
    seen = {}

    def trl_fn(prompts, completions, completion_ids, solution, **kwargs):
        seen.update(prompts=prompts, ids=completion_ids, solution=solution, kwargs=kwargs)
        return [
            float(c[0]["content"] == s) if i else None
            for i, (c, s) in enumerate(zip(completions, solution, strict=True))
        ]

    reward = from_trl(trl_fn, reference_column="solution", conversational=True, tokenizer=tokenizer)
    values = reward(["q1", "q2"], ["4", "5"], [["4"], ["5", "five"]], keywords=[["x"], ["y"]])
    assert values.dtype == np.float32 and values.tolist() == [0.0, 1.0]  # None counts 0
    assert seen["prompts"] == [
        [{"role": "user", "content": "q1"}],
        [{"role": "user", "content": "q2"}],
    ]
    assert seen["solution"] == ["4", "5"]  # a singular column gets the first reference
    assert seen["ids"] == [
        tokenizer.encode("4", add_special_tokens=False),
        tokenizer.encode("5", add_special_tokens=False),
    ]
    assert seen["kwargs"] == {"keywords": [["x"], ["y"]]}
    plural = {}
    from_trl(lambda completions, **kw: plural.update(kw) or [0.0])(["p"], ["c"], [["r1", "r2"]])
    assert plural == {"prompts": ["p"], "completion_ids": None, "references": [["r1", "r2"]]}


def test_from_trl_errors_name_the_function():
    def bad(completions, **kwargs):
        return [1.0, 2.0]

    with pytest.raises(ValueError, match=r"reward 'bad' returned shape \(2,\); expected \(1,\)"):
        from_trl(bad)(["p"], ["c"], None)

    def nothing(completions, **kwargs):
        return None

    with pytest.raises(TypeError, match="TRL reward 'nothing' returned NoneType"):
        from_trl(nothing)(["p"], ["c"], None)
    with pytest.raises(TypeError, match="from_trl needs a callable reward function, got int"):
        from_trl(3)
    with pytest.raises(ValueError, match="reference_column must be a non-empty column name"):
        from_trl(bad, reference_column="")


def test_round_trip_keeps_values():
    task = make_small_task(3)
    samples = task.split("train")
    prompts = [s.prompt for s in samples]
    completions = ["item 0 here", "nothing", "item 2"]
    refs = [list(s.references) for s in samples]
    keywords = [s.meta["keywords"] for s in samples]
    direct = make_reward({"rouge_l": 1.0, "keyword_coverage": 0.5})(
        prompts, completions, refs, keywords=keywords
    )
    back = from_trl(to_trl({"rouge_l": 1.0, "keyword_coverage": 0.5}))
    np.testing.assert_array_equal(back(prompts, completions, refs, keywords=keywords), direct)
    assert direct.tolist() != [0.0, 0.0, 0.0]


def test_make_reward_detects_trl_functions_by_signature():
    def reward_len(completions, **kwargs):
        return [float(len(c)) for c in completions]

    def textgym_named(prompts, completions, references, **meta):
        return np.zeros(len(completions))

    def kw_only(*, prompts, completions, **kwargs):
        return [1.0] * len(completions)

    assert is_trl_style(reward_len) and is_trl_style(kw_only) and not is_trl_style(textgym_named)
    assert not is_trl_style(char_count) and not is_trl_style(len)  # builtins: textgym-style
    wrapped = make_reward(reward_len)
    assert isinstance(wrapped, TRLReward) and wrapped.name == "reward_len"
    assert wrapped(["p", "p"], ["ab", "abcd"], None).tolist() == [2.0, 4.0]
    assert make_reward(kw_only)(["p"], ["c"], None).tolist() == [1.0]
    assert make_reward(textgym_named) is textgym_named and make_reward(char_count) is char_count
    mix = make_reward([(reward_len, 1.0), (char_count, 2.0)])
    assert mix(["p"], ["abc"], None).tolist() == [9.0]


def test_trl_function_as_textgen_env_reward(tokenizer):
    def has_item(prompts, completions, keywords, **kwargs):
        return [float(kw[0] in c) for c, kw in zip(completions, keywords, strict=True)]

    env = gym.make(
        "TextGen-v0", task=make_small_task(), tokenizer=tokenizer, reward=has_item, max_new_tokens=3
    )
    env.reset(seed=0)
    for token in tokenizer.encode(" item", add_special_tokens=False):
        env.step(token)
    _, reward, terminated, _, info = env.step(env.unwrapped.eos_token_id)
    assert terminated and reward == 1.0
    assert info["reward_components"] == {"has_item": 1.0}


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers deprecations inside TRL
@pytest.mark.skipif(TRL_MISSING, reason="trl is not installed (pip install -e '.[bench]')")
def test_textgym_reward_drives_trl_grpo_trainer(tokenizer, tmp_path):
    import torch
    import trl
    from datasets import Dataset

    from textgym.models import tiny_model

    calls = []

    def chars(prompts, completions, references, **meta):
        calls.append((prompts, completions, references, meta))
        return char_count(prompts, completions, references)

    dataset = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": f"Say item {i}."}],
                "references": [f"item {i}"],
                "keywords": ["item", str(i)],
            }
            for i in range(4)
        ]
    )
    tiny_model(tokenizer).save_pretrained(tmp_path / "model")
    config = trl.GRPOConfig(
        output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=4, num_generations=2,
        max_completion_length=4, max_steps=1, learning_rate=1e-2, beta=0.0, logging_steps=1,
        report_to="none", save_strategy="no", disable_tqdm=True, seed=0,
    )  # fmt: skip
    trainer = trl.GRPOTrainer(
        model=str(tmp_path / "model"), reward_funcs=to_trl(chars), args=config,
        train_dataset=dataset, processing_class=tokenizer,
    )  # fmt: skip
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()

    ((prompts, completions, references, meta),) = calls
    assert len(completions) == 4 and all(isinstance(c, str) for c in completions)
    assert set(prompts) <= {f"Say item {i}." for i in range(4)}  # the user message's text
    assert prompts[0] == prompts[1] and prompts[2] == prompts[3]  # two generations per prompt
    assert [r[0] for r in references] == [p.removeprefix("Say ").rstrip(".") for p in prompts]
    assert set(meta) == {"keywords"}
    log = trainer.state.log_history[0]
    assert log["rewards/chars/mean"] == pytest.approx(np.mean([len(c) for c in completions]))
    assert log["grad_norm"] > 0
    changed = [k for k, v in trainer.model.named_parameters() if not torch.equal(v, before[k])]
    assert changed, "one GRPO step with a varying textgym reward must update the weights"
