"""stable-baselines3 / sb3-contrib against TextGen-v0: the LM policy, masks, top-k actions, KL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import QRDQN, TRPO, MaskablePPO, RecurrentPPO
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from agents.sb3 import KLRewardCallback, LMActorCriticPolicy, MaskableLMActorCriticPolicy
from textgym.lm import extending_rows, last_token_forward, token_logprobs
from textgym.models import tiny_model
from textgym.reference import ReferenceLM
from textgym.tasks.base import Sample, Task
from textgym.wrappers import KLPenalty, ReferenceActionMask, TopKActions, kl_penalty


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and lose a lot when cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_env(task: Task, tokenizer, max_new_tokens: int = 3, **kwargs) -> gym.Env:
    return gym.make(
        "TextGen-v0",
        task=task,
        tokenizer=tokenizer,
        max_prompt_tokens=24,
        max_new_tokens=max_new_tokens,
        **kwargs,
    )


def parameters(model: BaseAlgorithm) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.policy.parameters()]


def changed(before: list[torch.Tensor], model: BaseAlgorithm) -> bool:
    return any(
        not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True)
    )


# ----------------------------------------------------------------------------- the LM policy
def test_cached_rollout_matches_the_training_forward(tokenizer, small_task):
    """Rollout log-probs and values (prefix KV cache, one token per env per step, resets in
    between) equal ``evaluate_actions`` (the whole prefix, with gradients) to 1e-4."""
    venv = DummyVecEnv([lambda: make_env(small_task, tokenizer) for _ in range(3)])
    model = PPO(
        "LMPolicy", venv, n_steps=8, batch_size=24, policy_kwargs={"model": tiny_model(tokenizer)}
    )
    policy = model.policy
    assert isinstance(policy, LMActorCriticPolicy)
    with torch.no_grad():  # make the value head non-trivial
        policy.value_net.weight.normal_()
    obs = venv.reset()
    for _ in range(7):  # 3-token episodes: every env resets twice
        obs_tensor, _ = policy.obs_to_tensor(obs)
        with torch.no_grad():
            actions, values, logp = policy(obs_tensor)
        full_values, full_logp, entropy = policy.evaluate_actions(obs_tensor, actions)
        torch.testing.assert_close(logp, full_logp.detach(), atol=1e-4, rtol=0)
        torch.testing.assert_close(values, full_values.detach(), atol=1e-4, rtol=0)
        assert entropy.shape == (3,) and bool((entropy > 0).all())
        obs, *_ = venv.step(actions.numpy())
    cache = policy.rollout_cache
    assert cache.incremental_rows == 3 * 4 and cache.full_rows == 3 * 3


def test_training_forward_runs_each_episode_once_with_the_same_gradients(tokenizer, small_task):
    """``evaluate_actions`` on a shuffled rollout buffer prefills each episode once (its steps
    extend one another) and gives the log-probs, values and gradients of one forward per step."""
    venv = DummyVecEnv([lambda: make_env(small_task, tokenizer) for _ in range(3)])
    model = PPO("LMPolicy", venv, n_steps=7, batch_size=21, n_epochs=1, learning_rate=0.0,
                policy_kwargs={"model": tiny_model(tokenizer)})  # fmt: skip
    model.learn(21)  # one rollout; the buffer keeps it after the (zero-lr) update
    policy, buffer = model.policy, model.rollout_buffer
    with torch.no_grad():  # make the value head non-trivial
        policy.value_net.weight.normal_()
    data = next(buffer.get(None))  # all 21 steps, shuffled
    ids, mask = data.observations["input_ids"], data.observations["attention_mask"]
    # The runs: observations no other one extends (episodes' last steps; a prompt-only first step
    # is extended by any episode with that prompt), counted here on (prompt, completion) tuples.
    steps = {
        (tuple(i[:24][m[:24] > 0].tolist()), tuple(i[24:][m[24:] > 0].tolist()))
        for i, m in zip(ids.long(), mask, strict=True)
    }
    runs = [(p, c) for p, c in steps if not any(q == p and d[: len(c)] == c != d for q, d in steps)]
    episodes = 3 + int(buffer.episode_starts[1:].sum())  # an env's first step starts one
    assert len(runs) <= episodes < 21
    assert len(extending_rows(ids, mask).unique()) == len(runs)

    def loss_and_grads(values, logp):
        policy.zero_grad()
        (values.sum() + logp.sum()).backward()
        return [p.grad.clone() for p in policy.parameters() if p.grad is not None]

    values, logp, _ = policy.evaluate_actions(data.observations, data.actions)
    shared = loss_and_grads(values, logp)
    per_step = [
        last_token_forward(policy.lm, ids[i : i + 1], mask[i : i + 1], policy.vocab_size)
        for i in range(len(ids))
    ]
    separate_values = torch.cat([policy.value_net(hidden) for _, hidden, _ in per_step])
    separate_logp = torch.cat(
        [
            token_logprobs(logits, data.actions[i : i + 1].long().flatten())
            for i, (logits, _, _) in enumerate(per_step)
        ]
    )
    torch.testing.assert_close(values, separate_values, atol=1e-4, rtol=0)
    torch.testing.assert_close(logp, separate_logp, atol=1e-4, rtol=0)
    for a, b in zip(shared, loss_and_grads(separate_values, separate_logp), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


def test_the_critic_starts_at_zero_so_no_noise_becomes_advantage(tokenizer, small_task):
    """SB3 normalizes advantages per minibatch: a random critic's values would become advantages
    as large as the reward's. The LM policy's critic starts at exactly 0 for every state."""
    venv = DummyVecEnv([lambda: make_env(small_task, tokenizer) for _ in range(3)])
    for algo in (PPO, MaskablePPO, A2C):
        policy = algo("LMPolicy", venv, policy_kwargs={"model": tiny_model(tokenizer)}).policy
        obs, _ = policy.obs_to_tensor(venv.reset())
        assert policy.predict_values(obs).abs().max().item() == 0.0


def test_prefix_cache_off_gives_the_same_actions_through_an_episode(tokenizer, small_task):
    env = make_env(small_task, tokenizer, max_new_tokens=5)
    models = [
        PPO("LMPolicy", env, policy_kwargs={"model": tiny_model(tokenizer), "prefix_cache": on})
        for on in (True, False)
    ]
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        cached, full = (m.predict(obs, deterministic=True)[0] for m in models)
        assert cached == full
        obs, *_ = env.step(cached)
    assert models[0].policy.rollout_cache.incremental_rows == 4
    assert models[1].policy.rollout_cache is None


def test_saved_lm_policy_loads_with_the_same_predictions(tokenizer, small_task, tmp_path):
    """A config (or a name/path) as the model spec pickles; the weights come from the save."""
    env = make_env(small_task, tokenizer)
    config = tiny_model(tokenizer).config
    model = PPO("LMPolicy", env, n_steps=8, batch_size=8, n_epochs=1, learning_rate=1e-2, seed=0,
                policy_kwargs={"model": config})  # fmt: skip
    model.learn(8)
    model.save(tmp_path / "ppo_lm")
    loaded = PPO.load(tmp_path / "ppo_lm", env=env)
    obs, _ = env.reset(seed=1)
    for a, b in zip(model.policy.parameters(), loaded.policy.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert model.predict(obs, deterministic=True)[0] == loaded.predict(obs, deterministic=True)[0]


def test_lm_policy_rejects_what_it_cannot_drive(tokenizer, small_task):
    reference = tiny_model(tokenizer)
    topk = TopKActions(make_env(small_task, tokenizer), reference, k=4)
    with pytest.raises(ValueError, match=r"needs TextGen-v0's Dict\(input_ids, attention_mask\)"):
        PPO("LMPolicy", topk)
    small = tiny_model(tokenizer)
    small.resize_token_embeddings(1000)
    with pytest.raises(ValueError, match="has 1000 output tokens but the env's action space"):
        PPO("LMPolicy", make_env(small_task, tokenizer), policy_kwargs={"model": small})
    with pytest.raises(TypeError, match="model must be a name/path, a transformers config"):
        PPO("LMPolicy", make_env(small_task, tokenizer), policy_kwargs={"model": 3})


# ----------------------------------------------------------------------------- every algorithm
LM_ALGOS = {
    "PPO": lambda env, lm: PPO(
        "LMPolicy", env, n_steps=16, batch_size=16, n_epochs=2, policy_kwargs={"model": lm}
    ),
    "A2C": lambda env, lm: A2C("LMPolicy", env, n_steps=8, policy_kwargs={"model": lm}),
    "MaskablePPO": lambda env, lm: MaskablePPO(
        "LMPolicy", env, n_steps=16, batch_size=16, n_epochs=2, policy_kwargs={"model": lm}
    ),
}
TOPK_ALGOS = {
    "DQN": lambda env: DQN(
        "MlpPolicy", env, learning_starts=8, train_freq=4, batch_size=8, buffer_size=500,
        target_update_interval=16,
    ),
    "QR-DQN": lambda env: QRDQN(
        "MlpPolicy", env, learning_starts=8, train_freq=4, batch_size=8, buffer_size=500,
        target_update_interval=16,
    ),
    "PPO-MLP": lambda env: PPO("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=2),
    "A2C-MLP": lambda env: A2C("MlpPolicy", env, n_steps=8),
    "TRPO": lambda env: TRPO("MlpPolicy", env, n_steps=16, batch_size=16),
    "RecurrentPPO": lambda env: RecurrentPPO(
        "MlpLstmPolicy", env, n_steps=16, batch_size=16, n_epochs=2
    ),
}  # fmt: skip


@pytest.mark.parametrize("algo", sorted(LM_ALGOS))
def test_lm_policy_algorithms_learn_on_textgen(tokenizer, small_task, algo):
    reference = ReferenceLM(tiny_model(tokenizer, seed=1))
    venv = DummyVecEnv(
        [
            lambda: ReferenceActionMask(make_env(small_task, tokenizer), reference, top_k=8)
            for _ in range(2)
        ]
    )
    model = LM_ALGOS[algo](venv, tiny_model(tokenizer))
    expected = MaskableLMActorCriticPolicy if algo == "MaskablePPO" else LMActorCriticPolicy
    assert type(model.policy) is expected
    before = parameters(model)
    model.learn(32)
    assert model.num_timesteps == 32 and changed(before, model)
    masked = sum(venv.get_attr("masked_actions_taken"))
    # Only MaskablePPO reads the masks: the others pick from all 49,152 tokens.
    assert masked == 0 if algo == "MaskablePPO" else masked > 0


@pytest.mark.parametrize("algo", sorted(TOPK_ALGOS))
def test_small_agents_learn_on_top_k_actions(tokenizer, small_task, algo):
    env = TopKActions(make_env(small_task, tokenizer), tiny_model(tokenizer, seed=1), k=4)
    model = TOPK_ALGOS[algo](env)
    before = parameters(model)
    model.learn(48)
    assert model.num_timesteps == 48 and changed(before, model)
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert 0 <= int(action) < 4


class RecordMasks(BaseCallback):
    """Collects each rollout step's actions and action masks."""

    def __init__(self) -> None:
        super().__init__()
        self.actions: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []

    def _on_step(self) -> bool:
        self.actions.append(np.asarray(self.locals["actions"]))
        self.masks.append(np.asarray(self.locals["action_masks"]))
        return True


def test_maskable_ppo_never_takes_a_masked_action(tokenizer, small_task):
    reference = ReferenceLM(tiny_model(tokenizer, seed=1))
    venv = DummyVecEnv(
        [
            lambda: ReferenceActionMask(make_env(small_task, tokenizer), reference, top_k=5)
            for _ in range(2)
        ]
    )
    model = MaskablePPO("LMPolicy", venv, n_steps=16, batch_size=16, n_epochs=1,
                        policy_kwargs={"model": tiny_model(tokenizer)})  # fmt: skip
    record = RecordMasks()
    model.learn(32, callback=record)
    masks = np.stack(record.masks)  # (steps, envs, V)
    actions = np.stack(record.actions)  # (steps, envs)
    assert masks.shape == (16, 2, 49152) and (masks.sum(-1) == 5).all()
    assert np.take_along_axis(masks, actions[..., None], -1).all()
    assert sum(venv.get_attr("masked_actions_taken")) == 0
    obs = venv.reset()
    for _ in range(3):  # predict() with masks obeys them too
        action, _ = model.predict(obs, action_masks=get_action_masks(venv))
        assert get_action_masks(venv)[np.arange(2), action].all()
        obs, *_ = venv.step(action)


# ----------------------------------------------------------------------------- KL shaping
class RecordRewards(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def _on_step(self) -> bool:
        ref = np.array([info["ref_logprob"] for info in self.locals["infos"]])
        done = np.asarray(self.locals["dones"])
        logp = self.locals["log_probs"].numpy()
        self.rows.append((self.locals["rewards"].copy(), logp, ref, done))
        return True


@pytest.mark.parametrize("algo", ["ppo", "nlpo"])
def test_kl_reward_callback_shapes_every_step(tokenizer, small_task, algo):
    # nlpo: MaskablePPO with reference top-k masks under the same penalty, as the bench runs it.
    reference = ReferenceLM(tiny_model(tokenizer, seed=1))

    def build():
        env = make_env(small_task, tokenizer, reward=lambda p, c, r, **m: np.ones(len(c)))
        if algo == "nlpo":
            env = ReferenceActionMask(env, reference, top_k=8)
        return KLPenalty(env, reference, beta=0.3)

    venv = DummyVecEnv([build, build])
    model = (MaskablePPO if algo == "nlpo" else PPO)(
        "LMPolicy", venv, n_steps=6, batch_size=6, n_epochs=1,
        policy_kwargs={"model": tiny_model(tokenizer)},
    )  # fmt: skip
    kl, record = KLRewardCallback(), RecordRewards()
    model.learn(12, callback=[kl, record])
    assert kl.beta == 0.3 and len(kl.kl) == 6
    for rewards, logp, ref, done in record.rows:  # the task reward is 1 at the end, 0 before
        np.testing.assert_allclose(rewards, done + kl_penalty(logp, ref, 0.3), atol=1e-5)
    assert any(abs(r[0]).max() > 1e-3 for r in record.rows)
    if algo == "nlpo":  # the penalty wrapper shares the mask's reference slot and forward
        assert venv.get_attr("slot") == [0, 1]
        assert sum(venv.get_attr("masked_actions_taken")) == 0


def test_kl_reward_callback_needs_the_kl_wrapper(tokenizer, small_task):
    model = PPO("LMPolicy", make_env(small_task, tokenizer), n_steps=4, batch_size=4,
                policy_kwargs={"model": tiny_model(tokenizer)})  # fmt: skip
    with pytest.raises(TypeError, match="needs envs wrapped in textgym.wrappers.KLPenalty"):
        model.learn(4, callback=KLRewardCallback())


# ----------------------------------------------------------------------------- learning
WORDS = ["<pad>", "<eos>", "<unk>", "say", "a", "the", "dog", "cat", "ball", "sun", "run", "red",
         "big", "it", "is", "and", "to", "of", "in", "on"]  # fmt: skip


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A 20-word tokenizer: a tiny LM over it learns the keyword task in seconds on a CPU."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def keyword_task() -> Task:
    """Two prompts that each ask for one keyword; the reward is the keyword's coverage (0 or 1)."""
    samples = [Sample(f"say {w}", meta={"keywords": [w]}) for w in ("dog", "cat")]
    return Task("say", {"train": samples}, default_reward="keyword_coverage")


def word_envs(tokenizer, wrap=None, n: int = 8, seed: int = 0) -> DummyVecEnv:
    def build() -> gym.Env:
        env = gym.make("TextGen-v0", task=keyword_task(), tokenizer=tokenizer,
                       chat_template=False, max_prompt_tokens=4, max_new_tokens=3)  # fmt: skip
        return wrap(env) if wrap else env

    venv = DummyVecEnv([build] * n)
    venv.seed(seed)
    return venv


def mean_episode_reward(model: BaseAlgorithm, venv: DummyVecEnv, episodes: int = 128) -> float:
    """Mean final reward of ``episodes`` sampled (not greedy) episodes."""
    masked = isinstance(model, MaskablePPO)
    rewards: list[float] = []
    obs = venv.reset()
    while len(rewards) < episodes:
        masks = get_action_masks(venv) if masked else None
        kwargs = {"action_masks": masks} if masked else {}
        action, _ = model.predict(obs, **kwargs)
        obs, reward, done, _ = venv.step(action)
        rewards += reward[done].tolist()
    return float(np.mean(rewards[:episodes]))


@pytest.mark.slow
def test_ppo_with_the_lm_policy_learns_the_keyword_task():
    tokenizer = word_tokenizer()
    torch.manual_seed(0)
    model = PPO("LMPolicy", word_envs(tokenizer), n_steps=16, batch_size=64, n_epochs=4,
                learning_rate=1e-3, gamma=1.0, gae_lambda=1.0, seed=0,
                policy_kwargs={"model": tiny_model(tokenizer)})  # fmt: skip
    before = mean_episode_reward(model, word_envs(tokenizer, seed=123))
    model.learn(2048)
    after = mean_episode_reward(model, word_envs(tokenizer, seed=123))
    # Measured: 0.18 before (random words: 3 tries at 1 in 20), 0.88 after 2,048 steps.
    assert before < 0.3
    assert after > 0.75 and after > before + 0.4


@pytest.mark.slow
def test_maskable_ppo_with_reference_masks_learns_and_obeys_the_masks():
    tokenizer = word_tokenizer()
    reference = ReferenceLM(tiny_model(tokenizer, seed=1))

    def wrap(env: gym.Env) -> gym.Env:
        return ReferenceActionMask(env, reference, top_k=8)

    torch.manual_seed(0)
    venv = word_envs(tokenizer, wrap)
    model = MaskablePPO("LMPolicy", venv, n_steps=16, batch_size=64, n_epochs=4,
                        learning_rate=1e-3, gamma=1.0, gae_lambda=1.0, seed=0,
                        policy_kwargs={"model": tiny_model(tokenizer)})  # fmt: skip
    eval_envs = word_envs(tokenizer, wrap, seed=123)
    before = mean_episode_reward(model, eval_envs)
    model.learn(2048)
    after = mean_episode_reward(model, eval_envs)
    # Measured: 0.32 before (8 allowed words of 20), 0.95 after 2,048 steps.
    assert before < 0.45
    assert after > 0.8 and after > before + 0.4
    assert sum(venv.get_attr("masked_actions_taken")) == 0
    assert sum(eval_envs.get_attr("masked_actions_taken")) == 0


# ----------------------------------------------------------------------------- examples
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = ["--tiny", "--max-new-tokens", "3", "--timesteps", "16"]


@pytest.mark.parametrize(
    ("script", "argv"),
    [
        ("sb3_ppo_lm.py", [*TINY, "--num-envs", "2"]),
        ("sb3_maskable_ppo.py", [*TINY, "--num-envs", "2", "--top-k", "4"]),
        ("sb3_topk_dqn.py", [*TINY, "--algo", "qrdqn"]),
        ("sb3_topk_onpolicy.py", [*TINY, "--num-envs", "2", "--algo", "recurrentppo"]),
    ],
)
def test_examples_run_with_a_tiny_budget(script, argv):
    """Each example runs as a script in a fresh interpreter (so it imports what it needs)."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(r"mean episode reward.*: (-?[\d.]+) before, (-?[\d.]+) after", done.stdout)
    assert found, done.stdout[-2000:]
    assert all(0.0 <= float(x) <= 1.0 for x in found.groups())  # keyword coverage is in [0, 1]
    if script == "sb3_maskable_ppo.py":
        assert "masked tokens emitted: 0" in done.stdout
