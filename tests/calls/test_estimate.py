"""The quick token estimate used for answers without usage and by the mock/ provider."""

import math

from proxy.call.estimate import estimate_prompt_tokens


def test_estimate_chat_messages():
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "x" * 10},
            {"role": "user", "content": [{"type": "text", "text": "y" * 7}]},
        ],
    }
    assert estimate_prompt_tokens(body, "chat") == math.ceil(17 / 4) + 2 * 3


def test_estimate_counts_images_and_tools():
    body = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:..."}}],
            }
        ],
        "tools": [{"type": "function", "function": {"name": "f" * 40}}],
    }
    assert estimate_prompt_tokens(body, "chat") >= 3 + 85 + 10


def test_estimate_embeddings_inputs():
    assert estimate_prompt_tokens({"input": "abcdefgh"}, "embeddings") == 2
    assert estimate_prompt_tokens({"input": ["abcd", "abcde"]}, "embeddings") == 1 + 2
    assert estimate_prompt_tokens({"input": [1, 2, 3]}, "embeddings") == 3
    assert estimate_prompt_tokens({"input": [[1, 2], [3, 4, 5]]}, "embeddings") == 5


def test_estimate_is_at_least_one_and_tolerates_junk():
    assert estimate_prompt_tokens({}, "chat") == 1
    assert estimate_prompt_tokens({"messages": "nope"}, "chat") == 1
    assert estimate_prompt_tokens({"input": None}, "embeddings") == 1
    assert estimate_prompt_tokens({"messages": [None, {"content": None}]}, "chat") == 6
