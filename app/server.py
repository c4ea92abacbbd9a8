"""Serve: the SMTP listener and the HTTP API in one process, on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Iterator
from enum import StrEnum
from functools import partial

import uvicorn

from app.api import create_app, create_operations_app
from app.http_connections import limited_protocol
from app.ingest import WriterProcess
from app.jobs import Job, run_forever
from app.mailboxes import mailbox_runner
from app.retention import PURGE_EVERY, purge_once
from app.runtime import Runtime, follow_policy_forever, follow_policy_in
from app.settings import Settings, StartError, WriterMode
from app.webhooks import Deliverer, DeliveryPolicy
from capture.smtp import CaptureHandler, Limits, Trust, smtp_factory
from capture.spamd import Spamd
from capture.submitters import authenticate_app_password
from capture.writer import GroupWriter, Writer

log = logging.getLogger("mailroom.server")


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling (the Service owns SIGINT/SIGTERM), and which
    stops as soon as its requests in hand are answered: uvicorn's own stop polls and pauses,
    0.2 s a stop."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def exit(self) -> None:
        self.should_exit = True
        self._exit.set()

    async def main_loop(self) -> None:
        counter = 0  # as uvicorn's: a tick every 0.1 s keeps the Date header current
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Accept nothing more, close idle connections, and wait for the answers in hand
        (their work in threads included: the database closes after this)."""
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()  # an idle one closes now; a busy one after its answer
        try:
            await asyncio.wait_for(self._answered(), self.config.timeout_graceful_shutdown)
        except TimeoutError:  # a client that never sends the rest of its request, say
            log.warning(
                "stopping: %d API requests still unanswered after %d s are cancelled",
                len(self.server_state.tasks),
                self.config.timeout_graceful_shutdown,
            )
            for task in self.server_state.tasks:
                task.cancel()
        for server in self.servers:
            await server.wait_closed()

    async def _answered(self) -> None:
        while self.server_state.tasks:  # requests in hand: their answers, then the database
            await asyncio.wait(list(self.server_state.tasks))
        while self.server_state.connections:  # noqa: ASYNC110 (answers still being sent)
            await asyncio.sleep(0.005)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server certificate for STARTTLS and the implicit-TLS port, if configured."""
    if settings.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except OSError as error:  # ssl.SSLError too: a file that is no PEM, a key that does not fit
        pair = f"MAILROOM_TLS_CERT {settings.tls_cert}" + (
            f" with MAILROOM_TLS_KEY {settings.tls_key}" if settings.tls_key else ""
        )
        why = error.strerror or type(error).__name__
        raise StartError(f"{pair} cannot be loaded: {why}") from None
    return context


@contextlib.contextmanager
def listening(name: str, host: str, port: int | None) -> Iterator[None]:
    """Binding the `name` listener: an address in use, or not this host's, stops the start
    naming the listener and the address (an OSError alone would be reported by its type)."""
    try:
        yield
    except OSError as error:
        # asyncio rewrites the text around the address: the errno's own words (a host name
        # that does not resolve has a negative errno and only its text)
        code = error.errno or 0
        why = os.strerror(code) if code > 0 else error.strerror or type(error).__name__
        raise StartError(f"the {name} listener cannot listen on {host}:{port}: {why}") from None


class ProcessRole(StrEnum):
    """What one `mailroom serve` process does; several processes share one database."""

    SMTP = "smtp"  # the capture listener(s)
    API = "api"  # the REST API and pages (every process serves /healthz, /readyz, /metrics)
    IMAP = "imap"  # the IMAP sync worker


SWITCH_INTERVAL = 0.0005  # seconds; see Service._start_smtp
STOP_GRACE_SECONDS = 5  # how long a stop waits for API requests in hand (docker stop: 10 s)
DEFAULT_ROLES = frozenset(ProcessRole)  # one process does everything unless told otherwise


class Service:
    """The listeners of this process's roles; `start` binds them, `stop` drains in-flight
    commits and closes."""

    def __init__(self, runtime: Runtime, *, roles: frozenset[ProcessRole] = DEFAULT_ROLES) -> None:
        self.runtime = runtime
        self.roles = roles
        self.writer: Writer | None = None
        self.handler: CaptureHandler | None = None
        self.smtp_server: asyncio.Server | None = None
        self.api_server: _Uvicorn | None = None
        self.api_task: asyncio.Task[None] | None = None
        self.smtp_port = 0
        self.api_port = 0
        self.smtps_server: asyncio.Server | None = None
        self.smtps_port = 0
        self.jobs: list[asyncio.Task[None]] = []
        self.deliverer: Deliverer | None = None
        self._stopped = False

    async def start(self) -> None:
        if ProcessRole.SMTP in self.roles:
            await self._start_smtp()
        await self._start_http(api=ProcessRole.API in self.roles)
        if ProcessRole.IMAP in self.roles:
            await self._start_imap()
        # Every process applies the policy in force, whichever process published it.
        self.jobs.append(asyncio.create_task(follow_policy_forever(self.runtime)))
        pipeline = self.runtime.pipeline
        purge = partial(
            purge_once, self.runtime.db, self.runtime.sessions, lambda: pipeline.engine.policy
        )
        self._schedule(Job("retention-purge", every=PURGE_EVERY, work=purge))
        settings = self.runtime.settings
        allowed = tuple(settings.webhook_allow_networks)
        self.deliverer = Deliverer(self.runtime.sessions, DeliveryPolicy(allowed_networks=allowed))
        delivery = Job("webhook-delivery", every=settings.webhook_interval, work=self.deliverer.run)
        self._schedule(delivery)
        log.info(
            "started %s: smtp %s:%s, http %s:%s",
            ",".join(sorted(self.roles)),
            settings.smtp_host,
            self.smtp_port,
            settings.api_host,
            self.api_port,
        )

    async def _start_imap(self) -> None:
        """The IMAP sync worker: a task per mailbox (app/mailboxes.py)."""
        self.jobs.append(asyncio.create_task(mailbox_runner(self.runtime).run()))

    def _schedule(self, job: Job) -> None:
        """A scheduled job: every process schedules it, one at a time runs it (app/jobs.py)."""
        metrics = self.runtime.metrics
        self.jobs.append(asyncio.create_task(run_forever(self.runtime.db, job, metrics)))

    def listeners_bound(self) -> dict[str, bool]:
        """For /readyz: each listener of this process, and whether it is serving; and
        whether the SMTP writer is."""
        if ProcessRole.SMTP not in self.roles:
            return {}
        servers = {"smtp": self.smtp_server}
        if self.smtps_server is not None:
            servers["smtps"] = self.smtps_server
        checks = {name: s is not None and s.is_serving() for name, s in servers.items()}
        # Without its writer the listener answers every message 451, and below its free
        # disk space every MAIL FROM 452: send it no mail.
        checks["smtp-writer"] = self.writer is not None and self.writer.running
        checks["disk-space"] = self.handler is not None and self.handler.disk_ok()
        return checks

    async def _start_smtp(self) -> None:
        # The writer thread holds the GIL for milliseconds at a time; each socket send of the
        # event loop gives it up and waits up to the switch interval to get it back. At the
        # default 5 ms that was 0.28 ms a send under load; at 0.5 ms, 0.14 ms.
        sys.setswitchinterval(SWITCH_INTERVAL)
        settings = self.runtime.settings
        metrics = self.runtime.metrics
        self.writer = await self._writer(metrics.batch_size.observe)
        metrics.watch_queue(lambda: self.writer.queue_depth if self.writer else 0)
        self.handler = handler = CaptureHandler(
            self.writer,
            capture_addresses=frozenset(settings.capture_addresses),
            limits=Limits(
                max_message_bytes=settings.max_message_bytes,
                max_recipients=settings.smtp_max_recipients,
                max_connections=settings.smtp_max_connections,
                max_connections_per_client=settings.smtp_max_connections_per_client,
                idle_timeout=settings.smtp_idle_timeout,
                data_timeout=settings.smtp_data_timeout,
                min_free_bytes=settings.min_free_bytes,
                data_dir=settings.data_dir,
            ),
            trust=Trust(
                authserv_id=settings.resolved_authserv_id,
                trusted_relays=tuple(settings.trusted_relays),
                passwords=partial(authenticate_app_password, self.runtime.read_sessions),
                spamd=Spamd.configured(settings.spamd_host, settings.spamd_port),
            ),
            metrics=metrics,
        )
        loop = asyncio.get_running_loop()
        tls = tls_context(settings)
        with listening("SMTP", settings.smtp_host, settings.smtp_port):
            self.smtp_server = await loop.create_server(
                smtp_factory(handler, hostname=settings.hostname, tls=tls),
                host=settings.smtp_host,
                port=settings.smtp_port,
            )
        self.smtp_port = self.smtp_server.sockets[0].getsockname()[1]
        if tls is not None and settings.smtps_port is not None:
            with listening("SMTPS", settings.smtp_host, settings.smtps_port):
                self.smtps_server = await loop.create_server(
                    smtp_factory(handler, hostname=settings.hostname, tls=tls, implicit_tls=True),
                    host=settings.smtp_host,
                    port=settings.smtps_port,
                    ssl=tls,
                )
            self.smtps_port = self.smtps_server.sockets[0].getsockname()[1]

    async def _writer(self, on_batch: Callable[[int], None]) -> Writer:
        """The group writer: a process of its own (the default), or a thread of this one."""
        if self.runtime.settings.smtp_writer is WriterMode.THREAD:
            pipeline = self.runtime.pipeline
            # As the writer process does: the batch is decided under the version in force
            # in its own transaction, not the one this process last followed.
            follow = partial(follow_policy_in, pipeline=pipeline)
            return GroupWriter(pipeline, on_batch=on_batch, on_begin=follow)
        writer = WriterProcess(self.runtime.settings, on_batch=on_batch)
        await writer.start()
        return writer

    async def _start_http(self, *, api: bool) -> None:
        """The API, or (for a process without the API role) only the operations endpoints."""
        settings = self.runtime.settings
        with listening("HTTP", settings.api_host, settings.api_port):
            bound = socket.create_server((settings.api_host, settings.api_port))
        # create_server leaves the socket's protocol 0, and asyncio turns Nagle's algorithm off
        # only on connections whose socket says TCP: each answer after the first on a
        # kept-alive connection waited 40 ms for the client's delayed ACK. Read from its
        # descriptor, the socket names its protocol.
        sock = socket.socket(fileno=bound.detach())
        self.api_port = sock.getsockname()[1]
        app = create_app(self.runtime) if api else create_operations_app(self.runtime)
        app.state.listeners = self.listeners_bound
        config = uvicorn.Config(  # log_config=None: uvicorn logs through our handlers
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            log_config=None,
            timeout_graceful_shutdown=STOP_GRACE_SECONDS,
            http=limited_protocol(settings.api_request_timeout, settings.api_max_connections),
        )
        self.api_server = _Uvicorn(config)
        self.api_task = asyncio.create_task(self.api_server.serve(sockets=[sock]))
        while not self.api_server.started and not self.api_task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # uvicorn offers no event for "started"
        if self.api_task.done():
            self.api_task.result()

    async def stop(self) -> None:
        if self._stopped:  # a second stop (a signal during shutdown) has nothing to do
            return
        self._stopped = True
        for job in self.jobs:  # each ends once its run in hand has (app.jobs): awaited below
            job.cancel()
        for server in (self.smtp_server, self.smtps_server):
            if server is not None:
                server.close()
        if self.api_server is not None and self.api_task is not None:
            self.api_server.exit()
            await self.api_task
        # Messages already handed to the pipeline finish committing before we exit, whatever
        # a job's run waits for meanwhile (a lock the writer holds, say).
        if self.writer is not None:
            await self.writer.aclose()
        await asyncio.gather(*self.jobs, return_exceptions=True)
        if self.deliverer is not None:
            self.deliverer.close()
        self.runtime.close()

    async def run_until_signalled(self, *, on_started: Callable[[], None] | None = None) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        if on_started is not None:
            on_started()
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            await self.stop()
