"""Promise 5 through the real API: role by endpoint by ownership, mass assignment, limits."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from app.models import ApiToken, Message
from app.security import Role, hash_token
from app.settings import Settings
from tests.conftest import TEST_SECRET, Running, add_employee, issue_token, run_service
from tests.mail import compose, send

SUBJECT = "Quote for 20 licences CANARY-SUBJECT"
BODY = "Hi Bob,\n\nthe price is CANARY-BODY.\n\nAlice\n"


@dataclass
class World:
    running: Running
    tokens: dict[str, str]
    shared: int  # Alice's capture, shared
    private: int  # Alice's capture, lowered to private
    contact: int
    alice: int
    bob: int


def _world(running: Running) -> World:
    sessions = running.runtime.sessions
    alice = add_employee(sessions, "alice@example.com")
    bob = add_employee(sessions, "bob@example.com")
    tokens = {
        "alice": issue_token(sessions, Role.EMPLOYEE, employee_id=alice),
        "bob": issue_token(sessions, Role.EMPLOYEE, employee_id=bob),
        "compliance": issue_token(sessions, Role.COMPLIANCE),
        "admin": issue_token(sessions, Role.ADMIN),
        "contacts": issue_token(sessions, Role.INTEGRATION, scopes=("contacts:read",)),
        "messages": issue_token(sessions, Role.INTEGRATION, scopes=("messages:read",)),
        "hooks": issue_token(sessions, Role.INTEGRATION, scopes=("webhooks:write",)),
        "bare": issue_token(sessions, Role.INTEGRATION),
    }
    for n in (1, 2):
        mail = compose(subject=f"{SUBJECT} {n}", body=BODY, message_id=f"<m{n}@example.com>")
        assert send(running.smtp_port, mail)[0] == 250
    with sessions() as session:
        shared, private = session.scalars(sa.select(Message.id).order_by(Message.id)).all()
    with running.client(tokens["alice"]) as api:
        lowered = api.patch(f"/api/v1/messages/{private}", json={"visibility": "private"})
        assert lowered.status_code == 200, lowered.text
        contact = api.get("/api/v1/contacts").json()["items"][0]["id"]
    return World(running, tokens, shared, private, contact, alice, bob)


@pytest.fixture
def world(running: Running) -> World:
    return _world(running)


# (method, path, json body or None, {who: expected status}); who is a key of World.tokens,
# or "nobody" for no token at all. Every request here leaves the data as it found it.
MATRIX: list[tuple[str, str, dict[str, Any] | None, dict[str, int]]] = [
    (
        "GET",
        "/api/v1/messages",
        None,
        {
            "alice": 200,
            "bob": 200,
            "messages": 200,
            "compliance": 403,
            "admin": 403,
            "contacts": 403,
            "bare": 403,
            "nobody": 401,
        },
    ),
    (
        "GET",
        "/api/v1/messages/{private}",
        None,
        {
            "alice": 200,
            "bob": 404,
            "messages": 404,
            "compliance": 403,
            "admin": 403,
            "contacts": 403,
            "bare": 403,
            "nobody": 401,
        },
    ),
    (
        "GET",
        "/api/v1/messages/{shared}",
        None,
        {"alice": 200, "bob": 200, "messages": 200, "compliance": 403, "admin": 403},
    ),
    (
        "PATCH",
        "/api/v1/messages/{private}",
        {"visibility": "private"},
        {"alice": 200, "bob": 404, "messages": 403, "compliance": 403, "admin": 403},
    ),
    (
        "PATCH",
        "/api/v1/messages/{shared}",
        {"visibility": "shared"},
        {"alice": 200, "bob": 403, "compliance": 403, "admin": 403, "hooks": 403},
    ),
    (
        "GET",
        "/api/v1/contacts",
        None,
        {
            "alice": 200,
            "compliance": 200,
            "admin": 200,
            "contacts": 200,
            "messages": 403,
            "bare": 403,
            "nobody": 401,
        },
    ),
    (
        "GET",
        "/api/v1/decisions",
        None,
        {"alice": 200, "compliance": 200, "admin": 403, "contacts": 403, "bare": 403},
    ),
    ("GET", "/api/v1/decisions?employee_id={bob}", None, {"alice": 403, "compliance": 200}),
    ("GET", "/api/v1/decisions/aggregates", None, {"alice": 200, "compliance": 200, "admin": 403}),
    ("GET", "/api/v1/decisions/verify", None, {"compliance": 200, "admin": 200, "alice": 403}),
    (
        "GET",
        "/api/v1/review",
        None,
        {"alice": 200, "bob": 200, "compliance": 403, "admin": 403, "contacts": 403},
    ),
    ("POST", "/api/v1/review/{shared}/discard", None, {"bob": 404, "compliance": 403}),
    ("POST", "/api/v1/review/{shared}/capture", None, {"alice": 404, "admin": 403}),
    (
        "GET",
        "/api/v1/me/settings",
        None,
        {"alice": 200, "compliance": 403, "admin": 403, "bare": 403},
    ),
    ("GET", "/api/v1/me/personal-contacts", None, {"bob": 200, "admin": 403}),
    ("GET", "/api/v1/tokens", None, {"admin": 200, "compliance": 403, "alice": 403, "hooks": 403}),
    (
        "POST",
        "/api/v1/erasures",
        {"address": "nobody@elsewhere.example"},
        {"compliance": 201, "alice": 403, "admin": 403, "contacts": 403},
    ),
    (
        "POST",
        "/api/v1/objections",
        {"address": "nobody@elsewhere.example"},
        {"compliance": 201, "alice": 403, "admin": 403},
    ),
    (
        "GET",
        "/api/v1/contacts/{contact}/export",
        None,
        {"compliance": 200, "alice": 403, "admin": 403, "contacts": 403},
    ),
    ("GET", "/api/v1/webhooks", None, {"hooks": 200, "admin": 403, "alice": 403, "bare": 403}),
    (
        "GET",
        "/api/v1/employees",
        None,
        {"admin": 200, "compliance": 403, "alice": 403, "hooks": 403},
    ),
    ("GET", "/api/v1/mailboxes", None, {"admin": 200, "compliance": 403, "alice": 403}),
    (
        "PATCH",
        "/api/v1/mailboxes/999",
        {"enabled": False},
        {"admin": 404, "compliance": 403, "alice": 403, "hooks": 403},
    ),
    (
        "PATCH",
        "/api/v1/mailboxes/999",  # a new password: admins alone, as every other change
        {"password": "new-password"},
        {"admin": 404, "compliance": 403, "alice": 403, "hooks": 403},
    ),
    (
        "DELETE",
        "/api/v1/mailboxes/999",  # none: found by admins alone, to learn it is not there
        None,
        {"admin": 404, "compliance": 403, "alice": 403, "hooks": 403, "bare": 403},
    ),
    (
        "PATCH",
        "/api/v1/contacts/{contact}",
        {"name": "Bob Builder"},
        {"alice": 200, "compliance": 403, "admin": 403, "contacts": 403},
    ),
]


def _cases() -> Iterator[tuple[str, str, dict[str, Any] | None, str, int]]:
    for method, path, body, expected in MATRIX:
        for who, status in expected.items():
            yield method, path, body, who, status


def _call(
    world: World, method: str, path: str, body: dict[str, Any] | None, who: str
) -> tuple[int, str]:
    url = path.format(
        shared=world.shared,
        private=world.private,
        contact=world.contact,
        bob=world.bob,
    )
    with world.running.client(world.tokens.get(who)) as api:
        response = api.request(method, url, json=body)
    return response.status_code, response.text


def test_every_role_gets_exactly_what_is_theirs(world: World) -> None:
    wrong = []
    for method, path, body, who, status in _cases():
        got, text = _call(world, method, path, body, who)
        if got != status:
            wrong.append(f"{who} {method} {path}: {got}, expected {status}: {text[:200]}")
    assert wrong == []


def test_compliance_and_admin_never_see_message_content(world: World) -> None:
    seen = []
    for method, path, body, who, status in _cases():
        if who in ("compliance", "admin") and status < 300:
            seen.append(_call(world, method, path, body, who)[1])
    assert seen, "control: some calls must have been allowed"
    assert not [t for t in seen if "CANARY" in t]


def test_a_colleague_sees_a_capture_as_its_owner_sets_it(world: World) -> None:
    """The sole owner narrows a capture and may widen it again (co-owned: test_web_pages)."""
    running, shared = world.running, world.shared
    with running.client(world.tokens["bob"]) as bob, running.client(world.tokens["alice"]) as alice:
        before = bob.get(f"/api/v1/messages/{shared}").json()
        assert (
            alice.patch(
                f"/api/v1/messages/{shared}", json={"visibility": "subject_only"}
            ).status_code
            == 200
        )
        subject_only = bob.get(f"/api/v1/messages/{shared}").json()
        raised = alice.patch(f"/api/v1/messages/{shared}", json={"visibility": "shared"})
        restored = bob.get(f"/api/v1/messages/{shared}").json()
        alice.patch(f"/api/v1/messages/{shared}", json={"visibility": "private"})
        private = bob.get(f"/api/v1/messages/{shared}")
        listed = [m["id"] for m in bob.get("/api/v1/messages").json()["items"]]
        own = alice.get(f"/api/v1/messages/{shared}").json()

    assert "CANARY-BODY" in before["body_text"]
    assert subject_only["subject"].startswith(SUBJECT) and subject_only["body_text"] is None
    assert raised.status_code == 200 and "CANARY-BODY" in restored["body_text"]
    assert private.status_code == 404 and listed == []
    assert own["visibility"] == "private" and "CANARY-BODY" in own["body_text"]


def test_mass_assignment_is_rejected(world: World) -> None:
    running = world.running
    with running.client(world.tokens["alice"]) as alice:
        outcome = alice.patch(
            f"/api/v1/messages/{world.shared}", json={"visibility": "private", "outcome": "drop"}
        )
        owner = alice.patch("/api/v1/me/settings", json={"capture_paused": True, "id": world.bob})
        address = alice.patch(
            f"/api/v1/contacts/{world.contact}", json={"name": "B", "address": "x@evil.example"}
        )
    with running.client(world.tokens["admin"]) as admin:
        token = admin.post("/api/v1/tokens", json={"role": "admin", "token_hash": "0" * 64})

    assert [r.status_code for r in (outcome, owner, address, token)] == [422] * 4
    assert outcome.headers["content-type"] == "application/problem+json"
    with running.client(world.tokens["alice"]) as alice:
        message = alice.get(f"/api/v1/messages/{world.shared}").json()
        settings = alice.get("/api/v1/me/settings").json()
    assert (message["visibility"], message["outcome"]) == ("shared", "capture")
    assert settings["capture_paused"] is False


def test_only_an_employee_token_acts_as_an_employee(world: World) -> None:
    """A token of another role tied to Alice would be Alice wherever a rule asks "is it
    theirs?": an integration would read the text of her subject-only captures. No such token
    is issued, and one stored by an earlier release does not count as hers."""
    running = world.running
    with running.client(world.tokens["admin"]) as admin:
        refused = [
            admin.post("/api/v1/tokens", json={"role": role, "employee_id": world.alice})
            for role in ("integration", "compliance", "admin")
        ]
        as_alice = admin.post(
            "/api/v1/tokens", json={"role": "employee", "employee_id": world.alice}
        )
    assert [r.status_code for r in refused] == [422] * 3
    # Nor does an admin issue Alice's own: it would read her mail (admins never see mail).
    assert as_alice.status_code == 403 and "on the server" in as_alice.json()["detail"]
    with running.client(world.tokens["alice"]) as alice:
        shown = {"visibility": "subject_only"}
        assert alice.patch(f"/api/v1/messages/{world.shared}", json=shown).status_code == 200

    old = "mr_" + "x" * 43  # as issued before this release: an integration tied to Alice
    with running.runtime.sessions() as session:
        session.add(
            ApiToken(
                token_hash=hash_token(old),
                role="integration",
                employee_id=world.alice,
                scopes=["messages:read"],
            )
        )
        session.commit()
    with running.client(old) as integration:
        seen = integration.get(f"/api/v1/messages/{world.shared}")
    assert seen.status_code == 200 and seen.json()["subject"].startswith(SUBJECT)
    assert seen.json()["body_text"] is None


def test_a_revoked_token_is_refused_at_once_and_last_use_is_kept(world: World) -> None:
    running = world.running
    with running.client(world.tokens["admin"]) as admin:
        created = admin.post(
            "/api/v1/tokens", json={"role": "integration", "scopes": ["contacts:read"]}
        )
        new = created.json()
        with running.client(new["token"]) as integration:
            first = integration.get("/api/v1/contacts").status_code
            listed = {t["id"]: t for t in admin.get("/api/v1/tokens").json()["items"]}
            revoked = admin.delete(f"/api/v1/tokens/{new['id']}").status_code
            after = integration.get("/api/v1/contacts").status_code

    assert created.status_code == 201 and "token_hash" not in new
    assert first == 200 and listed[new["id"]]["last_used_at"] is not None
    assert "token" not in listed[new["id"]]
    assert (revoked, after) == (204, 401)
    with running.runtime.sessions() as session:
        stored = session.get(ApiToken, new["id"])
        assert stored is not None and stored.revoked_at is not None
        assert new["token"] not in repr(stored.token_hash)


def test_anyone_may_revoke_their_own_token_but_no_other(world: World) -> None:
    running = world.running
    with running.client(world.tokens["admin"]) as admin:
        ids = {t["role"]: t["id"] for t in admin.get("/api/v1/tokens").json()["items"]}
    with running.client(world.tokens["bob"]) as bob:
        other = bob.delete(f"/api/v1/tokens/{ids['compliance']}").status_code
        own = bob.get("/api/v1/me/settings").status_code
    assert (other, own) == (404, 200)


def test_tokens_revoke_on_the_command_line(running: Running, settings: Settings) -> None:
    token = issue_token(running.runtime.sessions, Role.COMPLIANCE)
    with running.runtime.sessions() as session:
        token_id = session.scalars(sa.select(ApiToken.id)).one()
    env = {
        "MAILROOM_DATA_DIR": str(settings.data_dir),
        "MAILROOM_DATABASE_URL": settings.resolved_database_url,
        "MAILROOM_SECRET_KEY": TEST_SECRET,
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "tokens", "revoke", str(token_id)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    missing = subprocess.run(
        [sys.executable, "-m", "app.cli", "tokens", "revoke", "999"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert missing.returncode == 1 and "no token 999" in missing.stderr
    with running.client(token) as api:
        assert api.get("/api/v1/decisions/verify").status_code == 401


def test_requests_over_a_tokens_rate_get_429_and_other_tokens_go_on(settings: Settings) -> None:
    with run_service(settings.model_copy(update={"api_rate_per_minute": 3})) as running:
        sessions = running.runtime.sessions
        busy, calm = (issue_token(sessions, Role.COMPLIANCE) for _ in range(2))
        with running.client(busy) as api:
            codes = [api.get("/api/v1/decisions").status_code for _ in range(4)]
            refused = api.get("/api/v1/decisions")
        with running.client(calm) as api:
            other = api.get("/api/v1/decisions").status_code

    assert codes == [200, 200, 200, 429]
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.headers["content-type"] == "application/problem+json"
    assert other == 200


def test_oversized_bodies_and_pages_are_refused(world: World) -> None:
    with world.running.client(world.tokens["compliance"]) as api:
        big = api.post("/api/v1/erasures", json={"address": "a" * 100_000 + "@x.example"})
        page = api.get("/api/v1/decisions", params={"limit": 101})
        cursor = api.get("/api/v1/decisions", params={"cursor": "!!!"})
    assert big.status_code == 413 and big.json()["status"] == 413
    assert page.status_code == 422
    assert cursor.status_code == 400


def test_an_admin_adds_an_employee_who_may_then_submit_from_an_alias(world: World) -> None:
    running = world.running
    carol = {"email": "carol@example.com", "name": "Carol", "aliases": ["c.sales@example.com"]}
    with running.client(world.tokens["admin"]) as admin:
        added = admin.post("/api/v1/employees", json=carol)
        again = admin.post("/api/v1/employees", json={"email": "C.Sales@example.com"})
        listed = [e["email"] for e in admin.get("/api/v1/employees").json()["items"]]
    with running.client(world.tokens["alice"]) as alice:
        refused = alice.post("/api/v1/employees", json={"email": "mallory@example.com"})

    assert added.status_code == 201 and added.json()["aliases"] == ["c.sales@example.com"]
    assert (again.status_code, refused.status_code) == (409, 403)
    assert listed[0] == "carol@example.com"
    mail = compose(sender="Carol <c.sales@example.com>", message_id="<carol@example.com>")
    assert send(running.smtp_port, mail, mail_from="c.sales@example.com")[0] == 250
    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Message)) == 3
