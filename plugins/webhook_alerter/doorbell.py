"""What wakes a process's webhook sender threads when alerts are queued.

A ``threading.Event`` wakes every waiting thread: with two senders, each call's
alert woke both, both gathered and both claimed, and all but the first claim
found nothing (a statement, a round trip and two thread switches wasted per
wake-up). The doorbell wakes one thread per ring, and none while a woken thread
has not yet claimed (its claim takes what rang meanwhile); rings that come after
that claim wake another thread, so alerts queued during a slow POST are still
delivered side by side. ``ring_all`` wakes every thread (a stop; a receiver that
answers again, with a backlog to drain).
"""

from __future__ import annotations

import threading


class Doorbell:
    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._rung = False
        self._answering = 0  # threads woken by a ring that have not claimed yet
        self._everyone = 0  # how many times ring_all rang
        self._seen = threading.local()  # how many of those each thread has answered

    def ring(self) -> None:
        """Alerts were queued: wake one thread, unless one is already on its way."""
        with self._changed:
            self._rung = True
            if not self._answering:
                self._changed.notify()

    def ring_all(self) -> None:
        """Wake every thread: those waiting now, and each other thread at its next wait."""
        with self._changed:
            self._rung = True
            self._everyone += 1
            self._changed.notify_all()

    def wait(self, timeout: float) -> bool:
        """Wait for a ring that no other thread is answering, or for ``ring_all``,
        at most ``timeout`` seconds. True when woken: the caller is then answering,
        and calls :meth:`answered` just before it claims."""
        with self._changed:
            seen = getattr(self._seen, "everyone", 0)
            woken = self._changed.wait_for(
                lambda: self._everyone != seen or (self._rung and not self._answering),
                timeout,
            )
            self._seen.everyone = self._everyone
            if woken:
                self._answering += 1
            return woken

    def answered(self) -> None:
        """The rings so far are the caller's to claim; later ones wake a thread again."""
        with self._changed:
            self._answering -= 1
            self._rung = False
