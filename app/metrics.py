"""Serve: Prometheus metrics for one process; labels are channels, outcomes, rule ids, reply
codes and mailbox ids, never anything taken from a message (no address, no subject)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

log = logging.getLogger("mailroom.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
NO_RULE = "(default)"  # no rule matched: the policy's default outcome decided

# Loopback commits take a few milliseconds; a slow disk or a remote database, seconds.
TIME_TO_250_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Every metric of one Mailroom process, in a registry of its own (not the global one),
    so that two services in one test process do not count into each other."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "mailroom_messages",
            "Messages decided and committed, by intake channel, outcome and deciding rule.",
            ["channel", "outcome", "rule"],
            registry=self.registry,
        )
        self.retries = Counter(
            "mailroom_retries_recognised",
            "Messages received again, answered from their receipt (stored once, not re-decided).",
            ["channel"],
            registry=self.registry,
        )
        self.time_to_250 = Histogram(
            "mailroom_smtp_time_to_reply_seconds",
            "From the end of DATA to the reply (250 once committed, or a refusal).",
            ["code"],
            buckets=TIME_TO_250_BUCKETS,
            registry=self.registry,
        )
        self.smtp_sessions = Counter(
            "mailroom_smtp_sessions", "SMTP connections accepted.", registry=self.registry
        )
        self.smtp_refusals = Counter(
            "mailroom_smtp_refusals",
            "SMTP replies of 4xx or 5xx, by reply code.",
            ["code"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "mailroom_group_commit_batch_size",
            "Messages committed together in one group-commit transaction.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "mailroom_writer_queue_depth",
            "Messages waiting for the group-commit writer.",
            registry=self.registry,
        )
        self._mailbox_lag: _MailboxLag | None = None  # in a process that syncs mailboxes
        self.job_runs = Counter(
            "mailroom_job_runs",
            "Scheduled job runs by this process, by job and result (ran, skipped, failed).",
            ["job", "result"],
            registry=self.registry,
        )

    def count_message(
        self, *, channel: str, outcome: str, rules: tuple[str, ...], duplicate: bool = False
    ) -> None:
        """One committed outcome. `rules` holds the deciding rule (the first that hit), if any;
        a recognised retry counts as a retry, not as a second message."""
        if duplicate:
            self.retries.labels(channel).inc()
            return
        self.messages.labels(channel, outcome, rules[0] if rules else NO_RULE).inc()

    def count_reply(self, code: int) -> None:
        if code >= 400:
            self.smtp_refusals.labels(str(code)).inc()

    def watch_queue(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(lambda: float(depth()))

    def watch_mailboxes(self, lags: MailboxLags) -> None:
        """Report `mailroom_imap_lag_seconds{mailbox}` from `lags`, read at each scrape."""
        if self._mailbox_lag is None:
            self._mailbox_lag = _MailboxLag(lags)
            self.registry.register(self._mailbox_lag)
        self._mailbox_lag.lags = lags

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# (mailbox id, seconds since its last complete sync) for each enabled mailbox
MailboxLags = Callable[[], Iterable[tuple[int, float]]]


class _MailboxLag(Collector):
    """Each enabled mailbox's lag, as the database has it at the scrape: every process that
    syncs mailboxes reports them all, so a mailbox no process syncs shows its lag growing."""

    def __init__(self, lags: MailboxLags) -> None:
        self.lags = lags

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "mailroom_imap_lag_seconds",
            "Seconds since each enabled mailbox's last complete sync (since it was added, "
            "before its first), by mailbox id.",
            labels=["mailbox"],
        )
        try:
            for mailbox_id, seconds in self.lags():
                family.add_metric([str(mailbox_id)], seconds)
        except Exception as error:  # the database is away: the other metrics still answer
            log.warning("mailbox lags not read (%s)", type(error).__name__)
        yield family
