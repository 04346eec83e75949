"""The ``comptroller`` command: run the proxy, apply migrations."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

import peewee
import pluggy

from proxy.config import DEFAULT_MASTER_KEY, Config, ConfigError, load_config

log = logging.getLogger("comptroller")

# What a bad config, a bad plugin or an unreachable database raise at start-up:
# reported in one line, not as a traceback.
STARTUP_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    pluggy.PluginValidationError,
    peewee.OperationalError,
    ImportError,
    RuntimeError,
    ValueError,
)


def configure_logging() -> None:
    level = os.environ.get("COMPTROLLER_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_trial_key_exposed(config: Config, host: str) -> bool:
    """Warn when the seeds' trial master key listens beyond this machine."""
    if not config.uses_trial_master_key or is_loopback(host):
        return False
    log.warning(
        "the trial master key %s is in use and the proxy listens on %s: anyone who can "
        "reach it can spend; set COMPTROLLER_MASTER_KEY",
        DEFAULT_MASTER_KEY,
        host,
    )
    return True


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="comptroller", description="Comptroller: a metered, budgeted LLM gateway."
    )
    parser.add_argument(
        "--config", help="config.yaml (default: $COMPTROLLER_CONFIG or ./config.yaml)"
    )
    parser.add_argument("--host", default=os.environ.get("COMPTROLLER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "4000")))
    parser.add_argument(
        "--workers",
        "--num_workers",
        type=int,
        default=None,
        help="gunicorn worker processes (default: $WEB_CONCURRENCY or 2)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads per worker (default: $COMPTROLLER_THREADS or 16)",
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        help="serve (default), migrate, or a config file to serve (comptroller config.yaml)",
    )
    return parser


COMMANDS = ("serve", "migrate")


def _command_and_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """``comptroller config.yaml`` serves that file, as ``litellm config.yaml`` does."""
    if args.command in COMMANDS:
        return str(args.command)
    if not args.command.endswith((".yaml", ".yml")) and not os.path.isfile(args.command):
        parser.error(f"unknown command {args.command!r}: use serve, migrate or a config file")
    if args.config is not None:
        parser.error("give the config file once: as --config or as the argument, not both")
    args.config = args.command
    return "serve"


def _apply_migrations(config: Config) -> list[str]:
    """Core and plugin tables, then every connection closed (nothing shared across a fork)."""
    from proxy.plugins import make_plugin_manager
    from proxy.storage.db import database, init_database
    from proxy.storage.migrate import migrate, plugin_schema

    init_database(config.database_url)
    pm = make_plugin_manager(config)
    try:
        return migrate(*plugin_schema(pm))
    finally:
        close_all = getattr(database.obj, "close_all", None)
        if close_all is not None:
            close_all()
        elif not database.is_closed():
            database.close()


def _migrate(config: Config) -> int:
    applied = _apply_migrations(config)
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


def _serve(config: Config, args: argparse.Namespace) -> int:
    """gunicorn's arbiter in this process; the workers build the app after the fork."""
    from proxy.serving import (
        ComptrollerServer,
        bind_address,
        default_threads,
        default_workers,
        gunicorn_settings,
    )

    warn_if_trial_key_exposed(config, args.host)
    workers = default_workers() if args.workers is None else args.workers
    threads = default_threads() if args.threads is None else args.threads
    if workers < 1 or threads < 1:
        raise ValueError("--workers and --threads must be at least 1")
    try:
        _apply_migrations(config)
    except Exception as err:
        from proxy.storage.db import is_unreachable

        if not is_unreachable(err):
            raise
        # Serve anyway: each worker waits for the database and applies them itself.
        log.warning("database not reachable (%s): the workers wait for it", err)
    log.info(
        "Comptroller on http://%s:%s (config: %s, database: %s, %d workers x %d threads)",
        args.host,
        args.port,
        config.source,
        config.database_url.split("@")[-1],
        workers,
        threads,
    )
    settings = gunicorn_settings(bind_address(args.host, args.port), workers, threads)
    ComptrollerServer(config, settings).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    parser = _parser()
    args = parser.parse_args(argv)
    command = _command_and_config(parser, args)
    try:
        config = load_config(args.config)
        if command == "migrate":
            return _migrate(config)
        return _serve(config, args)
    except STARTUP_ERRORS as err:
        print(f"comptroller: cannot start: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
