"""Request bodies of the OpenAI-compatible routes, as pydantic v2 models.

The body goes to the upstream unchanged (only ``model`` is mapped), so these
models check just the fields the proxy itself reads (the model, the
messages, streaming, token limits, the end user, metadata) and let every
other field through (``extra="allow"``): the upstream judges ``temperature``
or ``tools``. The OpenAPI document is generated from these same models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
)

from proxy.api.admin.schemas import Text
from proxy.errors import BadRequest

ModelName = Annotated[StrictStr, StringConstraints(min_length=1)]
TokenLimit = Annotated[StrictInt, Field(ge=1)]
# The end user id becomes a customer row's primary key: at most 255 characters, no NUL.
EndUserId = Text


class _Passthrough(BaseModel):
    """Unknown fields are kept and sent upstream as they came."""

    model_config = ConfigDict(extra="allow")


class ChatMessage(_Passthrough):
    role: StrictStr = Field(description="system, user, assistant, tool, ...")
    content: Any = Field(default=None, description="A string or an array of content parts.")


class StreamOptions(_Passthrough):
    include_usage: StrictBool | None = None


class ChatCompletionRequest(_Passthrough):
    """``POST /chat/completions``: OpenAI's body; fields not listed pass through."""

    model: ModelName = Field(description="A model_name from the proxy's model_list.")
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: TokenLimit | None = None
    max_completion_tokens: TokenLimit | None = None
    user: EndUserId | None = Field(
        default=None, description="The end user (customer) the call is metered to."
    )
    metadata: dict[str, Any] | None = Field(
        default=None, description="Proxy-only; ``metadata.user_id`` names the end user."
    )


class DeploymentChatCompletionRequest(ChatCompletionRequest):
    """The Azure-style route: the model comes from the path, so the body needs none."""

    model: ModelName | None = None  # type: ignore[assignment]


NonEmptyText = Annotated[StrictStr, StringConstraints(min_length=1)]
EmbeddingInput = (
    NonEmptyText
    | Annotated[list[StrictStr], Field(min_length=1)]
    | Annotated[list[StrictInt], Field(min_length=1)]
    | Annotated[list[Annotated[list[StrictInt], Field(min_length=1)]], Field(min_length=1)]
)


class EmbeddingRequest(_Passthrough):
    """``POST /embeddings``: a string, an array of strings, or pre-tokenized input."""

    model: ModelName = Field(description="A model_name from the proxy's model_list.")
    input: EmbeddingInput
    user: EndUserId | None = None
    metadata: dict[str, Any] | None = None


class DeploymentEmbeddingRequest(EmbeddingRequest):
    model: ModelName | None = None  # type: ignore[assignment]


class ResponsesRequest(_Passthrough):
    """``POST /v1/responses``: OpenAI's Responses API; fields not listed pass through."""

    model: ModelName = Field(description="A model_name from the proxy's model_list.")
    input: StrictStr | list[dict[str, Any]] = Field(
        description="A string, or an array of input items (messages, tool outputs, ...)."
    )
    instructions: StrictStr | None = None
    tools: list[dict[str, Any]] | None = None
    max_output_tokens: TokenLimit | None = None
    stream: StrictBool | None = None
    previous_response_id: StrictStr | None = Field(
        default=None, description="Only a response this key created."
    )
    background: Literal[False] | None = Field(
        default=None, description="Not supported: a background response cannot be metered."
    )
    user: EndUserId | None = Field(
        default=None, description="The end user (customer) the call is metered to."
    )
    metadata: dict[str, Any] | None = Field(
        default=None, description="Sent upstream; ``metadata.user_id`` names the end user."
    )


PromptInput = (
    StrictStr
    | Annotated[list[StrictStr], Field(min_length=1)]
    | Annotated[list[StrictInt], Field(min_length=1)]
    | Annotated[list[Annotated[list[StrictInt], Field(min_length=1)]], Field(min_length=1)]
)


class CompletionRequest(_Passthrough):
    """``POST /v1/completions``: the legacy completions API."""

    model: ModelName = Field(description="A model_name from the proxy's model_list.")
    prompt: PromptInput = Field(description="A string, strings, token ids or lists of them.")
    n: Annotated[StrictInt, Field(ge=1, le=128)] | None = None
    best_of: Annotated[StrictInt, Field(ge=1, le=128)] | None = None
    max_tokens: TokenLimit | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    user: EndUserId | None = None
    metadata: dict[str, Any] | None = None


class DeploymentCompletionRequest(CompletionRequest):
    model: ModelName | None = None  # type: ignore[assignment]


class AnthropicMessage(_Passthrough):
    role: Literal["user", "assistant"]
    content: StrictStr | list[dict[str, Any]]


class AnthropicMetadata(_Passthrough):
    user_id: EndUserId | None = None


class MessagesRequest(_Passthrough):
    """``POST /v1/messages``: Anthropic's Messages API; fields not listed pass through."""

    model: ModelName = Field(description="A model_name from the proxy's model_list.")
    messages: Annotated[list[AnthropicMessage], Field(min_length=1)]
    max_tokens: TokenLimit
    system: StrictStr | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    stream: StrictBool | None = None
    metadata: AnthropicMetadata | None = Field(
        default=None, description="``metadata.user_id`` names the end user."
    )


class CountTokensRequest(_Passthrough):
    """``POST /v1/messages/count_tokens``: passed through, not metered."""

    model: ModelName = Field(description="A model_name from the proxy's model_list.")
    messages: Annotated[list[AnthropicMessage], Field(min_length=1)]
    system: StrictStr | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None


# What a wrong field is told, by top-level field (pydantic's wording otherwise).
_EXPECTED = {
    "model": "'model' is required and must be a non-empty string",
    "messages": "'messages' is required and must be a non-empty array of messages",
    "input": "'input' is required: a non-empty string or array of strings or token ids",
    "stream": "'stream' must be a boolean",
    "stream_options": "'stream_options' must be an object",
    "max_tokens": "'max_tokens' must be an integer of at least 1",
    "max_completion_tokens": "'max_completion_tokens' must be an integer of at least 1",
    "metadata": "'metadata' must be an object",
    "user": "'user' must be a string of at most 255 characters without NUL",
    "prompt": "'prompt' is required: a string, an array of strings or of token ids",
    "max_output_tokens": "'max_output_tokens' must be an integer of at least 1",
    "instructions": "'instructions' must be a string",
    "previous_response_id": "'previous_response_id' must be a string",
    "background": "'background' responses are not supported: they cannot be metered",
    "n": "'n' must be an integer from 1 to 128",
    "best_of": "'best_of' must be an integer from 1 to 128",
    "system": "'system' must be a string or an array of content blocks",
    "tools": "'tools' must be an array of objects",
}


def _problem(err: ValidationError) -> BadRequest:
    """The first problem as a 400 naming the field (``messages[2]`` for a bad message)."""
    first = err.errors(include_url=False, include_input=False)[0]
    loc = tuple(first["loc"])
    field = str(loc[0]) if loc else "body"
    if field == "messages" and len(loc) > 1 and isinstance(loc[1], int):
        param = f"messages[{loc[1]}]"
        return BadRequest(f"'{param}' must be an object with a string 'role'", param=param)
    if field == "input" and len(loc) > 1 and isinstance(loc[1], str) and loc[1].startswith("list"):
        if len(loc) > 2 and isinstance(loc[2], int):  # a Responses input item
            param = f"input[{loc[2]}]"
            return BadRequest(f"'{param}' must be an object", param=param)
    if len(loc) <= 1 or field in ("input", "prompt", "system"):  # unions add branch names
        message = _EXPECTED.get(field, f"Invalid value for '{field}': {first['msg']}")
        return BadRequest(message, param=field)
    dotted = field + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
    return BadRequest(f"Invalid value for '{dotted}': {first['msg']}", param=field)


def check_body(schema: type[BaseModel], body: dict[str, Any]) -> None:
    """Validate ``body`` (left unchanged); a 400 naming the first wrong field if not."""
    try:
        schema.model_validate(body)
    except ValidationError as err:
        raise _problem(err) from None
