"""Webhooks to a real HTTP receiver on 127.0.0.1: signed, content-free, retried, disabled."""

from __future__ import annotations

import hashlib
import hmac
import io
import ipaddress
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from app import webhook_targets
from app.logs import LogFormat, configure
from app.models import Contact, WebhookAttempt, WebhookDelivery, WebhookSubscription
from app.security import Role
from app.settings import Settings
from app.webhook_targets import REFUSED
from app.webhooks import REFUSED_ADDRESS, Deliverer, DeliveryPolicy, deliver_due
from policies.model import Channel
from tests.conftest import FIXTURES, Running, add_employee, issue_token, run_service
from tests.mail import compose, send
from tests.test_contacts_filing import INBOX, SIGNED, dsn

ALL_SCOPES = ("webhooks:write", "messages:read", "contacts:read", "decisions:read")
# The receiver listens on 127.0.0.1, which webhooks may reach only when the operator allows it.
LOOPBACK_ALLOWED = {"webhook_allow_networks": [ipaddress.ip_network("127.0.0.0/8")]}
STALL = 10.0  # seconds a stalling receiver holds on, however long it is waited for
PRIVATE_CAPTURES = (
    (FIXTURES / "plumbing-policy.yaml")
    .read_text()
    .replace('version: "test"', 'version: "private"')
    .replace("default_outcome: hold", "default_outcome: hold\ndefault_visibility: private")
)


@dataclass
class Receiver:
    """A real HTTP server that records what it is sent and answers with `status`."""

    status: int = 200
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    url: str = ""
    # Instead of answering: these bytes, then `stall_with` every `stall_pace` seconds, for
    # `STALL` seconds (a receiver that holds the delivery as long as it likes).
    stall_start: bytes = b""
    stall_with: bytes = b""
    stall_pace: float = 0.1
    before_answer: Callable[[], None] | None = None  # what happens while a delivery waits

    def events(self) -> list[str]:
        return [json.loads(body)["type"] for _, body in self.received]


@pytest.fixture
def running(settings: Settings) -> Iterator[Running]:
    """The service with its own delivery task idle, so that each test delivers by the clock
    it chooses (the last test runs the task itself); loopback receivers allowed."""
    idle = settings.model_copy(update={"webhook_interval": 3600.0, **LOOPBACK_ALLOWED})
    with run_service(idle) as service:
        yield service


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            if state.stall_with:
                self.stall()
                return
            if state.before_answer is not None:
                state.before_answer()
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            state.arrived.set()

        def stall(self) -> None:
            until = time.monotonic() + STALL
            try:
                self.wfile.write(state.stall_start)
                while time.monotonic() < until:
                    self.wfile.write(state.stall_with)
                    time.sleep(state.stall_pace)
            except OSError:
                pass  # the client gave up, as it should
            self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # serve_forever looks for a shutdown every poll_interval: 0.5 s by default, at each teardown
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield state
    server.shutdown()
    server.server_close()


def _subscribe(
    running: Running, receiver: Receiver, events: list[str]
) -> tuple[str, dict[str, Any]]:
    token = issue_token(running.runtime.sessions, Role.INTEGRATION, scopes=ALL_SCOPES)
    with running.client(token) as api:
        created = api.post("/api/v1/webhooks", json={"url": receiver.url, "events": events})
    assert created.status_code == 201, created.text
    return token, created.json()


def _deliver(running: Running, now: datetime, policy: DeliveryPolicy = DeliveryPolicy()) -> int:
    """Deliver what is due, to the networks the service's settings allow, as its job does."""
    allowed = tuple(running.runtime.settings.webhook_allow_networks)
    with webhook_targets.client(allowed) as client:
        return deliver_due(
            running.runtime.sessions, client, now, replace(policy, allowed_networks=allowed)
        )


def test_a_capture_is_delivered_signed_and_content_free(
    running: Running, receiver: Receiver
) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    _, hook = _subscribe(
        running, receiver, ["message.captured", "contact.created", "decision.recorded"]
    )
    assert send(running.smtp_port, compose(subject="CANARY-SUBJECT"))[0] == 250

    sent = _deliver(running, datetime.now(UTC))

    assert sent == 3
    assert sorted(receiver.events()) == ["contact.created", "decision.recorded", "message.captured"]
    for headers, body in receiver.received:
        expected = hmac.new(
            hook["secret"].encode(),
            headers["mailroom-timestamp"].encode() + b"." + body,
            hashlib.sha256,
        ).hexdigest()
        assert headers["mailroom-signature"] == f"v1={expected}"
        assert headers["mailroom-event"] == json.loads(body)["type"]
        assert b"CANARY" not in body and b"customer.example" not in body
    captured = next(json.loads(b) for _, b in receiver.received if b"message.captured" in b)
    assert set(captured["data"]) == {"message_id", "employee_id", "channel"}
    assert _deliver(running, datetime.now(UTC)) == 0, "a delivered event is not sent again"


def test_a_private_capture_is_not_announced_to_integrations(
    running: Running, receiver: Receiver
) -> None:
    """An integration may not read a private capture (the API answers 404), so it is not told
    that one was made either; the decision itself is still recorded."""
    add_employee(running.runtime.sessions, "alice@example.com")
    admin = issue_token(running.runtime.sessions, Role.ADMIN)
    with running.client(admin) as api:
        published = api.put(
            "/api/v1/policy",
            content=PRIVATE_CAPTURES,
            headers={"Content-Type": "application/yaml"},
        )
        assert published.status_code == 200, published.text
    token, _ = _subscribe(running, receiver, ["message.captured", "decision.recorded"])
    assert send(running.smtp_port, compose())[0] == 250

    _deliver(running, datetime.now(UTC))

    with running.client(token) as api:
        assert api.get("/api/v1/messages").json()["items"] == []  # control: it may not read it
    assert receiver.events() == ["decision.recorded"]
    decided = json.loads(receiver.received[0][1])["data"]
    assert decided["outcome"] == "capture"


def test_a_private_capture_its_owner_shares_is_announced_then(
    running: Running, receiver: Receiver
) -> None:
    """Integrations may read it from then on, and its id is older than those they have
    seen: without the event they would never learn of it."""
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    admin = issue_token(running.runtime.sessions, Role.ADMIN)
    with running.client(admin) as api:
        published = api.put(
            "/api/v1/policy",
            content=PRIVATE_CAPTURES,
            headers={"Content-Type": "application/yaml"},
        )
        assert published.status_code == 200, published.text
    token, _ = _subscribe(running, receiver, ["message.captured"])
    assert send(running.smtp_port, compose())[0] == 250
    employee = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    with running.client(employee) as api:
        (message,) = api.get("/api/v1/messages").json()["items"]
        for visibility in ("subject_only", "shared", "private", "shared"):
            changed = api.patch(
                f"/api/v1/messages/{message['id']}", json={"visibility": visibility}
            )
            assert changed.status_code == 200, changed.text

    _deliver(running, datetime.now(UTC))

    with running.client(token) as api:
        assert api.get(f"/api/v1/messages/{message['id']}").status_code == 200
    # Announced when it became readable, and again when it became readable again.
    announced = [json.loads(b)["data"] for _, b in receiver.received]
    assert [a["message_id"] for a in announced] == [message["id"]] * 2
    assert {a["employee_id"] for a in announced} == {alice}


def test_failures_back_off_exponentially_and_disable_the_subscription(
    running: Running, receiver: Receiver
) -> None:
    receiver.status = 500
    add_employee(running.runtime.sessions, "alice@example.com")
    token, hook = _subscribe(running, receiver, ["decision.recorded"])
    assert send(running.smtp_port, compose())[0] == 250
    policy = DeliveryPolicy(base_delay=10, max_attempts=10, disable_after=3)
    start = datetime.now(UTC)

    schedule = []
    now = start
    for _ in range(3):
        assert _deliver(running, now, policy) == 1
        assert _deliver(running, now, policy) == 0, "not retried before its time"
        with running.runtime.sessions() as session:
            delivery = session.scalars(sa.select(WebhookDelivery)).one()
            schedule.append((delivery.next_attempt_at - now).total_seconds())
            now = delivery.next_attempt_at

    assert schedule == [10.0, 20.0, 40.0]
    assert _deliver(running, now + timedelta(days=1), policy) == 0, "disabled: nothing sent"
    with running.client(token) as api:
        state = api.get(f"/api/v1/webhooks/{hook['id']}").json()
        (logged,) = api.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()["items"]
    assert (state["active"], state["consecutive_failures"]) == (False, 3)
    assert [a["status_code"] for a in logged["log"]] == [500, 500, 500]
    assert (logged["status"], logged["attempts"]) == ("pending", 3)

    receiver.status = 200
    with running.client(token) as api:
        api.patch(f"/api/v1/webhooks/{hook['id']}", json={"active": True})
    assert _deliver(running, now + timedelta(days=1), policy) == 1
    with running.runtime.sessions() as session:
        assert session.scalars(sa.select(WebhookDelivery.status)).one() == "delivered"
        assert session.scalars(sa.select(WebhookSubscription.consecutive_failures)).one() == 0


def test_an_unreachable_receiver_is_logged_and_given_up_after_the_last_attempt(
    running: Running,
) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    token = issue_token(running.runtime.sessions, Role.INTEGRATION, scopes=ALL_SCOPES)
    with running.client(token) as api:
        hook = api.post(
            "/api/v1/webhooks",
            json={"url": "http://127.0.0.1:9/closed", "events": ["decision.recorded"]},
        ).json()
    assert send(running.smtp_port, compose())[0] == 250
    policy = DeliveryPolicy(base_delay=1, max_attempts=2, disable_after=50)

    _deliver(running, datetime.now(UTC), policy)
    _deliver(running, datetime.now(UTC) + timedelta(hours=1), policy)

    with running.client(token) as api:
        (logged,) = api.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()["items"]
    assert (logged["status"], logged["attempts"]) == ("failed", 2)
    assert [a["error"] for a in logged["log"]] == ["ConnectError", "ConnectError"]


def test_a_subscription_needs_the_scope_of_each_event(running: Running, receiver: Receiver) -> None:
    token = issue_token(
        running.runtime.sessions, Role.INTEGRATION, scopes=("webhooks:write", "decisions:read")
    )
    other = issue_token(running.runtime.sessions, Role.INTEGRATION, scopes=ALL_SCOPES)
    with running.client(token) as api:
        refused = api.post(
            "/api/v1/webhooks", json={"url": receiver.url, "events": ["contact.created"]}
        )
        allowed = api.post(
            "/api/v1/webhooks", json={"url": receiver.url, "events": ["decision.recorded"]}
        )
        unknown = api.post("/api/v1/webhooks", json={"url": receiver.url, "events": ["x.y"]})
        ftp = api.post(
            "/api/v1/webhooks", json={"url": "ftp://h/x", "events": ["decision.recorded"]}
        )
    with running.client(other) as api:
        foreign = api.get(f"/api/v1/webhooks/{allowed.json()['id']}")

    assert refused.status_code == 403 and "contacts:read" in refused.json()["title"]
    assert allowed.status_code == 201
    assert (unknown.status_code, ftp.status_code, foreign.status_code) == (422, 422, 404)


def test_contact_updates_and_erasures_are_events_too(running: Running, receiver: Receiver) -> None:
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    assert send(running.smtp_port, compose())[0] == 250
    _subscribe(running, receiver, ["contact.updated", "contact.erased"])
    employee = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    officer = issue_token(running.runtime.sessions, Role.COMPLIANCE)
    with running.client(employee) as api:
        contact = api.get("/api/v1/contacts").json()["items"][0]["id"]
        api.patch(f"/api/v1/contacts/{contact}", json={"name": "Robert Builder"})
    with running.client(officer) as api:
        api.post("/api/v1/erasures", json={"address": "bob@customer.example"})

    _deliver(running, datetime.now(UTC))

    assert [(json.loads(b)["type"], json.loads(b)["data"]) for _, b in receiver.received] == [
        ("contact.updated", {"contact_id": contact}),
        ("contact.erased", {"contact_id": contact}),
    ]


def test_an_erasure_made_while_a_subscription_is_disabled_is_sent_once_it_is_enabled(
    running: Running, receiver: Receiver
) -> None:
    """An integration that copies contacts must hear of every erasure (GDPR Art. 19), also
    one made while failures had disabled its subscription; other events are not kept."""
    add_employee(running.runtime.sessions, "alice@example.com")
    assert send(running.smtp_port, compose())[0] == 250
    token, hook = _subscribe(running, receiver, ["contact.erased", "decision.recorded"])
    receiver.status = 500
    assert send(running.smtp_port, compose(message_id="<failing@example.com>"))[0] == 250
    policy = DeliveryPolicy(base_delay=1, disable_after=1)
    assert _deliver(running, datetime.now(UTC), policy) == 1  # fails, and disables it
    officer = issue_token(running.runtime.sessions, Role.COMPLIANCE)
    with running.client(officer) as api:
        erased = api.post("/api/v1/erasures", json={"address": "bob@customer.example"})
        assert erased.status_code == 201, erased.text
    assert send(running.smtp_port, compose(message_id="<meanwhile@example.com>"))[0] == 250

    receiver.status, receiver.received = 200, []
    with running.client(token) as api:
        assert api.get(f"/api/v1/webhooks/{hook['id']}").json()["active"] is False
        api.patch(f"/api/v1/webhooks/{hook['id']}", json={"active": True})
    _deliver(running, datetime.now(UTC) + timedelta(hours=1), policy)

    assert sorted(receiver.events()) == ["contact.erased", "decision.recorded"]


def test_merging_two_contacts_tells_integrations_both_changed(
    running: Running, receiver: Receiver
) -> None:
    """A merge fills the survivor's empty fields and points the other contact at it: both
    are updated, as a renamed one is, so an integration mirroring contacts hears of it."""
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    for address, mid in (("bob@customer.example", "<m1@x>"), ("rob@customer.example", "<m2@x>")):
        assert send(running.smtp_port, compose(to=f"Bob <{address}>", message_id=mid))[0] == 250
    _subscribe(running, receiver, ["contact.updated"])
    employee = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    with running.client(employee) as api:
        ids = {c["address"]: c["id"] for c in api.get("/api/v1/contacts").json()["items"]}
        source, into = ids["rob@customer.example"], ids["bob@customer.example"]
        merged = api.post(f"/api/v1/contacts/{source}/merge", json={"into": into})
    assert merged.status_code == 200, merged.text

    _deliver(running, datetime.now(UTC))

    updated = sorted(json.loads(b)["data"]["contact_id"] for _, b in receiver.received)
    assert receiver.events() == ["contact.updated"] * 2
    assert updated == sorted([source, into])


def test_a_newer_signature_or_a_bounce_updating_a_contact_is_an_event_too(
    running: Running, receiver: Receiver
) -> None:
    """A contact's title, phone and organization follow their signature, and a bounce marks
    them undeliverable: an integration mirroring contacts hears of both, as of a rename."""
    add_employee(running.runtime.sessions, "alice@example.com")
    pipeline = running.runtime.pipeline

    def signed(title: str, date: str, message_id: str) -> bytes:
        msg = compose(
            sender="Jane Doe <jane@acme.example>",
            to="Alice <alice@example.com>",
            body=SIGNED.replace("Head of Procurement", title),
            message_id=message_id,
        )
        msg.replace_header("Date", date)
        return msg.as_bytes()

    pipeline.process(
        signed("Head of Procurement", "Mon, 02 Nov 2026 09:00:00 +0000", "<s1@acme.example>"),
        INBOX,
        Channel.IMPORT,
    )
    _subscribe(running, receiver, ["contact.updated"])
    pipeline.process(
        signed("Chief Operating Officer", "Tue, 24 Nov 2026 09:00:00 +0000", "<s2@acme.example>"),
        INBOX,
        Channel.IMPORT,
    )
    pipeline.process(dsn(failed="jane@acme.example"), INBOX, Channel.IMPORT)
    with running.runtime.sessions() as session:
        jane = session.scalar(sa.select(Contact.id).where(Contact.address == "jane@acme.example"))

    _deliver(running, datetime.now(UTC))

    assert [(json.loads(b)["type"], json.loads(b)["data"]) for _, b in receiver.received] == [
        ("contact.updated", {"contact_id": jane}),
        ("contact.updated", {"contact_id": jane}),
    ]


def test_a_new_webhook_and_its_deliveries_never_take_the_ids_of_a_removed_one(
    running: Running, receiver: Receiver
) -> None:
    """Receivers recognise a delivery sent again by its Mailroom-Delivery id. Were a new
    subscription's deliveries given the ids of a removed one's, the receiver would take its
    events for those it had already seen, and drop them."""
    add_employee(running.runtime.sessions, "alice@example.com")
    token, first = _subscribe(running, receiver, ["decision.recorded"])
    assert send(running.smtp_port, compose(message_id="<one@example.com>"))[0] == 250
    assert _deliver(running, datetime.now(UTC)) == 1
    with running.client(token) as api:
        assert api.delete(f"/api/v1/webhooks/{first['id']}").status_code == 204

    _, second = _subscribe(running, receiver, ["decision.recorded"])
    assert send(running.smtp_port, compose(message_id="<two@example.com>"))[0] == 250
    assert _deliver(running, datetime.now(UTC)) == 1

    assert second["id"] > first["id"]
    (old, new) = (int(headers["mailroom-delivery"]) for headers, _ in receiver.received)
    assert new > old


def test_the_running_service_delivers_by_itself(settings: Settings, receiver: Receiver) -> None:
    busy = settings.model_copy(update={"webhook_interval": 0.2, **LOOPBACK_ALLOWED})
    with run_service(busy) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        _subscribe(running, receiver, ["decision.recorded"])
        assert send(running.smtp_port, compose())[0] == 250
        assert receiver.arrived.wait(timeout=30), "the delivery task never sent the event"
    assert receiver.events() == ["decision.recorded"]


def test_a_webhook_url_and_its_secret_reach_no_log(running: Running, receiver: Receiver) -> None:
    """Receivers put their secret in the URL (Slack's hooks.slack.com/services/...); httpx,
    at INFO, logged every request with its URL."""
    canary = f"c{uuid.uuid4().hex}"
    receiver.url += f"/{canary}-path?token={canary}-query"
    _subscribe(running, receiver, ["decision.recorded"])
    add_employee(running.runtime.sessions, "alice@example.com")
    assert send(running.smtp_port, compose())[0] == 250
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure(LogFormat.JSON, level="INFO", stream=out)
        assert _deliver(running, datetime.now(UTC)) == 1
    finally:
        root.handlers, root.level = handlers, level
    assert receiver.events() == ["decision.recorded"]
    assert canary not in out.getvalue()


def test_webhooks_to_this_host_or_private_networks_are_refused(settings: Settings) -> None:
    """A delivery's status code can be read back, so these would let an integration probe the
    host's own services and the network behind it (SSRF)."""
    with run_service(settings) as running:
        token = issue_token(running.runtime.sessions, Role.INTEGRATION, scopes=ALL_SCOPES)
        with running.client(token) as api:

            def subscribe(url: str) -> httpx.Response:
                return api.post(
                    "/api/v1/webhooks", json={"url": url, "events": ["decision.recorded"]}
                )

            refused = {
                url: subscribe(url)
                for url in (
                    "http://127.0.0.1:5432/",
                    "http://localhost:8080/hook",
                    "http://169.254.169.254/latest/meta-data/",
                    "http://10.0.0.1/admin",
                    "http://192.168.1.1/",
                    "http://0.0.0.0:8000/",
                    "http://224.0.0.1/",
                    "http://[::1]/",
                    "http://[fd00::1]/",
                    "http://[::ffff:127.0.0.1]/",
                )
            }
            public = subscribe("https://93.184.215.14/hook")  # an IP literal: nothing is sent
            listed = api.get("/api/v1/webhooks").json()
    assert {url: r.status_code for url, r in refused.items()} == dict.fromkeys(refused, 422)
    assert all(r.json()["title"] == REFUSED for r in refused.values())
    assert public.status_code == 201
    assert [hook["url"] for hook in listed] == ["https://93.184.215.14/hook"]


def test_allowed_networks_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILROOM_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8, fd00::/8,10.1.2.3")
    assert [str(n) for n in Settings().webhook_allow_networks] == [
        "127.0.0.0/8",
        "fd00::/8",
        "10.1.2.3/32",
    ]


def test_an_allowed_network_admits_only_itself(running: Running) -> None:
    token = issue_token(running.runtime.sessions, Role.INTEGRATION, scopes=ALL_SCOPES)
    with running.client(token) as api:
        lan = api.post(
            "/api/v1/webhooks", json={"url": "http://10.0.0.1/", "events": ["decision.recorded"]}
        )
    assert lan.status_code == 422, "127.0.0.0/8 is allowed here, 10.0.0.0/8 is not"


def test_a_delivery_to_a_host_no_longer_allowed_is_refused_and_logged(
    running: Running, receiver: Receiver
) -> None:
    """Checked again at delivery: a name may resolve elsewhere by then, or the operator may
    have withdrawn the network from MAILROOM_WEBHOOK_ALLOW_NETWORKS."""
    add_employee(running.runtime.sessions, "alice@example.com")
    token, hook = _subscribe(running, receiver, ["decision.recorded"])
    assert send(running.smtp_port, compose())[0] == 250

    with webhook_targets.client() as client:
        deliver_due(running.runtime.sessions, client, datetime.now(UTC), DeliveryPolicy())

    assert receiver.received == []
    with running.client(token) as api:
        (logged,) = api.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()["items"]
    assert (logged["status"], logged["attempts"]) == ("pending", 1)
    assert [(a["status_code"], a["error"]) for a in logged["log"]] == [(None, REFUSED_ADDRESS)]


@dataclass
class RebindingDns:
    """A name server for one name that gives its first `honest` answers an address the
    operator allows, and every later one another (a rebinding server, TTL 0): what leaves the
    machine, so the one thing stood in for."""

    name: str
    allowed: str
    target: str
    honest: int
    asked: int = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = socket.getaddrinfo

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host != self.name:
                return real(host, port, *args, **kwargs)
            self.asked += 1
            address = self.allowed if self.asked <= self.honest else self.target
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_delivery_goes_to_the_address_checked_not_one_a_name_rebinds_to(
    settings: Settings, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name server that answers the checks with an allowed address and the next lookup
    with another (rebinding) must not take the delivery, and its answer back, there: here
    the receiver on 127.0.0.1, while only 127.0.0.2 is allowed."""
    port = int(receiver.url.rsplit(":", 1)[1].split("/", 1)[0])
    dns = RebindingDns("hooks.rebind.test", allowed="127.0.0.2", target="127.0.0.1", honest=2)
    dns.install(monkeypatch)
    allowed = (ipaddress.ip_network(dns.allowed),)
    only = {"webhook_interval": 3600.0, "webhook_allow_networks": list(allowed)}
    with run_service(settings.model_copy(update=only)) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        token = issue_token(running.runtime.sessions, Role.INTEGRATION, scopes=ALL_SCOPES)
        hook = {"url": f"http://{dns.name}:{port}/hook", "events": ["decision.recorded"]}
        with running.client(token) as api:
            created = api.post("/api/v1/webhooks", json=hook)
        assert created.status_code == 201, created.text
        assert send(running.smtp_port, compose())[0] == 250
        deliverer = Deliverer(running.runtime.sessions, DeliveryPolicy(allowed_networks=allowed))
        try:
            assert deliverer.run() == 1  # as the service's delivery job does
        finally:
            deliverer.close()
        with running.client(token) as api:
            log = api.get(f"/api/v1/webhooks/{created.json()['id']}/deliveries").json()
    assert receiver.received == [], "sent to an address no check allowed"
    assert [a["status_code"] for a in log["items"][0]["log"]] == [None]


def test_a_webhook_url_longer_than_stored_is_a_422_not_a_500(running: Running) -> None:
    """webhook_subscriptions.url holds 2,000 characters (PostgreSQL refused a longer one with
    a 500; SQLite kept it). Measured as stored: 500 letters é are 3,000 characters."""
    token = issue_token(running.runtime.sessions, Role.INTEGRATION, scopes=ALL_SCOPES)
    public = "https://93.184.215.14/"  # an IP literal: nothing is sent

    def subscribe(path: str) -> httpx.Response:
        hook = {"url": public + path, "events": ["decision.recorded"]}
        return api.post("/api/v1/webhooks", json=hook)

    with running.client(token) as api:
        refused = [subscribe("a" * 1979), subscribe("é" * 500)]
        longest = subscribe("a" * 1978)
    assert [r.status_code for r in refused] == [422, 422], [r.text for r in refused]
    assert longest.status_code == 201, longest.text


def test_a_receiver_streaming_an_endless_answer_does_not_hold_deliveries(
    running: Running, receiver: Receiver
) -> None:
    """Only the status code counts: the body was read whole, into memory, for as long as the
    receiver sent it, while every other subscription's deliveries waited (and memory grew)."""
    receiver.stall_start = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n"
    receiver.stall_with, receiver.stall_pace = b"x" * 65536, 0.01
    add_employee(running.runtime.sessions, "alice@example.com")
    _subscribe(running, receiver, ["decision.recorded"])
    assert send(running.smtp_port, compose())[0] == 250

    started = time.monotonic()
    assert _deliver(running, datetime.now(UTC), DeliveryPolicy(timeout=2)) == 1
    took = time.monotonic() - started

    assert took < STALL / 2, f"the delivery waited {took:.1f} s for the receiver's body"
    with running.runtime.sessions() as session:
        assert session.scalars(sa.select(WebhookDelivery.status)).one() == "delivered"


def test_a_receiver_trickling_its_answer_is_given_up_at_the_timeout(
    running: Running, receiver: Receiver
) -> None:
    """The timeout bounds the whole delivery, not each wait: a header line every 0.1 s kept
    each read short of it, and the delivery job (every subscription's deliveries behind this
    one) waited as long as the receiver went on."""
    receiver.stall_start, receiver.stall_with = b"HTTP/1.1 200 OK\r\n", b"X-Pad: a\r\n"
    add_employee(running.runtime.sessions, "alice@example.com")
    token, hook = _subscribe(running, receiver, ["decision.recorded"])
    assert send(running.smtp_port, compose())[0] == 250

    started = time.monotonic()
    assert _deliver(running, datetime.now(UTC), DeliveryPolicy(timeout=2)) == 1
    took = time.monotonic() - started

    assert took < STALL / 2, f"the delivery waited {took:.1f} s for the receiver"
    with running.client(token) as api:
        (logged,) = api.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()["items"]
    assert (logged["status"], [a["error"] for a in logged["log"]]) == ("pending", ["ReadTimeout"])


def test_a_revoked_integrations_subscriptions_queue_nothing_more(
    running: Running, receiver: Receiver
) -> None:
    """Revoking a token ends its deliveries; its subscriptions went on queueing an event for
    every message, in the capture's own transaction, for ever (nothing ever sent or removed
    them)."""
    add_employee(running.runtime.sessions, "alice@example.com")
    token, _ = _subscribe(running, receiver, ["decision.recorded", "message.captured"])
    with running.runtime.sessions() as session:
        own = session.scalars(sa.select(WebhookSubscription.token_id)).one()
    with running.client(token) as api:
        assert api.delete(f"/api/v1/tokens/{own}").status_code == 204

    for n in range(3):
        assert send(running.smtp_port, compose(message_id=f"<after-{n}@example.com>"))[0] == 250

    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 0


def test_a_token_has_at_most_twenty_subscriptions(running: Running) -> None:
    """Each event is queued for every subscription in the transaction of the message that
    causes it: 5,000 subscriptions made a message 30 times slower to capture (12 ms -> 360 ms
    a message), and one integration could subscribe without end."""
    token = issue_token(running.runtime.sessions, Role.INTEGRATION, scopes=ALL_SCOPES)
    hook = {"url": "https://93.184.215.14/hook", "events": ["decision.recorded"]}  # not sent
    with running.client(token) as api:
        made = [api.post("/api/v1/webhooks", json=hook) for _ in range(21)]
        assert api.delete(f"/api/v1/webhooks/{made[0].json()['id']}").status_code == 204
        again = api.post("/api/v1/webhooks", json=hook)
    assert [r.status_code for r in made] == [201] * 20 + [409]
    assert again.status_code == 201, "room again once one is deleted"


def _unsubscribe_during_a_delivery(
    running: Running, receiver: Receiver, token: str, hook: dict[str, Any]
) -> None:
    """The integration deletes the subscription while the first delivery waits for its answer."""

    def unsubscribe() -> None:
        receiver.before_answer = None  # once
        with running.client(token) as api:
            assert api.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 204

    receiver.before_answer = unsubscribe


def test_a_subscription_deleted_while_its_delivery_waits_fails_no_delivery_run(
    running: Running, receiver: Receiver
) -> None:
    """The attempt was recorded for a delivery the deletion had removed (with its log): the
    run failed on the foreign key, and the rest of its batch waited for the next run."""
    add_employee(running.runtime.sessions, "alice@example.com")
    token, leaving = _subscribe(running, receiver, ["decision.recorded"])
    with running.client(token) as api:
        staying = api.post(
            "/api/v1/webhooks", json={"url": receiver.url, "events": ["decision.recorded"]}
        )
    assert staying.status_code == 201, staying.text
    assert send(running.smtp_port, compose())[0] == 250
    _unsubscribe_during_a_delivery(running, receiver, token, leaving)

    assert _deliver(running, datetime.now(UTC)) == 2

    assert receiver.events() == ["decision.recorded"] * 2  # the other one went all the same
    with running.runtime.sessions() as session:
        assert session.scalars(sa.select(WebhookDelivery.status)).all() == ["delivered"]
        assert session.scalar(sa.select(sa.func.count()).select_from(WebhookAttempt)) == 1


def test_a_subscription_deleted_while_its_events_go_out_is_sent_no_more(
    running: Running, receiver: Receiver
) -> None:
    """A run reads a batch of up to 50 and sends them one by one, each waiting up to the
    timeout: the rest of the batch still went to a subscription deleted (or paused, or whose
    token was revoked) meanwhile, for minutes."""
    add_employee(running.runtime.sessions, "alice@example.com")
    token, hook = _subscribe(running, receiver, ["decision.recorded"])
    for n in range(3):
        assert send(running.smtp_port, compose(message_id=f"<batch-{n}@example.com>"))[0] == 250
    _unsubscribe_during_a_delivery(running, receiver, token, hook)

    _deliver(running, datetime.now(UTC))

    assert len(receiver.received) == 1, "sent on after the subscription was deleted"
