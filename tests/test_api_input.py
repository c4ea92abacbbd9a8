"""Bad input through the real API gets a clear 4xx problem, never a 500: cursors, times, and
control characters (PostgreSQL cannot store NUL)."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.security import Role
from app.settings import Settings
from tests.conftest import Running, add_employee, issue_token, run_service, write_lock
from tests.mail import compose, send
from tests.web import csrf_of, sign_in


def _cursor(n: int) -> str:
    return base64.urlsafe_b64encode(str(n).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("role", "path"),
    [
        ("admin", "/api/v1/employees"),
        ("admin", "/api/v1/tokens"),
        ("employee", "/api/v1/messages"),
        ("employee", "/api/v1/contacts"),
        ("employee", "/api/v1/companies"),
        ("employee", "/api/v1/review"),
        ("employee", "/api/v1/me/personal-contacts"),
        ("compliance", "/api/v1/decisions"),
    ],
)
def test_a_cursor_past_the_ids_a_database_holds_is_a_400(
    running: Running, tokens: dict[str, str], role: str, path: str
) -> None:
    with running.client(tokens[role]) as api:
        past = api.get(path, params={"cursor": _cursor(2**63)})
        last = api.get(path, params={"cursor": _cursor(2**31 - 1)})

    assert past.status_code == 400, past.text
    assert past.headers["content-type"] == "application/problem+json"
    assert past.json()["detail"] == "Malformed cursor."
    assert last.status_code == 200


@pytest.mark.parametrize(
    ("role", "path", "params"),
    [
        ("employee", "/api/v1/messages", {"since": "0001-01-01T00:00:00+10:00"}),
        ("employee", "/api/v1/messages", {"until": "9999-12-31T23:59:59-10:00"}),
        ("employee", "/api/v1/contacts", {"updated_since": "0001-01-01T00:00:00+10:00"}),
        ("compliance", "/api/v1/decisions", {"since": "0001-01-01T00:00:00+10:00"}),
        ("compliance", "/api/v1/decisions/aggregates", {"until": "0001-01-02T00:00:00Z"}),
    ],
)
def test_a_time_at_the_edge_of_the_calendar_is_a_422_that_says_which_years(
    running: Running, tokens: dict[str, str], role: str, path: str, params: dict[str, str]
) -> None:
    with running.client(tokens[role]) as api:
        response = api.get(path, params=params)

    assert response.status_code == 422, response.text
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["query", *params]
    assert "give a time in the years 0002 to 9998" in problem["msg"]


def test_times_inside_the_calendar_and_without_a_zone_are_answered(
    running: Running, tokens: dict[str, str]
) -> None:
    earliest, latest = "0002-01-01T00:00:00", "9998-12-31T23:59:59+00:00"
    with running.client(tokens["compliance"]) as api:
        listed = api.get("/api/v1/decisions", params={"since": earliest, "until": latest})
        counted = api.get("/api/v1/decisions/aggregates", params={"until": "0002-01-02"})
    with running.client(tokens["employee"]) as api:
        messages = api.get("/api/v1/messages", params={"since": earliest, "until": latest})

    assert (listed.status_code, counted.status_code, messages.status_code) == (200, 200, 200)
    assert counted.json()["since"] == "0001-12-03T00:00:00Z"


MAILBOX = {"employee": "alice@example.com", "host": "h", "username": "u", "password": "p"}


@pytest.mark.parametrize(
    ("role", "method", "path", "params", "body"),
    [
        ("admin", "POST", "/api/v1/employees", None, {"email": "a\x00b@example.com"}),
        ("admin", "POST", "/api/v1/employees", None, {"email": "c@example.com", "name": "x\x00"}),
        (
            "admin",
            "POST",
            "/api/v1/employees",
            None,
            {"email": "d@x.com", "aliases": ["e\x00@x.com"]},
        ),
        ("admin", "POST", "/api/v1/tokens", None, {"role": "admin", "label": "\x00"}),
        ("admin", "POST", "/api/v1/mailboxes", None, MAILBOX | {"host": "h\x00"}),
        ("admin", "POST", "/api/v1/mailboxes", None, MAILBOX | {"username": "u\x00"}),
        ("admin", "POST", "/api/v1/mailboxes", None, MAILBOX | {"folders": ["IN\x00BOX"]}),
        ("admin", "POST", "/api/v1/mailboxes", None, MAILBOX | {"employee": "alice\x00@x.com"}),
        ("employee", "GET", "/api/v1/contacts", {"q": "a\x00b"}, None),
        ("employee", "GET", "/api/v1/companies", {"q": "a\x00b"}, None),
        ("employee", "PATCH", "/api/v1/me/settings", None, {"private_tags": ["[pri\x00]"]}),
        ("employee", "POST", "/api/v1/me/personal-contacts", None, {"address": "m\x00@x.com"}),
        ("compliance", "POST", "/api/v1/erasures", None, {"address": "a\x00@b.example"}),
        ("compliance", "POST", "/api/v1/objections", None, {"address": "a\x01@b.example"}),
    ],
)
def test_a_control_character_in_a_string_is_a_422_that_says_so(
    running: Running,
    tokens: dict[str, str],
    role: str,
    method: str,
    path: str,
    params: dict[str, str] | None,
    body: dict[str, object] | None,
) -> None:
    with running.client(tokens[role]) as api:
        response = api.request(method, path, params=params, json=body)

    assert response.status_code == 422, response.text[:300]
    (problem,) = response.json()["detail"]
    assert "control characters (NUL, tab, line breaks...) are not allowed" in problem["msg"]


def test_a_contact_name_with_a_nul_is_refused_and_the_name_stays(
    running: Running, tokens: dict[str, str]
) -> None:
    assert send(running.smtp_port, compose())[0] == 250
    with running.client(tokens["employee"]) as api:
        (contact,) = api.get("/api/v1/contacts").json()["items"]
        renamed = api.patch(f"/api/v1/contacts/{contact['id']}", json={"name": "Bob\x00"})
        after = api.get(f"/api/v1/contacts/{contact['id']}").json()

    assert renamed.status_code == 422
    assert after["name"] == contact["name"]


def test_explaining_as_an_employee_named_with_a_nul_is_a_422(
    running: Running, tokens: dict[str, str]
) -> None:
    raw = b"From: bob@customer.example\r\nTo: alice@example.com\r\nSubject: hi\r\n\r\nhi\r\n"
    with running.client(tokens["compliance"]) as api:
        response = api.post(
            "/api/v1/explain",
            params={"employee": "alice\x00@example.com"},
            content=raw,
            headers={"Content-Type": "message/rfc822"},
        )

    assert response.status_code == 422, response.text[:300]


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/api/v1/employees", "text/plain"),
        ("/api/v1/erasures", "application/octet-stream"),
        ("/api/v1/tokens", "multipart/form-data; boundary=x"),
        ("/sign-in", "application/x-www-form-urlencoded"),
        ("/sign-in/link", "multipart/form-data; boundary=x"),
    ],
)
def test_a_large_body_is_refused_whatever_type_it_claims_before_anyone_reads_it(
    running: Running, path: str, content_type: str
) -> None:
    """FastAPI reads a body whole, of any type, before asking for a token: no stranger may
    make the service hold a body of any size in memory by not calling it JSON."""
    with running.client(None) as stranger:
        response = stranger.post(
            path, content=b"token=" + b"a" * 1_000_000, headers={"Content-Type": content_type}
        )

    assert response.status_code == 413, response.text[:300]
    assert response.json()["status"] == 413


def test_the_routes_that_read_larger_bodies_still_take_them(
    running: Running, tokens: dict[str, str]
) -> None:
    padding = "#" + "x" * 99 + "\n"
    policy = running.runtime.pipeline.engine.policy.source + padding * 1000  # 100 KB
    raw = b"From: bob@customer.example\r\nTo: alice@example.com\r\nSubject: hi\r\n\r\n"
    with running.client(tokens["compliance"]) as api:
        explained = api.post(
            "/api/v1/explain",
            content=raw + b"hi there\r\n" * 20_000,  # 200 KB
            headers={"Content-Type": "message/rfc822"},
        )
        published = api.put(
            "/api/v1/policy", content=policy.encode(), headers={"Content-Type": "application/yaml"}
        )

    officer_id = add_employee(running.runtime.sessions, "officer@example.com")
    with sign_in(running, officer_id, Role.COMPLIANCE) as officer:
        csrf = csrf_of(officer.get("/compliance"))
        simulated = officer.post("/compliance/simulate", data={"csrf": csrf, "candidate": policy})

    assert explained.status_code == 200, explained.text[:300]
    assert published.status_code == 200, published.text[:300]
    assert simulated.status_code == 200 and "would change" in simulated.text


@pytest.fixture
def hurried(settings: Settings) -> Iterator[Running]:
    """The service, whose API gives a client 0.5 s to send a request, and holds 3 connections."""
    limits = {"api_request_timeout": 0.5, "api_max_connections": 3}
    with run_service(settings.model_copy(update=limits)) as running:
        yield running


def _answer(connection: socket.socket) -> bytes:
    """One whole answer, read from the socket (b"" if it was closed first)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
    while len(body) < int(fields[b"content-length"]):
        body += connection.recv(4096)
    return head + b"\r\n\r\n" + body


def _api_socket(running: Running) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", running.service.api_port))
    connection.settimeout(10)
    return connection


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"GET /healthz HTTP/1.1\r\nHost: mailroom\r\n",
        b"POST /api/v1/employees HTTP/1.1\r\nHost: mailroom\r\nContent-Length: 40\r\n\r\n{",
    ],
    ids=["nothing", "part-of-the-headers", "part-of-the-body"],
)
def test_a_connection_that_sends_no_whole_request_in_time_is_closed(
    hurried: Running, sent: bytes
) -> None:
    """Such a connection stayed open for good: a few thousand took the process's file
    descriptors, which the SMTP listener needs too."""
    with _api_socket(hurried) as stalled:
        stalled.sendall(sent)
        assert stalled.recv(100) == b""  # closed, without an answer
    with hurried.client(None) as api:
        assert api.get("/healthz").status_code == 200


def test_each_request_on_a_kept_alive_connection_has_the_time_anew(hurried: Running) -> None:
    """Four requests 0.2 s apart: the connection outlives its first 0.5 s, idle at that
    moment."""
    with _api_socket(hurried) as kept:
        for _ in range(4):
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: mailroom\r\n\r\n")
            assert _answer(kept).startswith(b"HTTP/1.1 200 OK\r\n")
            time.sleep(0.2)


def test_connections_over_the_limit_are_answered_503_and_closed(hurried: Running) -> None:
    held = [_api_socket(hurried) for _ in range(3)]
    try:
        with _api_socket(hurried) as fourth:
            assert _answer(fourth).startswith(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After")
            assert fourth.recv(100) == b""
        held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: mailroom\r\n\r\n")
        assert _answer(held[0]).startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        for connection in held:
            connection.close()


def test_an_answer_that_takes_longer_than_the_request_timeout_is_still_given(
    hurried: Running,
) -> None:
    """The time limit is the client's, to send its request: the answer may take longer (here
    the database holds it up for twice that time)."""
    admin = issue_token(hurried.runtime.sessions, Role.ADMIN)
    with ThreadPoolExecutor(1) as pool, hurried.client(admin) as api:
        with write_lock(hurried, table="employees"):
            answer = pool.submit(api.post, "/api/v1/employees", json={"email": "e@example.com"})
            time.sleep(1.0)
        assert answer.result(timeout=30).status_code == 201
