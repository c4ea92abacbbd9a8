"""`mailroom mailboxes add|list`: the password comes from the environment and never shows."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import sqlalchemy as sa

from app import sealing
from app.db import transaction
from app.mailboxes import load_config, paused_for_login, set_password
from app.models import Mailbox
from app.settings import Settings
from capture.imap import MailboxError
from tests.conftest import TEST_SECRET, add_employee
from tests.dovecot import PASSWORD, Dovecot
from tests.mail import compose

ALICE = "alice@example.com"
SECRET = "correct-horse-battery-staple"


def _mailroom(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=base
        | {
            "MAILROOM_DATA_DIR": str(settings.data_dir),
            "MAILROOM_DATABASE_URL": settings.resolved_database_url,
            "MAILROOM_SECRET_KEY": TEST_SECRET,
            "MAILROOM_POLICY": str(settings.policy),
        }
        | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_mailboxes_add_reads_the_password_from_the_environment_and_never_shows_it(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session]
) -> None:
    add_employee(sessions, ALICE)
    args = ["mailboxes", "add", "--employee", ALICE, "--host", "imap.example.com"]
    args += ["--user", "alice", "--password-env", "ALICE_IMAP", "--starttls", "--port", "143"]

    added = _mailroom(settings, *args, ALICE_IMAP=SECRET)
    listed = _mailroom(settings, "mailboxes", "list", COLUMNS="200")

    assert added.returncode == 0, added.stderr
    assert "mailbox 1 added" in added.stdout
    assert listed.returncode == 0, listed.stderr
    assert "alice@imap.example.com:143" in listed.stdout
    for output in (added.stdout, added.stderr, listed.stdout, listed.stderr):
        assert SECRET not in output
    with sessions() as session:
        mailbox = session.scalars(sa.select(Mailbox)).one()
    assert (mailbox.tls, mailbox.folders, mailbox.sent_folders) == (
        "starttls",
        ["INBOX", "Sent"],
        ["Sent"],
    )
    assert SECRET not in mailbox.password_sealed


def test_mailboxes_list_shows_folder_names_as_they_are_named(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session]
) -> None:
    """A folder name with brackets is no markup: `[clients]` is not a style to swallow."""
    add_employee(sessions, ALICE)
    args = ["mailboxes", "add", "--employee", ALICE, "--host", "imap.example.com", "--user", "a"]
    args += ["--folders", "INBOX,[clients]/acme", "--password-env", "PW"]
    assert _mailroom(settings, *args, PW=SECRET).returncode == 0

    listed = _mailroom(settings, "mailboxes", "list", COLUMNS="200")

    assert "INBOX,[clients]/acme" in listed.stdout, listed.stdout


def test_mailboxes_pause_resume_and_remove_say_what_they_did(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session]
) -> None:
    add_employee(sessions, ALICE)
    args = ["mailboxes", "add", "--employee", ALICE, "--host", "127.0.0.1", "--user", "a"]
    assert _mailroom(settings, *args, "--password-env", "PW", PW=SECRET).returncode == 0

    paused = _mailroom(settings, "mailboxes", "pause", "1")
    listed = _mailroom(settings, "mailboxes", "list", COLUMNS="200")
    assert "paused" in listed.stdout, listed.stderr
    with sessions() as session:
        assert session.scalar(sa.select(Mailbox.enabled)) is False
    resumed = _mailroom(settings, "mailboxes", "resume", "1")
    with sessions() as session:
        assert session.scalar(sa.select(Mailbox.enabled)) is True
    removed = _mailroom(settings, "mailboxes", "remove", "1")
    again = _mailroom(settings, "mailboxes", "remove", "1")
    unknown = _mailroom(settings, "mailboxes", "pause", "1")

    assert paused.stdout.strip() == "mailbox 1 paused", paused.stderr
    assert resumed.stdout.strip() == "mailbox 1 resumed", resumed.stderr
    assert removed.returncode == 0 and "mailbox 1 removed" in removed.stdout, removed.stderr
    assert again.returncode == 1 and "no mailbox 1" in again.stderr
    assert unknown.returncode == 1 and "no mailbox 1" in unknown.stderr
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Mailbox)) == 0


def test_mailboxes_add_refuses_a_missing_password_or_an_unknown_employee(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session]
) -> None:
    add_employee(sessions, ALICE)
    base = ["mailboxes", "add", "--host", "imap.example.com", "--user", "a"]
    base += ["--password-env", "NOT_SET_ANYWHERE"]

    missing = _mailroom(settings, *base, "--employee", ALICE)
    unknown = _mailroom(settings, *base, "--employee", "zed@example.com", NOT_SET_ANYWHERE="x")
    both = _mailroom(settings, *base, "--tls", "--starttls", "--employee", ALICE)

    assert missing.returncode == 1 and "NOT_SET_ANYWHERE is not set" in missing.stderr
    assert unknown.returncode == 1 and "no employee zed@example.com" in unknown.stderr
    assert both.returncode == 1 and "choose one of" in both.stderr


def test_mailboxes_sync_of_an_unreachable_server_says_so_and_records_it(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session]
) -> None:
    add_employee(sessions, ALICE)
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["mailboxes", "add", "--employee", ALICE, "--host", "127.0.0.1", "--port", str(port)]
    added = _mailroom(settings, *args, "--user", "a", "--password-env", "PW", "--plain", PW=SECRET)
    assert added.returncode == 0, added.stderr

    done = _mailroom(settings, "mailboxes", "sync", "1")

    assert done.returncode == 1
    assert done.stderr.startswith("error: mailbox 1: ConnectionRefusedError"), done.stderr
    assert "Traceback" not in done.stderr
    with sessions() as session:
        mailbox = session.scalars(sa.select(Mailbox)).one()
    assert (mailbox.last_error or "").startswith("ConnectionRefusedError")


def test_mailboxes_sync_refused_its_login_pauses_the_mailbox_and_says_so(
    settings: Settings,
    sessions: sa.orm.sessionmaker[sa.orm.Session],
    dovecot: Dovecot,
    imap_user: str,
) -> None:
    add_employee(sessions, ALICE)
    _add_dovecot_mailbox(settings, dovecot, imap_user, "not-" + SECRET)

    done = _mailroom(settings, "mailboxes", "sync", "1")

    assert done.returncode == 1
    assert done.stderr.startswith("error: mailbox 1: LoginError: "), done.stderr
    assert done.stderr.rstrip().endswith(paused_for_login(1)), done.stderr
    with sessions() as session:
        mailbox = session.scalars(sa.select(Mailbox)).one()
    assert not mailbox.enabled


def test_mailboxes_password_keeps_where_each_folder_stands_and_resumes_on_request(
    settings: Settings,
    sessions: sa.orm.sessionmaker[sa.orm.Session],
    dovecot: Dovecot,
    imap_user: str,
) -> None:
    add_employee(sessions, ALICE)
    dovecot.append(imap_user, "INBOX", [compose(message_id="<quote-1@example.com>").as_bytes()])
    _add_dovecot_mailbox(settings, dovecot, imap_user, PASSWORD)
    first = _mailroom(settings, "mailboxes", "sync", "1")
    expired = _mailroom(settings, "mailboxes", "password", "1", "--password-env", "PW", PW=SECRET)
    refused = _mailroom(settings, "mailboxes", "sync", "1")  # pauses it
    dovecot.append(imap_user, "INBOX", [compose(message_id="<quote-2@example.com>").as_bytes()])
    given = _mailroom(settings, "mailboxes", "password", "1", "--password-env", "PW", PW=PASSWORD)
    with sessions() as session:
        assert session.scalars(sa.select(Mailbox)).one().enabled is False
    resumed = _mailroom(
        settings, "mailboxes", "password", "1", "--password-env", "PW", "--resume", PW=PASSWORD
    )
    second = _mailroom(settings, "mailboxes", "sync", "1")

    assert first.stdout.startswith("1 messages"), first.stderr
    assert expired.stdout.strip() == "mailbox 1: password changed; it syncs from where it stood"
    assert refused.returncode == 1 and paused_for_login(1) in refused.stderr, refused.stderr
    assert given.stdout.strip() == (
        "mailbox 1: password changed; it is paused "
        "(`mailroom mailboxes resume 1` syncs it from where it stood)"
    ), given.stderr
    assert resumed.stdout.strip() == "mailbox 1: password changed; it syncs from where it stood"
    assert second.stdout.startswith("1 messages"), second.stderr  # the new one alone
    with sessions() as session:
        mailbox = session.scalars(sa.select(Mailbox)).one()
        assert mailbox.enabled and mailbox.last_error is None
    for output in (expired, given, resumed):
        assert SECRET not in output.stdout + output.stderr


def _add_dovecot_mailbox(settings: Settings, dovecot: Dovecot, user: str, password: str) -> None:
    """Mailbox 1: Alice's INBOX on the test server, with this password."""
    args = ["mailboxes", "add", "--employee", ALICE, "--host", dovecot.host, "--folders", "INBOX"]
    args += ["--port", str(dovecot.port), "--user", user, "--password-env", "PW", "--plain"]
    added = _mailroom(settings, *args, PW=password)
    assert added.returncode == 0, added.stderr


def test_mailboxes_password_refuses_an_unknown_mailbox_or_an_unusable_password(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session]
) -> None:
    add_employee(sessions, ALICE)
    args = ["mailboxes", "add", "--employee", ALICE, "--host", "imap.example.com", "--user", "a"]
    assert _mailroom(settings, *args, "--password-env", "PW", PW=SECRET).returncode == 0
    change = ["mailboxes", "password", "--password-env", "PW"]

    unknown = _mailroom(settings, *change, "2", PW=SECRET)
    missing = _mailroom(settings, *change, "1")
    broken = _mailroom(settings, *change, "1", PW="a\r\nLOGOUT")

    assert unknown.returncode == 1 and "no mailbox 2" in unknown.stderr
    assert missing.returncode == 1 and "PW is not set" in missing.stderr
    assert broken.returncode == 1 and "no line break" in broken.stderr
    with sessions() as session:
        assert load_config(session, settings.secret(), 1).password == SECRET


def test_mailboxes_add_refuses_plain_text_to_a_remote_host_unless_forced(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session]
) -> None:
    add_employee(sessions, ALICE)
    args = ["mailboxes", "add", "--employee", ALICE, "--host", "imap.example.com", "--port", "143"]
    args += ["--user", "a", "--password-env", "PW", "--plain"]

    refused = _mailroom(settings, *args, PW=SECRET)
    forced = _mailroom(settings, *args, "--plain-remote", PW=SECRET)

    assert refused.returncode == 1 and "only a loopback host" in refused.stderr
    assert forced.returncode == 0, forced.stderr
    with sessions() as session:
        assert session.scalars(sa.select(Mailbox.tls)).all() == ["none"]


def test_mailboxes_add_refuses_a_password_imap_login_cannot_send(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session]
) -> None:
    add_employee(sessions, ALICE)
    args = ["mailboxes", "add", "--employee", ALICE, "--host", "imap.example.com"]

    added = _mailroom(settings, *args, "--user", "a", "--password-env", "PW", PW="Kennwort-für-Ä")

    assert added.returncode == 1 and "must be ASCII" in added.stderr
    assert "für" not in added.stderr and "\\xfc" not in added.stderr
    assert count_mailboxes(sessions) == 0


@pytest.mark.parametrize("password", ["hunter2\n", "hunter2\r\nA1 DELETE INBOX"])
def test_mailboxes_add_refuses_a_password_with_a_line_break(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session], password: str
) -> None:
    """IMAP LOGIN sends the password as a quoted string, which holds no CR or LF: one read
    with its file's newline could never log in (and the rest of it would reach the server
    as a command of its own)."""
    add_employee(sessions, ALICE)
    args = ["mailboxes", "add", "--employee", ALICE, "--host", "imap.example.com"]

    added = _mailroom(settings, *args, "--user", "a", "--password-env", "PW", PW=password)

    assert added.returncode == 1 and "line break" in added.stderr
    assert "hunter2" not in added.stderr
    assert count_mailboxes(sessions) == 0


def count_mailboxes(sessions: sa.orm.sessionmaker[sa.orm.Session]) -> int:
    with sessions() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Mailbox)) or 0


def test_a_password_moved_to_another_server_or_employee_in_the_table_is_never_sent(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session]
) -> None:
    """Whoever can write the mailboxes table, without the secret key, cannot point a mailbox
    at a server of their own to collect its password, nor hand it to another employee."""
    add_employee(sessions, ALICE)
    bob = add_employee(sessions, "bob@example.com")
    for user in ("alice", "bob"):
        args = ["mailboxes", "add", "--employee", ALICE, "--host", "127.0.0.1", "--port", "1"]
        added = _mailroom(settings, *args, "--user", user, "--password-env", "PW", PW=SECRET)
        assert added.returncode == 0, added.stderr
    with socket.create_server(("127.0.0.1", 0)) as theirs, sessions() as session:
        theirs.setblocking(False)
        alice, other = session.scalars(sa.select(Mailbox).order_by(Mailbox.id)).all()
        assert load_config(session, settings.secret(), alice.id).password == SECRET
        tampering = [
            {"port": theirs.getsockname()[1]},
            {"host": "localhost"},
            {"employee_id": bob},
            {"username": "bob"},
            {"tls": "starttls"},
            {"password_sealed": other.password_sealed},  # another mailbox's, sealed by us
        ]
        for change in tampering:
            original = {name: getattr(alice, name) for name in change}
            session.execute(sa.update(Mailbox).where(Mailbox.id == alice.id).values(change))
            session.commit()

            synced = _mailroom(settings, "mailboxes", "sync", str(alice.id))

            assert synced.returncode == 1, change
            assert "stored password does not unseal" in synced.stderr, change
            with pytest.raises(ValueError, match="does not unseal"):  # nor is a new one taken
                set_password(session, settings.secret(), alice.id, "new-" + SECRET)
            with pytest.raises(BlockingIOError):  # nobody ever connected to their server
                theirs.accept()
            session.execute(sa.update(Mailbox).where(Mailbox.id == alice.id).values(original))
            session.commit()
        session.expire_all()
        assert load_config(session, settings.secret(), alice.id).password == SECRET
    listed = _mailroom(settings, "mailboxes", "list", COLUMNS="300")
    assert "does not unseal" in listed.stdout  # what the last failed sync recorded


def test_a_password_sealed_by_an_earlier_release_is_sealed_for_its_mailbox_by_reseal(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session]
) -> None:
    employee = add_employee(sessions, ALICE)
    unbound = sealing._fernet(settings.secret(), sealing.INFO).encrypt(SECRET.encode()).decode()
    with transaction(sessions) as session:
        mailbox = Mailbox(
            employee_id=employee,
            host="127.0.0.1",
            port=143,
            username="alice",
            password_sealed=unbound,
            folders=["INBOX"],
            tls="none",
        )
        session.add(mailbox)
        session.flush()
        mailbox_id = mailbox.id
    with sessions() as session, pytest.raises(MailboxError, match="mailboxes reseal"):
        load_config(session, settings.secret(), mailbox_id)  # no start reads it by itself

    resealed = _mailroom(settings, "mailboxes", "reseal")

    assert resealed.returncode == 0, resealed.stderr
    assert resealed.stdout.startswith("1 mailbox passwords sealed again")
    with sessions() as session:
        assert load_config(session, settings.secret(), mailbox_id).password == SECRET
        session.execute(sa.update(Mailbox).values(port=993))
        with pytest.raises(MailboxError, match="does not unseal"):
            load_config(session, settings.secret(), mailbox_id)
    assert _mailroom(settings, "mailboxes", "reseal").stdout.startswith("0 mailbox")
