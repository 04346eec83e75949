"""Meter a stream event by event, in each API's own wire format.

A meter sees every server-sent event of a relayed stream (its ``event:``
name and its parsed ``data:``) and keeps what the call is billed from: the
usage the upstream reported, the characters of output relayed so far (to
charge a stream the client left before the usage arrived) and, for the
Responses API, the id of the response it created. ``observe`` answers
whether the event is passed on to the client.

A meter may also take an event from its bytes alone (``observe_bytes``), or
a run of a burst's events at once (``observe_burst``), when they show that
parsing them could only add to the text count: the chat meter keeps such
chunks as they are and counts their text when the count is asked for (a
stream that ends with its usage never is), instead of parsing every chunk
of every stream.
"""

from __future__ import annotations

import json
import re
from typing import Any

from proxy.call.context import Usage

# Responses API events that carry the final response object with its usage.
RESPONSES_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Responses API events whose ``delta`` is output the model generated.
RESPONSES_OUTPUT_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
        "response.custom_tool_call_input.delta",
        "response.code_interpreter_call_code.delta",
    }
)


class StreamMeter:
    """The base meter: counts nothing, relays everything."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.text_chars = 0
        # True once the upstream said the answer is whole (its final usage event).
        self.complete = False
        self.response_id: str | None = None

    def observe(self, event: str | None, data: dict[str, Any]) -> bool:
        return True

    def observe_bytes(self, payload: bytes) -> bool | None:
        """Meter an event's ``data`` from its bytes, if they are enough: whether to relay
        it; ``None`` to have it parsed and :meth:`observe` d."""
        return None

    def observe_burst(self, events: bytes) -> int:
        """Meter the leading whole events of a burst (bare line ends) from their bytes
        alone, if they are enough, and relay them as they are: how many bytes of
        ``events`` were taken (0: none, each event goes through the rest)."""
        return 0


# A "usage" that may be one: anything but the key with a null value. (In a JSON string
# a quote is escaped, so '"usage"' in the bytes is a key or a whole string "usage".)
_USAGE_NOT_NULL = re.compile(rb'"usage"(?!\s*:\s*null\b)')
# Kept unparsed chunks of one stream are counted once they hold this many bytes.
CHAT_UNCOUNTED_LIMIT = 256 * 1024


class ChatChunkMeter(StreamMeter):
    """``chat.completion.chunk`` and legacy ``text_completion`` chunks.

    With ``relay_usage=False`` (the client did not ask for
    ``stream_options.include_usage``; the proxy asked on its behalf) the
    usage-only chunk is metered but not relayed: its empty ``choices`` breaks
    clients that read ``chunk.choices[0]``.
    """

    def __init__(self, relay_usage: bool = True) -> None:
        self._counted = 0
        # Chunks taken by observe_bytes whose text is not counted yet, and their size.
        self._uncounted: list[bytes] = []
        self._uncounted_bytes = 0
        super().__init__()
        self.relay_usage = relay_usage

    @property
    def text_chars(self) -> int:
        """The characters of output relayed so far (kept chunks are counted now)."""
        if self._uncounted:
            self._count_uncounted()
        return self._counted

    @text_chars.setter
    def text_chars(self, value: int) -> None:
        self._counted = value

    def observe_bytes(self, payload: bytes) -> bool | None:
        """A chunk that cannot carry the usage (no ``"usage"`` key, or ``"usage": null`` as
        OpenAI sends in every chunk of a stream with ``include_usage``) is relayed and kept;
        its text is counted when :attr:`text_chars` is read."""
        if not payload.startswith(b"{") or _USAGE_NOT_NULL.search(payload):
            return None
        self._keep(payload)
        return True

    def observe_burst(self, events: bytes) -> int:
        """The leading run of a burst's events that are each one ``data: {...}`` line
        and none of which can carry the usage (as :meth:`observe_bytes` takes one): kept
        whole, their text counted when :attr:`text_chars` is read. The run ends before
        the first event that may carry the usage, before ``[DONE]``, and at the last
        whole event; a run with any other event in it is not taken."""
        end = events.rfind(b"\n\n") + 2
        found = _USAGE_NOT_NULL.search(events, 0, end)
        if found is not None:
            end = events.rfind(b"\n\n", 0, found.start()) + 2
        done = events.find(b"\n\ndata: [DONE]", 0, end)
        if done >= 0:
            end = done + 2
        if end < 2:
            return 0  # not one whole event before those
        run = events[:end]
        count = run.count(b"\n\n")
        # A newline cannot stand in a JSON value, so each "\n\n" ends an event and
        # "data: {" after one starts the next: every event is one data line of an object.
        if (
            not run.startswith(b"data: {")
            or run.count(b"\n") != 2 * count
            or run.count(b"\n\ndata: {") != count - 1
        ):
            return 0
        self._keep(run)
        return end

    def _keep(self, kept: bytes) -> None:
        """Keep one event's payload, or a run of whole ``data: {...}`` events."""
        self._uncounted.append(kept)
        self._uncounted_bytes += len(kept)
        if self._uncounted_bytes > CHAT_UNCOUNTED_LIMIT:
            self._count_uncounted()  # memory stays bounded on a long stream

    def _count_uncounted(self) -> None:
        kept, self._uncounted, self._uncounted_bytes = self._uncounted, [], 0
        for item in kept:
            # A run of events (observe_burst) is its events' payloads, after "data: ".
            payloads = [e[6:] for e in item.split(b"\n\n") if e] if item[:1] == b"d" else [item]
            for payload in payloads:
                try:
                    data = json.loads(payload)
                except ValueError:
                    continue  # relayed as it came, and not counted (as observe would do)
                if isinstance(data, dict):
                    self._count_text(data)

    def observe(self, event: str | None, data: dict[str, Any]) -> bool:
        usage = Usage.from_openai(data.get("usage"))
        if usage is not None:
            self.usage = usage
            self.complete = True
        choices = self._count_text(data)
        return self.relay_usage or usage is None or bool(choices)

    def _count_text(self, data: dict[str, Any]) -> Any:
        """Add the chunk's output characters to the count; its ``choices``."""
        choices = data.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict):
                continue
            if isinstance(choice.get("text"), str):  # legacy completions
                self._counted += len(choice["text"])
            part = choice.get("delta") or choice.get("message")
            if isinstance(part, dict):
                if isinstance(part.get("content"), str):
                    self._counted += len(part["content"])
                for call in part.get("tool_calls") or []:
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                        self._counted += len(function["arguments"])
        return choices


class ResponsesEventMeter(StreamMeter):
    """The Responses API's typed events: usage from ``response.completed`` (or
    ``response.incomplete``/``response.failed``), the id from ``response.created``."""

    def observe(self, event: str | None, data: dict[str, Any]) -> bool:
        kind = data.get("type") or event
        response = data.get("response")
        if isinstance(response, dict):
            if self.response_id is None and isinstance(response.get("id"), str):
                self.response_id = response["id"]
            if kind in RESPONSES_FINAL_EVENTS:
                usage = Usage.from_responses(response.get("usage"))
                if usage is not None:
                    self.usage = usage
                self.complete = True
        elif kind in RESPONSES_OUTPUT_DELTAS and isinstance(data.get("delta"), str):
            self.text_chars += len(data["delta"])
        return True


class AnthropicEventMeter(StreamMeter):
    """Anthropic's Messages events: the input side from ``message_start``, the
    output count from ``message_delta`` (cumulative: each one replaces the last,
    and any input field it carries replaces ``message_start``'s)."""

    def __init__(self) -> None:
        super().__init__()
        self._fields: dict[str, Any] = {}

    def observe(self, event: str | None, data: dict[str, Any]) -> bool:
        kind = data.get("type") or event
        if kind == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                if isinstance(message.get("id"), str):
                    self.response_id = message["id"]
                self._merge(message.get("usage"))
        elif kind == "message_delta":
            self._merge(data.get("usage"))
            self.complete = True
        elif kind == "content_block_delta":
            delta = data.get("delta")
            if isinstance(delta, dict):
                for name in ("text", "partial_json", "thinking"):
                    if isinstance(delta.get(name), str):
                        self.text_chars += len(delta[name])
        return True

    def _merge(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        self._fields.update({k: v for k, v in usage.items() if v is not None})
        self.usage = Usage.from_anthropic(self._fields)
