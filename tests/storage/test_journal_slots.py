"""The spend journal's files: every entry written ahead is replayable until it is
done, exactly once, whoever dies when.

A settling thread writes its call's entry into its slot (a file it holds
locked); a replay takes an entry only from a slot no live thread holds or
from a kept entry, and never twice (proxy/storage/journal.py). The billing
side (a replayed call is billed once) is tests/storage/test_spend_journal.py
and tests/faults/test_database_outage.py.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.storage.journal import (
    KEPT_SUFFIX,
    SLOT_SUFFIX,
    SpendJournal,
    decode_entry,
    encode_entry,
    entries_in,
)


def record(call: str, **more: object) -> dict[str, object]:
    return {"request_id": call, "cost": 0.25, "usage": {"total_tokens": 7}, **more}


@pytest.fixture
def journal(tmp_path: Path) -> SpendJournal:
    made = SpendJournal(tmp_path / "journal")
    made.prepare()
    return made


def files(journal: SpendJournal, suffix: str) -> list[str]:
    return sorted(p.name for p in journal.directory.iterdir() if p.name.endswith(suffix))


def replay_all(journal: SpendJournal) -> list[str]:
    """What a replayer takes now, each marked done as a replay that wrote it would."""
    taken = []
    for entry in journal.pending():
        taken.append(str(entry.record["request_id"]))
        entry.done()
    return taken


def in_a_child(action: Callable[[], None]) -> None:
    """Run ``action`` in a forked process that then dies as a killed worker does."""
    pid = os.fork()
    if pid == 0:
        try:
            action()
        finally:
            os._exit(0)  # no clean-up: as SIGKILL
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_an_entry_is_on_disk_from_its_write_until_done(journal: SpendJournal) -> None:
    first = journal.write("call-1", record("call-1"))
    assert entries_in(journal.directory) == ["call-1"]
    assert first.record == record("call-1")
    first.done()
    assert entries_in(journal.directory) == []
    second = journal.write("call-2", record("call-2", model="a longer record than the first"))
    third_is_shorter = record("c3")
    second.done()
    journal.write("c3", third_is_shorter).done()
    # One slot per thread, rewritten in place; nothing left to replay.
    assert len(files(journal, SLOT_SUFFIX)) == 1
    assert entries_in(journal.directory) == []
    assert not journal.has_pending()


def test_the_entry_of_a_call_still_settling_is_not_replayed(journal: SpendJournal) -> None:
    held = journal.write("settling", record("settling"))
    seen: list[list[str]] = []
    # Another thread of this process, as the replay thread is.
    worker = threading.Thread(target=lambda: seen.append(replay_all(journal)))
    worker.start()
    worker.join()
    assert seen == [[]]
    assert not journal.has_pending()
    assert entries_in(journal.directory) == ["settling"]
    held.done()
    assert entries_in(journal.directory) == []


@pytest.mark.slow  # forks a process
def test_a_worker_killed_mid_settle_leaves_its_entry_replayed_once(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    SpendJournal(directory).prepare()

    def settle_and_die() -> None:
        child = SpendJournal(directory)
        child.write("done-before", record("done-before")).done()
        child.write("in-flight", record("in-flight"))  # killed before its commit

    in_a_child(settle_and_die)
    survivor = SpendJournal(directory)
    assert entries_in(directory) == ["in-flight"]
    assert survivor.has_pending()
    assert replay_all(survivor) == ["in-flight"]
    assert replay_all(survivor) == []  # never twice
    assert entries_in(directory) == []
    assert os.listdir(directory) == []  # the dead worker's slot is gone with it


@pytest.mark.slow  # forks a process
def test_empty_slots_of_workers_gone_are_removed(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    SpendJournal(directory).prepare()
    held = []

    def settle_and_die() -> None:
        held.append(SpendJournal(directory))  # its slot is open when the process dies
        held[0].write("c", record("c")).done()

    in_a_child(settle_and_die)
    assert len(os.listdir(directory)) == 1
    survivor = SpendJournal(directory)
    assert not survivor.has_pending()
    assert os.listdir(directory) == []


def test_a_thread_that_ends_takes_its_empty_slot_with_it(journal: SpendJournal) -> None:
    worker = threading.Thread(target=lambda: journal.write("t", record("t")).done())
    worker.start()
    worker.join()
    del worker
    assert files(journal, SLOT_SUFFIX) == []


def test_a_kept_entry_is_durable_and_the_thread_moves_to_a_new_slot(
    journal: SpendJournal,
) -> None:
    kept = journal.write("chatcmpl-kept/1", record("chatcmpl-kept/1"))
    kept.keep()
    assert files(journal, KEPT_SUFFIX) == ["chatcmpl-kept_1.json"]
    assert kept.path.name == "chatcmpl-kept_1.json"
    assert files(journal, SLOT_SUFFIX) == []
    # The next call's entry goes elsewhere: the kept one is not overwritten.
    nxt = journal.write("next", record("next"))
    assert sorted(entries_in(journal.directory)) == ["chatcmpl-kept/1", "next"]
    assert replay_all(journal) == ["chatcmpl-kept/1"]
    nxt.done()
    assert entries_in(journal.directory) == []
    assert replay_all(journal) == []


def test_a_kept_entry_a_failing_replay_holds_still_counts_as_pending(
    journal: SpendJournal,
) -> None:
    """The replay thread ends when nothing is pending: a kept entry held by a replay
    that is about to fail (the database still away) must not look done to it, or
    the entry waits for the next keep or restart to be replayed."""
    journal.write("kept-in-an-outage", record("kept-in-an-outage")).keep()
    [held] = journal.pending()  # a replay has it
    try:
        assert journal.has_pending()
    finally:
        held.release()  # its write failed
    assert journal.has_pending()
    assert replay_all(journal) == ["kept-in-an-outage"]
    assert not journal.has_pending()


def test_an_entry_its_settle_never_resolved_is_replayed(journal: SpendJournal) -> None:
    journal.write("abandoned", record("abandoned"))  # an exception no handler caught
    later = journal.write("later", record("later"))
    assert sorted(entries_in(journal.directory)) == ["abandoned", "later"]
    assert replay_all(journal) == ["abandoned"]
    later.done()
    assert entries_in(journal.directory) == []


@pytest.mark.slow  # forks a process
def test_a_forked_child_never_writes_into_its_parents_slot(journal: SpendJournal) -> None:
    held = journal.write("parent", record("parent"))
    in_a_child(lambda: journal.write("child", record("child")))  # dies mid-settle
    assert sorted(entries_in(journal.directory)) == ["child", "parent"]
    assert replay_all(journal) == ["child"]  # the parent's is still settling
    held.done()
    assert entries_in(journal.directory) == []


def test_a_torn_entry_is_never_taken_for_one(journal: SpendJournal) -> None:
    line = encode_entry(record("torn"))
    assert decode_entry(line + b"remnant of a longer entry") == record("torn")
    assert decode_entry(b"\n" + line[1:]) is None  # cleared
    with pytest.raises(ValueError):
        decode_entry(line[:20] + line[21:])
    slot = journal.directory / f"dead{SLOT_SUFFIX}"
    slot.write_bytes(line[:-12] + b"x" + line[-11:])
    assert replay_all(journal) == []
    assert entries_in(journal.directory) == []
    assert files(journal, ".unreadable") == [f"dead{SLOT_SUFFIX}.unreadable"]


def test_a_kept_entry_of_an_earlier_version_is_replayed(journal: SpendJournal) -> None:
    old = journal.directory / "chatcmpl-old.json"
    old.write_text(json.dumps(record("chatcmpl-old"), separators=(",", ":")))
    assert entries_in(journal.directory) == ["chatcmpl-old"]
    assert replay_all(journal) == ["chatcmpl-old"]
    assert not old.exists()
