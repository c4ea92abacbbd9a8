"""The pages over plain HTTP against the real service: sign-in, cookies, CSRF, who sees what."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa

from app import employees, ledger
from app.api import create_app
from app.db import make_engine, transaction
from app.mailboxes import record_error
from app.models import (
    ApiToken,
    Contact,
    DecisionRecord,
    Employee,
    LoginLink,
    Message,
    MessageOwner,
    PersonalContact,
    Relationship,
    WebSession,
)
from app.security import Role
from app.web.auth import create_login_link
from tests.conftest import Running, add_employee, issue_token
from tests.mail import compose, send
from tests.test_cli import _env
from tests.test_web_freshness import _mailbox
from tests.web import csrf_of, file_mail, login_link, sign_in


def _cookie_header(response_headers: list[tuple[str, str]], name: str) -> str:
    found = [v for k, v in response_headers if k == "set-cookie" and v.startswith(name + "=")]
    assert found, f"no {name} cookie was set"
    return found[0]


def test_a_login_link_signs_in_once_with_an_httponly_samesite_cookie(running: Running) -> None:
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    link = login_link(running, alice)
    with running.client(None) as client:
        page = client.get(link)
        assert page.status_code == 200  # opening it only shows a button
        token = link.rsplit("/", 1)[1]
        done = client.post("/sign-in/link", data={"csrf": csrf_of(page), "token": token})
        assert (done.status_code, done.headers["location"]) == (303, "/mail")
        cookie = _cookie_header(done.headers.multi_items(), "mailroom_session").lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
        assert "secure" not in cookie  # plain http on loopback
        presession = _cookie_header(page.headers.multi_items(), "mailroom_presession").lower()
        assert "httponly" in presession and "samesite=strict" in presession
        assert client.get("/mail").status_code == 200

    with running.client(None) as other:
        again = other.get(link)
        second = other.post("/sign-in/link", data={"csrf": csrf_of(again), "token": token})
        assert second.status_code == 401
        assert "already used" in second.text
    with running.runtime.sessions() as session:
        stored = session.scalars(sa.select(WebSession.token_hash)).all()
        assert len(stored) == 1 and stored[0] not in done.headers["set-cookie"]
        assert token not in session.scalars(sa.select(LoginLink.token_hash)).all()


def test_an_expired_login_link_is_refused(running: Running) -> None:
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    with transaction(running.runtime.sessions) as session:
        old = datetime.now(UTC) - timedelta(hours=1)
        token = create_login_link(session, alice, Role.EMPLOYEE, old)
    with running.client(None) as client:
        page = client.get(f"/sign-in/link/{token}")
        done = client.post("/sign-in/link", data={"csrf": csrf_of(page), "token": token})
    assert done.status_code == 401 and "mailroom_session" not in done.headers.get("set-cookie", "")


async def test_the_session_cookie_is_secure_when_served_over_https(running: Running) -> None:
    """The app behind a TLS-terminating front: the same app and database, reached as https."""
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    link = login_link(running, alice)
    token = link.rsplit("/", 1)[1]
    transport = httpx.ASGITransport(app=create_app(running.runtime))
    async with httpx.AsyncClient(
        transport=transport, base_url="https://mailroom.example"
    ) as client:
        page = await client.get(f"/sign-in/link/{token}")
        done = await client.post("/sign-in/link", data={"csrf": csrf_of(page), "token": token})
    assert done.status_code == 303
    assert "secure" in _cookie_header(done.headers.multi_items(), "mailroom_session").lower()


def test_a_form_without_the_right_csrf_token_is_refused(running: Running) -> None:
    mail = file_mail(running)
    with sign_in(running, mail.alice) as client:
        csrf = csrf_of(client.get("/mail"))
        missing = client.post(f"/mail/messages/{mail.held}/capture")
        wrong = client.post(f"/mail/messages/{mail.held}/capture", data={"csrf": "0" * 64})
        assert (missing.status_code, wrong.status_code) == (403, 403)
        with running.runtime.sessions() as session:
            assert session.get(Message, mail.held).outcome == "hold"  # type: ignore[union-attr]
        right = client.post(f"/mail/messages/{mail.held}/capture", data={"csrf": csrf})
        assert right.status_code == 303
    with running.runtime.sessions() as session:
        assert session.get(Message, mail.held).outcome == "capture"  # type: ignore[union-attr]


def test_another_sessions_csrf_token_does_not_work_in_mine(running: Running) -> None:
    mail = file_mail(running)
    with sign_in(running, mail.alice) as mine, sign_in(running, mail.alice) as theirs:
        their_csrf = csrf_of(theirs.get("/mail"))
        refused = mine.post("/mail/pause", data={"csrf": their_csrf, "paused": "true"})
    assert refused.status_code == 403


def test_a_planted_pre_sign_in_cookie_does_not_forge_signed_in_forms(running: Running) -> None:
    """Anyone can get /sign-in's token for a pre-sign-in cookie of their choosing; whoever can
    plant that cookie in a signed-in browser must still not be able to post its forms."""
    mail = file_mail(running)
    planted = "attacker-chosen-pre-sign-in-value"
    with running.client(None) as attacker:
        attacker.cookies.set("mailroom_presession", planted)
        forged = csrf_of(attacker.get("/sign-in"))
    with sign_in(running, mail.alice) as victim:
        victim.cookies.set("mailroom_presession", planted)
        refused = victim.post("/mail/pause", data={"csrf": forged, "paused": "true"})
        signed_out = victim.post("/sign-out", data={"csrf": forged})
        assert (refused.status_code, signed_out.status_code) == (403, 403)
        assert victim.get("/mail").status_code == 200  # still signed in
    with running.runtime.sessions() as session:
        assert session.get(Employee, mail.alice).capture_paused is False  # type: ignore[union-attr]


def test_the_token_sign_in_form_needs_its_csrf_token(running: Running) -> None:
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    token = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    with running.client(None) as client:
        refused = client.post("/sign-in", data={"token": token})
        page = client.get("/sign-in")
        signed = client.post("/sign-in", data={"token": token, "csrf": csrf_of(page)})
        assert refused.status_code == 403 and signed.status_code == 303
        assert client.get("/mail").status_code == 200


def test_a_pasted_token_signs_in_until_it_is_revoked(running: Running) -> None:
    token = issue_token(running.runtime.sessions, Role.COMPLIANCE)
    integration = issue_token(running.runtime.sessions, Role.INTEGRATION, scopes=("x:read",))
    with running.client(None) as client:
        page = client.get("/sign-in")
        machine = client.post("/sign-in", data={"token": integration, "csrf": csrf_of(page)})
        assert machine.status_code == 401
        page = client.get("/sign-in")
        done = client.post("/sign-in", data={"token": token, "csrf": csrf_of(page)})
        assert done.headers["location"] == "/compliance"
        assert client.get("/compliance").status_code == 200
        with transaction(running.runtime.sessions) as session:
            session.execute(sa.update(ApiToken).values(revoked_at=datetime.now(UTC)))
        gone = client.get("/compliance")
        assert (gone.status_code, gone.headers["location"]) == (303, "/sign-in")


def test_sign_out_ends_the_session(running: Running) -> None:
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    with sign_in(running, alice) as client:
        cookie = client.cookies["mailroom_session"]
        out = client.post("/sign-out", data={"csrf": csrf_of(client.get("/mail"))})
        assert out.status_code == 303
        client.cookies.set("mailroom_session", cookie)  # replaying the old cookie
        assert client.get("/mail").status_code == 303
    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(WebSession)) == 0


def test_pages_send_strangers_to_sign_in_and_refuse_other_roles(running: Running) -> None:
    mail = file_mail(running)
    with running.client(None) as stranger:
        for path in ("/mail", "/compliance", "/admin", f"/mail/messages/{mail.captured}"):
            response = stranger.get(path)
            assert (response.status_code, response.headers["location"]) == (303, "/sign-in")
    with sign_in(running, mail.alice) as employee:
        assert employee.get("/compliance").status_code == 403
        assert employee.get("/admin").status_code == 403
    with sign_in(running, mail.carol, Role.COMPLIANCE) as officer:
        assert officer.get("/mail").status_code == 403
        assert officer.get(f"/mail/messages/{mail.captured}").status_code == 403
        assert officer.get("/admin").status_code == 403


def test_an_employee_sees_own_and_shared_mail_but_not_a_colleagues_private_capture(
    running: Running,
) -> None:
    mail = file_mail(running)
    with sign_in(running, mail.alice) as alice:
        assert alice.get(f"/mail/messages/{mail.captured}").status_code == 200
        assert "Carol&#39;s shared note" in alice.get(f"/mail/messages/{mail.carol_shared}").text
        hidden = alice.get(f"/mail/messages/{mail.carol_private}")
        assert hidden.status_code == 404 and "CAROL-PRIVATE" not in hidden.text
        refused = alice.post(
            f"/mail/messages/{mail.carol_shared}/visibility",
            data={"csrf": csrf_of(alice.get("/mail")), "visibility": "private"},
        )
        assert refused.status_code == 404  # a colleague's capture is not mine to change
        assert "CAROL-PRIVATE" not in alice.get("/mail").text


def test_a_contact_page_shows_who_knows_them_and_only_mail_i_may_see(running: Running) -> None:
    mail = file_mail(running)
    with running.runtime.sessions() as session:
        ids = {a: i for a, i in session.execute(sa.select(Contact.address, Contact.id))}
    with sign_in(running, mail.alice) as alice:
        bob = alice.get(f"/contacts/{ids['bob@customer.example']}").text
        dan = alice.get(f"/contacts/{ids['dan@prospect.example']}").text
        erin = alice.get(f"/contacts/{ids['erin@partner.example']}").text
        missing = alice.get("/contacts/999999")
    assert "Alice Example" in bob and "Quote for 20 licences" in bob
    assert "Carol Colleague" in dan and "CAROL-PRIVATE" not in dan
    assert "No mail with them that you may see." in dan
    assert "Carol&#39;s shared note" in erin
    assert missing.status_code == 404


def test_pages_forbid_framing_and_show_only_their_own_notes(running: Running) -> None:
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    with sign_in(running, alice) as client:
        page = client.get("/mail", params={"note": "Your account is locked: call 555-0100"})
        known = client.get("/mail", params={"note": "resumed"})
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "555-0100" not in page.text and "Capture resumed." in known.text


def test_an_id_beyond_any_database_is_refused_not_an_error(running: Running) -> None:
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    huge = "9" * 30
    with sign_in(running, alice) as client:
        answers = [
            client.get(f"/mail/messages/{huge}").status_code,
            client.get(f"/contacts/{huge}").status_code,
        ]
    assert answers == [422, 422]


def test_my_mail_lists_dropped_mail_by_time_and_rule_only(running: Running) -> None:
    mail = file_mail(running)
    with sign_in(running, mail.alice) as alice:
        page = alice.get("/mail").text
    assert "internal-only" in page and "Note to self: quote follow-up" in page
    assert "DROPPED-CANARY" not in page


def test_discarding_a_held_message_deletes_it_and_keeps_its_decision(running: Running) -> None:
    mail = file_mail(running)
    with sign_in(running, mail.alice) as alice:
        csrf = csrf_of(alice.get("/mail"))
        done = alice.post(f"/mail/messages/{mail.held}/discard", data={"csrf": csrf})
        assert done.status_code == 303
        assert alice.get(f"/mail/messages/{mail.held}").status_code == 404
    with running.runtime.sessions() as session:
        assert session.get(Message, mail.held) is None
        last = session.scalars(sa.select(DecisionRecord).order_by(DecisionRecord.id.desc())).first()
    assert last is not None  # the choice is in the decision log, by id only
    assert (last.outcome, last.employee_id, last.facts) == (
        "review-discard",
        mail.alice,
        {"message_id": mail.held},
    )


def test_discarding_a_message_a_colleague_also_filed_removes_only_my_copy(
    running: Running,
) -> None:
    mail = file_mail(running)
    with transaction(running.runtime.sessions) as session:
        session.add(
            MessageOwner(
                message_id=mail.held, employee_id=mail.carol, channel="bcc", outcome="hold"
            )
        )
    with sign_in(running, mail.alice) as alice:
        done = alice.post(
            f"/mail/messages/{mail.held}/discard", data={"csrf": csrf_of(alice.get("/mail"))}
        )
        assert done.status_code == 303
        assert alice.get(f"/mail/messages/{mail.held}").status_code == 404
    with sign_in(running, mail.carol) as carol:
        assert carol.get(f"/mail/messages/{mail.held}").status_code == 200


def test_a_held_message_with_a_personal_contact_cannot_be_captured(running: Running) -> None:
    mail = file_mail(running)
    with sign_in(running, mail.alice) as alice:
        csrf = csrf_of(alice.get("/mail"))
        alice.post("/mail/personal-contacts", data={"csrf": csrf, "address": "alice@example.com"})
        refused = alice.post(f"/mail/messages/{mail.held}/capture", data={"csrf": csrf})
    assert refused.status_code == 409 and "personal-contacts list" in refused.text
    with running.runtime.sessions() as session:
        assert session.get(Message, mail.held).outcome == "hold"  # type: ignore[union-attr]


def test_a_capture_a_colleague_also_filed_can_be_narrowed_but_not_widened(
    running: Running,
) -> None:
    mail = file_mail(running)
    with sign_in(running, mail.alice) as alice:
        csrf = csrf_of(alice.get("/mail"))
        path = f"/mail/messages/{mail.captured}/visibility"
        narrowed = alice.post(path, data={"csrf": csrf, "visibility": "private"})
        with transaction(running.runtime.sessions) as session:
            session.add(
                MessageOwner(
                    message_id=mail.captured,
                    employee_id=mail.carol,
                    channel="bcc",
                    outcome="capture",
                )
            )
        widened = alice.post(path, data={"csrf": csrf, "visibility": "shared"})
    assert narrowed.status_code == 303
    assert widened.status_code == 409 and "not yours to share" in widened.text
    with running.runtime.sessions() as session:
        assert session.get(Message, mail.captured).visibility == "private"  # type: ignore[union-attr]


def test_pausing_capture_and_personal_contacts_change_my_settings(running: Running) -> None:
    mail = file_mail(running)
    with sign_in(running, mail.alice) as alice:
        csrf = csrf_of(alice.get("/mail"))
        alice.post("/mail/pause", data={"csrf": csrf, "paused": "true"})
        alice.post("/mail/personal-contacts", data={"csrf": csrf, "address": "Mum@Home.example"})
        bad = alice.post("/mail/personal-contacts", data={"csrf": csrf, "address": "not mail"})
        assert "not an email address" in alice.get(bad.headers["location"]).text
        assert "Capture is <strong>paused</strong>" in alice.get("/mail").text
    with running.runtime.sessions() as session:
        assert session.get(Employee, mail.alice).capture_paused  # type: ignore[union-attr]
        tokens = session.scalars(sa.select(PersonalContact.address_token)).all()
        assert len(tokens) == 1 and b"mum" not in tokens[0].encode()


def test_compliance_pages_show_decisions_but_no_content(running: Running) -> None:
    mail = file_mail(running)
    with sign_in(running, mail.carol, Role.COMPLIANCE) as officer:
        dashboard = officer.get("/compliance").text
        ledger = officer.get("/compliance/ledger").text
    assert "internal-only" in dashboard and "<svg" in dashboard
    with running.runtime.sessions() as session:
        day = session.scalar(sa.select(DecisionRecord.created_at).where(DecisionRecord.id == 3))
    assert day is not None and f"<title>{day.date().isoformat()}: 1 drop</title>" in dashboard
    assert "Ledger intact: 5 records verified." in ledger
    with running.runtime.sessions() as session:
        head = session.scalar(sa.select(DecisionRecord.hash).where(DecisionRecord.id == 5))
    assert f'<code id="ledger-head">5:{head}</code>' in ledger
    for content in ("DROPPED-CANARY", "CAROL-PRIVATE", "Quote for 20", "bob@customer", "lunch"):
        assert content not in dashboard + ledger


def test_simulating_a_candidate_policy_reports_what_would_change(running: Running) -> None:
    mail = file_mail(running)
    source = running.runtime.pipeline.engine.policy.source
    candidate = source.replace("outcome: drop", "outcome: hold", 1)
    with sign_in(running, mail.carol, Role.COMPLIANCE) as officer:
        csrf = csrf_of(officer.get("/compliance"))
        result = officer.post("/compliance/simulate", data={"csrf": csrf, "candidate": candidate})
        broken = officer.post("/compliance/simulate", data={"csrf": csrf, "candidate": "rules: 3"})
    assert result.status_code == 200
    assert "5 decisions re-evaluated; 1 would change" in result.text
    assert broken.status_code == 422 and "not a valid policy" in broken.text


def test_an_admin_creates_and_revokes_tokens_without_seeing_mail(running: Running) -> None:
    """Not an employee's token: whoever holds one reads that employee's mail, and admins
    never see mail. Those are issued on the server (`mailroom tokens create`, `login-link`)."""
    mail = file_mail(running)
    with sign_in(running, mail.carol, Role.ADMIN) as admin:
        page = admin.get("/admin").text
        csrf = csrf_of(admin.get("/admin"))
        as_alice = admin.post("/admin/tokens", data={"csrf": csrf, "role": "employee"})
        assert as_alice.status_code == 403 and "on the server" in as_alice.text
        assert '<option value="employee">' not in page
        made = admin.post("/admin/tokens", data={"csrf": csrf, "role": "integration"})
        assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
        assert "mr_" in made.text and "CAROL-PRIVATE" not in made.text
        with running.runtime.sessions() as session:
            token_id = session.scalar(sa.select(sa.func.max(ApiToken.id)))
        revoked = admin.post(f"/admin/tokens/{token_id}/revoke", data={"csrf": csrf})
        assert revoked.status_code == 303, revoked.text
        assert "revoked" in admin.get("/admin").text


def test_the_login_link_command_prints_a_link_that_works(running: Running) -> None:
    add_employee(running.runtime.sessions, "alice@example.com")
    env = _env(running.runtime.settings) | {"MAILROOM_PUBLIC_URL": running.api_url}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "login-link", "alice@example.com"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    link = done.stdout.strip()
    assert link.startswith(f"{running.api_url}/sign-in/link/")
    unknown = subprocess.run(
        [sys.executable, "-m", "app.cli", "login-link", "nobody@example.com"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert unknown.returncode == 1 and "no employee" in unknown.stderr
    with running.client(None) as client:
        page = client.get(link)
        token = link.rsplit("/", 1)[1]
        done_post = client.post("/sign-in/link", data={"csrf": csrf_of(page), "token": token})
    assert done_post.status_code == 303


def test_admin_page_refuses_an_address_that_is_already_an_employees_alias(
    running: Running,
) -> None:
    """README: an address that is already an employee's, as email or alias, is refused (as by
    the API). The admin page's form checks only primary emails."""
    with transaction(running.runtime.sessions) as session:
        employees.add_employee(session, "alice@example.com", aliases=["sales@example.com"])
    admin = add_employee(running.runtime.sessions, "root@example.com")
    with sign_in(running, admin, Role.ADMIN) as client:
        csrf = csrf_of(client.get("/admin"))
        done = client.post(
            "/admin/employees", data={"csrf": csrf, "email": "sales@example.com", "name": "Bob"}
        )
    assert done.status_code == 303
    with running.runtime.sessions() as session:
        taken = session.scalar(
            sa.select(sa.func.count())
            .select_from(Employee)
            .where(Employee.email == "sales@example.com")
        )
    assert done.headers["location"] == "/admin?note=employee-exists"
    assert taken == 0


def test_admin_forms_refuse_control_characters_as_the_api_does(running: Running) -> None:
    """A name or a token label holding NUL or a line break is refused (422), as the API
    refuses it: PostgreSQL cannot store NUL at all, and SQLite kept it as given."""
    admin = add_employee(running.runtime.sessions, "root@example.com")
    with sign_in(running, admin, Role.ADMIN) as client:
        csrf = csrf_of(client.get("/admin"))
        answers = [
            client.post(
                "/admin/employees",
                data={"csrf": csrf, "email": f"bob{n}@example.com", "name": f"Bob{stray}Builder"},
            )
            for n, stray in enumerate(("\x00", "\n"))
        ] + [
            client.post(
                "/admin/tokens", data={"csrf": csrf, "role": "compliance", "label": f"ci{stray}"}
            )
            for stray in ("\x00", "\r\n")
        ]
    assert [a.status_code for a in answers] == [422] * 4
    with running.runtime.sessions() as session:
        added = session.scalar(sa.select(sa.func.count()).select_from(Employee))
        issued = session.scalar(sa.select(sa.func.count()).select_from(ApiToken))
    assert (added, issued) == (1, 0)


def test_pages_showing_mail_are_not_stored_by_browsers_or_proxies(running: Running) -> None:
    """A message's text, my mail and a contact's timeline must not stay in a browser's or a
    shared proxy's cache after sign-out (the admin token page already says no-store)."""
    mail = file_mail(running)
    with sign_in(running, mail.alice) as alice:
        shown = alice.get(f"/mail/messages/{mail.captured}")
        mine = alice.get("/mail")
    assert shown.status_code == 200 and "here is the quote" in shown.text
    for response in (shown, mine):
        assert "no-store" in response.headers.get("cache-control", ""), response.url


def test_a_policy_diff_with_an_id_beyond_any_database_is_refused_not_an_error(
    running: Running,
) -> None:
    huge = "9" * 30
    with running.client(None) as client:
        diff = client.get(f"/policy/diff?from={huge}&to=1")
        version = client.get(f"/policy/versions/{huge}")
    assert version.status_code == 422
    assert diff.status_code in (404, 422), diff.status_code


def test_policy_pages_are_hardened_like_every_other_page(running: Running) -> None:
    """README: pages load nothing but their own stylesheet, and no other site may frame them."""
    with running.client(None) as client:
        policy = client.get("/policy")
    assert policy.status_code == 200
    assert "frame-ancestors 'none'" in policy.headers.get("content-security-policy", "")


def test_a_mailbox_error_never_shows_mail_on_the_admin_page(running_unsynced: Running) -> None:
    """The IMAP worker records *any* exception of a sync (app/mailboxes.py `_mailbox`:
    `except Exception`) with str(error). A database error while filing a message (SQLite
    'database is locked', a PostgreSQL deadlock) quotes the statement's parameters: the
    subject and text of the message. The admin page then shows them to admins."""
    admin = add_employee(running_unsynced.runtime.sessions, "root@example.com")
    add_employee(running_unsynced.runtime.sessions, "alice@example.com")
    box = _mailbox(running_unsynced, employee="alice@example.com", username="alice.imap")
    with running_unsynced.runtime.db.connect() as conn:
        try:
            conn.execute(
                sa.text("INSERT INTO messages (subject, body_text) VALUES (:s, :b)"),
                {"s": "SUBJECT-CANARY merger talks", "b": "BODY-CANARY"},
            )
        except sa.exc.DBAPIError as error:
            failure = error
        else:  # pragma: no cover
            raise AssertionError("the insert was expected to fail")
    record_error(running_unsynced.runtime.sessions, box, failure)
    with sign_in(running_unsynced, admin, Role.ADMIN) as client:
        page = client.get("/admin").text
    assert "IntegrityError" in page  # what went wrong, by its kind
    assert "SUBJECT-CANARY" not in page and "BODY-CANARY" not in page


def test_review_choices_are_not_counted_as_decisions_per_employee(running: Running) -> None:
    """The consistency table counts 'how each person's mail was decided'. A review choice is
    an action chained on the `api` channel (outcome 'review-capture'), not a decision on a
    message, yet reports.consistency counts it: Alice's 3 decisions become 4 and her share of
    unkept mail changes although no mail was decided again."""
    mail = file_mail(running)
    with sign_in(running, mail.carol, Role.COMPLIANCE) as officer:
        before = officer.get("/compliance").text
    with sign_in(running, mail.alice) as alice:
        csrf = csrf_of(alice.get("/mail"))
        assert (
            alice.post(f"/mail/messages/{mail.held}/capture", data={"csrf": csrf}).status_code
            == 303
        )
    with sign_in(running, mail.carol, Role.COMPLIANCE) as officer:
        after = officer.get("/compliance").text
    row = "<tr><td>alice@example.com</td><td>3</td>"
    assert row in before
    assert row in after, after.split("alice@example.com</td>")[1][:200]


@contextmanager
def _locked(running: Running, postgres: sa.Executable) -> Iterator[None]:
    """Hold a lock the requests under test wait for, as a busy writer would, on an engine
    of its own: `postgres` on PostgreSQL; on SQLite the write lock, which every writer waits
    for at BEGIN IMMEDIATE."""
    engine = make_engine(running.runtime.settings.resolved_database_url)
    try:
        with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE
            if engine.dialect.name == "postgresql":
                conn.execute(postgres)
            yield
    finally:
        engine.dispose()


def _twice(
    running: Running, client: httpx.Client, path: str, form: dict[str, str], lock: sa.Executable
) -> list[httpx.Response]:
    """The same form posted twice at once (a double click), both waiting for `lock`."""
    postgres = running.runtime.db.dialect.name == "postgresql"
    waiting = sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")
    with ThreadPoolExecutor(2) as pool, _locked(running, lock):
        clicks = [pool.submit(client.post, path, data=form) for _ in range(2)]
        deadline = time.monotonic() + 10
        while postgres:  # until both wait; SQLite cannot say who waits for its lock
            with running.runtime.db.connect() as conn:
                if (conn.scalar(waiting) or 0) >= 2:
                    break
            assert time.monotonic() < deadline, "the clicks never waited for the lock"
            time.sleep(0.02)
        time.sleep(0 if postgres else 0.3)
    return [click.result() for click in clicks]


def test_a_capture_clicked_twice_while_mail_is_filed_files_the_message_once(
    holding: Running,
) -> None:
    """A double click (or a resubmit from the back button) while a batch holds the log's
    lock: both requests found the message held before waiting for the lock, and on
    PostgreSQL the second, let in after the first committed, captured it again: the
    relationship counted the message twice and the log recorded two captures."""
    alice = add_employee(holding.runtime.sessions, "alice@example.com")
    assert send(holding.smtp_port, compose())[0] == 250
    with holding.runtime.sessions() as session:
        held = session.scalar(sa.select(Message.id).where(Message.outcome == "hold"))
    log_lock = sa.select(sa.func.pg_advisory_xact_lock(ledger._LEDGER_LOCK))
    with sign_in(holding, alice) as client:
        form = {"csrf": csrf_of(client.get("/mail"))}
        clicks = _twice(holding, client, f"/mail/messages/{held}/capture", form, log_lock)
    answers = sorted(click.headers["location"] for click in clicks)
    assert answers == ["/mail?note=captured", "/mail?note=not-held"]
    with holding.runtime.sessions() as session:
        counts = session.execute(
            sa.select(Relationship.sent_count, Relationship.received_count)
        ).all()
        captures = session.scalar(
            sa.select(sa.func.count())
            .select_from(DecisionRecord)
            .where(DecisionRecord.outcome == "review-capture")
        )
    assert [tuple(c) for c in counts] == [(1, 0)] and captures == 1


def test_every_rule_named_on_my_mail_and_compliance_links_to_its_place_on_the_policy(
    running: Running,
) -> None:
    """Mail dropped because I paused capture names the guardrail that dropped it; its link
    led to `#rule-capture-paused`, while the policy page lists guardrails as
    `guardrail-<id>`: the one explanation an employee looks for went nowhere."""
    mail = file_mail(running)
    with sign_in(running, mail.alice) as alice:
        alice.post("/mail/pause", data={"csrf": csrf_of(alice.get("/mail")), "paused": "true"})
        assert send(running.smtp_port, compose(message_id="<paused@example.com>"))[0] == 250
        mine = alice.get("/mail").text
        policy = alice.get("/policy").text
    with sign_in(running, mail.carol, Role.COMPLIANCE) as officer:
        dashboard = officer.get("/compliance").text
    targets = set(re.findall(r'id="([^"]+)"', policy))
    for page in (mine, dashboard):
        links = re.findall(r'href="/policy#([^"]+)"', page)
        assert {"capture-paused", "internal-only"} <= {link.split("-", 1)[1] for link in links}
        assert set(links) <= targets, set(links) - targets


def test_a_review_choice_sent_again_returns_to_my_mail_saying_it_was_made(
    running: Running,
) -> None:
    """A double click or the back button sends Capture (or Discard) again once it is done.
    The browser shows that second answer, which was a bare JSON 'No such message.': read as
    the capture having failed, although the message was filed."""
    mail = file_mail(running)
    with sign_in(running, mail.alice) as alice:
        form = {"csrf": csrf_of(alice.get("/mail"))}
        first = alice.post(f"/mail/messages/{mail.held}/capture", data=form)
        again = alice.post(f"/mail/messages/{mail.held}/capture", data=form)
        discarded = alice.post(f"/mail/messages/{mail.held}/discard", data=form)
        shown = alice.get(again.headers["location"])
    assert first.status_code == again.status_code == discarded.status_code == 303
    assert again.headers["location"] == discarded.headers["location"] == "/mail?note=not-held"
    assert "no longer waiting for your review" in shown.text
    assert 'id="captured-' + str(mail.held) in shown.text  # captured once, and kept


def test_a_personal_contact_added_twice_at_once_is_kept_once(running: Running) -> None:
    """A double click on Add: both requests found no such entry and inserted one; on
    PostgreSQL the second then broke the unique index and answered 500, the page the
    browser shows. The API adds one with ON CONFLICT DO NOTHING, and so do the pages now."""
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    table_lock = sa.text("LOCK TABLE personal_contacts IN SHARE ROW EXCLUSIVE MODE")
    with sign_in(running, alice) as client:
        form = {"csrf": csrf_of(client.get("/mail")), "address": "mum@home.example"}
        clicks = _twice(running, client, "/mail/personal-contacts", form, table_lock)
    assert [c.headers.get("location") for c in clicks] == ["/mail?note=personal-added"] * 2
    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(PersonalContact)) == 1


def test_my_held_mail_says_when_it_is_deleted_to_the_minute_in_utc(running: Running) -> None:
    """The retention job removes a held message as soon as its review period ends, at
    held_until; the page said 'Deleted after 2026-12-08' (a date, in no time zone) of mail
    removed during the 8th, so whoever meant to review it that day found it gone."""
    mail = file_mail(running)
    with transaction(running.runtime.sessions) as session:
        session.execute(
            sa.update(MessageOwner)
            .where(MessageOwner.message_id == mail.held)
            .values(held_until=datetime(2026, 12, 8, 14, 5, tzinfo=UTC))
        )
    with sign_in(running, mail.alice) as alice:
        row = alice.get("/mail").text.split(f'id="held-{mail.held}"')[1].split("</tr>")[0]
    assert "2026-12-08 14:05 UTC" in row


def test_a_form_refused_is_answered_with_a_page_not_the_apis_json(running: Running) -> None:
    """A personal contact's Remove clicked twice, or a form from a tab left open across a
    new sign-in (its CSRF token is the old session's): the browser showed the API's JSON
    problem document. Pages answer with a page, of the same status, hardened alike."""
    mail = file_mail(running)
    with sign_in(running, mail.alice) as alice:
        csrf = csrf_of(alice.get("/mail"))
        alice.post("/mail/personal-contacts", data={"csrf": csrf, "address": "mum@home.example"})
        with running.runtime.sessions() as session:
            entry = session.scalar(sa.select(PersonalContact.id))
        remove = f"/mail/personal-contacts/{entry}/remove"
        assert alice.post(remove, data={"csrf": csrf}).status_code == 303
        again = alice.post(remove, data={"csrf": csrf})
    with sign_in(running, mail.alice) as alice:  # signed in anew; the old tab's form posts
        stale = alice.post("/mail/pause", data={"csrf": csrf, "paused": "true"})
        not_mine = alice.get(f"/contacts/{10**9}")
    for answer, status, words in (
        (again, 404, "No such personal contact."),
        (stale, 403, "The form&#39;s CSRF token is wrong."),
        (not_mine, 404, "No such contact."),
    ):
        assert answer.status_code == status
        assert answer.headers["content-type"].startswith("text/html"), answer.text
        assert (
            words in answer.text
            and "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        )


def test_the_latest_decisions_do_not_say_the_policy_decided_an_action(running: Running) -> None:
    """The log also chains actions (a review choice, an erasure, a purge) on channel `api`.
    Listed among the latest decisions, each said its rule was 'policy default': that the
    policy's default outcome had decided it, which no policy did."""
    mail = file_mail(running)
    with sign_in(running, mail.alice) as alice:
        csrf = csrf_of(alice.get("/mail"))
        assert alice.post(f"/mail/messages/{mail.held}/capture", data={"csrf": csrf}).is_redirect
    with running.runtime.sessions() as session:
        action = session.scalar(sa.select(sa.func.max(DecisionRecord.id)))
    with sign_in(running, mail.carol, Role.COMPLIANCE) as officer:
        page = officer.get("/compliance").text
    row = page.split(f'<tr id="decision-{action}">')[1].split("</tr>")[0]
    assert "review-capture" in row and "policy default" not in row


def test_after_going_back_to_an_earlier_policy_the_pages_say_which_version_is_in_force(
    running: Running,
) -> None:
    """README: to go back to an earlier file, PUT it. The version history on /policy and
    on /compliance listed the newer version first and marked none as in force (the
    compliance page said 'in force from' of both), so both read as if it still applied."""
    officer = issue_token(running.runtime.sessions, Role.COMPLIANCE)
    first = running.runtime.pipeline.engine.policy.source
    newer = first.replace('version: "test"', 'version: "test-2"')
    for source in (newer, first):  # published, then the earlier one put back in force
        with running.client(officer) as api:
            put = api.put(
                "/api/v1/policy",
                content=source.encode(),
                headers={"Content-Type": "application/yaml"},
            )
            assert put.status_code == 200, put.text
    carol = add_employee(running.runtime.sessions, "carol@example.com")
    with sign_in(running, carol, Role.COMPLIANCE) as client:
        public, dashboard = client.get("/policy").text, client.get("/compliance").text
    for page in (public, dashboard):
        marked = re.findall(r'href="/policy/versions/(\d+)">[^<]*</a>[^\n]*in force now', page)
        assert marked == ["1"], page


def test_an_employee_added_twice_at_once_on_the_admin_page_is_added_once(
    running: Running,
) -> None:
    """A double click on Add employee: both requests found the address free; on
    PostgreSQL the second then broke the unique index and answered 500 (the page the
    browser shows) although the employee was added. It is told the address is taken."""
    admin = add_employee(running.runtime.sessions, "root@example.com")
    table_lock = sa.text("LOCK TABLE employees IN SHARE ROW EXCLUSIVE MODE")
    with sign_in(running, admin, Role.ADMIN) as client:
        form = {"csrf": csrf_of(client.get("/admin")), "email": "bob@example.com", "name": "Bob"}
        clicks = _twice(running, client, "/admin/employees", form, table_lock)
    assert sorted(c.headers.get("location", str(c.status_code)) for c in clicks) == [
        "/admin?note=employee-added",
        "/admin?note=employee-exists",
    ]
    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Employee)) == 2


def test_a_form_sent_once_signed_out_asks_to_sign_in(running: Running) -> None:
    """A tab left open past the session's 12 hours (its cookie expires with it) or after
    signing out in another tab: its forms carry no session cookie, and were refused as
    a wrong CSRF token (403) where every page sends the person to sign in."""
    mail = file_mail(running)
    with sign_in(running, mail.alice) as alice:
        csrf = csrf_of(alice.get("/mail"))
        assert alice.post("/sign-out", data={"csrf": csrf}).status_code == 303
        assert "mailroom_session" not in alice.cookies
        posted = alice.post(f"/mail/messages/{mail.held}/capture", data={"csrf": csrf})
    assert (posted.status_code, posted.headers.get("location")) == (303, "/sign-in")
    with running.runtime.sessions() as session:
        assert session.get(Message, mail.held).outcome == "hold"  # type: ignore[union-attr]


def test_held_mail_without_a_subject_is_not_said_to_have_no_text_kept(holding: Running) -> None:
    """A BCC'd message waits for review with its text; one without a subject was listed as
    '(text not kept: read from your mailbox)', telling its employee that nothing of it was
    stored while its whole text was."""
    alice = add_employee(holding.runtime.sessions, "alice@example.com")
    assert send(holding.smtp_port, compose(subject="", body="TEXT-KEPT for review\n"))[0] == 250
    with holding.runtime.sessions() as session:
        held = session.scalar(sa.select(Message.id).where(Message.outcome == "hold"))
    with sign_in(holding, alice) as client:
        row = client.get("/mail").text.split(f'id="held-{held}"')[1].split("</tr>")[0]
        text = client.get(f"/mail/messages/{held}").text
    assert "TEXT-KEPT" in text and "not kept" not in row and "(no subject)" in row


def test_mail_dropped_under_an_earlier_policy_links_to_the_version_that_dropped_it(
    running: Running,
) -> None:
    """My mail links each dropped message's rule to /policy, the version in force. Once a
    newer version no longer has that rule (renamed, removed), the link led to a place the
    page does not have: the rule that decided is explained only by its own version."""
    mail = file_mail(running)  # drops one message by `internal-only`
    officer = issue_token(running.runtime.sessions, Role.COMPLIANCE)
    newer = running.runtime.pipeline.engine.policy.source.replace(
        "id: internal-only", "id: colleagues-only"
    ).replace('version: "test"', 'version: "test-2"')
    with running.client(officer) as api:
        put = api.put(
            "/api/v1/policy", content=newer.encode(), headers={"Content-Type": "application/yaml"}
        )
        assert put.status_code == 200, put.text
    with sign_in(running, mail.alice) as alice:
        (link,) = re.findall(r'href="(/policy[^"]*)"><code>internal-only<', alice.get("/mail").text)
    with sign_in(running, mail.carol, Role.COMPLIANCE) as carol:
        dashboard = carol.get("/compliance").text
        (per_rule,) = re.findall(
            r'href="(/policy[^"]*)"><code>internal-only</code></a></td>', dashboard
        )
        for shown in (link, per_rule):
            path, _, anchor = shown.partition("#")
            target = carol.get(path).text
            assert (f'id="{anchor}"' in target) if anchor else ("id: internal-only" in target), (
                shown
            )
