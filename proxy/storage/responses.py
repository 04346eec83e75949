"""Which key created which Responses API response id.

``GET``/``DELETE /v1/responses/{id}`` (and ``previous_response_id``) reach
the upstream only for the key that created the response: OpenAI's ids are
per organisation, so without this any key of the proxy could read or delete
any other key's stored responses. The row also keeps the deployment that
answered (the follow-up goes to the same upstream) and how many tokens the
response's conversation holds, which a continuation is billed as input.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import peewee

from proxy.storage import clock
from proxy.storage.db import BaseModel, database

if TYPE_CHECKING:
    from proxy.call.context import CallContext, Usage

log = logging.getLogger("comptroller.responses")


class ResponseOwner(BaseModel):
    """One upstream response id and the key that created it (migration m0003)."""

    response_id = peewee.CharField(primary_key=True, max_length=255)
    key_hash = peewee.CharField(max_length=64, index=True)
    model_group = peewee.CharField(max_length=255)
    # The deployment that answered (migration m0009): its upstream holds the response.
    deployment_id = peewee.CharField(max_length=64, null=True)
    # Input + output tokens of the response: what a continuation carries over.
    context_tokens = peewee.BigIntegerField(default=0)
    created_at = peewee.DoubleField()

    class Meta:
        table_name = "response_owner"


def remember_response(ctx: CallContext, response_id: object, usage: Usage) -> None:
    """Record that ``ctx``'s key created ``response_id``; never fails the call."""
    if not isinstance(response_id, str) or not response_id or ctx.key_hash is None:
        return
    opened = database.connect(reuse_if_open=True)
    try:
        ResponseOwner.insert(
            response_id=response_id[:255],
            key_hash=ctx.key_hash,
            model_group=ctx.deployment.model_name,
            deployment_id=ctx.deployment.id,
            context_tokens=usage.total_tokens,
            created_at=clock.now(),
        ).on_conflict_ignore().execute()
    except peewee.PeeweeException:
        log.warning("could not record the owner of response %s", response_id, exc_info=True)
    finally:
        if opened:
            database.close()


def owned_response(response_id: str, key_hash: str | None) -> ResponseOwner | None:
    """The row of ``response_id`` if ``key_hash`` created it, else None."""
    if key_hash is None:
        return None
    return ResponseOwner.get_or_none(
        (ResponseOwner.response_id == response_id) & (ResponseOwner.key_hash == key_hash)
    )


def forget_response(response_id: str) -> None:
    ResponseOwner.delete().where(ResponseOwner.response_id == response_id).execute()
