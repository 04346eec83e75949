"""The unmodified OpenAI SDK against Comptroller under real gunicorn.

One proxy for the module (two workers), in front of the mock OpenAI server;
a dead upstream and the mock's ``hang`` give the 502 and 504 cases.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from proxy.storage.db import database, init_database
from proxy.storage.models import Customer, SpendLog
from tests.conftest import MASTER_KEY, openai_model
from tests.support.mock_openai import DEFAULT_CONTENT, MockOpenAI
from tests.support.proxy_server import ProxyServer, free_port, wait_until

pytestmark = pytest.mark.slow

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "what llm are you"}]


@pytest.fixture(scope="module")
def proxy(
    mock_openai: MockOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyServer]:
    tmp = tmp_path_factory.mktemp("sdk")
    db_url = f"sqlite:///{tmp / 'sdk.db'}"
    config = {
        "model_list": [
            openai_model("gpt-4o-mini", mock_openai.base_url, timeout=1),
            openai_model("text-embedding-ada-002", mock_openai.base_url),
            openai_model("dead-model", f"http://127.0.0.1:{free_port()}/v1"),
        ],
        "general_settings": {"master_key": MASTER_KEY, "database_url": db_url},
    }
    with ProxyServer(config, tmp, workers=2, threads=4) as server:
        init_database(db_url)
        yield server
    database.close()


@pytest.fixture
def sdk(proxy: ProxyServer, upstream: MockOpenAI) -> openai.OpenAI:
    with database.connection_context():
        SpendLog.delete().execute()
    return openai.OpenAI(api_key=MASTER_KEY, base_url=proxy.url, max_retries=0, timeout=20)


def spend_rows() -> list[SpendLog]:
    with database.connection_context():
        return list(SpendLog.select())


def test_chat_completion_with_user(sdk: openai.OpenAI, upstream: MockOpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, user="sdk-user"
    )
    assert completion.choices[0].message.content == DEFAULT_CONTENT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert upstream.requests[-1].json["user"] == "sdk-user"
    (row,) = spend_rows()
    assert row.end_user == "sdk-user"
    assert row.prompt_tokens == completion.usage.prompt_tokens
    assert row.completion_tokens == completion.usage.completion_tokens
    with database.connection_context():
        assert Customer.get_by_id("sdk-user").spend >= row.spend > 0


def test_streaming(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    # The README's loop: reads choices[0] of every chunk, so none may be empty.
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == DEFAULT_CONTENT
    rows = wait_until(spend_rows, timeout=10)
    assert rows[0].status == "success"
    assert rows[0].completion_tokens == len(DEFAULT_CONTENT.split())


def test_streaming_with_usage_requested(sdk: openai.OpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    rows = wait_until(spend_rows, timeout=10)
    assert rows[0].completion_tokens == chunks[-1].usage.completion_tokens


def test_embeddings(sdk: openai.OpenAI, upstream: MockOpenAI) -> None:
    result = sdk.embeddings.create(model="text-embedding-ada-002", input=["one", "two"])
    assert [item.index for item in result.data] == [0, 1]
    assert all(len(item.embedding) == 8 for item in result.data)
    assert result.usage.prompt_tokens == 2
    (row,) = spend_rows()
    assert row.call_type == "embeddings"
    # The SDK asks for base64 vectors; the proxy passed that through untouched.
    assert upstream.requests[-1].json["encoding_format"] == "base64"


def test_models_list(sdk: openai.OpenAI) -> None:
    ids = [model.id for model in sdk.models.list()]
    assert ids == ["gpt-4o-mini", "text-embedding-ada-002", "dead-model"]


def test_bad_key_is_authentication_error(proxy: ProxyServer) -> None:
    bad = openai.OpenAI(api_key="sk-not-a-key", base_url=proxy.url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert err.value.status_code == 401
    assert err.value.type == "auth_error"


def test_unknown_model_is_bad_request_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model="gpt-17", messages=MESSAGES)
    assert "Invalid model name passed in model=gpt-17" in err.value.message
    assert err.value.param == "model"


def test_upstream_down_is_status_502(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        sdk.chat.completions.create(model="dead-model", messages=MESSAGES)
    assert err.value.status_code == 502
    assert spend_rows() == []


def test_upstream_timeout_is_status_504(sdk: openai.OpenAI, upstream: MockOpenAI) -> None:
    upstream.hang = True
    try:
        with pytest.raises(openai.APIStatusError) as err:
            sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    finally:
        upstream.hang = False
    assert err.value.status_code == 504
    assert err.value.type == "timeout"
    assert spend_rows() == []


def test_upstream_rate_limit_is_rate_limit_error(sdk: openai.OpenAI, upstream: MockOpenAI) -> None:
    upstream.fail_next(3, status=429, message="Rate limit reached")  # and two retries
    with pytest.raises(openai.RateLimitError) as err:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert err.value.status_code == 429
    assert "Rate limit reached" in err.value.message


def test_azure_client_through_the_deployment_route(proxy: ProxyServer) -> None:
    azure = openai.AzureOpenAI(
        api_key=MASTER_KEY,
        azure_endpoint=proxy.url,
        api_version="2024-06-01",
        max_retries=0,
    )
    completion = azure.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert completion.choices[0].message.content == DEFAULT_CONTENT
