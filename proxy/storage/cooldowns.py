"""Deployment health shared by every worker and host: failures per minute and cooldowns.

One row per deployment that has failed. A failure is one upsert that counts
it in the deployment's current minute and, in the same statement, puts the
deployment in cooldown when the count passes ``allowed_fails`` (or at once,
for a rate limit): every ``SET`` reads the row as it was, so concurrent
failures on many workers count exactly and trip the cooldown once. Routing
reads the cooldowns of a model group's deployments in one ``SELECT``.
"""

from __future__ import annotations

import time
from typing import Any

import peewee

from proxy.storage.db import BaseModel, database

FAIL_WINDOW_SECONDS = 60


class DeploymentHealth(BaseModel):
    deployment_id = peewee.CharField(primary_key=True, max_length=255)
    window_start = peewee.DoubleField()
    fails = peewee.IntegerField(default=0)
    cooldown_until = peewee.DoubleField(default=0.0)
    last_error = peewee.CharField(null=True, max_length=255)
    updated_at = peewee.DoubleField(default=time.time)

    class Meta:
        table_name = "deployment_health"


_T = "deployment_health"
_STALE = f"{_T}.window_start <= excluded.window_start - {FAIL_WINDOW_SECONDS}"
_NEW_FAILS = f"(CASE WHEN {_STALE} THEN 1 ELSE {_T}.fails + 1 END)"


def _failure_sql() -> str:
    p = database.param
    trips = f"({p} = 1 OR {_NEW_FAILS} > {p})"
    return (
        f"INSERT INTO {_T} (deployment_id, window_start, fails, cooldown_until, last_error, "
        f"updated_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}) "
        f"ON CONFLICT (deployment_id) DO UPDATE SET "
        f"fails = CASE WHEN {trips} THEN 0 ELSE {_NEW_FAILS} END, "
        f"cooldown_until = CASE WHEN {trips} THEN excluded.window_start + {p} "
        f"ELSE {_T}.cooldown_until END, "
        f"window_start = CASE WHEN {trips} OR {_STALE} THEN excluded.window_start "
        f"ELSE {_T}.window_start END, "
        f"last_error = excluded.last_error, updated_at = excluded.updated_at "
        f"RETURNING cooldown_until"
    )


def record_failure(
    deployment_id: str,
    now: float,
    allowed_fails: int,
    cooldown_time: float,
    immediate: bool,
    error: str,
) -> float:
    """Count one failure of ``deployment_id``; returns until when it is cooled down
    (a time in the past when it is not)."""
    trips_at_once = immediate or 1 > allowed_fails
    flag = 1 if immediate else 0
    params: list[Any] = [
        deployment_id,
        now,
        0 if trips_at_once else 1,
        now + cooldown_time if trips_at_once else 0.0,
        error[:255],
        now,
        # trips (twice: fails, cooldown_until), cooldown, trips again (window_start)
        flag,
        allowed_fails,
        flag,
        allowed_fails,
        cooldown_time,
        flag,
        allowed_fails,
    ]
    opened = database.connect(reuse_if_open=True)
    try:
        row = database.execute_sql(_failure_sql(), params).fetchone()
    finally:
        if opened:
            database.close()
    return float(row[0]) if row else 0.0


def cooled_down(deployment_ids: list[str], now: float) -> dict[str, float]:
    """The deployments among ``deployment_ids`` in cooldown now, with until when."""
    if not deployment_ids:
        return {}
    opened = database.connect(reuse_if_open=True)
    try:
        query = DeploymentHealth.select(
            DeploymentHealth.deployment_id, DeploymentHealth.cooldown_until
        ).where(
            DeploymentHealth.deployment_id.in_(deployment_ids),
            DeploymentHealth.cooldown_until > now,
        )
        return {row.deployment_id: row.cooldown_until for row in query}
    finally:
        if opened:
            database.close()


def health_rows(deployment_ids: list[str]) -> dict[str, DeploymentHealth]:
    """Every known health row among ``deployment_ids`` (for ``/model/info``)."""
    if not deployment_ids:
        return {}
    query = DeploymentHealth.select().where(DeploymentHealth.deployment_id.in_(deployment_ids))
    return {row.deployment_id: row for row in query}
