"""The doorbell that wakes the webhook sender threads: one thread per ring."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from plugins.webhook_alerter.doorbell import Doorbell

# How long a waiter that must not be woken waits before it gives up.
NOT_WOKEN_WITHIN = 0.3


def _waiting(pool: ThreadPoolExecutor, bell: Doorbell, count: int) -> list[Future[bool]]:
    """``count`` threads waiting on the bell (each at most 5 s). Whether they are
    asleep yet when the test rings does not change what they see."""
    return [pool.submit(bell.wait, 5.0) for _ in range(count)]


def test_a_ring_wakes_one_waiting_thread_not_all() -> None:
    bell = Doorbell()
    with ThreadPoolExecutor(2) as pool:
        futures = _waiting(pool, bell, 2)
        bell.ring()
        done, pending = wait(futures, timeout=5, return_when=FIRST_COMPLETED)
        assert [f.result() for f in done] == [True]
        (other,) = pending
        assert not wait([other], timeout=NOT_WOKEN_WITHIN).done  # still asleep
        bell.answered()
        bell.ring()  # the next ring, after the first thread's claim, wakes the other
        assert other.result(timeout=5) is True


def test_rings_while_a_woken_thread_has_not_claimed_wake_no_other() -> None:
    bell = Doorbell()
    bell.ring()
    assert bell.wait(0) is True  # a ring before anyone waited is not lost
    with ThreadPoolExecutor(1) as pool:
        (other,) = _waiting(pool, bell, 1)
        bell.ring()
        bell.ring()
        assert not wait([other], timeout=NOT_WOKEN_WITHIN).done
        bell.answered()  # the first thread claims what rang: nothing left to wake for
        assert not wait([other], timeout=NOT_WOKEN_WITHIN).done
        bell.ring()
        assert other.result(timeout=5) is True


def test_ring_all_wakes_every_thread_even_while_one_answers() -> None:
    bell = Doorbell()
    bell.ring()
    assert bell.wait(0) is True  # answering, not yet claimed
    with ThreadPoolExecutor(2) as pool:
        futures = _waiting(pool, bell, 2)
        bell.ring_all()
        assert [f.result(timeout=5) for f in futures] == [True, True]
    bell.answered()
    # Also a thread that was not waiting when it rang (busy in a round): at its next wait.
    assert bell.wait(0) is True
    assert bell.wait(0) is False  # once


def test_a_wait_with_no_ring_times_out() -> None:
    assert Doorbell().wait(0.01) is False
