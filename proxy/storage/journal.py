"""The spend journal: a host's durable record of spend not yet in the database.

One file per call, ``<request id>.json``, in one directory per host and
database. A call's entry is written (write-ahead) before its spend
transaction and removed once that commits, so a worker killed mid-settle
leaves it behind; when the database cannot take the spend, the entry is
fsync'd and stays. Any worker of the host replays what is left
(:mod:`proxy.call.settle`).

The writer holds an exclusive ``flock`` on its entry from before the file
appears under its final name until it is done with it, so a replaying
worker never takes an entry whose call is still settling; the kernel drops
the lock when the writer dies, and the entry becomes replayable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("comptroller.journal")

JOURNAL_DIR_ENV = "COMPTROLLER_JOURNAL_DIR"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def journal_directory(configured: str | None, database_url: str) -> Path:
    """Where this host journals spend for ``database_url``: the configured directory
    (``general_settings.spend_journal_dir``, else ``$COMPTROLLER_JOURNAL_DIR``, else
    ``~/.comptroller/journal``), in a subdirectory of its own per database, so that
    an entry is never replayed into another database."""
    base = configured or os.environ.get(JOURNAL_DIR_ENV) or "~/.comptroller/journal"
    parts = urlsplit(database_url)
    netloc = parts.netloc.rsplit("@", 1)[-1]  # without the credentials
    identity = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return Path(base).expanduser() / hashlib.sha256(identity.encode()).hexdigest()[:16]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Entry:
    """One call's journal entry, locked by this process while it is open."""

    def __init__(
        self, journal: SpendJournal, path: str | Path, fd: int, record: dict[str, Any]
    ) -> None:
        self.journal = journal
        # A str: every settle writes an entry, and pathlib's joins cost more than the syscalls.
        self._path = os.fspath(path)
        self.record = record
        self._fd: int | None = fd

    @property
    def path(self) -> Path:
        return Path(self._path)

    def done(self) -> None:
        """The spend is in the database: the entry goes."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)
        self._close()

    def keep(self) -> None:
        """The database did not take the spend: the entry stays, on disk for good."""
        try:
            if self._fd is not None:
                os.fsync(self._fd)
            _fsync_directory(self.path.parent)
        finally:
            self._close()

    def release(self) -> None:
        """Leave the entry as it is, for a later replay."""
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # also drops the lock
            self._fd = None


class SpendJournal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._prefix = os.path.join(directory, "")  # the directory, as a str ending in "/"

    def prepare(self) -> None:
        """Create the directory and check it is writable (at start-up: a journal
        that cannot be written must stop the proxy, not lose spend later)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = self.directory / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()

    def write(self, request_id: str, record: dict[str, Any]) -> Entry:
        """A locked entry for ``request_id`` (write-ahead: not yet fsync'd)."""
        name = _SAFE_NAME.sub("_", request_id)
        temporary = f"{self._prefix}.{name}.{os.getpid()}.tmp"
        final = f"{self._prefix}{name}.json"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, json.dumps(record, separators=(",", ":")).encode())
            os.rename(temporary, final)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return Entry(self, final, fd, record)

    def has_pending(self) -> bool:
        try:
            with os.scandir(self.directory) as found:
                return any(item.name.endswith(".json") for item in found)
        except FileNotFoundError:
            return False

    def pending(self) -> Iterator[Entry]:
        """Each entry no live process is settling, locked for the caller (who must
        call ``done()`` or ``release()`` on it)."""
        try:
            names = sorted(p for p in os.listdir(self.directory) if p.endswith(".json"))
        except FileNotFoundError:
            return
        for name in names:
            entry = self._claim(self.directory / name)
            if entry is not None:
                yield entry

    def _claim(self, path: Path) -> Entry | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None  # its call is still settling
            raise
        try:
            if os.fstat(fd).st_nlink == 0:
                os.close(fd)  # settled and removed while we waited for it
                return None
            with open(path, "rb") as source:
                record = json.loads(source.read())
        except (OSError, ValueError):
            os.close(fd)
            log.exception("unreadable journal entry %s left in place", path)
            return None
        return Entry(self, path, fd, record)
