"""With an API key set, every /v1 route wants `Authorization: Bearer KEY`; /health and /metrics stay open."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.server.helpers import MODEL, serve

KEY = "s3cret-key"
GOOD = {"model": MODEL, "prompt": "Hi", "max_tokens": 1}


@pytest.fixture(scope="module")
def url(make_engine):
    with serve(make_engine(n_slots=1), api_key=KEY) as u:
        yield u


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v1/models"),
        ("GET", f"/v1/models/{MODEL}"),
        ("POST", "/v1/completions"),
        ("POST", "/v1/chat/completions"),
    ],
)
@pytest.mark.parametrize(
    "auth", [None, "Bearer wrong", KEY, f"Basic {KEY}", f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", "Bearer"]
)
def test_v1_routes_refuse_a_missing_or_wrong_key(url, method, path, auth):
    headers = {"Authorization": auth} if auth else {}
    # the body is invalid too: the key is checked first, before the body is even read
    r = httpx.request(method, url + path, headers=headers, content=b"{not json", timeout=30)
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "invalid_api_key"


def test_the_right_key_works(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    assert [m.id for m in client.models.list().data] == [MODEL]
    r = client.completions.create(model=MODEL, prompt="Hi", max_tokens=1, temperature=0)
    assert r.usage.completion_tokens == 1
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()


def test_health_and_metrics_need_no_key(url):
    assert httpx.get(url + "/health", timeout=10).json()["status"] == "ok"
    assert "sparsetier_requests_total" in httpx.get(url + "/metrics", timeout=10).text
