"""Serve: the SMTP listener and the HTTP API in one process, on one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
from collections.abc import Callable, Iterator
from functools import partial

import uvicorn

from app.api import create_app
from app.retention import purge_forever
from app.runtime import Runtime
from app.settings import Settings
from app.webhooks import deliver_forever
from capture.smtp import CaptureHandler, Limits, Trust, smtp_factory
from capture.spamd import Spamd
from capture.submitters import authenticate_app_password
from capture.writer import GroupWriter

log = logging.getLogger("mailroom.server")


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the Service owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server certificate for STARTTLS and the implicit-TLS port, if configured."""
    if settings.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def spamd(settings: Settings) -> Spamd | None:
    return Spamd(settings.spamd_host, settings.spamd_port) if settings.spamd_host else None


class Service:
    """Both listeners; `start` binds them, `stop` drains in-flight commits and closes."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.writer: GroupWriter | None = None
        self.smtp_server: asyncio.Server | None = None
        self.api_server: _Uvicorn | None = None
        self.api_task: asyncio.Task[None] | None = None
        self.smtp_port = 0
        self.api_port = 0
        self.smtps_server: asyncio.Server | None = None
        self.smtps_port = 0
        self.jobs: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        settings = self.runtime.settings
        self.writer = GroupWriter(self.runtime.pipeline)
        handler = CaptureHandler(
            self.writer,
            capture_addresses=frozenset(settings.capture_addresses),
            limits=Limits(
                max_message_bytes=settings.max_message_bytes,
                max_recipients=settings.smtp_max_recipients,
                max_connections=settings.smtp_max_connections,
                idle_timeout=settings.smtp_idle_timeout,
                data_timeout=settings.smtp_data_timeout,
                min_free_bytes=settings.min_free_bytes,
                data_dir=settings.data_dir,
            ),
            trust=Trust(
                authserv_id=settings.resolved_authserv_id,
                trusted_relays=tuple(settings.trusted_relays),
                passwords=partial(authenticate_app_password, self.runtime.read_sessions),
                spamd=spamd(settings),
            ),
        )
        loop = asyncio.get_running_loop()
        tls = tls_context(settings)
        self.smtp_server = await loop.create_server(
            smtp_factory(handler, hostname=settings.hostname, tls=tls),
            host=settings.smtp_host,
            port=settings.smtp_port,
        )
        self.smtp_port = self.smtp_server.sockets[0].getsockname()[1]
        if tls is not None and settings.smtps_port is not None:
            self.smtps_server = await loop.create_server(
                smtp_factory(handler, hostname=settings.hostname, tls=tls, implicit_tls=True),
                host=settings.smtp_host,
                port=settings.smtps_port,
                ssl=tls,
            )
            self.smtps_port = self.smtps_server.sockets[0].getsockname()[1]
        sock = socket.create_server((settings.api_host, settings.api_port))
        self.api_port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.runtime), log_level="warning", access_log=False, lifespan="off"
        )
        self.api_server = _Uvicorn(config)
        self.api_task = asyncio.create_task(self.api_server.serve(sockets=[sock]))
        while not self.api_server.started and not self.api_task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # uvicorn offers no event for "started"
        if self.api_task.done():
            self.api_task.result()
        self.jobs.append(asyncio.create_task(purge_forever(self.runtime.sessions)))
        self.jobs.append(
            asyncio.create_task(
                deliver_forever(self.runtime.sessions, every=settings.webhook_interval)
            )
        )
        log.info(
            "listening: smtp %s:%s, api %s:%s",
            settings.smtp_host,
            self.smtp_port,
            settings.api_host,
            self.api_port,
        )

    async def stop(self) -> None:
        for job in self.jobs:
            job.cancel()
        await asyncio.gather(*self.jobs, return_exceptions=True)
        for server in (self.smtp_server, self.smtps_server):
            if server is not None:
                server.close()
        if self.api_server is not None and self.api_task is not None:
            self.api_server.should_exit = True
            await self.api_task
        # Messages already handed to the pipeline finish committing before we exit.
        if self.writer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.writer.close)
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
