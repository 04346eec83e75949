"""One process of the settle benchmark (:mod:`bench.settle`): settles calls in a loop.

Run by path with ``PYTHONPATH`` set to the code under test (this worktree or
another, e.g. main's before a change), so it only uses what both have:
``proxy.storage.ledger.record_spend`` with a plugin manager holding the
hook specifications and no plugin (the core's part of a settle: the spend
log and every counter's increment, one transaction). With ``--owner NAME``
each call is also of user NAME, team NAME and end user NAME (their counters
incremented too, as a call of a key with a user and a team for an end user).
With ``--tpm-limit N`` the rate limiter's ``post_call_spend`` runs too, as for a
call of a key with that tpm limit.

Protocol on stdin/stdout: prints ``ready`` once connected, waits for ``go``,
settles for ``--seconds`` and prints the number of calls it settled.
"""

from __future__ import annotations

import argparse
import sys
import time
from types import SimpleNamespace

import pluggy

from proxy import hookspecs
from proxy.call.context import CallContext, Usage
from proxy.storage.db import database, init_database
from proxy.storage.ledger import record_spend

COST = 0.000125


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True, help="the key (hashed) every call is made with")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--owner", help="the user, team and end user of every call")
    parser.add_argument(
        "--tpm-limit", type=int, help="the key's tpm limit (the rate limiter's settle runs too)"
    )
    args = parser.parse_args()

    init_database(args.url, pool_size=1)
    pm = pluggy.PluginManager("comptroller")
    pm.add_hookspecs(hookspecs)
    plugin_state: dict = {}
    if args.tpm_limit is not None:
        # The rate limiter's part of the settle, as for a call it let in on a key with
        # a tpm limit (the window row is made by bench.settle).
        from plugins.rate_limiter import hooks as rate_limiter
        from plugins.rate_limiter.limits import Scope

        pm.register(rate_limiter)
        scope = Scope("key", args.token, "bench", tpm_limit=args.tpm_limit)
        plugin_state[rate_limiter.PLUGIN_NAME] = rate_limiter.Taken([scope], [])
    deployment = SimpleNamespace(
        model_name="bench-model",
        upstream_model="bench-upstream",
        price=SimpleNamespace(known=True),
        timeout=30.0,
        id="bench-deployment",
        provider="openai",
        counted=False,  # no deployment rate limits
    )
    owner = args.owner
    key = SimpleNamespace(token=args.token, user_id=owner, key_alias=None)
    user = SimpleNamespace(user_id=owner) if owner else None

    def settle_one() -> None:
        ctx = CallContext(
            config=None,  # type: ignore[arg-type]
            call_type="chat",
            deployment=deployment,  # type: ignore[arg-type]
            body={},
            key=key,  # type: ignore[arg-type]
            user=user,  # type: ignore[arg-type]
            team_id=owner,
            end_user_id=owner,
        )
        ctx.plugin_state.update(plugin_state)
        usage = Usage(prompt_tokens=20, completion_tokens=10)
        record_spend(pm, ctx, usage, "success", cost=COST)

    settle_one()  # connects, prepares statements
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    done = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        settle_one()
        done += 1
    print(done, flush=True)
    database.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
