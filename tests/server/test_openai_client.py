"""The server driven by the official `openai` client: completions, chat, streaming, stops,
sampling parameters, seeds, and continuous batching. Few tokens per request, SmolLM2."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from sparsetier.engine import GREEDY
from sparsetier.engine.text import stream_text
from sparsetier.tokenizer import encode_chat
from tests.server.helpers import MODEL, metric, serve, wait_idle

PROMPT = "The capital of France is"
CHAT = [{"role": "user", "content": "Name one colour."}]


@pytest.fixture(scope="module")
def url(make_engine):
    # a small prefill chunk, so a modest prompt is prefilled in several steps
    with serve(make_engine(n_slots=2), max_queue=4, prefill_chunk=16) as u:
        yield u


@pytest.fixture(scope="module")
def client(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def reference(make_engine):
    """What the CLI engine (`sparsetier run --temperature 0`) generates, on its own engine.
    Its prefill chunk matches the server's, so long prompts are computed alike (short ones
    are one chunk either way)."""
    engine = make_engine(n_slots=1)
    engine.prefill_chunk = 16

    def greedy(prompt: str, n: int) -> str:
        engine.slots[0].tokens.clear()
        return "".join(stream_text(engine, engine.tokenizer.encode(prompt), GREEDY, n))

    return greedy


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_greedy_completion_equals_the_cli_engine(client, reference, base_engine):
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    assert r.choices[0].text == reference(PROMPT, 8)
    assert r.choices[0].finish_reason == "length"
    n_prompt = len(base_engine.tokenizer.encode(PROMPT))
    use = r.usage
    assert (use.prompt_tokens, use.completion_tokens, use.total_tokens) == (n_prompt, 8, n_prompt + 8)


def test_max_tokens_bounds_the_completion(client):
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1, temperature=0)
    assert r.usage.completion_tokens == 1 and r.choices[0].finish_reason == "length"


def test_streamed_completion_equals_the_plain_one(client):
    plain = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == plain.choices[0].text
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].usage.completion_tokens == 6 and chunks[-1].choices == []


def test_chat_uses_the_chat_template(client, base_engine):
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=6, temperature=0)
    msg = r.choices[0].message
    assert msg.role == "assistant" and msg.content.strip()
    assert r.usage.prompt_tokens == len(encode_chat(base_engine.tokenizer, CHAT))
    assert r.choices[0].finish_reason in ("stop", "length")


def test_streamed_chat(client):
    plain = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=6, temperature=0)
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=6, temperature=0, stream=True)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == plain.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason


def test_stop_sequences_cut_the_text(client, reference):
    full = reference(PROMPT, 8)
    word = full.split()[1]  # a word that only appears after the first
    cut = full[: full.index(word)]
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, stop=[word, "zz"])
    assert r.choices[0].text == cut and r.choices[0].finish_reason == "stop"
    chunks = list(
        client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, stop=word, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == cut


def test_tiny_top_p_is_greedy(client):
    greedy = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0)
    nucleus = client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=4, temperature=1.0, top_p=1e-6, seed=1
    )
    assert nucleus.choices[0].text == greedy.choices[0].text


def test_same_seed_same_text(client):
    def sample(seed: int) -> str:
        r = client.completions.create(
            model=MODEL,
            prompt="Once upon a time",
            max_tokens=6,
            temperature=1.5,
            top_p=1.0,
            seed=seed,
            extra_body={"top_k": 0, "min_p": 0},
        )
        return r.choices[0].text

    first = sample(7)
    assert sample(7) == first
    assert any(sample(s) != first for s in (8, 9, 10))  # and the seed matters


def test_concurrent_requests_share_decode_steps(url, client):
    """Two requests at once: each gets the text it gets alone, and some decode steps ran both."""
    prompts = [PROMPT, "Water boils at a temperature of"]
    alone = [
        client.completions.create(model=MODEL, prompt=p, max_tokens=6, temperature=0).choices[0].text
        for p in prompts
    ]
    shared_before = metric(url, "sparsetier_decode_batch_size_count") - metric(
        url, 'sparsetier_decode_batch_size_bucket{le="1.0"}'
    )
    with ThreadPoolExecutor(2) as pool:
        together = list(
            pool.map(
                lambda p: (
                    client.completions.create(model=MODEL, prompt=p, max_tokens=6, temperature=0)
                    .choices[0]
                    .text
                ),
                prompts,
            )
        )
    assert together == alone
    shared_after = metric(url, "sparsetier_decode_batch_size_count") - metric(
        url, 'sparsetier_decode_batch_size_bucket{le="1.0"}'
    )
    assert shared_after > shared_before
    wait_idle(url)


def test_long_prompt_is_prefilled_in_chunks_while_another_streams(client, reference):
    """A prompt of several 16-token chunks joins a running stream; both come out right."""
    long_prompt = "Fruits: apple, banana, cherry, grape, lemon, mango, orange, pear, plum, kiwi, lime. " * 3
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(
            lambda: (
                client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
                .choices[0]
                .text
            )
        )
        joining = pool.submit(
            lambda: (
                client.completions.create(model=MODEL, prompt=long_prompt, max_tokens=4, temperature=0)
                .choices[0]
                .text
            )
        )
        assert running.result() == reference(PROMPT, 8)
        assert joining.result() == reference(long_prompt, 4)
