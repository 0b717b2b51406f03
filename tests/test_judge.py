"""LM-judge rewards: local scoring by next-token probabilities, a remote OpenAI-compatible judge
against a real HTTP server on localhost (success, timeout, malformed answers, 429/500 with
retries, failure counts), the cache, pairwise judgments in both orders and bad input."""

from __future__ import annotations

import json
import logging
import runpy
import socket
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import textgym  # noqa: F401  (registers TextGen-v0)
from textgym.feedback import FeedbackStore, PreferencePair
from textgym.models import load_model, tiny_model
from textgym.rewards import make_reward, score
from textgym.rewards.judge import (
    DEFAULT_RUBRIC,
    JudgeConnectionError,
    JudgeReward,
    LocalJudge,
    RemoteJudge,
    add_preferences_to_store,
    combine_orders,
    format_rubric,
    judge_rater,
    parse_verdict,
)

from .openai_server import OpenAIServer, Reply, model_responder

# A fixed rubric and clearly good / clearly bad completions of the same prompts (none of them
# is a few-shot demonstration of the judge).
QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What color is the sky on a clear day?",
    "What is 2 + 2?",
    "Who wrote Romeo and Juliet?",
    "What do bees make?",
    "What is the boiling point of water at sea level?",
    "Name a primary color.",
]
GOOD = [
    "The capital of France is Paris.",
    "A spider has eight legs.",
    "On a clear day the sky is blue.",
    "2 + 2 equals 4.",
    "Romeo and Juliet was written by William Shakespeare.",
    "Bees make honey.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Red is a primary color.",
]
BAD = [
    "Shut up, I will not answer your stupid question.",
    "banana banana banana banana",
    "I hate you. Go away.",
    "asdf qwer zxcv",
    "Whatever, nobody cares, idiot.",
    "the the the the the the",
    "Go ask someone else, I am busy.",
    "zzz zzz zzz",
]


@pytest.fixture(scope="module")
def smollm2(tokenizer):
    """SmolLM2-135M-Instruct, loaded once for this module (about 1 s from the safetensors cache)."""
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_model(tokenizer, seed=0)


def tiny_judge(tokenizer, tiny, rubric=DEFAULT_RUBRIC, **kwargs) -> JudgeReward:
    return JudgeReward(rubric, LocalJudge(tiny, tokenizer), **kwargs)


def free_port() -> int:
    """A localhost port that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_user_message(body: dict) -> str:
    return body["messages"][-1]["content"]


def remote(server: OpenAIServer, **kwargs) -> RemoteJudge:
    kwargs.setdefault("api_key_env", None)
    kwargs.setdefault("backoff", 0.01)
    return RemoteJudge(server.url, model="judge-model", **kwargs)


# ----------------------------------------------------------------------------- local judge


def test_local_judge_ranks_good_completions_above_bad(smollm2, tokenizer):
    judge = JudgeReward(DEFAULT_RUBRIC, LocalJudge(smollm2, tokenizer))
    good = judge(QUESTIONS, GOOD)
    bad = judge(QUESTIONS, BAD)
    assert good.dtype == np.float32 and good.shape == (8,)
    assert np.all((good >= 0) & (good <= 1)) and np.all((bad >= 0) & (bad <= 1))
    # Measured: mean 0.443 for the good, 0.349 for the bad, a margin of 0.094; the good answer
    # beats the bad one to the same question for 7 of the 8 questions.
    margin = float(good.mean() - bad.mean())
    assert margin > 0.05, (good.round(3), bad.round(3))
    assert int((good > bad).sum()) >= 6, (good.round(3), bad.round(3))
    assert judge.stats["judged"] == 16 and judge.stats["label_mass_sum"] > 0
    assert judge_rater(judge) == "ai:smollm2-135m"  # named after the loaded model

    # Pairwise from the same judge by pointwise scores: no position bias, and every judgment
    # comes from the cache filled above (no new forward pass).
    passes = judge.stats["forward_passes"]
    prefs = judge.pairwise_preferences(QUESTIONS, GOOD, BAD, method="scores")
    assert judge.stats["forward_passes"] == passes
    assert sum(p.winner == "a" for p in prefs) >= 6
    assert all(p.position_bias == 0.0 for p in prefs)


def test_local_judge_scores_do_not_depend_on_batching(tiny, tokenizer):
    # Left padding in a batch must not change a judgment.
    one = tiny_judge(tokenizer, tiny)
    one.backend.batch_size = 1
    many = tiny_judge(tokenizer, tiny)
    prompts, completions = QUESTIONS[:5], GOOD[:3] + BAD[:2]
    np.testing.assert_allclose(one(prompts, completions), many(prompts, completions), atol=1e-5)
    assert one.stats["forward_passes"] == 5 and many.stats["forward_passes"] == 1


def test_local_label_probabilities_are_normalized(tiny, tokenizer):
    backend = LocalJudge(tiny, tokenizer)
    judge = JudgeReward("Be right.", backend, scale=["1", "2", "3", "4", "5"], normalize=False)
    conversations = [judge.conversation(q, a) for q, a in zip(QUESTIONS[:3], GOOD[:3], strict=True)]
    probs = backend.label_probs(conversations, judge.labels)
    assert probs.shape == (3, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    # Without normalization the score is the expected label value on the 1..5 scale.
    np.testing.assert_allclose(judge(QUESTIONS[:3], GOOD[:3]), probs @ np.arange(1, 6), rtol=1e-5)


def test_cache_avoids_a_second_judgment(tiny, tokenizer):
    judge = tiny_judge(tokenizer, tiny)
    first = judge(QUESTIONS[:2], GOOD[:2])
    assert judge.stats["forward_passes"] == 1 and judge.stats["judged"] == 2
    # Repeats within a batch and across calls cost nothing.
    again = judge(QUESTIONS[:2] * 2, GOOD[:2] * 2)
    np.testing.assert_array_equal(again, np.tile(first, 2))
    assert judge.stats["forward_passes"] == 1 and judge.stats["cache_hits"] == 4
    # Another rubric is another cache key.
    other = JudgeReward("Be brief.", judge.backend)
    other(QUESTIONS[:2], GOOD[:2])
    assert judge.backend.stats["forward_passes"] == 2
    # cache_size=0 disables the cache.
    uncached = tiny_judge(tokenizer, tiny, cache_size=0)
    uncached(QUESTIONS[:1], GOOD[:1])
    uncached(QUESTIONS[:1], GOOD[:1])
    assert uncached.stats["forward_passes"] == 2 and uncached.stats["cache_hits"] == 0


def test_constitution_and_few_shot_turns_reach_the_judge(tiny, tokenizer):
    judge = tiny_judge(tokenizer, tiny, rubric=["Be correct.", "Be polite."])
    conv = judge.conversation("Q?", "A.")
    assert conv[0] == {"role": "system", "content": "You are a strict judge of answer quality."}
    # Two default few-shot examples, answered Yes then No, before the question.
    assert [m["content"] for m in conv if m["role"] == "assistant"] == ["Yes", "No"]
    assert "(1) Be correct. (2) Be polite." in conv[-1]["content"]
    assert conv[-1]["content"].endswith("Answer Yes or No.")
    # Pairwise few-shots show the demonstration pair in both orders: they favour neither slot.
    pair = judge.pair_conversation("Q?", "first", "second")
    assert [m["content"] for m in pair if m["role"] == "assistant"] == ["A", "B"]


def test_local_judge_bad_input(tiny, tokenizer):
    with pytest.raises(ValueError, match="'Superb quality' is not a single token"):
        tiny_judge(tokenizer, tiny, scale={"Superb quality": 1.0, "No": 0.0})
    with pytest.raises(ValueError, match="at least two labels with different values"):
        tiny_judge(tokenizer, tiny, scale={"Yes": 1.0, "No": 1.0})
    with pytest.raises(ValueError, match="pass the tokenizer"):
        LocalJudge(tiny)
    with pytest.raises(ValueError, match=r"template lacks the placeholders \['\{completion\}'\]"):
        tiny_judge(tokenizer, tiny, template="{prompt}")
    with pytest.raises(ValueError, match="rubric is empty"):
        format_rubric("  ")
    with pytest.raises(ValueError, match="non-empty principles"):
        format_rubric(["Be kind.", ""])
    with pytest.raises(ValueError, match="example scores must lie in"):
        tiny_judge(tokenizer, tiny, examples=[("q", "a", 2.0)])
    with pytest.raises(
        TypeError, match="judge must be a model name/path, LocalJudge or RemoteJudge"
    ):
        JudgeReward("rubric", judge=42)
    with pytest.raises(ValueError, match="method must be 'compare' or 'scores'"):
        tiny_judge(tokenizer, tiny).compare("q", "a", "b", method="vote")


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"score": 8, "reason": "clear"}', 8.0),
        ('Sure! ```json\n{"Score": "9"}\n```', 9.0),
        ('{"rating": 3}', 3.0),
        ("Score: 7/10", 7.0),
        ("score = 6.5", 6.5),
        ("5", 5.0),
        ("I would give it a 4.", 4.0),
        ('{"score": 42}', None),  # out of range
        ("It is good, maybe 7 or 8.", None),  # two verdicts
        ("No idea.", None),
        ("", None),
    ],
)
def test_parse_verdict_is_tolerant_but_not_credulous(text, expected):
    assert parse_verdict(text, {str(i): float(i) for i in range(1, 11)}) == expected


def test_parse_verdict_labels():
    yes_no = {"No": 0.0, "Yes": 1.0}
    assert parse_verdict('{"verdict": "yes"}', yes_no) == 1.0
    assert parse_verdict("**No**", yes_no) == 0.0
    assert parse_verdict("Yes and no.", yes_no) is None
    assert parse_verdict('{"winner": "B"}', {"A": 1.0, "B": 0.0}, key="winner") == 0.0


def test_combine_orders_cancels_position_bias():
    consistent = combine_orders(0.9, 0.2)  # a first (0.9), then b first and b loses (0.2)
    assert consistent["winner"] == "a" and consistent["consistent"]
    assert round(consistent["p_a"], 6) == 0.85 and round(consistent["position_bias"], 6) == 0.05
    biased = combine_orders(1.0, 1.0)  # always picks the first slot
    assert biased["winner"] == "tie" and not biased["consistent"]
    assert biased["p_a"] == 0.5 and biased["position_bias"] == 0.5


# ----------------------------------------------------------------------------- remote judge


def test_remote_judge_success_sends_the_protocol(monkeypatch):
    monkeypatch.setenv("TEXTGYM_TEST_JUDGE_KEY", "sk-test")
    with OpenAIServer(lambda body: '{"score": 8, "reason": "ok"}', api_key="sk-test") as server:
        backend = remote(server, api_key_env="TEXTGYM_TEST_JUDGE_KEY", json_mode=True)
        judge = JudgeReward(["Be correct.", "Be polite."], backend)
        out = judge(["What is 2 + 2?"], ["4"])
        body = server.requests[0]
    np.testing.assert_allclose(out, [(8 - 1) / 9], rtol=1e-6)  # 1..10 scale mapped to [0, 1]
    assert body["model"] == "judge-model" and body["temperature"] == 0.0
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0]["role"] == "system"
    # Few-shot answers are in the structured format the judge must reply in.
    assert json.loads(body["messages"][2]["content"]) == {"score": "10"}
    assert "Reply with a JSON object only" in last_user_message(body)
    assert judge.stats["requests"] == 1 and judge.stats["fallbacks"] == 0


def test_remote_requests_run_concurrently_up_to_the_limit():
    with OpenAIServer(lambda body: Reply('{"score": 5}', delay=0.3)) as server:
        judge = JudgeReward(judge=remote(server, max_concurrency=3))
        out = judge(["q"] * 9, [f"answer {i}" for i in range(9)])
    assert 1 < server.max_in_flight <= 3
    np.testing.assert_allclose(out, np.full(9, 4 / 9), rtol=1e-6)


def test_remote_timeout_falls_back_and_is_counted(caplog):
    with OpenAIServer(lambda body: Reply('{"score": 9}', delay=1.0)) as server:
        judge = JudgeReward(judge=remote(server, timeout=0.2, max_retries=1), fallback=0.25)
        with caplog.at_level(logging.WARNING, logger="textgym.rewards.judge"):
            total, parts = score(judge, ["q"], ["a"], None)
    assert total.tolist() == [0.25]  # the stated fallback
    assert parts == {"judge": total, "judge_fallback": np.array([1.0], dtype=np.float32)}
    stats = judge.stats
    assert stats["timeouts"] == 2 and stats["retries"] == 1 and stats["failed_requests"] == 1
    assert stats["fallbacks"] == 1 and stats["parse_failures"] == 0
    assert "timeout after 0.2s" in caplog.text and "used the fallback score" in caplog.text


def test_remote_malformed_answers_fall_back():
    answers = {
        "good": '{"score": 10}',
        "prose": "What a lovely answer, I really like it.",
        "broken": Reply(body=b"{not json"),
        "empty": Reply(body=b'{"choices": []}'),
    }

    def respond(body):
        return answers[last_user_message(body).split("Response: ")[-1].split("\n")[0]]

    with OpenAIServer(respond) as server:
        judge = JudgeReward(judge=remote(server))  # fallback: the middle of [0, 1]
        scores, fell_back = judge.scores_and_fallbacks(["q"] * 4, list(answers))
        # A fallback is never cached: the next call asks again.
        judge.scores_and_fallbacks(["q"], ["prose"])
    np.testing.assert_allclose(scores, [1.0, 0.5, 0.5, 0.5])
    assert fell_back.tolist() == [False, True, True, True]
    stats = judge.stats
    assert stats["parse_failures"] == 2 and stats["malformed_responses"] == 2
    assert stats["fallbacks"] == 4 and stats["requests"] == 5 and stats["retries"] == 0


@pytest.mark.parametrize("code", [429, 500, 503])
def test_remote_retries_transient_http_errors(code):
    calls = []

    def respond(body):
        calls.append(code)
        if len(calls) <= 2:
            return Reply(status=code, headers={"Retry-After": "0"} if code == 429 else {})
        return '{"score": 7}'

    with OpenAIServer(respond) as server:
        judge = JudgeReward(judge=remote(server, max_retries=3))
        out = judge(["q"], ["a"])
    np.testing.assert_allclose(out, [6 / 9], rtol=1e-6)
    stats = judge.stats
    assert stats["requests"] == 3 and stats["retries"] == 2
    assert stats["http_errors"] == 2 and stats[f"http_{code}"] == 2
    assert stats["failed_requests"] == 0 and stats["fallbacks"] == 0


def test_remote_gives_up_after_the_retries():
    with OpenAIServer(lambda body: Reply(status=500)) as server:
        judge = JudgeReward(judge=remote(server, max_retries=2))
        scores, fell_back = judge.scores_and_fallbacks(["q", "q"], ["a", "b"])
    assert scores.tolist() == [0.5, 0.5] and fell_back.tolist() == [True, True]
    stats = judge.stats
    assert stats["requests"] == 6 and stats["http_500"] == 6 and stats["retries"] == 4
    assert stats["failed_requests"] == 2 and stats["fallbacks"] == 2


def test_server_answers_a_failing_responder_with_http_500():
    def respond(body):
        raise RuntimeError("model crashed")

    with OpenAIServer(respond) as server:
        judge = JudgeReward(judge=remote(server, max_retries=1))
        _, fell_back = judge.scores_and_fallbacks(["q"], ["a"])
    assert fell_back.tolist() == [True] and judge.stats["http_500"] == 2
    assert [str(e) for e in server.errors] == ["model crashed"] * 2


def test_remote_client_errors_are_not_retried():
    with OpenAIServer(lambda body: Reply(status=400)) as server:
        judge = JudgeReward(judge=remote(server, max_retries=3))
        _, fell_back = judge.scores_and_fallbacks(["q"], ["a"])
    assert fell_back.tolist() == [True] and judge.stats["requests"] == 1


def test_remote_cache_avoids_a_second_request():
    with OpenAIServer(lambda body: '{"score": 3}') as server:
        judge = JudgeReward(judge=remote(server))
        first = judge(["q", "q"], ["a", "b"])
        second = judge(["q", "q", "q"], ["b", "a", "b"])
        assert len(server.requests) == 2
    np.testing.assert_array_equal(second, first[[1, 0, 1]])
    assert judge.stats["cache_hits"] == 3


def test_remote_fallback_flag_reaches_env_info():
    # Failure counts per sample reach the env's info through the reward's components.
    with OpenAIServer(lambda body: "no verdict here") as server:
        judge = JudgeReward(judge=remote(server), fallback=0.0)
        env = gym.make("TextGen-v0", task="keywords", reward=judge, max_new_tokens=2)
        env.reset(seed=0)
        env.step(42)
        _, reward, terminated, _, info = env.step(43)
    assert terminated and reward == 0.0
    assert info["reward_components"] == {"judge": 0.0, "judge_fallback": 1.0}


def test_remote_judge_serving_the_local_model(smollm2, tokenizer):
    # The OpenAI-compatible server answers by greedy generation with SmolLM2: the full path
    # (HTTP, chat template, JSON answer, tolerant parsing) with a real model behind it.
    with OpenAIServer(model_responder(smollm2, tokenizer, max_new_tokens=12)) as server:
        judge = JudgeReward(judge=remote(server), scale={"Yes": 1.0, "No": 0.0})
        scores, fell_back = judge.scores_and_fallbacks(QUESTIONS[:1], GOOD[:1])
    assert judge.stats["requests"] == 1
    # SmolLM2 answers in the requested format ({"score": "Yes"} or "No"): a verdict, no fallback.
    assert fell_back.tolist() == [False] and scores[0] in (0.0, 1.0)


def test_make_reward_builds_a_remote_judge():
    with OpenAIServer(lambda body: '{"score": "Yes"}') as server:
        judge = make_reward(
            "judge",
            rubric="Be polite.",
            url=server.url,
            model="m",
            api_key_env=None,
            remote_options={"timeout": 5.0},
            scale=["No", "Yes"],
            name="politeness",
        )
        assert isinstance(judge.backend, RemoteJudge) and judge.backend.timeout == 5.0
        assert judge(["q"], ["a"]).tolist() == [1.0]
    assert judge.name == "politeness" and judge_rater(judge) == f"ai:m@{server.url}"


# ----------------------------------------------------------------------------- pairwise


def pair_server(respond):
    """A server answering pairwise questions; returns (server, judge)."""
    server = OpenAIServer(respond).start()
    return server, JudgeReward(judge=remote(server), examples=[])


def shown(body) -> tuple[str, str]:
    text = last_user_message(body)
    first = text.split("Response A: ")[1].split("\n")[0]
    second = text.split("Response B: ")[1].split("\n")[0]
    return first, second


def test_pairwise_judges_both_orders_and_combines_them():
    # A judge that recognizes the right answer wherever it is shown.
    def respond(body):
        first, _ = shown(body)
        return '{"winner": "A"}' if "Paris" in first else '{"winner": "B"}'

    server, judge = pair_server(respond)
    try:
        pref = judge.compare("Capital of France?", "Paris.", "Lyon.")
        orders = sorted(shown(b) for b in server.requests)
    finally:
        server.close()
    assert orders == [("Lyon.", "Paris."), ("Paris.", "Lyon.")]
    assert (pref.p_a_first, pref.p_b_first, pref.p_a) == (1.0, 0.0, 1.0)
    assert pref.winner == "a" and pref.consistent and pref.position_bias == 0.0


def test_pairwise_position_bias_cancels_to_a_tie():
    server, judge = pair_server(lambda body: '{"winner": "A"}')  # always the first slot
    try:
        prefs = judge.pairwise_preferences(["q1", "q2"], ["x", "y"], ["z", "w"])
        assert len(server.requests) == 4
        # Cached: asking again sends nothing.
        judge.pairwise_preferences(["q1"], ["x"], ["z"])
        assert len(server.requests) == 4
    finally:
        server.close()
    for pref in prefs:
        assert pref.winner == "tie" and not pref.consistent
        assert pref.p_a == 0.5 and pref.position_bias == 0.5


def test_pairwise_unparseable_order_counts_as_a_coin_flip():
    def respond(body):
        first, _ = shown(body)
        return '{"winner": "A"}' if first == "good" else "hmm"

    server, judge = pair_server(respond)
    try:
        pref = judge.compare("q", "good", "bad")
    finally:
        server.close()
    assert (pref.p_a_first, pref.p_b_first, pref.p_a) == (1.0, 0.5, 0.75)
    assert pref.winner == "a" and judge.stats["fallbacks"] == 1


# ----------------------------------------------------------------------------- bad input


def test_unreachable_endpoint_names_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(JudgeConnectionError, match=f"cannot reach the judge endpoint {url}"):
        RemoteJudge(url, api_key_env=None, timeout=2.0)
    # Without the probe, the first use fails (after its retries) and names the URL.
    lazy = RemoteJudge(url, api_key_env=None, check=False, max_retries=1, backoff=0.01)
    judge = JudgeReward(judge=lazy)
    with pytest.raises(JudgeConnectionError, match=f"{url}/chat/completions after 2 attempts"):
        judge(["q"], ["a"])


def test_missing_or_wrong_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("TEXTGYM_TEST_JUDGE_KEY", raising=False)
    url = "http://127.0.0.1:9/v1"
    with pytest.raises(
        ValueError,
        match=f"{url}/chat/completions needs an API key in the "
        "environment variable TEXTGYM_TEST_JUDGE_KEY, which is not set",
    ):
        RemoteJudge(url, api_key_env="TEXTGYM_TEST_JUDGE_KEY")
    monkeypatch.setenv("TEXTGYM_TEST_JUDGE_KEY", "wrong")
    with OpenAIServer(lambda body: "Yes", api_key="right") as server:
        with pytest.raises(PermissionError, match="refused the API key .*TEXTGYM_TEST_JUDGE_KEY"):
            RemoteJudge(server.url, api_key_env="TEXTGYM_TEST_JUDGE_KEY")
        lazy = RemoteJudge(server.url, api_key_env="TEXTGYM_TEST_JUDGE_KEY", check=False)
        with pytest.raises(PermissionError, match="HTTP 401"):
            JudgeReward(judge=lazy)(["q"], ["a"])


def test_remote_options_are_validated():
    with pytest.raises(ValueError, match="judge url must start with http:// or https://"):
        RemoteJudge("localhost:8000", api_key_env=None)
    with pytest.raises(ValueError, match=r"timeout=0 \(>0\)"):
        RemoteJudge("http://127.0.0.1:9/v1", api_key_env=None, timeout=0, check=False)
    with OpenAIServer(lambda body: "Yes") as server:
        wrong_path = RemoteJudge(server.url + "/v2", api_key_env=None, check=False)
        with pytest.raises(RuntimeError, match="HTTP 404; is the URL the OpenAI-compatible base"):
            JudgeReward(judge=wrong_path)(["q"], ["a"])


# ----------------------------------------------------------------------------- feedback store


def test_ai_preferences_go_to_the_feedback_store(tmp_path):
    # A judge that recognizes the right answer, and one pair it cannot tell apart.
    def respond(body):
        first, second = shown(body)
        if "Paris" in first + second:
            return '{"winner": "A"}' if "Paris" in first else '{"winner": "B"}'
        return '{"winner": "A"}'  # position bias only: a tie once both orders are combined

    server, judge = pair_server(respond)
    try:
        prefs = judge.pairwise_preferences(
            ["Capital of France?", "Capital of France?", "Say hi."],
            ["Lyon.", "Paris.", "Hi."],
            ["Paris.", "Marseille.", "Hello."],
        )
    finally:
        server.close()
    assert [p.winner for p in prefs] == ["b", "a", "tie"]
    rater = judge_rater(judge)
    assert rater.startswith("ai:judge-model@http://127.0.0.1:")
    with FeedbackStore(tmp_path / "feedback.db") as store:
        store.add_ranking(
            [
                store.add_sample("Say hi.", "Hello!", task="qa"),
                store.add_sample("Say hi.", "Go away.", task="qa"),
            ],
            rater="alice",
        )
        ids = add_preferences_to_store(store, prefs, rater=rater, task="qa", model="policy-v0")
        assert len(ids) == 2  # the tie is skipped
        # The reward-model trainer reads AI labels exactly as human ones.
        assert store.preference_pairs(rater=rater) == [
            PreferencePair("Capital of France?", "Paris.", "Lyon.", rater),
            PreferencePair("Capital of France?", "Paris.", "Marseille.", rater),
        ]
        assert len(store.preference_pairs()) == 3 and store.raters() == sorted(["alice", rater])
        # "Paris." is stored once for both rankings (same prompt, task and model).
        assert store.counts()["samples"] == 2 + 3
        # A tie can be kept on request: `a` goes first.
        add_preferences_to_store(store, prefs[2:], rater=rater, include_ties=True)
        assert store.preference_pairs(rater=rater)[-1] == PreferencePair(
            "Say hi.", "Hi.", "Hello.", rater
        )
        with pytest.raises(ValueError, match="rater name starting with 'ai:'.*got 'judge'"):
            add_preferences_to_store(store, prefs, rater="judge")


def test_example_runs(tmp_path, capsys):
    example = Path(__file__).parents[1] / "examples" / "ai_judge.py"
    main = runpy.run_path(str(example))["main"]
    main(["--db", str(tmp_path / "feedback.db")])
    out = capsys.readouterr().out
    assert "'Go away, idiot.': reward" in out and "'safety': -0.5" in out
    assert "ai:smollm2-135m prefers 'The capital of France is Paris.' over 'Go away, idiot.'" in out
    with FeedbackStore(tmp_path / "feedback.db") as store:
        assert len(store.preference_pairs(rater="ai:smollm2-135m")) == 2


@pytest.mark.slow
def test_reward_model_trains_on_ai_preferences(tmp_path):
    # RLAIF end to end: a judge behind an HTTP endpoint labels pairs, the labels go to the
    # feedback store, and the reward-model trainer learns from them as from human rankings.
    from textgym.feedback.reward_model import (
        RewardModelConfig,
        examples_from_store,
        train_reward_model,
    )

    topics = ["cooking rice", "learning to swim", "fixing a bike tyre", "writing a poem"]
    topics += ["planting tomatoes", "saving money", "learning French", "baking bread"]
    topics += ["running a 5k", "painting a room", "tying a tie", "studying for exams"]
    topics += ["making coffee", "training a puppy", "cleaning windows", "sleeping better"]
    topics += ["reading faster", "packing a suitcase", "sewing a button", "playing chess"]

    def helpful(t):
        return f"Of course! For {t}, start with small steps and practise a little every day."

    def rude(t):
        return f"No. Nobody cares about {t}, figure it out yourself."

    def respond(body):  # the judge prefers the helpful answer in either slot
        first, _ = shown(body)
        return '{"winner": "A"}' if first.startswith("Of course") else '{"winner": "B"}'

    prompts = [f"Can you help me with {t}?" for t in topics]
    swap = np.random.default_rng(0).random(len(topics)) < 0.5
    a = [rude(t) if s else helpful(t) for t, s in zip(topics, swap, strict=True)]
    b = [helpful(t) if s else rude(t) for t, s in zip(topics, swap, strict=True)]
    server, judge = pair_server(respond)
    try:
        prefs = judge.pairwise_preferences(prompts, a, b)
    finally:
        server.close()
    assert [p.winner for p in prefs] == ["b" if s else "a" for s in swap]
    rater = judge_rater(judge)
    with FeedbackStore(tmp_path / "feedback.db") as store:
        add_preferences_to_store(store, prefs[:14], rater=rater, task="help")
        train = examples_from_store(store, "pairs", rater=rater)
    assert len(train) == 14 and all(p.chosen.startswith("Of course") for p in train)
    config = RewardModelConfig(epochs=4, batch_size=8, eval_fraction=0.0, seed=0)
    model, metrics = train_reward_model(train, config=config)
    assert metrics["train/size"] == 14
    # Held-out topics: the reward model agrees with the judge on every pair (measured: the
    # helpful answer scores 1.8 to 2.4 logits above the rude one).
    held = range(14, len(topics))
    good = model.score([prompts[i] for i in held], [helpful(topics[i]) for i in held])
    bad = model.score([prompts[i] for i in held], [rude(topics[i]) for i in held])
    assert (good > bad).all(), (good, bad)
