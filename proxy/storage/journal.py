"""The spend journal: a host's durable record of spend not yet in the database.

One directory per host and database. Each thread that settles calls holds
a **slot**, a ``<random>.slot`` file it keeps open and ``flock``'d for as
long as the thread lives: a call's entry is written into the slot in place
(``pwrite``, write-ahead) before its spend transaction, and cleared once
that commits (one byte). A worker killed mid-settle leaves its slot behind
holding the entry, and the kernel drops the lock; when the database cannot
take the spend, the slot is fsync'd and renamed ``<request id>.json``, a
kept entry, and the thread opens a new slot for its next call. Any worker
of the host replays what is left: kept entries, and slots no live process
holds that still hold an entry (:mod:`proxy.call.settle`).

An entry is one line: its JSON, a tab and the CRC-32 of the JSON (so a
write torn by a crash is never taken for an entry), then a newline; what
follows the first newline is the remnant of longer earlier entries. A
cleared slot starts with the newline. Kept entries of earlier versions
(the JSON alone) read as they always did.

Every file is locked by whoever works on it: a slot by its thread from
before it appears under its final name, a kept entry by the replayer that
claimed it. So a replaying worker never takes an entry whose call is still
settling, nor one another worker is replaying.
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
import secrets
import threading
import weakref
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("comptroller.journal")

JOURNAL_DIR_ENV = "COMPTROLLER_JOURNAL_DIR"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
KEPT_SUFFIX = ".json"
SLOT_SUFFIX = ".slot"
_CLEARED = b"\n"


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


def _fsync_directory(directory: str | Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_entry(record: dict[str, Any]) -> bytes:
    """The entry line of ``record``."""
    body = json.dumps(record, separators=(",", ":")).encode()
    return b"%s\t%08x\n" % (body, zlib.crc32(body))


def decode_entry(data: bytes) -> dict[str, Any] | None:
    """The record in a file's content; None for a cleared slot. ValueError when the
    line is not a whole entry (torn by a crash mid-write, or not an entry at all)."""
    line = data.split(b"\n", 1)[0]
    if not line:
        return None
    body, tab, crc = line.rpartition(b"\t")
    if not tab:
        body = line  # a kept entry of an earlier version: the JSON alone
    elif crc != b"%08x" % zlib.crc32(body):
        raise ValueError("a torn journal entry (its checksum does not match)")
    record = json.loads(body)
    if not isinstance(record, dict):
        raise ValueError("not a journal entry")
    return record


def entries_in(directory: Path) -> list[str]:
    """The request ids of the entries on disk in ``directory``, settling or kept
    (for tests and operators; it takes no lock)."""
    found = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    for name in names:
        if not name.endswith((KEPT_SUFFIX, SLOT_SUFFIX)):
            continue
        try:
            record = decode_entry(Path(directory, name).read_bytes())
        except (OSError, ValueError):
            continue
        if record is not None:
            found.append(str(record.get("request_id")))
    return found


class _Slot:
    """One thread's slot file, locked by it while it is open."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd: int | None = fd
        self.busy = False  # it holds an entry neither done nor kept
        # The thread ends (its locals go): the slot is closed, and removed if empty.
        self._finalizer = weakref.finalize(self, _retire_slot, path, fd)
        self._finalizer.atexit = False  # at exit, daemon threads may still be settling
        _open_slots.add(self)

    def write(self, data: bytes) -> None:
        assert self.fd is not None
        self.busy = True
        os.pwrite(self.fd, data, 0)

    def clear(self) -> None:
        assert self.fd is not None
        os.pwrite(self.fd, _CLEARED, 0)
        self.busy = False

    def abandon(self) -> None:
        """Let go of an entry its settle left (an exception no handler caught): the
        slot is closed as it is, so a replay takes the entry."""
        fd = self._let_go()
        if fd is not None:
            os.close(fd)

    def keep_as(self, final: str) -> None:
        """Make the entry durable under ``final``; this slot is done with."""
        fd = self._let_go()
        assert fd is not None
        try:
            os.fsync(fd)
            os.rename(self.path, final)
            _fsync_directory(os.path.dirname(final))
        finally:
            # Renamed or not, the entry is in a file no live thread holds: replayable.
            os.close(fd)

    def _let_go(self) -> int | None:
        """Its descriptor, which the caller closes; the slot is no longer usable."""
        fd, self.fd = self.fd, None
        self._finalizer.detach()
        _open_slots.discard(self)
        return fd


# Slots open in this process: a forked child closes its copies at once (the slots,
# and their locks, stay the parent's).
_open_slots: weakref.WeakSet[_Slot] = weakref.WeakSet()


def _close_inherited_slots() -> None:
    for slot in list(_open_slots):
        slot.abandon()  # the parent's descriptor keeps the lock


os.register_at_fork(after_in_child=_close_inherited_slots)


def _retire_slot(path: str, fd: int) -> None:
    try:
        if os.pread(fd, 1, 0) in (b"", _CLEARED):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # still locked: a replayer checks the link count
    except OSError:
        log.warning("closing the journal slot %s failed", path, exc_info=True)
    finally:
        os.close(fd)


class Entry:
    """One call's journal entry, locked while it is open: in the slot of the thread
    settling it, or claimed for a replay (a kept entry, or a dead worker's slot)."""

    def __init__(
        self,
        path: str | Path,
        fd: int | None,
        record: dict[str, Any],
        slot: _Slot | None = None,
        request_id: str = "",
    ) -> None:
        self._path = os.fspath(path)
        self._request_id = request_id
        self.record = record
        self._fd = fd
        self._slot = slot

    @property
    def path(self) -> Path:
        return Path(self._path)

    def done(self) -> None:
        """The spend is in the database: the entry goes."""
        if self._slot is not None:
            self._slot.clear()  # the slot stays, for the thread's next call
            self._slot = None
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)
        self._close()

    def keep(self) -> None:
        """The database did not take the spend: the entry stays, on disk for good."""
        if self._slot is not None:
            slot, self._slot = self._slot, None
            name = _SAFE_NAME.sub("_", self._request_id)
            final = os.path.join(os.path.dirname(slot.path), name + KEPT_SUFFIX)
            slot.keep_as(final)
            self._path = final
            return
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
        self._slots = threading.local()

    def prepare(self) -> None:
        """Create the directory and check it is writable (at start-up: a journal
        that cannot be written must stop the proxy, not lose spend later)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = self.directory / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()

    def write(self, request_id: str, record: dict[str, Any]) -> Entry:
        """The entry of ``request_id``, in this thread's slot (write-ahead: not yet
        fsync'd); kept, it is ``<request_id>.json``."""
        slot: _Slot | None = getattr(self._slots, "slot", None)
        if slot is not None and slot.busy:
            slot.abandon()
        if slot is None or slot.fd is None:
            slot = self._slots.slot = self._open_slot()
        slot.write(encode_entry(record))
        return Entry(slot.path, None, record, slot, request_id)

    def _open_slot(self) -> _Slot:
        """A new slot, locked before it appears under its final name."""
        name = secrets.token_hex(8)
        temporary = f"{self._prefix}.{name}.tmp"
        final = f"{self._prefix}{name}{SLOT_SUFFIX}"
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, _CLEARED)
            os.rename(temporary, final)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return _Slot(final, fd)

    def has_pending(self) -> bool:
        """Whether an entry waits for a replay: a kept one, or one in a slot no live
        process holds (empty ones of processes gone are removed on the way).

        A kept entry counts even while someone holds it: a replay that holds it now
        may fail (the database still away) and let it go, and the replay thread
        that asks must not end meanwhile."""
        try:
            with os.scandir(self.directory) as found:
                if any(item.name.endswith(KEPT_SUFFIX) for item in found):
                    return True
        except FileNotFoundError:
            return False
        for entry in self.pending():
            entry.release()
            return True
        return False

    def pending(self) -> Iterator[Entry]:
        """Each entry no live process is settling, locked for the caller (who must
        call ``done()`` or ``release()`` on it)."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return
        for name in names:
            if name.endswith((KEPT_SUFFIX, SLOT_SUFFIX)):
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
                return None  # its call is still settling, or another worker replays it
            raise
        try:
            if os.fstat(fd).st_nlink == 0:
                os.close(fd)  # settled and removed while we waited for it
                return None
            with open(path, "rb") as source:
                record = decode_entry(source.read())
        except (OSError, ValueError):
            if path.name.endswith(SLOT_SUFFIX):
                # Torn as its worker died writing it, before its spend transaction began.
                log.exception("unreadable journal slot %s set aside", path)
                with contextlib.suppress(OSError):
                    os.rename(path, f"{path}.unreadable")
            else:
                log.exception("unreadable journal entry %s left in place", path)
            os.close(fd)
            return None
        if record is None:  # the empty slot of a thread or process gone
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.close(fd)
            return None
        return Entry(path, fd, record)
