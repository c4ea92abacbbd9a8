"""Shared fixtures: a real database (SQLite file or PostgreSQL), the real service on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, migrate, session_factory, transaction
from app.models import Base, Employee, EmployeeAlias
from app.runtime import Runtime, build_runtime
from app.security import Role, create_token
from app.server import DEFAULT_ROLES, ProcessRole, Service
from app.settings import Settings, WriterMode

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CORPORA = ROOT.parent / "shared" / "corpora"
CAPTURE = "capture@mailroom.example.com"
TEST_SECRET = "test-secret-key-not-for-production"
pytest_plugins = ["tests.imap_fixtures"]


def server_url() -> str | None:
    """A PostgreSQL server to run on (set by .ci/run), or None for SQLite files."""
    return os.environ.get("MAILROOM_TEST_DATABASE_URL") or None


@pytest.fixture(scope="session")
def template_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database that each test copies, so every test starts from a clean schema."""
    server = server_url()
    if server is None:
        path = tmp_path_factory.mktemp("template") / "template.db"
        migrate(f"sqlite:///{path}")
        return str(path)
    url = sa.make_url(server)
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"mailroom_template_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    migrate(url.set(database=name).render_as_string(hide_password=False))
    admin.dispose()
    return name


@pytest.fixture
def database_url(template_database: str, tmp_path: Path) -> Iterator[str]:
    server = server_url()
    if server is None:
        data = tmp_path / "var"
        data.mkdir()
        shutil.copy(template_database, data / "mailroom.db")
        yield f"sqlite:///{data / 'mailroom.db'}"
        return
    with scratch_database(server, template=template_database) as url:
        yield url


@contextmanager
def scratch_database(server: str, *, template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database on the server (a copy of `template`, else empty), dropped
    afterwards."""
    url = sa.make_url(server)
    name = f"mailroom_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    copying = f' TEMPLATE "{template}"' if template else ""
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"{copying}'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        smtp_port=0,
        api_port=0,
        org_domains=["example.com"],
        capture_addresses=[CAPTURE],
        secret_key=TEST_SECRET,
        policy=FIXTURES / "plumbing-policy.yaml",
        # A writer thread: starting a writer process costs each of the suite's ~150 services
        # 1.5 s of imports. The process writer has its own tests (test_ingest.py), and every
        # test that runs `mailroom serve` as a process (test_crash_safety.py) uses it.
        smtp_writer=WriterMode.THREAD,
    )


HOLD_EXTERNAL = (
    (FIXTURES / "plumbing-policy.yaml")
    .read_text()
    .replace(
        "description: Mail with someone outside the company is captured.\n"
        "    when: external-participant\n    outcome: capture",
        "description: Mail with someone outside the company waits for review.\n"
        "    when: external-participant\n    outcome: hold",
    )
)


@pytest.fixture
def holding(settings: Settings, tmp_path: Path) -> Iterator[Running]:
    """The real service under a policy that holds mail with outsiders for review."""
    policy = tmp_path / "hold.yaml"
    policy.write_text(HOLD_EXTERNAL)
    with run_service(settings.model_copy(update={"policy": policy})) as running:
        yield running


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


def add_employee(
    sessions: sessionmaker[Session], email: str, *, name: str = "", aliases: tuple[str, ...] = ()
) -> int:
    with transaction(sessions) as session:
        employee = Employee(email=email, name=name)
        session.add(employee)
        session.flush()
        session.add_all(EmployeeAlias(employee_id=employee.id, address=a) for a in aliases)
        return employee.id


def issue_token(
    sessions: sessionmaker[Session],
    role: Role,
    *,
    employee_id: int | None = None,
    scopes: tuple[str, ...] = (),
) -> str:
    with transaction(sessions) as session:
        return create_token(session, role=role, employee_id=employee_id, scopes=scopes)


@dataclass
class Running:
    """The real service, both listeners, on loopback ephemeral ports in a background thread."""

    runtime: Runtime
    service: Service
    loop: asyncio.AbstractEventLoop

    @property
    def smtp_port(self) -> int:
        return self.service.smtp_port

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.service.api_port}"

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # The API is plain HTTP on loopback: no CA bundle to load (30 ms a client, each time)
        return httpx.Client(base_url=self.api_url, headers=headers, timeout=10, verify=False)


@pytest.fixture
def running(settings: Settings) -> Iterator[Running]:
    with run_service(settings) as service:
        yield service


@pytest.fixture
def running_unsynced(settings: Settings) -> Iterator[Running]:
    """The service without its IMAP worker, for tests that add mailboxes at hosts that do
    not exist: the worker would try each at once and record its own error (the host does not
    resolve) over the state under test."""
    with run_service(settings, roles=DEFAULT_ROLES - {ProcessRole.IMAP}) as service:
        yield service


@contextmanager
def run_service(
    settings: Settings, *, roles: frozenset[ProcessRole] = DEFAULT_ROLES
) -> Iterator[Running]:
    """Start the real service with these settings; stop it (draining commits) on exit."""
    runtime = build_runtime(settings)
    service = Service(runtime, roles=roles)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="service-loop", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(service.start(), loop).result(timeout=30)
    try:
        yield Running(runtime, service, loop)
    finally:
        asyncio.run_coroutine_threadsafe(service.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@contextmanager
def write_lock(running: Running, table: str = "receipts") -> Iterator[None]:
    """Hold the database's write lock, so that the service's writer waits in its commit (on
    PostgreSQL, a lock on `table`: receipts, where every message is written). On an engine of
    its own: the service's is closed when the service stops, lock or no lock."""
    engine = make_engine(running.runtime.settings.resolved_database_url)
    try:
        with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            yield
    finally:
        engine.dispose()


def everything_stored(running: Running) -> bytes:
    """Every byte under the data directory, plus every row of every table (for canaries)."""
    data_dir = Path(running.runtime.settings.data_dir)
    blobs = [p.read_bytes() for p in data_dir.rglob("*") if p.is_file()]
    with running.runtime.db.connect() as conn:
        for table in Base.metadata.sorted_tables:
            blobs += [repr(tuple(row)).encode() for row in conn.execute(sa.select(table))]
    return b"\n".join(blobs)


@pytest.fixture
def tokens(running: Running) -> dict[str, str]:
    """Alice's employee token, and a compliance and an admin token, on the running service."""
    sessions = running.runtime.sessions
    alice = add_employee(sessions, "alice@example.com")
    return {
        "employee": issue_token(sessions, Role.EMPLOYEE, employee_id=alice),
        "compliance": issue_token(sessions, Role.COMPLIANCE),
        "admin": issue_token(sessions, Role.ADMIN),
    }


@contextmanager
def own_cluster() -> Iterator[sa.URL]:
    """A throwaway PostgreSQL cluster for one test module's roles and settings, whatever
    database the suite runs on (scripts/pg-cluster): its superuser's URL. Skips the test
    where PostgreSQL's server binaries are not installed."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin")):
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql")
    script = ROOT / "scripts" / "pg-cluster"
    folder = tempfile.mkdtemp(prefix="pg.")  # not pytest's tmp_path: postgres may not enter it
    try:
        started = subprocess.run(
            [script, "start", folder], capture_output=True, text=True, check=True, timeout=120
        )
        yield sa.make_url(started.stdout.strip())
    finally:
        subprocess.run([script, "stop", folder], check=False, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)
