"""Usage: every billed part of an upstream's usage object is read, inside its total."""

from proxy.call.context import Usage


def test_plain_openai_usage():
    usage = Usage.from_openai({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17})
    assert usage == Usage(prompt_tokens=12, completion_tokens=5)
    assert usage.total_tokens == 17


def test_openai_details_are_read_as_parts_of_the_totals():
    usage = Usage.from_openai(
        {
            "prompt_tokens": 10_000,
            "completion_tokens": 900,
            "prompt_tokens_details": {"cached_tokens": 8_000, "audio_tokens": 300},
            "completion_tokens_details": {"reasoning_tokens": 600, "audio_tokens": 100},
        }
    )
    assert usage == Usage(
        prompt_tokens=10_000,
        completion_tokens=900,
        cache_read_tokens=8_000,
        audio_input_tokens=300,
        audio_output_tokens=100,
        reasoning_tokens=600,
    )


def test_top_level_cache_fields_of_compatible_servers():
    usage = Usage.from_openai(
        {
            "prompt_tokens": 20_000,
            "completion_tokens": 10,
            "cache_read_input_tokens": 18_000,
            "cache_creation_input_tokens": 1_500,
        }
    )
    assert usage is not None
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (18_000, 1_500)
    deepseek = Usage.from_openai(
        {"prompt_tokens": 50, "completion_tokens": 1, "prompt_cache_hit_tokens": 40}
    )
    assert deepseek is not None and deepseek.cache_read_tokens == 40


def test_parts_larger_than_the_total_raise_the_total():
    usage = Usage.from_openai(
        {
            "prompt_tokens": 5,
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": 9},
            "completion_tokens_details": {"reasoning_tokens": 7},
        }
    )
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (9, 7)


def test_missing_or_malformed_usage():
    assert Usage.from_openai(None) is None
    assert Usage.from_openai({"prompt_tokens": "12"}) is None
    usage = Usage.from_openai(
        {"prompt_tokens": -3, "completion_tokens": None, "prompt_tokens_details": [1]}
    )
    # A negative count is recorded as 0 and flagged on the spend-log row.
    assert usage == Usage(flag="absurd usage reported: prompt_tokens=-3")
