"""Whole-dialogue rollouts: KV-cache prefill of env-inserted tokens, masked loss."""

from __future__ import annotations

import copy

import gymnasium as gym
import pytest
import torch

import textgym  # noqa: F401 - registers the env ids
from agents.dialogue import (
    DIALOGUE_ALGOS,
    DialogueConfig,
    dialogue_forward,
    dialogue_gae,
    dialogue_logprobs,
    dialogue_loss,
    dialogue_targets,
    group_advantages,
    policy_gradient_loss,
    reward_to_go,
    rollout_dialogues,
    train_step,
)
from agents.policy import TransformerPolicy
from textgym.lm import Sampling
from textgym.models import tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_envs(tokenizer, **kwargs):
    kw = dict(max_context_tokens=200, max_turn_tokens=5, max_turns=3, autoreset_mode="disabled")
    kw.update(kwargs)
    return gym.make_vec("TextGen-Conversation-v0", num_envs=4, tokenizer=tokenizer, **kw)


def guessing_policy(tokenizer, envs):
    """A policy that writes a few words and the end-of-turn token (an LM head with a bias), so
    that turns end at different steps in different rows (ragged insertions) and some guesses
    end dialogues."""
    policy = TransformerPolicy(tiny_model(tokenizer))
    favoured = [tokenizer.encode(w)[0] for w in (" Can", " it", " fly", "?", " cat", " dog")]
    favoured.append(envs.unwrapped.end_of_turn_token_id)
    head = torch.nn.Linear(64, len(tokenizer), bias=True)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.5)
        head.bias.fill_(-30.0)
        head.bias[favoured] = 0.0
    policy.model.config.tie_word_embeddings = False
    policy.model.lm_head = head
    return policy


@pytest.fixture(scope="module")
def played(tokenizer):
    torch.manual_seed(0)
    envs = make_envs(tokenizer)
    policy = guessing_policy(tokenizer, envs)
    with torch.no_grad():  # a value head that is not zero, so that recorded values are tested
        policy.value_head.weight.normal_(0.0, 0.1)
    batch = rollout_dialogues(
        policy,
        envs,
        Sampling(),
        torch.Generator().manual_seed(1),
        seed=0,
        record_values=True,
    )
    return policy, envs, batch


def test_rollout_sequences_are_the_rendered_dialogues(tokenizer, played):
    _, envs, batch = played
    assert len({int(n) for n in batch.attention.sum(1)}) > 1  # rows of different lengths
    for b, info in enumerate(batch.infos):
        ids = batch.ids[b][batch.attention[b].bool()].tolist()
        text = tokenizer.decode(ids)
        before_last = tokenizer.apply_chat_template(
            info["messages"][:-1], tokenize=False, add_generation_prompt=True
        )
        assert text.startswith(before_last)
        assert text[len(before_last) :].startswith(info["messages"][-1]["content"])
        assert int(batch.action_mask[b].sum()) == info["num_tokens"]
    # The env's rewards sit at action columns; their sum is each dialogue's return.
    assert ((batch.rewards != 0) <= (batch.action_mask > 0)).all()
    assert batch.values is not None and ((batch.values != 0) <= (batch.action_mask > 0)).all()


def test_kv_cache_logprobs_equal_a_no_cache_forward(played):
    policy, _, batch = played
    with torch.no_grad():
        full = dialogue_logprobs(policy, batch)
    mask = batch.action_mask.bool()
    difference = (full[mask] - batch.logprobs[mask]).abs().max().item()
    assert difference < 1e-4, difference  # measured 1.9e-6 (float32, CPU)
    # PPO's old values come from the rollout too: the value head agrees the same way.
    with torch.no_grad():
        _, values = dialogue_forward(policy, policy.model, batch, values=True)
    assert batch.values[mask].abs().min() > 0
    difference = (values[mask] - batch.values[mask]).abs().max().item()
    assert difference < 1e-4, difference


def test_loss_is_masked_to_agent_tokens(played):
    policy, _, batch = played
    captured = {}

    class Capture:
        model = policy.model

        @staticmethod
        def lm_forward(*args, **kwargs):
            out = policy.lm_forward(*args, **kwargs)
            out.logits.retain_grad()
            captured["logits"] = out.logits
            return out

    advantages = reward_to_go(batch) - reward_to_go(batch).mean() + 1.0
    loss = policy_gradient_loss(Capture, batch, advantages)
    loss.backward()
    grad = captured["logits"].grad.abs().sum(-1)  # (B, T-1): position t predicts column t+1
    predicts_action = batch.action_mask[:, 1:].bool()
    assert (grad[~predicts_action] == 0).all()  # user and template tokens: exactly zero
    assert (grad[predicts_action] > 0).all()
    policy.zero_grad()


def test_a_policy_gradient_step_raises_the_likelihood_of_rewarded_dialogues(played):
    policy, _, batch = played
    policy = copy.deepcopy(policy)
    advantages = torch.tensor([1.0, 0.0, 0.0, 0.0])
    optimizer = torch.optim.SGD(policy.model.parameters(), lr=1e-3)
    with torch.no_grad():
        before = (dialogue_logprobs(policy, batch) * batch.action_mask).sum(1)
    policy_gradient_loss(policy, batch, advantages).backward()
    optimizer.step()
    optimizer.zero_grad()
    with torch.no_grad():
        after = (dialogue_logprobs(policy, batch) * batch.action_mask).sum(1)
    assert after[0] > before[0]  # the rewarded dialogue became more likely


def test_rollout_refuses_other_envs_and_dropped_turns(tokenizer):
    policy = TransformerPolicy(tiny_model(tokenizer))
    with pytest.raises(ValueError, match="autoreset_mode='disabled'"):
        rollout_dialogues(policy, make_envs(tokenizer, autoreset_mode="next_step"), Sampling())
    envs = make_envs(tokenizer, max_context_tokens=110, max_turn_tokens=24, max_turns=8)
    with pytest.raises(ValueError, match="raise max_context_tokens"):
        rollout_dialogues(policy, envs, Sampling(), torch.Generator().manual_seed(0), seed=0)


def test_group_advantages_use_the_leave_one_out_baseline(played):
    _, _, batch = played
    advantages = group_advantages(batch, group_size=2)
    returns = batch.returns
    # At each dialogue's first column the reward-to-go is its whole return.
    first = advantages[:, 0]
    expected = returns - returns.view(2, 2).flip(1).reshape(4)
    torch.testing.assert_close(first, expected)
    with pytest.raises(ValueError, match="group_size=3 must be >= 2 and divide the batch of 4"):
        group_advantages(batch, group_size=3)


def test_train_step_plays_groups_that_share_a_goal(tokenizer):
    policy = TransformerPolicy(tiny_model(tokenizer))
    envs = make_envs(tokenizer, max_turn_tokens=3, max_turns=2)
    optimizer = torch.optim.SGD(policy.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in policy.model.parameters()]
    metrics = train_step(
        policy, optimizer, envs, Sampling(), 2, torch.Generator().manual_seed(0), [5, 9]
    )
    assert {
        "train/loss",
        "train/reward",
        "train/success",
        "train/turns",
        "train/turn_reward",
    } <= set(metrics)
    assert {"train/policy_loss", "train/clipfrac", "train/approx_kl"} <= set(metrics)
    indices = [d.index for d in envs.unwrapped.dialogues.rows]
    assert indices == [5, 5, 9, 9]
    assert any(
        not torch.equal(a, b) for a, b in zip(before, policy.model.parameters(), strict=True)
    )


def capture_logits(policy, captured):
    """A stand-in policy whose forward keeps its logits' gradient for inspection."""

    class Capture:
        model = policy.model
        value_head = policy.value_head

        @staticmethod
        def lm_forward(*args, **kwargs):
            out = policy.lm_forward(*args, **kwargs)
            out.logits.retain_grad()
            captured["logits"] = out.logits
            return out

    return Capture


@pytest.mark.parametrize("algo", DIALOGUE_ALGOS)
def test_every_algorithm_masks_its_loss_and_kl_to_agent_tokens(played, algo):
    policy, _, batch = played
    policy = copy.deepcopy(policy)
    # Perturb the policy away from its reference so that the KL terms have a gradient.
    with torch.no_grad():
        policy.model.lm_head.bias[policy.model.lm_head.bias == 0] += 0.3
    config = DialogueConfig(algo=algo, kl_coef=0.5)
    targets = dialogue_targets(policy, batch, config, group_size=2)
    assert ((targets["advantages"] != 0) <= (batch.action_mask > 0)).all()
    captured = {}
    loss, stats = dialogue_loss(capture_logits(policy, captured), batch, targets, config)
    loss.backward()
    grad = captured["logits"].grad.abs().sum(-1)  # (B, T-1): position t predicts column t+1
    predicts_action = batch.action_mask[:, 1:].bool()
    assert (grad[~predicts_action] == 0).all()  # user and template tokens: exactly zero
    assert (grad[predicts_action] > 0).float().mean() > 0.5
    assert ("value_loss" in stats) == (algo in ("ppo", "reinforce"))
    assert ("kl_loss" in stats) == (algo == "grpo")


@pytest.mark.parametrize("algo", DIALOGUE_ALGOS)
def test_one_update_of_each_algorithm_changes_the_policy(tokenizer, algo):
    torch.manual_seed(0)
    envs = make_envs(tokenizer)
    policy = guessing_policy(tokenizer, envs)
    optimizer = torch.optim.SGD(policy.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in policy.model.parameters()]
    head = policy.value_head.weight.detach().clone()
    config = DialogueConfig(algo=algo, epochs=2)
    metrics = train_step(
        policy, optimizer, envs, Sampling(), 2, torch.Generator().manual_seed(2), [0, 1], config
    )
    # One dialogue of 4 wins in 2 turns, so GRPO's groups do not tie.
    assert metrics["train/success"] == 0.25
    assert [d.index for d in envs.unwrapped.dialogues.rows] == [0, 0, 1, 1]  # groups share goals
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    changed = [
        not torch.equal(a, b) for a, b in zip(before, policy.model.parameters(), strict=True)
    ]
    assert sum(changed) > len(changed) // 2
    assert (not torch.equal(head, policy.value_head.weight)) == (algo in ("ppo", "reinforce"))


def test_gae_over_a_dialogue_skips_user_tokens_and_counts_per_turn_rewards():
    # Row 0: opening, two agent tokens (turn 1 ends: reward -0.1), two user/template tokens,
    # two agent tokens (the dialogue ends: reward 1). Row 1: padding, opening, one agent token.
    action_mask = torch.tensor([[0, 1, 1, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0, 1]]).float()
    rewards = torch.tensor([[0, 0, -0.1, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1]])
    values = torch.tensor([[0, 0.5, 0.2, 0, 0, 0.4, 0.8], [0, 0, 0, 0, 0, 0, 0.25]])
    advantages, returns = dialogue_gae(rewards, values, action_mask, gamma=0.9, lam=0.5)
    # By hand over agent tokens only (gamma * lam = 0.45):
    # d4 = 1 - 0.8 = 0.2                   A4 = 0.2
    # d3 = 0.9 * 0.8 - 0.4 = 0.32          A3 = 0.32 + 0.45 * 0.2 = 0.41
    # d2 = -0.1 + 0.9 * 0.4 - 0.2 = 0.06   A2 = 0.06 + 0.45 * 0.41 = 0.2445
    # d1 = 0.9 * 0.2 - 0.5 = -0.32         A1 = -0.32 + 0.45 * 0.2445 = -0.209975
    expected = torch.tensor([[0, -0.209975, 0.2445, 0, 0, 0.41, 0.2], [0, 0, 0, 0, 0, 0, 0.75]])
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, (expected + values) * action_mask)


def test_the_algorithm_choice_and_group_size_are_validated(tokenizer):
    with pytest.raises(ValueError, match="algo must be one of ppo, rloo, grpo, reinforce .*'a2c'"):
        DialogueConfig(algo="a2c")
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        DialogueConfig(epochs=0)
    policy = TransformerPolicy(tiny_model(tokenizer), reference=None)
    envs = make_envs(tokenizer)
    with pytest.raises(ValueError, match="group_size=1 must be >= 2 for grpo"):
        train_step(policy, None, envs, Sampling(), 1, config=DialogueConfig(algo="grpo"))
    with pytest.raises(ValueError, match="kl_coef > 0 needs a policy with a reference"):
        train_step(policy, None, envs, Sampling(), 1, config=DialogueConfig("ppo", kl_coef=0.1))
