"""The ``comptroller`` command: run the proxy, apply migrations."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

from proxy.config import DEFAULT_MASTER_KEY, ConfigError, load_config

log = logging.getLogger("comptroller")


def configure_logging() -> None:
    level = os.environ.get("COMPTROLLER_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comptroller", description="Comptroller: a metered, budgeted LLM gateway."
    )
    parser.add_argument("--config", help="config.yaml (default: $COMPTROLLER_CONFIG or ./config.yaml)")
    parser.add_argument("--host", default=os.environ.get("COMPTROLLER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "4000")))
    parser.add_argument(
        "command", nargs="?", default="serve", choices=["serve", "migrate"],
        help="serve (default) or migrate",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"comptroller: {err}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        from proxy.db import init_database
        from proxy.migrate import migrate
        from proxy.plugins import make_plugin_manager

        init_database(config.database_url)
        pm = make_plugin_manager(config)
        applied = migrate([m for models in pm.hook.plugin_tables() for m in models or []])
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
        return 0
    if config.master_key == DEFAULT_MASTER_KEY:
        log.warning(
            "master key is the trial default %s: set COMPTROLLER_MASTER_KEY before real use",
            DEFAULT_MASTER_KEY,
        )
        if not is_loopback(args.host):
            log.warning(
                "the trial master key %s is exposed on %s: anyone who can reach it can spend",
                DEFAULT_MASTER_KEY,
                args.host,
            )
    from proxy.app import create_app

    app = create_app(config)
    log.info(
        "Comptroller on http://%s:%s (config: %s, database: %s)",
        args.host, args.port, config.source, config.database_url.split("@")[-1],
    )
    app.run(host=args.host, port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
