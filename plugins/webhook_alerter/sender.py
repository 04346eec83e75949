"""Background delivery of the outbox: sender threads in every worker process.

Why threads in each worker rather than a separate ``comptroller alerts``
process: ``gunicorn wsgi:app`` (or ``comptroller``) with ``WEBHOOK_URL`` set is
all an operator has to run, as in the seeds, and claims make any number of
senders in any number of workers and hosts safe. A worker whose sender dies
with it only delays its claimed alerts until the claim expires.

Each thread loops: claim a batch of due alerts, POST them one by one with a
timeout, mark each sent or schedule its retry with exponential backoff. When
the receiver fails, the process pauses delivery with the same backoff and
then probes with a single alert per pause (one thread only), instead of
hammering a dead endpoint with the whole backlog. Only the probed alerts
carry their own backoff, so when a probe succeeds the backlog drains at
once; an alert the receiver keeps refusing costs one short pause per retry
and never holds up the others. The threads sleep on a doorbell that
``on_alert`` rings (one thread woken per ring, :mod:`.doorbell`), with
``poll_interval`` as a floor for alerts queued by other processes. A round
that was woken (or follows a full batch) claims at once; a poll first asks
whether any alert is due, a plain read, so that idle polls take no write
lock. A round that emptied the queue is not followed by another: what
arrives later wakes the thread or waits for the next poll.

Delivery is at least once: a sender that dies (or is stopped) after the
receiver got an alert but before marking it sent leaves it to be sent again
when its claim expires; receivers de-duplicate on ``webhook-id``.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import urllib.parse
import urllib.request
import weakref
from dataclasses import dataclass

import urllib3

from plugins.webhook_alerter import outbox
from plugins.webhook_alerter.doorbell import Doorbell
from plugins.webhook_alerter.settings import WebhookSettings
from plugins.webhook_alerter.signing import sign
from proxy.plugin_api import (
    KeepAliveOrigin,
    KeepAliveRoutes,
    close,
    connect,
    database_now,
    without_request,
)

log = logging.getLogger("comptroller.webhooks")

USER_AGENT = "comptroller-webhook/1"
PRUNE_EVERY = 600.0
# Pause after a wake before claiming: alerts arriving meanwhile are claimed
# together (one claim and one update for a batch, not per alert).
GATHER_SECONDS = 0.05


@dataclass
class Attempt:
    ok: bool
    error: str = ""


class _EndpointHealth:
    """Consecutive failures of the receiver, shared by one process's threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failures = 0
        self.paused_until = 0.0


class WebhookSender:
    """``concurrency`` daemon threads delivering the outbox to ``settings.url``."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        self._wake = Doorbell()
        self._stopping = threading.Event()
        self._start_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._health = _EndpointHealth()
        self._local = threading.local()
        self._last_prune = 0.0
        self._pid = 0
        self._stopped = False
        _live_senders.add(self)

    # --- life cycle ---------------------------------------------------------

    @without_request
    def ensure_running(self) -> None:
        """Start this process's sender threads, once (cheap to call per request).

        Threads start in the process that serves requests, not where the app
        was built: under ``gunicorn --preload`` the arbiter builds it and then
        forks, and a sender running there would hand its pooled database
        connection to every worker.
        """
        if self._pid == os.getpid() or self._stopped:
            return
        with self._start_lock:
            if self._pid == os.getpid() or self._stopped:
                return
            self._wake = Doorbell()
            self._stopping = threading.Event()
            self._health = _EndpointHealth()
            self._local = threading.local()
            self._threads = [
                threading.Thread(
                    target=self._run, args=(index,), name=f"webhook-sender-{index}", daemon=True
                )
                for index in range(self.settings.concurrency)
            ]
            for thread in self._threads:
                thread.start()
            self._pid = os.getpid()

    @property
    def running(self) -> bool:
        return self._pid == os.getpid() and any(t.is_alive() for t in self._threads)

    def wake(self) -> None:
        """New alerts may be due: stop waiting for the next poll."""
        self._wake.ring()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the threads to finish their current POST and exit; wait for them."""
        self._stopped = True
        _live_senders.discard(self)
        if self._pid != os.getpid():
            return
        self._stopping.set()
        self._wake.ring_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    def _after_fork_in_child(self) -> None:
        # The parent's threads are gone and its lock may have been held at the
        # fork: the next ensure_running() starts this process's own threads.
        self._start_lock = threading.Lock()
        self._threads = []

    # --- the loop -----------------------------------------------------------

    def _run(self, index: int) -> None:
        stopping, wake = self._stopping, self._wake
        errors = 0
        woken = False
        while not stopping.is_set():
            try:
                again = self.deliver_once(probe_allowed=index == 0, woken=woken)
                errors = 0
            except Exception:
                # The database may be down: never die, log once per streak.
                errors += 1
                log.log(
                    logging.ERROR if errors == 1 else logging.DEBUG,
                    "webhook sender: delivery round failed (%d in a row)",
                    errors,
                    exc_info=True,
                )
                stopping.wait(min(self.settings.max_backoff, self.settings.poll_interval * errors))
                again = True
            finally:
                self._close_connection()
            woken = False
            if stopping.is_set():
                continue
            if again:
                batch = getattr(self._local, "last_batch", None)
                self._local.last_batch = None
                if batch is None or batch >= self.settings.batch_size:
                    # A full batch delivered: more are likely due, claim at once. Or
                    # a round that failed: ask again, as after any error.
                    woken = batch is not None
                    continue
                # The round emptied the queue: what this process queues from now on
                # wakes us (on_alert), the rest is for the next poll, as when idle.
            if wake.wait(self._idle_wait()):
                # Let the burst that woke us gather: one claim for several alerts.
                stopping.wait(GATHER_SECONDS)
                woken = True
                wake.answered()

    def _idle_wait(self) -> float:
        paused = self._health.paused_until - time.time()
        return max(self.settings.poll_interval, min(paused, self.settings.max_backoff))

    def _close_connection(self) -> None:
        try:
            close()
        except Exception:
            log.debug("closing the sender's connection failed", exc_info=True)

    def deliver_once(self, probe_allowed: bool = True, woken: bool = False) -> bool:
        """One round: claim, POST, record. True when it did any work.

        ``woken``: alerts were just queued (or a full batch went out), so claim
        without asking first whether any is due (that read is for the polls).
        """
        with self._health.lock:
            failing = self._health.failures > 0
            if failing and (time.time() < self._health.paused_until or not probe_allowed):
                return False
        # Due times and claims are shared with other hosts: the database's clock.
        now = database_now()
        limit = 1 if failing else self.settings.batch_size
        connect()
        if not woken and not outbox.any_due(now):  # a plain read: polls take no write lock
            self._maybe_prune(now)
            return False
        token, claimed = outbox.claim_due(limit, self.settings.claim_seconds, now)
        if not claimed:
            self._maybe_prune(now)
            return False
        sent: list[str] = []
        try:
            for position, alert in enumerate(claimed):
                if self._stopping.is_set():
                    outbox.release([a.id for a in claimed[position:]], token)
                    return True
                attempt = self.post(alert.id, alert.payload)
                if attempt.ok:
                    sent.append(alert.id)
                    self._record_success()
                    continue
                retry_at = database_now() + self._jittered(
                    self.settings.backoff(alert.attempts + 1)
                )
                outbox.mark_failed(alert.id, token, attempt.error, retry_at)
                self._record_failure(attempt.error)
                outbox.release([a.id for a in claimed[position + 1 :]], token)
                return True
        finally:
            # One statement for the batch; a sender that dies before it leaves
            # these to be sent again when the claim expires (at least once).
            outbox.mark_all_sent(sent, token)
        self._local.last_batch = len(claimed)
        return True

    def _jittered(self, seconds: float) -> float:
        # Spread retries so that workers do not wake in lockstep.
        return seconds * random.uniform(0.8, 1.2)

    def _record_success(self) -> None:
        with self._health.lock:
            recovered = self._health.failures > 0
            self._health.failures = 0
            self._health.paused_until = 0.0
        if recovered:
            log.info("webhook receiver answers again; delivering the backlog")
            self._wake.ring_all()

    def _record_failure(self, error: str) -> None:
        with self._health.lock:
            self._health.failures += 1
            pause = self._jittered(self.settings.backoff(self._health.failures))
            self._health.paused_until = time.time() + pause
            failures = self._health.failures
        log.warning(
            "webhook delivery failed (%s); %d in a row, next try in %.1fs", error, failures, pause
        )

    def _maybe_prune(self, now: float) -> None:
        """Every :data:`PRUNE_EVERY`: delete old sent alerts and the marks of ended periods."""
        if now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        if self.settings.retention_days:
            deleted = outbox.delete_sent_before(now - self.settings.retention_days * 86400)
            if deleted:
                log.info(
                    "deleted %d sent webhook alerts older than %s days",
                    deleted,
                    self.settings.retention_days,
                )
        marks = outbox.delete_ended_once_marks(now)
        if marks:
            log.info("deleted %d once-per-period alert marks of ended periods", marks)

    # --- HTTP ---------------------------------------------------------------

    def _http(self) -> tuple[KeepAliveOrigin | urllib3.ProxyManager, str]:
        """This thread's keep-alive connection to the receiver and the request target
        (``KeepAliveRoutes``: the CPU of the upstream calls, not ``requests``'s several
        times it). Proxies come from the environment (``HTTPS_PROXY``/``HTTP_PROXY``/
        ``NO_PROXY``), as requests reads them: through one, urllib3's ``ProxyManager``
        sends the POST and takes the whole URL."""
        route = getattr(self._local, "route", None)
        if route is None:
            assert self.settings.url is not None
            url = self.settings.url
            parsed = urllib.parse.urlsplit(url)
            proxy = urllib.request.getproxies().get(parsed.scheme)
            if proxy and not urllib.request.proxy_bypass(parsed.hostname or ""):
                route = (urllib3.ProxyManager(proxy, num_pools=4, maxsize=1, retries=False), url)
            else:
                pools = urllib3.PoolManager(num_pools=4, maxsize=1, retries=False)
                route = KeepAliveRoutes(pools, maxsize=1)(url)
            self._local.route = route
        return route

    def headers_for(self, alert_id: str, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "webhook-id": alert_id}
        if self.settings.secret:
            timestamp = int(time.time())
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = sign(self.settings.secret, alert_id, timestamp, body)
        return headers

    def post(self, alert_id: str, payload: str) -> Attempt:
        """POST one alert; any 2xx answer is a delivery."""
        assert self.settings.url is not None
        body = payload.encode("utf-8")
        timeout = self.settings.timeout
        headers = {"User-Agent": USER_AGENT, **self.headers_for(alert_id, body)}
        opener, target = self._http()
        try:
            if isinstance(opener, KeepAliveOrigin):
                # Only the status matters; a Content-Length body is read to its end
                # and the connection kept for the next POST.
                status = opener.post_for_status(
                    target, body, headers, connect_timeout=min(timeout, 5.0), read_timeout=timeout
                )
            else:
                status = opener.urlopen(
                    "POST",
                    target,
                    body=body,
                    headers=headers,
                    timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout),
                    redirect=False,
                    assert_same_host=False,
                ).status
        except urllib3.exceptions.HTTPError as err:
            return Attempt(False, type(err).__name__)
        if 200 <= status < 300:
            return Attempt(True)
        return Attempt(False, f"HTTP {status}")


_live_senders: weakref.WeakSet[WebhookSender] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for sender in list(_live_senders):
        sender._after_fork_in_child()


os.register_at_fork(after_in_child=_reset_after_fork)
