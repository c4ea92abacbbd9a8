"""IMAP sync against a real Dovecot: headers first, exactly once, never changing the mailbox."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa

from app import mailboxes
from app.db import transaction
from app.logs import LogFormat, configure
from app.mailboxes import (
    add_mailbox,
    describe_error,
    load_config,
    named_sent,
    paused_for_login,
    sync_once,
)
from app.models import (
    Base,
    Contact,
    DecisionRecord,
    Employee,
    Mailbox,
    MailboxFolder,
    Message,
    MessageOwner,
    Receipt,
)
from app.runtime import Runtime, build_runtime, publish_policy
from app.security import Role
from app.settings import BUNDLED_POLICY, Settings
from capture import imap
from capture.header_fetch import fetch_header_sections
from capture.imap import (
    BODY_CHUNK_BYTES,
    FolderError,
    FolderSync,
    MailboxConfig,
    MailboxError,
    close,
    connect,
)
from capture.parse import HEADER_CAP
from capture.pipeline import Envelope
from policies.loader import load_policy_text
from policies.model import Channel, Outcome
from tests.conftest import FIXTURES, TEST_SECRET, Running, add_employee, issue_token, run_service
from tests.dovecot import PASSWORD, Dovecot
from tests.mail import UNSTORABLE, compose
from tests.test_import import POISON_TRIGGER, deep_error, poison, run_sql

ALICE = "alice@example.com"


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    runtime = build_runtime(settings)
    yield runtime
    runtime.close()


def business(n: int, *, body: str = "Here is the quote we discussed.\n") -> bytes:
    return compose(
        to=f"Bob <bob{n}@customer.example>", message_id=f"<quote-{n}@example.com>", body=body
    ).as_bytes()


def newsletter(n: int) -> bytes:
    return compose(
        sender="News <news@shop.example>",
        to=ALICE,
        subject=f"Deals of week {n}",
        message_id=f"<news-{n}@shop.example>",
        headers={"List-Id": "<deals.shop.example>", "List-Unsubscribe": "<mailto:u@shop.example>"},
        body="Everything must go. " * 50,
    ).as_bytes()


def new_mailbox(
    runtime: Runtime,
    dovecot: Dovecot,
    user: str,
    folders: list[str],
    *,
    employee: str | None = ALICE,  # None: a journal mailbox
    password: str = PASSWORD,
    **kwargs: Any,
) -> int:
    with transaction(runtime.sessions) as session:
        mailbox = add_mailbox(
            session,
            TEST_SECRET.encode(),
            employee=employee,
            host=dovecot.host,
            port=dovecot.port,
            username=user,
            password=password,
            folders=folders,
            tls="none",
            **kwargs,
        )
        return mailbox.id


def sync(runtime: Runtime, mailbox_id: int, *, max_bytes: int = 25 * 1024 * 1024) -> FolderSync:
    with runtime.sessions() as session:
        config = load_config(session, TEST_SECRET.encode(), mailbox_id)
    return sync_once(runtime.pipeline, config, max_bytes=max_bytes, stop=threading.Event())


def count(runtime: Runtime, table: Any) -> int:
    with runtime.sessions() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(table)) or 0


def test_initial_sync_files_business_mail_and_drops_newsletters_on_headers(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [business(1), newsletter(1), business(2), newsletter(2)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    done = sync(runtime, mailbox_id)

    assert done.stats.messages == 4
    assert done.stats.bodies_fetched == 2  # the two business messages only
    assert done.stats.bodies_skipped == 2
    assert done.stats.outcomes == {"capture": 2, "drop": 2}
    assert count(runtime, Message) == 2
    with runtime.sessions() as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None
        assert (mailbox.synced, mailbox.bodies_skipped, mailbox.pending) == (4, 2, 0)
        assert mailbox.last_sync_at is not None and mailbox.last_error is None
        folder = session.scalars(sa.select(MailboxFolder)).one()
        assert folder.last_uid == 4
    with dovecot.client(imap_user) as client:  # PEEK only: nothing was marked read
        client.select_folder("INBOX", readonly=True)
        assert client.search(["UNSEEN"]) == [1, 2, 3, 4]


def test_a_dropped_message_never_has_its_body_fetched(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [newsletter(n) for n in range(5)] + [business(9)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])
    with runtime.sessions() as session:
        config = load_config(session, TEST_SECRET.encode(), mailbox_id)
    client = connect(config, max_bytes=1 << 20)
    requested: list[tuple[list[int], list[str]]] = []
    fetch = client.fetch

    def recording_fetch(uids: list[int], items: list[str]) -> Any:
        requested.append((list(uids), list(items)))
        return fetch(uids, items)

    client.fetch = recording_fetch
    FolderSync(client, runtime.pipeline, config, max_bytes=1 << 20).sync_all()
    client.logout()

    bodies = [uids for uids, items in requested if "BODY.PEEK[]" in items]
    assert bodies == [[6]]  # only the business message's body left the server
    with runtime.sessions() as session:
        facts = [f for f in session.scalars(sa.select(DecisionRecord.facts))]
    assert sum(1 for f in facts if f.get("body_read") is False) == 5


FIRST_PITCH = "<pitch-1@vendor.example>"


def pitch(n: int, *, sender: str = "Sam Seller <sam@vendor.example>") -> bytes:
    """A stranger's offer to Alice (n == 1), or a message answering it."""
    return compose(
        sender=sender,
        to="Alice Example <alice@example.com>",
        subject="Our offer" if n == 1 else "Re: Our offer",
        message_id=f"<pitch-{n}@vendor.example>",
        headers={} if n == 1 else {"In-Reply-To": FIRST_PITCH, "References": FIRST_PITCH},
        body="Hi Alice,\n\nhere is our price list for the licences, valid until Friday.\n",
    ).as_bytes()


def _mailbox_decisions(runtime: Runtime) -> list[tuple[str, list[str], bool]]:
    """Outcome, rules and whether the body was read, of each message synced, in order."""
    with runtime.sessions() as session:
        records = session.scalars(
            sa.select(DecisionRecord)
            .where(DecisionRecord.channel == Channel.IMAP.value)
            .order_by(DecisionRecord.id)
        ).all()
        return [(r.outcome, list(r.rules), r.facts.get("body_read") is not False) for r in records]


def test_mail_answering_only_mail_awaiting_review_waits_for_it_unread(
    settings: Settings, dovecot: Dovecot, imap_user: str
) -> None:
    """A stranger's first message waits for Alice's review (the bundled policy). Their
    follow-up, and a colleague of theirs answering it, answer nothing Mailroom keeps: they
    wait too, decided on their headers, and their bodies never leave the server. (Had an
    answer to mail awaiting review counted as a conversation, they would have been read and
    kept, their senders made contacts, without anyone's review.) Once Alice keeps the first,
    an answer to it is a conversation: it is read, and its words decide."""
    tom = "Tom Seller <tom@vendor.example>"
    dovecot.append(imap_user, "INBOX", [pitch(1), pitch(2), pitch(3, sender=tom)])
    bundled = settings.model_copy(update={"policy": BUNDLED_POLICY})
    runtime = build_runtime(bundled)
    alice = add_employee(runtime.sessions, ALICE)
    token = issue_token(runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    with contextlib.closing(runtime), run_service(bundled) as service:
        wait_for(lambda: len(_mailbox_decisions(runtime)) == 3)
        waiting = _mailbox_decisions(runtime)
        contacts_before = count(runtime, Contact)
        with runtime.sessions() as session:
            first = session.scalar(sa.select(Message.id).where(Message.message_id == FIRST_PITCH))
        with service.client(token) as api:
            explained = api.post(
                "/api/v1/explain",
                content=pitch(5, sender=tom),
                params={"channel": "imap"},
                headers={"Content-Type": "message/rfc822"},
            ).json()
            kept = api.post(f"/api/v1/review/{first}/capture")
        dovecot.append(imap_user, "INBOX", [pitch(4, sender=tom)])
        wait_for(lambda: len(_mailbox_decisions(runtime)) == 4)
        answered = _mailbox_decisions(runtime)[3]
        with runtime.sessions() as session:
            made = session.scalars(sa.select(Contact.address)).all()

    assert waiting == [("hold", ["unsolicited-inbound"], False)] * 3
    assert (explained["outcome"], explained["rules"]) == ("hold", ["unsolicited-inbound"])
    assert (explained["facts"]["replies_to_known"], explained["facts"]["replies_to_kept"]) == (
        True,
        False,
    )
    assert contacts_before == 0 and kept.status_code == 204
    assert answered[2], "an answer to mail Alice keeps is read"
    assert "unsolicited-inbound" not in answered[1] and answered[0] != "hold"
    assert "sam@vendor.example" in made


def test_sync_resumes_after_the_last_uid_and_repeats_nothing(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [business(1), newsletter(1)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])
    sync(runtime, mailbox_id)
    dovecot.append(imap_user, "INBOX", [business(2)])

    again = sync(runtime, mailbox_id)

    assert again.stats.messages == 1
    assert count(runtime, Message) == 2
    assert count(runtime, DecisionRecord) == 3


def test_uidvalidity_change_resyncs_without_duplicates(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "Projects", [business(1), newsletter(1), business(2)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["Projects"])
    sync(runtime, mailbox_id)
    dovecot.reset_uidvalidity(imap_user, "Projects")
    dovecot.append(imap_user, "Projects", [business(3)])

    again = sync(runtime, mailbox_id)

    assert again.stats.messages == 4  # the whole folder was read again
    assert count(runtime, Message) == 3  # ...and only the new message was filed
    assert count(runtime, DecisionRecord) == 4
    assert count(runtime, Receipt) == 4


def test_a_message_read_whole_then_settled_on_its_headers_is_decided_once(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    """Its receipt is keyed by its header section's digest however it was read: after a new
    UIDVALIDITY, a lower size cap (or a new policy) that settles it on its headers finds it."""
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "Projects", [business(1, body="The quote we discussed.\n" * 200)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["Projects"])
    assert sync(runtime, mailbox_id).stats.bodies_fetched == 1
    dovecot.reset_uidvalidity(imap_user, "Projects")

    again = sync(runtime, mailbox_id, max_bytes=2000)

    assert (again.stats.messages, again.stats.bodies_fetched) == (1, 0)
    assert count(runtime, DecisionRecord) == 1
    assert count(runtime, Receipt) == 1


def test_a_policy_put_in_force_during_a_sync_decides_the_batches_after_it(
    runtime: Runtime, dovecot: Dovecot, imap_user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync of years of history runs for minutes or hours: a version compliance put in
    force meanwhile (keeping less, after a complaint) applied to `mailroom mailboxes sync`
    only once it was done, while the listener's next batch followed it. Batches of 2 here."""
    monkeypatch.setattr(imap, "BATCH", 2)
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [business(n) for n in range(6)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])
    plumbing = (FIXTURES / "plumbing-policy.yaml").read_text()
    keeping_less = plumbing.replace('version: "test"', 'version: "less"').replace(
        "when: external-participant\n    outcome: capture",
        "when: external-participant\n    outcome: drop",
    )

    def publish_after_the_first_batch(done: int, total: int) -> None:
        if done == 2:
            with transaction(runtime.sessions) as session:
                publish_policy(session, load_policy_text(keeping_less))

    with runtime.sessions() as session:
        config = load_config(session, TEST_SECRET.encode(), mailbox_id)
    sync_once(
        runtime.pipeline,
        config,
        max_bytes=1 << 20,
        stop=threading.Event(),
        progress=publish_after_the_first_batch,
    )

    with runtime.sessions() as session:
        outcomes = session.scalars(sa.select(DecisionRecord.outcome).order_by(DecisionRecord.id))
        assert list(outcomes) == ["capture"] * 2 + ["drop"] * 4


def test_sent_folder_mail_is_outbound(runtime: Runtime, dovecot: Dovecot, imap_user: str) -> None:
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "Sent", [business(1)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX", "Sent"])

    sync(runtime, mailbox_id)

    with runtime.sessions() as session:
        inbound = session.scalars(sa.select(DecisionRecord.facts)).one()["inbound"]
        assert inbound is False
        assert session.scalar(sa.select(Message.direction)) == "outbound"


def test_a_folder_the_server_flags_sent_is_outbound_whatever_its_name(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "Gesendete Elemente", [business(1)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX", "Gesendete Elemente"])

    sync(runtime, mailbox_id)

    with runtime.sessions() as session:
        assert session.scalars(sa.select(DecisionRecord.facts)).one()["inbound"] is False


@pytest.mark.parametrize(
    ("folder", "sent"),
    [
        ("Sent", True),
        ("sent", True),
        ("Sent Items", True),
        ("Sent Messages", True),
        ("[Gmail]/Sent Mail", True),
        ("INBOX.Sent", True),
        ("Customers/Acme.Sent", False),  # one level of a "/" server, named "Acme.Sent"
        ("Sentinel", False),
        ("Gesendete Elemente", False),  # known by the server's \Sent flag alone
    ],
)
def test_a_folder_named_as_sent_mail_is_outbound(folder: str, sent: bool) -> None:
    assert named_sent(folder) is sent


def test_malformed_message_is_decided_and_breaks_nothing(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    add_employee(runtime.sessions, ALICE)
    broken = (
        b"From: =?utf-8?q?broken <<>>\r\nTo: bob@customer.example, ,,@@\r\n"
        b'Subject: =?bogus?x?zz?=\r\nContent-Type: multipart/mixed; boundary="nope"\r\n\r\n'
        b"--nope\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!notbase64\r\n"
    )
    dovecot.append(imap_user, "INBOX", [broken, business(1)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    done = sync(runtime, mailbox_id)

    assert done.stats.messages == 2
    assert count(runtime, DecisionRecord) == 2
    with runtime.sessions() as session:
        assert session.scalar(sa.select(MailboxFolder.last_uid)) == 2


def test_mail_that_looks_like_a_bounce_nested_beyond_reason_does_not_stop_the_folder(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    """Its subject says "Error", so its body is read to learn whether it is a bounce; a
    second, unbounded parse of it went past Python's recursion limit, which is no fault of
    one message's values: the batch was tried again at every sync, and failed again."""
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [business(1), deep_error().replace(b"\n", b"\r\n")])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    done = sync(runtime, mailbox_id)

    assert done.stats.messages == 2
    with runtime.sessions() as session:
        assert session.scalar(sa.select(MailboxFolder.last_uid)) == 2


@pytest.mark.parametrize("kind", UNSTORABLE)
def test_a_value_no_database_stores_as_written_does_not_stop_the_folder(
    runtime: Runtime, dovecot: Dovecot, imap_user: str, kind: str
) -> None:
    # (Dovecot serves a NUL as 0x80, as IMAP wants: other servers may not.)
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [business(1), UNSTORABLE[kind], business(2)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    done = sync(runtime, mailbox_id)

    assert done.stats.outcomes == {"capture": 3}
    assert count(runtime, Message) == 3
    with runtime.sessions() as session:
        assert session.scalar(sa.select(MailboxFolder.last_uid)) == 3


def test_a_message_that_fails_to_file_alone_is_left_out_and_the_folder_moves_on(
    runtime: Runtime, settings: Settings, dovecot: Dovecot, imap_user: str
) -> None:
    add_employee(runtime.sessions, ALICE)
    run_sql(settings.resolved_database_url, POISON_TRIGGER)
    dovecot.append(imap_user, "INBOX", [business(1), poison(), business(2)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    done = sync(runtime, mailbox_id)

    assert (done.stats.failed, done.stats.outcomes) == (1, {"capture": 2})
    assert count(runtime, Message) == 2
    with runtime.sessions() as session:
        assert session.scalar(sa.select(MailboxFolder.last_uid)) == 3


def test_a_fault_of_the_database_skips_no_message_of_the_folder(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [business(1), business(2)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])
    with runtime.db.begin() as conn:
        conn.execute(sa.text("ALTER TABLE receipts RENAME TO receipts_away"))

    with pytest.raises((sa.exc.DBAPIError, runtime.db.dialect.loaded_dbapi.Error)):
        sync(runtime, mailbox_id)  # raised as the driver raises it, and retried later

    with runtime.db.begin() as conn:
        conn.execute(sa.text("ALTER TABLE receipts_away RENAME TO receipts"))
    assert count(runtime, Message) == 0 and count(runtime, MailboxFolder) == 0
    assert sync(runtime, mailbox_id).stats.outcomes == {"capture": 2}


def test_message_over_the_size_cap_is_decided_on_headers_alone(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    add_employee(runtime.sessions, ALICE)
    big = business(1, body=("CANARY-BODY-TEXT " + "y" * 80 + "\n") * (26 * 1024 * 1024 // 98))
    assert len(big) > 25 * 1024 * 1024
    dovecot.append(imap_user, "INBOX", [big])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    done = sync(runtime, mailbox_id)

    assert (done.stats.over_cap, done.stats.bodies_fetched) == (1, 0)
    with runtime.sessions() as session:
        text = session.scalar(sa.select(Message.body_text))
        assert text is not None and "CANARY-BODY-TEXT" not in text
        facts = session.scalar(sa.select(DecisionRecord.facts))
        assert facts is not None and facts["body_read"] is False, "its facts are the headers'"


def test_serve_syncs_mailboxes_and_idle_delivers_a_new_message(
    runtime: Runtime, settings: Settings, dovecot: Dovecot, imap_user: str
) -> None:
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [business(1)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    with run_service(settings):
        wait_for(lambda: count(runtime, Message) == 1)
        wait_for(lambda: _synced(runtime, mailbox_id))
        dovecot.append(imap_user, "INBOX", [business(2)])
        wait_for(lambda: count(runtime, Message) == 2)


@pytest.fixture
def admin(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> str:
    """An admin's token, Alice an employee, and mailbox runners that look for mailboxes
    added, paused or removed five times a second."""
    monkeypatch.setattr(mailboxes, "RELOAD_SECONDS", 0.2)
    add_employee(runtime.sessions, ALICE)
    return issue_token(runtime.sessions, Role.ADMIN)


def test_a_removed_mailbox_stops_syncing_and_what_it_filed_stays(
    runtime: Runtime, settings: Settings, dovecot: Dovecot, imap_user: str, admin: str
) -> None:
    dovecot.append(imap_user, "INBOX", [business(1)])
    dovecot.append(imap_user, "Projects", [business(2)])
    removed = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])
    kept = new_mailbox(runtime, dovecot, imap_user, ["Projects"])

    with run_service(settings) as service:
        wait_for(lambda: _synced(runtime, removed) and _synced(runtime, kept))
        with service.client(admin) as api:
            gone = api.delete(f"/api/v1/mailboxes/{removed}")
            again = api.delete(f"/api/v1/mailboxes/{removed}")
            listed = api.get("/api/v1/mailboxes").json()["items"]
        assert (gone.status_code, again.status_code) == (204, 404)
        assert [m["id"] for m in listed] == [kept]
        # Its session ends (the runner notices within RELOAD_SECONDS, IDLE within a second),
        # not at the next message that fails to file for a mailbox no longer there.
        wait_for(lambda: _sessions_with(dovecot.port) == 1)
        dovecot.append(imap_user, "INBOX", [business(3)])
        dovecot.append(imap_user, "Projects", [business(4)])
        wait_for(lambda: count(runtime, Message) == 3)  # the kept mailbox's new message

        assert count(runtime, MailboxFolder) == 1  # the removed mailbox's positions went


def test_a_paused_mailbox_ends_its_session_and_resumes_where_it_stood(
    runtime: Runtime, settings: Settings, dovecot: Dovecot, imap_user: str, admin: str
) -> None:
    dovecot.append(imap_user, "INBOX", [business(1)])
    box = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    with run_service(settings) as service, service.client(admin) as api:
        wait_for(lambda: _synced(runtime, box) and _sessions_with(dovecot.port) == 1)
        paused = api.patch(f"/api/v1/mailboxes/{box}", json={"enabled": False})
        wait_for(lambda: _sessions_with(dovecot.port) == 0)
        dovecot.append(imap_user, "INBOX", [business(2)])
        time.sleep(0.5)  # two reloads: a paused mailbox is not started again
        assert _sessions_with(dovecot.port) == 0 and count(runtime, Message) == 1
        resumed = api.patch(f"/api/v1/mailboxes/{box}", json={"enabled": True})
        wait_for(lambda: count(runtime, Message) == 2)
        unknown = api.patch("/api/v1/mailboxes/999", json={"enabled": False})
        moved = api.patch(f"/api/v1/mailboxes/{box}", json={"host": "imap.evil.example"})

    assert paused.status_code == 200 and paused.json()["enabled"] is False
    assert resumed.status_code == 200 and resumed.json()["enabled"] is True
    assert (unknown.status_code, moved.status_code) == (404, 422)


def _sessions_with(port: int) -> int:
    """Established TCP connections to a loopback port, from Linux's /proc/net/tcp."""
    established = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                remote, state = fields[2], fields[3]
                established += state == "01" and int(remote.rsplit(":", 1)[1], 16) == port
    return established


def test_one_broken_mailbox_does_not_stop_the_others(
    runtime: Runtime, settings: Settings, dovecot: Dovecot, imap_user: str
) -> None:
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [business(1)])
    broken = new_mailbox(runtime, dovecot, imap_user, ["INBOX"], password="wrong-password")
    new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    with run_service(settings):
        wait_for(lambda: count(runtime, Message) == 1)
        wait_for(lambda: _error(runtime, broken) is not None)

    error = _error(runtime, broken)
    assert error is not None and "wrong-password" not in error
    assert error.startswith("LoginError: ") and error.endswith(paused_for_login(broken))


def test_a_new_password_through_the_api_syncs_a_mailbox_paused_for_a_refused_login(
    runtime: Runtime, settings: Settings, dovecot: Dovecot, imap_user: str, admin: str
) -> None:
    dovecot.append(imap_user, "INBOX", [business(1)])
    box = new_mailbox(runtime, dovecot, imap_user, ["INBOX"], password="expired-password")

    with run_service(settings) as service, service.client(admin) as api:
        wait_for(lambda: _error(runtime, box) is not None)  # refused: paused
        empty = api.patch(f"/api/v1/mailboxes/{box}", json={})
        broken = api.patch(f"/api/v1/mailboxes/{box}", json={"password": "a\r\nLOGOUT"})
        unknown = api.patch("/api/v1/mailboxes/999", json={"password": PASSWORD})
        fixed = api.patch(f"/api/v1/mailboxes/{box}", json={"password": PASSWORD, "enabled": True})
        wait_for(lambda: count(runtime, Message) == 1)
        wait_for(lambda: _error(runtime, box) is None)  # a sync that succeeds clears it

    assert (empty.status_code, broken.status_code, unknown.status_code) == (422, 422, 404)
    assert "line break" in broken.json()["detail"]
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["enabled"] is True and PASSWORD not in fixed.text
    with runtime.sessions() as session:
        config = load_config(session, TEST_SECRET.encode(), box)
    assert config.password == PASSWORD


def _synced(runtime: Runtime, mailbox_id: int) -> bool:
    with runtime.sessions() as session:
        mailbox = session.get(Mailbox, mailbox_id)
        return mailbox is not None and mailbox.last_sync_at is not None


def _error(runtime: Runtime, mailbox_id: int) -> str | None:
    with runtime.sessions() as session:
        mailbox = session.get(Mailbox, mailbox_id)
        return mailbox.last_error if mailbox else None


def wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_api_lists_mailboxes_for_admins_without_secrets(
    runtime: Runtime, settings: Settings, dovecot: Dovecot, imap_user: str
) -> None:
    alice = add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [business(1), newsletter(1)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])
    admin = issue_token(runtime.sessions, Role.ADMIN)
    employee = issue_token(runtime.sessions, Role.EMPLOYEE, employee_id=alice)

    with run_service(settings) as running:
        wait_for(lambda: _synced(runtime, mailbox_id))
        with running.client(admin) as client:
            response = client.get("/api/v1/mailboxes")
        with running.client(employee) as client:
            refused = client.get("/api/v1/mailboxes")

    assert response.status_code == 200
    (item,) = response.json()["items"]
    assert item["employee"] == ALICE
    assert (item["synced"], item["bodies_skipped"], item["pending"]) == (2, 1, 0)
    assert item["lag_seconds"] is not None and item["last_error"] is None
    assert item["folder_state"][0]["last_uid"] == 2
    with runtime.sessions() as session:
        sealed = session.scalar(sa.select(Mailbox.password_sealed))
    assert sealed and PASSWORD not in sealed
    assert PASSWORD not in response.text and sealed not in response.text
    assert "password" not in response.text
    assert refused.status_code == 403


def test_kill_9_mid_sync_of_5000_messages_then_restart_loses_and_repeats_nothing(
    runtime: Runtime, settings: Settings, dovecot: Dovecot, imap_user: str
) -> None:
    add_employee(runtime.sessions, ALICE)
    total = 5000
    dovecot.append(
        imap_user, "INBOX", (business(n) if n % 2 else newsletter(n) for n in range(total))
    )
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")} | {
        "MAILROOM_DATA_DIR": str(settings.data_dir),
        "MAILROOM_DATABASE_URL": settings.resolved_database_url,
        "MAILROOM_SECRET_KEY": TEST_SECRET,
        "MAILROOM_POLICY": str(settings.policy),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "mailboxes", "sync", str(mailbox_id)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _last_uid(runtime) > 0, timeout=120)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    killed_at = _last_uid(runtime)
    assert 0 < killed_at < total  # it really died mid-sync

    sync(runtime, mailbox_id)

    assert _last_uid(runtime) == total
    assert count(runtime, DecisionRecord) == total  # each message decided exactly once
    assert count(runtime, Receipt) == total
    assert count(runtime, Message) == total // 2


def _last_uid(runtime: Runtime) -> int:
    """A read that never waits for the write lock: the sync takes it batch after batch, and a
    poll that took it too (SQLite's BEGIN IMMEDIATE) could wait out the whole sync."""
    with runtime.read_sessions() as session:
        return session.scalar(sa.select(MailboxFolder.last_uid)) or 0


def test_journal_mailbox_files_mail_for_each_employee_taking_part(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    add_employee(runtime.sessions, ALICE)
    add_employee(runtime.sessions, "dave@example.com")
    to_dave = compose(
        sender="Bob <bob@customer.example>",
        to="dave@example.com, alice@example.com",
        message_id="<to-both@customer.example>",
    ).as_bytes()
    from_alice = business(1)
    stranger = compose(
        sender="Eve <eve@other.example>", to="nobody@customer.example", message_id="<x@o.example>"
    ).as_bytes()
    dovecot.append(imap_user, "INBOX", [to_dave, from_alice, stranger])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"], employee=None)

    done = sync(runtime, mailbox_id)

    assert done.stats.messages == 3
    assert done.stats.outcomes == {"capture": 3, "reject": 1}  # both owners of the first
    with runtime.sessions() as session:
        owners = session.execute(
            sa.select(Message.message_id, sa.func.count(MessageOwner.employee_id))
            .join(MessageOwner, MessageOwner.message_id == Message.id)
            .group_by(Message.message_id)
        ).all()
        directions = {
            mid: d for mid, d in session.execute(sa.select(Message.message_id, Message.direction))
        }
    assert {mid: n for mid, n in owners} == {
        "<to-both@customer.example>": 2,
        "<quote-1@example.com>": 1,
    }
    assert directions["<quote-1@example.com>"] == "outbound"


def test_mail_from_outside_in_a_colleagues_name_is_refused_where_our_server_found_it_forged(
    settings: Settings, dovecot: Dovecot, imap_user: str
) -> None:
    """A journal would file it as Alice's sent mail: a contact, a relationship and a text in
    her name, written by anyone. Our MX (the topmost Authentication-Results under our
    authserv-id) said DMARC failed: that settles it, on the headers alone."""
    runtime = build_runtime(settings.model_copy(update={"authserv_id": "mx.example.com"}))
    add_employee(runtime.sessions, ALICE)
    add_employee(runtime.sessions, "dave@example.com")
    fail = "mx.example.com; spf=fail smtp.mailfrom=evil.example; dmarc=fail header.from=example.com"
    forged = compose(
        to="Carl <carl@prospect.example>, dave@example.com",
        message_id="<forged@evil.example>",
        headers={"Authentication-Results": fail},
    )
    claims_below = compose(  # the sender's own "pass", under our server's verdict
        to="Bob <bob@customer.example>",
        message_id="<claims-below@evil.example>",
        headers={"Authentication-Results": fail},
    )
    claims_below.add_header("Authentication-Results", "mx.example.com; dmarc=pass")
    genuine = compose(
        to="Bob <bob@customer.example>",
        message_id="<genuine@example.com>",
        headers={"Authentication-Results": "mx.example.com; dkim=pass header.d=example.com"},
    )
    dovecot.append(imap_user, "INBOX", [m.as_bytes() for m in (forged, claims_below, genuine)])
    try:
        mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"], employee=None)

        done = sync(runtime, mailbox_id)

        assert done.stats.outcomes == {"reject": 3, "capture": 1}  # Alice, Dave; Alice
        assert done.stats.bodies_fetched == 1  # the genuine one's, to keep its text
        with runtime.sessions() as session:
            kept = set(session.scalars(sa.select(Message.message_id)))
            contacts = set(session.scalars(sa.select(Contact.address)))
            rules = session.scalars(
                sa.select(DecisionRecord.rules).where(DecisionRecord.outcome == "reject")
            ).all()
        assert kept == {"<genuine@example.com>"}
        assert contacts == {"bob@customer.example"}
        assert rules == [["submitter-not-employee"]] * 3
        explained = runtime.pipeline.explain(
            forged.as_bytes(), Envelope(mail_from=ALICE), Channel.IMAP
        )
        assert explained.decision.outcome is Outcome.REJECT
    finally:
        runtime.close()


def test_a_dropped_message_leaves_no_content_in_the_database(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    add_employee(runtime.sessions, ALICE)
    canary = compose(
        sender="Canary Sender <canary-sender@canary-shop.example>",
        to=ALICE,
        subject="CANARY-SUBJECT-7731",
        message_id="<canary-7731@canary-shop.example>",
        headers={"List-Id": "<canary.list.example>"},
        body="CANARY-BODY-7731\n",
    ).as_bytes()
    dovecot.append(imap_user, "INBOX", [canary])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    done = sync(runtime, mailbox_id)

    assert done.stats.outcomes == {"drop": 1}
    stored = []
    with runtime.db.connect() as conn:
        for table in Base.metadata.sorted_tables:
            stored += [repr(tuple(row)) for row in conn.execute(sa.select(table))]
    dump = "\n".join(stored).lower()
    for needle in ("canary-subject", "canary-body", "canary-sender", "canary-shop", "canary-7731"):
        assert needle not in dump


def test_a_sync_at_log_level_debug_logs_no_word_of_the_mail(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    """MAILROOM_LOG_LEVEL=DEBUG is a documented setting: imapclient, at DEBUG, logged every
    line of the IMAP conversation, and imaplib each answer's literal, that is the mail."""
    add_employee(runtime.sessions, ALICE)
    dropped = compose(
        sender="Canary Sender <canary-sender@canary-shop.example>",
        to=ALICE,
        subject="CANARY-SUBJECT-7732",
        headers={"List-Id": "<canary.list.example>"},
        body="CANARY-BODY-7732\n",
    ).as_bytes()
    kept = business(1, body="CANARY-KEPT-7732 is the quote we discussed.\n")
    dovecot.append(imap_user, "INBOX", [dropped, kept])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure(LogFormat.JSON, level="DEBUG", stream=out)
        done = sync(runtime, mailbox_id)
    finally:
        root.handlers, root.level = handlers, level
    assert done.stats.outcomes == {"drop": 1, "capture": 1}
    logged = out.getvalue().lower()
    for needle in ("canary", "quote-1@", "bob1@", PASSWORD.lower()):
        assert needle not in logged


def test_api_adds_a_mailbox_and_never_shows_its_password(running: Running) -> None:
    alice = add_employee(running.runtime.sessions, ALICE)
    admin = issue_token(running.runtime.sessions, Role.ADMIN)
    employee = issue_token(running.runtime.sessions, Role.EMPLOYEE, employee_id=alice)
    body = {
        "employee": ALICE,
        "host": "127.0.0.1",
        "port": 1,  # nothing listens: the sync records an error, the API still answers
        "username": "alice",
        "password": "hunter2-api-secret",
        "folders": ["INBOX", "Sent"],
        "tls": "none",
    }
    with running.client(employee) as client:
        assert client.post("/api/v1/mailboxes", json=body).status_code == 403
    with running.client(admin) as client:
        created = client.post("/api/v1/mailboxes", json=body)
        journal_and_employee = client.post("/api/v1/mailboxes", json=body | {"journal": True})
        listed = client.get("/api/v1/mailboxes")

    assert created.status_code == 201, created.text
    assert created.json()["employee"] == ALICE and created.json()["folders"] == ["INBOX", "Sent"]
    assert journal_and_employee.status_code == 422
    assert [m["id"] for m in listed.json()["items"]] == [created.json()["id"]]
    for response in (created, listed):
        assert "hunter2" not in response.text and "password" not in response.text
    with running.runtime.sessions() as session:
        sealed = session.scalar(sa.select(Mailbox.password_sealed))
    assert sealed and "hunter2" not in sealed


def test_a_server_announcing_a_huge_literal_is_refused_before_reading_it() -> None:
    """A hostile server (the only fake here: it stands for a machine we do not control)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile ready\r\n")
            for line in lines:
                tag, command = line.split(b" ", 2)[:2]
                if command.upper() == b"LOGIN":
                    conn.sendall(tag + b" OK [CAPABILITY IMAP4rev1] logged in\r\n")
                elif command.upper() == b"SELECT" or command.upper() == b"EXAMINE":
                    conn.sendall(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n")
                    conn.sendall(tag + b" OK [READ-ONLY] done\r\n")
                elif command.upper() == b"UID":
                    conn.sendall(b"* 1 FETCH (UID 1 BODY[HEADER] {999999999999}\r\nxx")
                    return
                else:
                    conn.sendall(tag + b" OK done\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    config = MailboxConfig(
        id=1,
        host="127.0.0.1",
        port=port,
        username="u",
        password="p",
        folders=("INBOX",),
        tls="none",
    )
    client = connect(config, max_bytes=1 << 20, timeout=10)
    try:
        client.select_folder("INBOX", readonly=True)
        with pytest.raises(MailboxError, match="999999999999-byte header-section literal"):
            client.fetch([1], ["BODY.PEEK[HEADER]"])
    finally:
        close(client)
        server.close()
        thread.join(timeout=10)


def _body_left_out_server(header: bytes, size: int, *, still_there: bool) -> socket.socket:
    """A server (on loopback) that answers the header FETCH of message 1 but leaves its body
    out of the FETCH answer; asked again, its search says whether the message is still there."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        searches = 0
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
            for line in lines:
                tag, command, *rest = line.rstrip(b"\r\n").split(b" ")
                verb = command.upper()
                if verb in (b"SELECT", b"EXAMINE"):
                    conn.sendall(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n")
                    conn.sendall(tag + b" OK [READ-ONLY] done\r\n")
                elif verb == b"UID" and rest[0].upper() == b"SEARCH":
                    searches += 1
                    found = searches == 1 or still_there
                    conn.sendall(b"* SEARCH" + (b" 1" if found else b"") + b"\r\n")
                    conn.sendall(tag + b" OK done\r\n")
                elif verb == b"UID" and b"HEADER" in line.upper():
                    conn.sendall(
                        b"* 1 FETCH (UID 1 RFC822.SIZE %d BODY[HEADER] {%d}\r\n%s)\r\n"
                        % (size, len(header), header)
                    )
                    conn.sendall(tag + b" OK done\r\n")
                elif verb == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
                elif verb == b"LOGOUT":
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:  # LOGIN, and the body's FETCH: answered with no message in it
                    conn.sendall(tag + b" OK done\r\n")

    threading.Thread(target=serve, daemon=True).start()
    return server


@pytest.mark.parametrize("still_there", [True, False])
def test_a_body_left_out_of_the_answer_is_tried_again_unless_the_message_is_gone(
    runtime: Runtime, still_there: bool
) -> None:
    """A body missing from a FETCH answer is taken for expunged only if a search agrees;
    otherwise the batch rolls back, the folder stays where it was, and the next sync tries."""
    add_employee(runtime.sessions, ALICE)
    raw = business(1)
    header = raw.split(b"\n\n", 1)[0].replace(b"\n", b"\r\n") + b"\r\n\r\n"
    server = _body_left_out_server(header, len(raw), still_there=still_there)
    port = server.getsockname()[1]
    with transaction(runtime.sessions) as session:
        mailbox = add_mailbox(
            session,
            TEST_SECRET.encode(),
            employee=ALICE,
            host="127.0.0.1",
            port=port,
            username="u",
            password="p",
            folders=["INBOX"],
            tls="none",
        )
        config = load_config(session, TEST_SECRET.encode(), mailbox.id)
    client = connect(config, max_bytes=1 << 20, timeout=10)
    try:
        sync = FolderSync(client, runtime.pipeline, config, max_bytes=1 << 20)
        if still_there:
            with pytest.raises(FolderError, match="left out the body"):
                sync.sync_all()
        else:
            sync.sync_all()
    finally:
        close(client)
        server.close()

    assert count(runtime, DecisionRecord) == 0
    with runtime.sessions() as session:
        position = session.scalar(sa.select(MailboxFolder.last_uid))
    assert position == (None if still_there else 1)


def test_a_missing_folder_does_not_stop_the_other_folders_and_is_reported(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [business(1)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["Archive2024", "INBOX"])

    with pytest.raises(FolderError, match="1 of 2 folders failed: Archive2024: ") as failed:
        sync(runtime, mailbox_id)

    assert count(runtime, Message) == 1, "INBOX was read all the same"
    with runtime.sessions() as session:
        folders = session.execute(sa.select(MailboxFolder.name, MailboxFolder.last_uid)).all()
        assert [tuple(row) for row in folders] == [("INBOX", 1)]
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None and mailbox.last_sync_at is None  # not all of it synced
    assert describe_error(failed.value).startswith("FolderError: 1 of 2 folders failed")


def _hostile(answer_uid_command: Any) -> socket.socket:
    """A hostile server on loopback (it stands for a machine we do not control): it logs in
    and opens INBOX, then answers the first UID command with `answer_uid_command(conn, tag)`."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1] hostile ready\r\n")
            for line in lines:
                tag, command = line.split(b" ", 2)[:2]
                if command.upper() in (b"SELECT", b"EXAMINE"):
                    conn.sendall(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n")
                    conn.sendall(tag + b" OK [READ-ONLY] done\r\n")
                elif command.upper() == b"UID":
                    with contextlib.suppress(OSError):
                        answer_uid_command(conn, tag)
                    return
                else:  # LOGIN
                    conn.sendall(tag + b" OK [CAPABILITY IMAP4rev1] done\r\n")

    threading.Thread(target=serve, daemon=True).start()
    return server


def _fetch_headers_from(
    server: socket.socket, *, max_bytes: int, timeout: float = 10
) -> dict[int, dict[bytes, Any]]:
    port = server.getsockname()[1]
    config = MailboxConfig(
        id=1,
        host="127.0.0.1",
        port=port,
        username="u",
        password="p",
        folders=("INBOX",),
        tls="none",
    )
    client = connect(config, max_bytes=max_bytes, timeout=timeout)
    try:
        client.select_folder("INBOX", readonly=True)
        return fetch_header_sections(client, [1], limit=HEADER_CAP)
    finally:
        close(client)
        server.close()


def test_a_header_section_over_its_cap_is_read_and_a_larger_claim_refused() -> None:
    """A header section over HEADER_CAP is a message's doing (anyone can write one): it is
    read like any literal (and cut to HEADER_CAP when parsed). One claimed past the size
    cap (plus a header section's worth) is still refused before it is read."""

    def oversized(conn: socket.socket, tag: bytes) -> None:
        size = HEADER_CAP + 1
        conn.sendall(b"* 1 FETCH (UID 1 RFC822.SIZE 10 BODY[HEADER] {%d}\r\n" % size)
        conn.sendall(b"x" * size + b")\r\n" + tag + b" OK done\r\n")

    fetched = _fetch_headers_from(_hostile(oversized), max_bytes=1 << 24)
    assert fetched[1][b"BODY[HEADER]"] == b"x" * (HEADER_CAP + 1)

    claim = (1 << 16) + HEADER_CAP + 1

    def claimed(conn: socket.socket, tag: bytes) -> None:
        conn.sendall(b"* 1 FETCH (UID 1 RFC822.SIZE 10 BODY[HEADER]<0> {%d}\r\n" % claim)

    with pytest.raises(MailboxError, match=f"{claim}-byte header-section literal"):
        _fetch_headers_from(_hostile(claimed), max_bytes=1 << 16)


def test_a_message_with_a_header_section_over_its_cap_stops_no_sync(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    """One message anyone can send (1.1 MB of header fields) stopped its mailbox's sync
    at that message for good: each sync gave the connection up there."""
    add_employee(runtime.sessions, ALICE)
    fields = b"".join(b"X-Filler-%d: " % n + b"x" * 900 + b"\r\n" for n in range(1200))
    dovecot.append(imap_user, "INBOX", [fields + business(1), business(2)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    done = sync(runtime, mailbox_id)

    assert done.stats.messages == 2 and _synced(runtime, mailbox_id)


def test_a_batch_whose_header_sections_pass_one_answers_bound_is_synced_in_parts(
    runtime: Runtime, dovecot: Dovecot, imap_user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of messages with large header sections (a long Received trail, thousands of
    recipients: 120 KB each makes 60 MB for 500) passed one answer's bound, and every sync
    gave the connection up at that batch: the mailbox never moved again. Scaled down here:
    a body chunk of 1 MiB, so an answer may hold 3 MiB, and 40 messages of 100 KB headers
    among 20 of the usual kind. Each message is decided on its whole header section (its
    From and To come after the filler)."""
    monkeypatch.setattr(imap, "BODY_CHUNK_BYTES", 1 << 20)
    add_employee(runtime.sessions, ALICE)
    filler = b"".join(b"X-Filler-%d: " % n + b"x" * 990 + b"\r\n" for n in range(100))
    messages = [filler + business(n) if n % 3 else business(n) for n in range(60)]
    dovecot.append(imap_user, "INBOX", messages)
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    done = sync(runtime, mailbox_id, max_bytes=1 << 20)

    assert done.stats.outcomes == {"capture": 60} and _synced(runtime, mailbox_id)
    with runtime.sessions() as session:
        contacts = set(session.scalars(sa.select(Contact.address)))
    assert contacts == {f"bob{n}@customer.example" for n in range(60)}


def test_one_answer_of_many_literals_each_under_the_cap_is_refused_past_its_bound() -> None:
    """Each literal allowed, their sum not: one command's answer holds at most a body chunk
    and one message, whatever the server sends."""
    literal = 1_000_000

    def flood(conn: socket.socket, tag: bytes) -> None:
        for _ in range(60):
            conn.sendall(b"* 1 FETCH (UID 1 RFC822.SIZE 10 BODY[HEADER] {%d}\r\n" % literal)
            conn.sendall(b"x" * literal + b")\r\n")
        conn.sendall(tag + b" OK done\r\n")

    bound = BODY_CHUNK_BYTES + (1 << 16) + HEADER_CAP
    with pytest.raises(MailboxError, match=f"answer to one command passed {bound} bytes"):
        _fetch_headers_from(_hostile(flood), max_bytes=1 << 16)


@pytest.mark.parametrize(
    "opening",
    [
        pytest.param(b"* 1 FETCH (UID 1 RFC822.SIZE 10 BODY[HEADER] {200}\r\n", id="literal"),
        pytest.param(b"* OK ", id="line"),
    ],
)
def test_a_server_dripping_one_answer_a_byte_at_a_time_is_given_up_after_the_deadline(
    opening: bytes,
) -> None:
    """Each byte resets the socket's timeout; inside one literal or line the command's
    deadline (ten timeouts: 3 s here) still holds. The drip would take 20 s."""
    sent = []

    def drip(conn: socket.socket, tag: bytes) -> None:
        conn.sendall(opening)
        for _ in range(200):
            time.sleep(0.1)
            conn.sendall(b"x")
            sent.append(1)

    with pytest.raises(MailboxError, match="one command took over 3 s"):
        _fetch_headers_from(_hostile(drip), max_bytes=1 << 16, timeout=0.3)
    assert len(sent) < 100  # given up while the server was still dripping


def test_journal_files_no_mail_for_an_employee_named_only_in_reply_to(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    """Reply-To is written by the sender: an employee named there took no part."""
    add_employee(runtime.sessions, ALICE)
    add_employee(runtime.sessions, "dave@example.com")
    inbound = compose(
        sender="Eve <eve@other.example>",
        to="dave@example.com",
        headers={"Reply-To": ALICE},
        message_id="<reply-to@other.example>",
    ).as_bytes()
    dovecot.append(imap_user, "INBOX", [inbound])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"], employee=None)

    sync(runtime, mailbox_id)

    with runtime.sessions() as session:
        owners = session.scalars(
            sa.select(Employee.email).join(MessageOwner, MessageOwner.employee_id == Employee.id)
        ).all()
    assert owners == ["dave@example.com"]


def test_a_server_that_chatters_but_never_answers_is_given_up_after_a_deadline() -> None:
    """Each untagged line resets the socket's timeout; the command's deadline does not."""
    given_up = threading.Event()

    def chatter(conn: socket.socket, tag: bytes) -> None:
        while not given_up.wait(0.05):
            conn.sendall(b"* OK still working\r\n")

    started = time.monotonic()
    try:
        with pytest.raises(MailboxError, match="one command took over 3 s"):
            _fetch_headers_from(_hostile(chatter), max_bytes=1 << 16, timeout=0.3)
    finally:
        given_up.set()
    assert time.monotonic() - started < 10


def _odd_server(*, examine: bytes, listing: bytes = b"") -> socket.socket:
    """A server on loopback that answers oddly (it stands for a machine we do not control):
    every connection logs in, LISTs `listing`, and opens any folder with the untagged lines
    `examine`, holding no message. It serves connection after connection until closed."""
    server = socket.create_server(("127.0.0.1", 0))

    def session(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1] odd but ready\r\n")
            for line in lines:
                tag, command, *rest = line.rstrip(b"\r\n").split(b" ")
                verb = command.upper()
                if verb in (b"SELECT", b"EXAMINE"):
                    conn.sendall(examine + tag + b" OK [READ-ONLY] done\r\n")
                elif verb == b"LIST":
                    conn.sendall(listing + tag + b" OK done\r\n")
                elif verb == b"UID" and rest[0].upper() == b"SEARCH":
                    conn.sendall(b"* SEARCH\r\n" + tag + b" OK done\r\n")
                elif verb == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
                elif verb == b"LOGOUT":
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:  # LOGIN
                    conn.sendall(tag + b" OK done\r\n")

    def serve() -> None:
        with contextlib.suppress(OSError):  # closed by the test
            while True:
                conn, _ = server.accept()
                threading.Thread(target=session, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return server


def _odd_mailbox(runtime: Runtime, server: socket.socket, folders: list[str]) -> int:
    with transaction(runtime.sessions) as session:
        return add_mailbox(
            session,
            TEST_SECRET.encode(),
            employee=ALICE,
            host="127.0.0.1",
            port=server.getsockname()[1],
            username="u",
            password="p",
            folders=folders,
            tls="none",
        ).id


def test_a_sync_failing_on_a_missing_key_is_recorded_not_taken_for_a_removed_mailbox(
    runtime: Runtime, settings: Settings
) -> None:
    """A server that opens a folder without its UIDVALIDITY fails the sync with a KeyError:
    the mailbox still exists, so its last error says so (a removed one alone ends quietly)."""
    add_employee(runtime.sessions, ALICE)
    server = _odd_server(examine=b"* 0 EXISTS\r\n")
    try:
        mailbox_id = _odd_mailbox(runtime, server, ["INBOX"])
        with run_service(settings):
            wait_for(lambda: _error(runtime, mailbox_id) is not None)
    finally:
        server.close()
    assert _error(runtime, mailbox_id) == "KeyError"


def test_a_listed_folder_name_that_is_no_modified_utf7_stops_no_sync(runtime: Runtime) -> None:
    """A server listing "R&D" unescaped (RFC 3501 wants "R&-D") names no folder we sync: the
    configured ones are synced all the same, and one flagged \\Sent still counts as sent."""
    add_employee(runtime.sessions, ALICE)
    listing = (
        b'* LIST (\\HasNoChildren) "/" "R&D"\r\n'
        b'* LIST (\\HasNoChildren \\Sent) "/" "Sent Things"\r\n'
        b'* LIST (\\HasNoChildren) "/" INBOX\r\n'
    )
    server = _odd_server(examine=b"* 0 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n", listing=listing)
    try:
        mailbox_id = _odd_mailbox(runtime, server, ["INBOX", "Sent Things"])
        done = sync(runtime, mailbox_id)
    finally:
        server.close()
    assert done.sent_folders == {"Sent Things"}
    assert _synced(runtime, mailbox_id)


def test_metrics_show_each_mailboxs_lag_since_its_last_complete_sync(
    runtime: Runtime, settings: Settings, dovecot: Dovecot, imap_user: str, admin: str
) -> None:
    """`mailroom_imap_lag_seconds{mailbox}`, as README promises: for an alert on a mailbox
    that stopped syncing. One never synced counts from when it was added; a paused one is
    not watched."""
    dovecot.append(imap_user, "INBOX", [business(1)])
    synced = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])
    paused = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])
    with transaction(runtime.sessions) as session:
        mailboxes.set_enabled(session, paused, False)

    with run_service(settings) as service, service.client(None) as client:
        wait_for(lambda: _synced(runtime, synced))
        exposition = client.get("/metrics").text

    lags = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("mailroom_imap_lag_seconds{")
    }
    assert list(lags) == [str(synced)]
    assert 0 <= lags[str(synced)] < 30


def test_a_backfill_since_the_first_year_reads_every_message(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    """`--since 0001-01-01`, "everything": IMAP writes a SEARCH date's year in four digits
    (RFC 3501 date-year), and a server refuses `01-Jan-1`; each folder failed for ever."""
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [business(1)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"], since=date(1, 1, 1))

    done = sync(runtime, mailbox_id)

    assert done.stats.messages == 1 and count(runtime, Message) == 1


def test_a_sync_stopped_before_its_last_folder_is_no_complete_sync(
    runtime: Runtime, dovecot: Dovecot, imap_user: str
) -> None:
    """A pause or a shutdown stops a sync after the batch in hand: the folders it never
    reached are not synced, so the mailbox's last sync (and its lag) stands still."""
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [business(1)])
    dovecot.append(imap_user, "Projects", [business(2)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX", "Projects"])
    with runtime.sessions() as session:
        config = load_config(session, TEST_SECRET.encode(), mailbox_id)
    stop = threading.Event()

    client = connect(config, max_bytes=1 << 20)
    try:
        progress = lambda done, total: stop.set()  # noqa: E731 - stopped after INBOX's batch
        FolderSync(
            client, runtime.pipeline, config, max_bytes=1 << 20, stop=stop, progress=progress
        ).sync_all()
    finally:
        close(client)

    assert count(runtime, Message) == 1, "Projects was never reached"
    assert not _synced(runtime, mailbox_id)


def test_a_mailbox_that_synced_again_starts_its_backoff_afresh(
    runtime: Runtime, settings: Settings
) -> None:
    """Three logins the server cannot take now back the mailbox off to 8 s; then it syncs,
    and its connection breaks: that new failure is retried after 1 s, not after 8 (nor,
    later, 5 minutes for every blip of a mailbox that had a bad morning once)."""
    add_employee(runtime.sessions, ALICE)
    server = socket.create_server(("127.0.0.1", 0))
    arrivals: list[float] = []
    broke: list[float] = []

    def session(conn: socket.socket, number: int) -> None:
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n")
            for line in lines:
                tag, command, *rest = line.rstrip(b"\r\n").split(b" ")
                verb = command.upper()
                if verb == b"LOGIN" and number < 3:
                    conn.sendall(tag + b" NO [UNAVAILABLE] not yet\r\n")
                elif verb in (b"SELECT", b"EXAMINE"):
                    conn.sendall(b"* 0 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n")
                    conn.sendall(tag + b" OK [READ-ONLY] done\r\n")
                elif verb == b"UID" and rest[0].upper() == b"SEARCH":
                    conn.sendall(b"* SEARCH\r\n" + tag + b" OK done\r\n")
                elif verb == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY IMAP4rev1 IDLE\r\n" + tag + b" OK done\r\n")
                elif verb == b"IDLE":  # synced: now the connection breaks
                    broke.append(time.monotonic())
                    return
                elif verb == b"LOGOUT":
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:  # LOGIN, LIST
                    conn.sendall(tag + b" OK done\r\n")

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                arrivals.append(time.monotonic())
                args = (conn, len(arrivals) - 1)
                threading.Thread(target=session, args=args, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        mailbox_id = _odd_mailbox(runtime, server, ["INBOX"])
        with run_service(settings):
            wait_for(lambda: _synced(runtime, mailbox_id) and bool(broke))
            wait_for(lambda: len(arrivals) == 5, timeout=15)
    finally:
        server.close()
    assert arrivals[4] - broke[0] < 4


@pytest.mark.parametrize(
    ("refusal", "paused"),
    [
        (b"NO [AUTHENTICATIONFAILED] Invalid credentials", True),  # RFC 5530, Gmail
        (b"NO LOGIN failed.", True),  # Exchange: no code at all
        (b"NO [UNAVAILABLE] Try again later", False),  # the server says it is temporary
    ],
    ids=["authentication-failed", "no-code", "unavailable"],
)
def test_a_refused_login_pauses_the_mailbox_instead_of_retrying_it(
    runtime: Runtime, settings: Settings, refusal: bytes, paused: bool
) -> None:
    """A wrong password was retried after 1, 2, 4... s and then every 5 minutes: ten failed
    logins in nine minutes, where a lockout policy (Active Directory's, say) locks the
    employee's account. A refusal now pauses the mailbox, and its last error says why."""
    add_employee(runtime.sessions, ALICE)
    server = socket.create_server(("127.0.0.1", 0))
    logins: list[float] = []

    def answer(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n")
            for line in lines:
                tag, command, *_ = line.rstrip(b"\r\n").split(b" ")
                if command.upper() == b"LOGIN":
                    logins.append(time.monotonic())
                    conn.sendall(tag + b" " + refusal + b"\r\n")
                elif command.upper() == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY IMAP4rev1 IDLE\r\n" + tag + b" OK done\r\n")
                else:  # LOGOUT
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        mailbox_id = _odd_mailbox(runtime, server, ["INBOX"])
        with run_service(settings):
            wait_for(lambda: _error(runtime, mailbox_id) is not None)
            time.sleep(1.5)  # past the first retry's 1 s
    finally:
        server.close()

    with runtime.sessions() as session:
        mailbox = session.get(Mailbox, mailbox_id)
    assert mailbox is not None and mailbox.last_error is not None
    assert mailbox.last_error.startswith("LoginError: ")
    if paused:
        assert (len(logins), mailbox.enabled) == (1, False)
        assert mailbox.last_error.endswith(paused_for_login(mailbox_id))
    else:
        assert (len(logins) > 1, mailbox.enabled) == (True, True)
        assert "; paused:" not in mailbox.last_error


def test_mailboxes_are_still_paused_after_the_database_was_away_a_moment(
    runtime: Runtime, settings: Settings, dovecot: Dovecot, imap_user: str, admin: str
) -> None:
    """The runner looks for mailboxes added, paused and removed every RELOAD_SECONDS; one
    look that fails (the database restarting) must not end the looking for good, or a
    mailbox paused afterwards would go on being read."""
    dovecot.append(imap_user, "INBOX", [business(1)])
    box = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    with run_service(settings):
        wait_for(lambda: _synced(runtime, box) and _sessions_with(dovecot.port) == 1)
        with runtime.db.begin() as conn:  # the runner's next looks fail
            conn.execute(sa.text("ALTER TABLE mailboxes RENAME TO mailboxes_away"))
        time.sleep(1)
        with runtime.db.begin() as conn:
            conn.execute(sa.text("ALTER TABLE mailboxes_away RENAME TO mailboxes"))
        with transaction(runtime.sessions) as session:
            mailboxes.set_enabled(session, box, False)
        wait_for(lambda: _sessions_with(dovecot.port) == 0, timeout=10)


def test_metrics_count_the_messages_a_mailbox_sync_committed(
    runtime: Runtime, settings: Settings, dovecot: Dovecot, imap_user: str
) -> None:
    """`mailroom_messages_total{channel,outcome,rule}` counts every channel's decisions, not
    only SMTP's: a dashboard of what Mailroom keeps and drops showed no mailbox at all."""
    add_employee(runtime.sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [business(1), newsletter(1)])
    mailbox_id = new_mailbox(runtime, dovecot, imap_user, ["INBOX"])

    with run_service(settings) as service, service.client(None) as client:
        wait_for(lambda: _synced(runtime, mailbox_id))
        exposition = client.get("/metrics").text

    counted = {
        line.split('outcome="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith('mailroom_messages_total{channel="imap"')
    }
    assert counted == {"capture": 1.0, "drop": 1.0}


def _inbox_stuck_server(header: bytes, size: int) -> socket.socket:
    """A server whose INBOX holds message 1, whose body it leaves out of every FETCH answer
    (the batch rolls back: still to do), and whose Projects folder is empty."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        selected = b""
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
            for line in lines:
                tag, command, *rest = line.rstrip(b"\r\n").split(b" ")
                verb = command.upper()
                inbox = selected == b"INBOX"
                if verb in (b"SELECT", b"EXAMINE"):
                    selected = rest[0].strip(b'"')
                    exists = b"1" if selected == b"INBOX" else b"0"
                    conn.sendall(b"* " + exists + b" EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n")
                    conn.sendall(tag + b" OK [READ-ONLY] done\r\n")
                elif verb == b"UID" and rest[0].upper() == b"SEARCH":
                    found = b" 1" if inbox else b""
                    conn.sendall(b"* SEARCH" + found + b"\r\n" + tag + b" OK done\r\n")
                elif verb == b"UID" and b"HEADER" in line.upper() and inbox:
                    conn.sendall(
                        b"* 1 FETCH (UID 1 RFC822.SIZE %d BODY[HEADER] {%d}\r\n%s)\r\n"
                        % (size, len(header), header)
                    )
                    conn.sendall(tag + b" OK done\r\n")
                elif verb == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n")
                elif verb == b"LOGOUT":
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:  # LOGIN, LIST, and the body's FETCH: answered with no message in it
                    conn.sendall(tag + b" OK done\r\n")

    threading.Thread(target=serve, daemon=True).start()
    return server


def test_a_folder_stuck_with_its_backlog_still_counts_as_pending(runtime: Runtime) -> None:
    """The mailbox's pending is every folder's backlog: INBOX's message still to do is not
    forgotten because Projects, synced after it, had nothing new."""
    add_employee(runtime.sessions, ALICE)
    raw = business(1)
    header = raw.split(b"\n\n", 1)[0].replace(b"\n", b"\r\n") + b"\r\n\r\n"
    server = _inbox_stuck_server(header, len(raw))
    try:
        mailbox_id = _odd_mailbox(runtime, server, ["INBOX", "Projects"])
        with pytest.raises(FolderError, match="1 of 2 folders failed: INBOX: "):
            sync(runtime, mailbox_id)
    finally:
        server.close()
    with runtime.sessions() as session:
        mailbox = session.get(Mailbox, mailbox_id)
        assert mailbox is not None and mailbox.pending == 1
