"""`mailroom import mbox|maildir`: the same pipeline, a progress bar, and a rerun skips."""

from __future__ import annotations

import mailbox
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import DecisionRecord, Message
from app.runtime import publish_policy
from app.settings import Settings
from capture.archive import ArchiveKind, open_archive
from policies.loader import load_policy
from tests.conftest import FIXTURES, TEST_SECRET, add_employee
from tests.mail import UNSTORABLE, compose

ALICE = "alice@example.com"


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
    return env | {
        "MAILROOM_DATA_DIR": str(settings.data_dir),
        "MAILROOM_DATABASE_URL": settings.resolved_database_url,
        "MAILROOM_SECRET_KEY": TEST_SECRET,
        "MAILROOM_POLICY": str(settings.policy),
    }


def _mailroom(
    settings: Settings, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=_env(settings) | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _mbox(path: Path, raws: Iterable[bytes]) -> Path:
    box = mailbox.mbox(path)
    for raw in raws:
        box.add(raw)
    box.close()
    return path


def _messages() -> list[bytes]:
    kept = [
        compose(to=f"bob{n}@customer.example", message_id=f"<m{n}@example.com>").as_bytes()
        for n in range(5)
    ]
    old = compose(to="carol@customer.example", message_id="<old@example.com>")
    del old["Date"]
    old["Date"] = "Tue, 01 Jan 2019 09:00:00 +0000"
    listed = compose(
        sender="news@shop.example", to=ALICE, headers={"List-Id": "<deals.shop.example>"}
    )
    return [*kept, old.as_bytes(), listed.as_bytes()]


def _count(settings: Settings, table: type[Message] | type[DecisionRecord]) -> int:
    engine = sa.create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        found = conn.scalar(sa.select(sa.func.count()).select_from(table))
    engine.dispose()
    return found or 0


def test_import_mbox_files_messages_and_a_rerun_skips_them(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session], tmp_path: Path
) -> None:
    add_employee(sessions, ALICE)
    path = _mbox(tmp_path / "alice.mbox", _messages())

    first = _mailroom(settings, "import", "mbox", str(path), "--employee", ALICE)
    assert first.returncode == 0, first.stderr
    assert "7 read: 7 imported (6 capture, 1 drop)" in first.stdout
    assert _count(settings, Message) == 6

    again = _mailroom(settings, "import", "mbox", str(path), "--employee", ALICE)
    assert again.returncode == 0, again.stderr
    assert "0 imported" in again.stdout and "7 already imported" in again.stdout
    assert _count(settings, DecisionRecord) == 7


def test_a_message_over_the_size_cap_is_decided_on_its_headers_as_a_mailboxs_is(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session], tmp_path: Path
) -> None:
    """Its body is never parsed (85 MB took half a gigabyte to parse), nor kept; a rerun
    knows it by its header section."""
    add_employee(sessions, ALICE)
    big = compose(message_id="<big@example.com>", body="CANARY-BODY-TEXT quote\n" * 2_000)
    path = _mbox(tmp_path / "alice.mbox", [big.as_bytes(), *_messages()[:2]])
    cap = {"MAILROOM_MAX_MESSAGE_BYTES": "20000"}

    first = _mailroom(settings, "import", "mbox", str(path), "--employee", ALICE, env=cap)
    again = _mailroom(settings, "import", "mbox", str(path), "--employee", ALICE, env=cap)

    assert first.returncode == 0, first.stderr
    assert "3 imported (3 capture) (1 over the size cap, on their headers)" in first.stdout
    assert "3 already imported" in again.stdout
    engine = sa.create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        text = conn.scalar(
            sa.select(Message.body_text).where(Message.message_id == "<big@example.com>")
        )
        unread = conn.scalars(sa.select(DecisionRecord.facts)).all()
    engine.dispose()
    assert text is not None and "CANARY-BODY-TEXT" not in text
    assert [f.get("body_read") for f in unread] == [False, None, None]


def test_a_message_over_the_size_cap_is_as_large_as_it_is_for_the_policy(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Decided on its header section, it still has its own size, as a mailbox's has the size
    its server reports: a `larger-than` rule hits it, where the header section's few hundred
    bytes missed every such rule for the very largest mail."""
    add_employee(sessions, ALICE)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        (FIXTURES / "plumbing-policy.yaml")
        .read_text()
        .replace(
            "rules:\n",
            "rules:\n"
            "  - id: very-large\n"
            "    description: Mail over 30 kB is mostly attachments, kept by no one.\n"
            "    when: {larger-than: {bytes: 30000}}\n"
            "    outcome: drop\n",
        )
    )
    big = compose(message_id="<big@example.com>", body="quote line\n" * 5_000).as_bytes()
    path = _mbox(tmp_path / "alice.mbox", [big])
    env = {"MAILROOM_MAX_MESSAGE_BYTES": "20000", "MAILROOM_POLICY": str(policy)}

    done = _mailroom(settings, "import", "mbox", str(path), "--employee", ALICE, env=env)

    assert done.returncode == 0, done.stderr
    assert "1 read: 1 imported (1 drop) (1 over the size cap, on their headers)" in done.stdout
    engine = sa.create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        facts = conn.scalar(sa.select(DecisionRecord.facts))
    engine.dispose()
    assert facts is not None and facts["size"] == len(big) and facts["body_read"] is False


def test_a_rerun_under_another_size_cap_knows_what_was_imported(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A message read whole by one run and on its headers by the next (the cap was lowered,
    the shell running the rerun lacks the service's setting, or an earlier release read
    every message whole) is the same message: it was decided and recorded a second time."""
    add_employee(sessions, ALICE)
    big = compose(message_id="<big@example.com>", body="quote line\n" * 5_000).as_bytes()
    path = _mbox(tmp_path / "alice.mbox", [big, *_messages()[:1]])
    args = ("import", "mbox", str(path), "--employee", ALICE)

    whole = _mailroom(settings, *args)
    capped = _mailroom(settings, *args, env={"MAILROOM_MAX_MESSAGE_BYTES": "20000"})
    whole_again = _mailroom(settings, *args)

    assert whole.returncode == capped.returncode == whole_again.returncode == 0, capped.stderr
    assert "2 read: 0 imported (nothing new), 2 already imported" in capped.stdout
    assert "2 read: 0 imported (nothing new), 2 already imported" in whole_again.stdout
    assert _count(settings, DecisionRecord) == 2


def test_the_progress_bar_names_the_archive_as_it_is_named(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A name with brackets is no markup: `[archive]` is not a style to swallow."""
    add_employee(sessions, ALICE)
    path = _mbox(tmp_path / "alice [archive].mbox", _messages()[:1])

    done = _mailroom(settings, "import", "mbox", str(path), "--employee", ALICE)

    assert done.returncode == 0, done.stderr
    assert "importing alice [archive].mbox" in done.stderr


def test_an_import_is_the_employees_mail_where_submitters_must_prove_who_they_are(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session], tmp_path: Path
) -> None:
    """REQUIRE_SUBMITTER_PROOF asks SMTP submitters for AUTH or a trusted relay's DKIM. An
    archive the operator imports for Alice is hers by that act, as a mailbox an admin added
    for her is: its mail is decided, not refused as from someone who is not an employee."""
    add_employee(sessions, ALICE)
    path = _mbox(tmp_path / "alice.mbox", _messages())

    done = _mailroom(
        settings,
        "import",
        "mbox",
        str(path),
        "--employee",
        ALICE,
        env={"MAILROOM_REQUIRE_SUBMITTER_PROOF": "true"},
    )

    assert done.returncode == 0, done.stderr
    assert "7 read: 7 imported (6 capture, 1 drop)" in done.stdout


def test_import_maildir_with_a_date_horizon(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session], tmp_path: Path
) -> None:
    add_employee(sessions, ALICE)
    box = mailbox.Maildir(tmp_path / "Maildir")
    for raw in _messages():
        box.add(raw)

    done = _mailroom(
        settings,
        "import",
        "maildir",
        str(tmp_path / "Maildir"),
        "--employee",
        ALICE,
        "--since",
        "2026-01-01",
    )

    assert done.returncode == 0, done.stderr
    assert "1 before --since" in done.stdout
    assert _count(settings, Message) == 5


def _maildir(path: Path, raws: Iterable[bytes]) -> Path:
    box = mailbox.Maildir(path)
    for raw in raws:
        box.add(raw)
    return path


def test_a_link_in_a_maildir_to_mail_outside_it_is_never_read(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """An employee's export holds their mail only: a symbolic link in it, to a file or a
    folder outside (a colleague's mail, /etc/passwd), is left out unread, and said so."""
    add_employee(sessions, ALICE)
    colleagues = _maildir(
        tmp_path / "bob", [compose(subject="Bob's own", message_id="<bob@example.com>").as_bytes()]
    )
    (bobs_mail,) = (colleagues / "new").iterdir()
    export = _maildir(tmp_path / "alice", _messages()[:1])
    (export / "cur" / "1700000000.M1P1.host:2,S").symlink_to(bobs_mail)

    done = _mailroom(settings, "import", "maildir", str(export), "--employee", ALICE)

    assert done.returncode == 1
    assert "1 read: 1 imported (1 capture)" in done.stdout
    assert "error: 1 entry of the Maildir left out unread" in done.stderr
    assert _count(settings, Message) == 1
    shutil.rmtree(export / "cur")
    (export / "cur").symlink_to(colleagues / "new")
    linked = _mailroom(settings, "import", "maildir", str(export), "--employee", ALICE)
    assert linked.returncode == 1 and "is a symbolic link" in linked.stderr, linked.stderr
    assert _count(settings, Message) == 1


def test_hidden_files_in_a_maildir_are_no_messages(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """As mail clients and servers read a Maildir (mutt, Dovecot): a name starting with a
    dot is no message, such as the ._ files macOS's tar puts beside each file it packs."""
    add_employee(sessions, ALICE)
    export = _maildir(tmp_path / "alice", _messages()[:1])
    (message,) = (export / "new").iterdir()
    (export / "new" / f"._{message.name}").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    (export / "cur" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))

    done = _mailroom(settings, "import", "maildir", str(export), "--employee", ALICE)

    assert done.returncode == 0, done.stderr
    assert "1 read: 1 imported (1 capture)" in done.stdout
    assert _count(settings, DecisionRecord) == 1


def test_a_message_a_mail_client_moves_during_an_import_is_still_read(tmp_path: Path) -> None:
    """A Maildir in use: its client moves new mail to cur/ (adding flags) and deletes some
    while the import reads it. Moved mail is read where it went; deleted mail is gone."""
    raws = _messages()[:3]
    export = _maildir(tmp_path / "alice", raws)
    archive = open_archive(export, ArchiveKind.MAILDIR)
    moved, deleted, _ = sorted((export / "new").iterdir())
    moved.rename(export / "cur" / f"{moved.name}:2,S")
    read_before = deleted.read_bytes()
    deleted.unlink()

    read = list(archive.messages)

    assert archive.total == 3
    assert sorted(read) == sorted(raw for raw in raws if raw != read_before)


def test_a_fifo_in_a_maildir_is_left_out_rather_than_waited_on(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    add_employee(sessions, ALICE)
    export = _maildir(tmp_path / "alice", _messages()[:2])
    os.mkfifo(export / "cur" / "1700000000.M1P1.host:2,S")

    done = _mailroom(settings, "import", "maildir", str(export), "--employee", ALICE, timeout=60)

    assert done.returncode == 1
    assert "2 read: 2 imported (2 capture)" in done.stdout
    assert "error: 1 entry of the Maildir left out unread" in done.stderr


def test_a_since_with_a_time_zone_means_that_moment(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """10:00 at +02:00 is 08:00 UTC: mail of 09:00 UTC is after it, not before."""
    add_employee(sessions, ALICE)
    path = _mbox(tmp_path / "alice.mbox", _messages()[:1])  # dated 2026-11-23 09:00 UTC

    done = _mailroom(
        settings,
        "import",
        "mbox",
        str(path),
        "--employee",
        ALICE,
        "--since",
        "2026-11-23T10:00+02:00",
    )

    assert done.returncode == 0, done.stderr
    assert "1 read: 1 imported (1 capture), 0 already imported, 0 before --since" in done.stdout


EXTERNAL_RULE = (
    "  - id: external-business-correspondent\n"
    "    description: Mail with someone outside the company is captured.\n"
    "    when: external-participant\n"
    "    outcome: capture\n"
)
FIRST_MEETING_KEEPS_METADATA = (
    (FIXTURES / "plumbing-policy.yaml")
    .read_text()
    .replace(
        EXTERNAL_RULE,
        "  - id: known-correspondent\n"
        "    description: Mail with someone who is already a contact is captured.\n"
        "    when: known-contact\n"
        "    outcome: capture\n"
        "  - id: first-meeting\n"
        "    description: Mail with someone not yet a contact keeps who and when.\n"
        "    when: external-participant\n"
        "    outcome: metadata_only\n",
    )
)


def test_an_mbox_is_filed_in_the_order_of_its_messages(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """The eleventh message is filed after the third, not before it (keys sorted as text put
    10 before 2): what a message makes known (a contact) decides the later ones."""
    add_employee(sessions, ALICE)
    policy = tmp_path / "policy.yaml"
    policy.write_text(FIRST_MEETING_KEEPS_METADATA)
    raws = [
        compose(to=f"bob@customer{n}.example", message_id=f"<m{n}@example.com>").as_bytes()
        for n in range(11)
    ]
    raws[2] = compose(to="carol@partner.example", subject="First", message_id="<1@x>").as_bytes()
    raws[10] = compose(to="carol@partner.example", subject="Again", message_id="<2@x>").as_bytes()
    path = _mbox(tmp_path / "alice.mbox", raws)

    done = _mailroom(
        settings,
        "import",
        "mbox",
        str(path),
        "--employee",
        ALICE,
        env={"MAILROOM_POLICY": str(policy)},
    )

    assert done.returncode == 0, done.stderr
    assert "11 read: 11 imported (1 capture, 10 metadata_only)" in done.stdout
    engine = sa.create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        captured = conn.scalars(sa.select(Message.subject).where(Message.outcome == "capture"))
        assert captured.all() == ["Again"]
    engine.dispose()


def test_an_import_applies_a_policy_put_in_force_while_it_runs(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """An import of years of mail outlasts the version in force at its start: one published
    meanwhile (say, keeping less) decides the batches after it, as in every serving
    process, rather than the import filing the rest under the version it began with."""
    add_employee(sessions, ALICE)
    one = compose(message_id="<m@example.com>").as_bytes()
    raws = (one.replace(b"<m@", f"<m{n}@".encode()) for n in range(1000))  # 5 batches
    path = _mbox(tmp_path / "alice.mbox", raws)
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(
        (FIXTURES / "plumbing-policy.yaml")
        .read_text()
        .replace(EXTERNAL_RULE, EXTERNAL_RULE.replace("capture", "metadata_only"))
    )
    importing = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "import", "mbox", str(path), "--employee", ALICE],
        env=_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while _count(settings, DecisionRecord) < 200:  # the first batch is committed
        assert importing.poll() is None, importing.communicate()
        time.sleep(0.01)
    with transaction(sessions) as session:
        in_force = publish_policy(session, load_policy(stricter)).sha256
    out, err = importing.communicate(timeout=120)

    assert importing.returncode == 0, err
    engine = sa.create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        last = conn.execute(
            sa.select(DecisionRecord.policy_sha256, DecisionRecord.outcome)
            .order_by(DecisionRecord.id.desc())
            .limit(1)
        ).one()
    engine.dispose()
    assert tuple(last) == (in_force, "metadata_only"), out


@pytest.mark.parametrize("kind", UNSTORABLE)
def test_a_value_no_database_stores_as_written_costs_the_import_nothing(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session], tmp_path: Path, kind: str
) -> None:
    add_employee(sessions, ALICE)
    kept = _messages()[:2]
    path = _mbox(tmp_path / "alice.mbox", (kept[0], UNSTORABLE[kind], kept[1]))

    done = _mailroom(settings, "import", "mbox", str(path), "--employee", ALICE)

    assert done.returncode == 0, done.stderr
    assert "3 read: 3 imported (3 capture)" in done.stdout
    assert _count(settings, Message) == 3


def test_a_line_an_mbox_quoted_as_from_is_read_as_written(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session], tmp_path: Path
) -> None:
    """An mbox writes a body line that starts with 'From ' as '>From ' (mail clients and
    Python's mailbox alike), and reading must take the '>' away again: it stayed, so Alice's
    import kept text Jane never wrote, and Bob's copy of the same mail, whose text differs
    from it, was filed as a message of its own."""
    add_employee(sessions, ALICE)
    add_employee(sessions, "bob@example.com")
    mail = compose(
        sender="Jane Doe <jane@customer.example>",
        to="Alice <alice@example.com>, Bob <bob@example.com>",
        body="Hello,\n\nFrom next week on we ship daily.\n",
        message_id="<daily@customer.example>",
    ).as_bytes()
    alices = _mbox(tmp_path / "alice.mbox", [mail])
    bobs = _maildir(tmp_path / "bob", [mail])

    assert _mailroom(settings, "import", "mbox", str(alices), "--employee", ALICE).returncode == 0
    done = _mailroom(settings, "import", "maildir", str(bobs), "--employee", "bob@example.com")

    assert done.returncode == 0, done.stderr
    engine = sa.create_engine(settings.resolved_database_url)
    with engine.connect() as conn:
        texts = conn.scalars(sa.select(Message.body_text)).all()
    engine.dispose()
    assert texts == ["Hello,\n\nFrom next week on we ship daily.\n"]


def nested(depth: int = 1_000) -> bytes:
    """`depth` messages each attached to the next (30 KB): parse_message reads a message
    holding them for its headers only (`too-many-multiparts`)."""
    returned = b"From: Alice <alice@example.com>\nTo: bob@customer.example\n\nHello\n"
    for _ in range(depth):
        returned = b"Content-Type: message/rfc822\n\n" + returned
    return returned


def deep_bounce() -> bytes:
    """A delivery report whose returned message is nested beyond reason."""
    return (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.customer.example>\n"
        b"To: alice@example.com\nSubject: Undelivered Mail Returned to Sender\n"
        b"Date: Tue, 24 Nov 2026 09:00:00 +0000\nMessage-ID: <deep@mx.customer.example>\n"
        b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        b"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.customer.example\n"
        b"\nFinal-Recipient: rfc822; bob@customer.example\nAction: failed\nStatus: 5.1.1\n\n"
        b"--B\n" + nested() + b"\n--B--\n"
    )


def deep_error() -> bytes:
    """Mail whose subject looks like a bounce's, nested beyond reason."""
    return (
        b"From: Jane Doe <jane@customer.example>\nTo: alice@example.com\n"
        b"Subject: Error in invoice 1234\nDate: Tue, 24 Nov 2026 09:00:00 +0000\n"
        b"Message-ID: <undeliverable@customer.example>\nMIME-Version: 1.0\n" + nested()
    )


@pytest.mark.parametrize("bounce", [deep_bounce, deep_error])
def test_a_bounce_nested_beyond_reason_is_imported_not_the_end_of_the_import(
    settings: Settings,
    sessions: sa.orm.sessionmaker[sa.orm.Session],
    tmp_path: Path,
    bounce: Callable[[], bytes],
) -> None:
    """A report's recipients, and whether a message that looks like a bounce is one, were
    read from a second, unbounded parse of the message, which went past Python's recursion
    limit: the import stopped there, and every rerun stopped at the same message (a mailbox
    sync that reads such a body retried its batch for ever)."""
    add_employee(sessions, ALICE)
    kept = _messages()[:2]
    path = _mbox(tmp_path / "alice.mbox", (kept[0], bounce(), kept[1]))

    done = _mailroom(settings, "import", "mbox", str(path), "--employee", ALICE)

    assert done.returncode == 0, done.stderr
    assert "3 read: 3 imported (3 capture)" in done.stdout
    assert _count(settings, Message) == 3


# A message the database refuses for a reason of its own (a constraint, bad data), as no
# message did at the time of writing: stands for the next such bug. SQLite's RAISE(ABORT) is
# a constraint error, SQLSTATE 22023 a data error: both the message's fault (capture.alone).
POISON_TRIGGER = {
    "sqlite": [
        "CREATE TRIGGER poison BEFORE INSERT ON messages FOR EACH ROW "
        "WHEN NEW.subject = 'Poison' BEGIN SELECT RAISE(ABORT, 'poison'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'poison' USING ERRCODE = '22023'; END $$",
        "CREATE TRIGGER poison BEFORE INSERT ON messages FOR EACH ROW "
        "WHEN (NEW.subject = 'Poison') EXECUTE FUNCTION poison()",
    ],
}
POISON_CURE = {
    "sqlite": ["DROP TRIGGER poison"],
    "postgresql": ["DROP TRIGGER poison ON messages", "DROP FUNCTION poison()"],
}


def run_sql(url: str, statements: dict[str, list[str]]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements[conn.dialect.name]:
            conn.exec_driver_sql(statement)
    engine.dispose()


def poison() -> bytes:
    return compose(subject="Poison", message_id="<poison@example.com>").as_bytes()


def test_a_message_that_fails_to_file_alone_is_left_out_and_a_rerun_tries_it_again(
    settings: Settings, sessions: sa.orm.sessionmaker[sa.orm.Session], tmp_path: Path
) -> None:
    add_employee(sessions, ALICE)
    run_sql(settings.resolved_database_url, POISON_TRIGGER)
    path = tmp_path / "alice.mbox"
    kept = _messages()[:2]
    _mbox(path, (kept[0], poison(), kept[1]))

    done = _mailroom(settings, "import", "mbox", str(path), "--employee", ALICE)

    assert done.returncode == 1
    assert "3 read: 2 imported (2 capture)" in done.stdout
    assert "error: 1 could not be filed" in done.stderr and "Traceback" not in done.stderr
    assert _count(settings, Message) == 2
    run_sql(settings.resolved_database_url, POISON_CURE)
    again = _mailroom(settings, "import", "mbox", str(path), "--employee", ALICE)
    assert again.returncode == 0, again.stderr
    assert "1 imported" in again.stdout and "2 already imported" in again.stdout
    assert _count(settings, Message) == 3


def test_import_refuses_what_is_not_an_archive(settings: Settings, tmp_path: Path) -> None:
    done = _mailroom(settings, "import", "maildir", str(tmp_path), "--employee", ALICE)
    assert done.returncode == 1
    assert "is not a Maildir" in done.stderr
    missing = _mailroom(settings, "import", "mbox", str(tmp_path / "nope"), "--employee", ALICE)
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_import_mbox_of_a_file_that_is_no_mbox_says_so_and_an_empty_one_is_empty(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    add_employee(sessions, ALICE)
    eml, junk, empty = tmp_path / "message.eml", tmp_path / "junk.bin", tmp_path / "empty.mbox"
    eml.write_bytes(compose().as_bytes())
    junk.write_bytes(bytes(range(256)) * 4)
    empty.write_bytes(b"")

    for path in (eml, junk):
        done = _mailroom(settings, "import", "mbox", str(path), "--employee", ALICE)
        assert done.returncode == 1, done.stdout
        assert done.stderr.startswith(f"error: {path} holds no message"), done.stderr
        assert "Quote for 20 licences" not in done.stderr
    nothing = _mailroom(settings, "import", "mbox", str(empty), "--employee", ALICE)
    assert nothing.returncode == 0 and "0 read" in nothing.stdout


def test_an_eml_with_a_line_of_text_starting_with_from_is_no_mbox_either(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Read as an mbox, such a file holds one message made of the lines after that one: its
    own headers and first lines would be left out unsaid, and the rest filed as a message."""
    add_employee(sessions, ALICE)
    eml = tmp_path / "message.eml"
    eml.write_bytes(compose(body="Hi Bob,\n\nFrom Monday on, the quote stands.\n").as_bytes())

    done = _mailroom(settings, "import", "mbox", str(eml), "--employee", ALICE)

    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith(f"error: {eml} holds no message"), done.stderr
    assert _count(settings, DecisionRecord) == 0


FAULT_TRIGGER = {  # stands for any database fault mid-import: disk full, I/O error
    "sqlite": [
        "CREATE TRIGGER fault BEFORE INSERT ON receipts "
        "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION fault() RETURNS trigger AS "
        "$$ BEGIN RAISE EXCEPTION 'disk I/O error'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER fault BEFORE INSERT ON receipts FOR EACH ROW EXECUTE FUNCTION fault()",
    ],
}


def test_a_fault_mid_import_says_where_and_never_prints_the_mail(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """An unexpected error is reported by its type and the frames it came through: no
    variables (Typer's tracebacks print them all, the mail being read among them) and no
    message (a database error quotes the values it was given)."""
    engine = sa.create_engine(settings.resolved_database_url)
    with engine.begin() as conn:
        for statement in FAULT_TRIGGER[conn.dialect.name]:
            conn.exec_driver_sql(statement)
    engine.dispose()
    add_employee(sessions, ALICE)
    path = tmp_path / "alice.mbox"
    box = mailbox.mbox(path)
    box.add(
        compose(
            to="canary-home@example.com",  # internal only: the policy drops it
            subject="Dinner canary-subject",
            body="Love you canary-body\n",
            message_id="<canary-id@example.com>",
        ).as_bytes()
    )
    box.close()

    done = _mailroom(settings, "import", "mbox", str(path), "--employee", ALICE)

    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "canary" not in output and "disk I/O error" not in output
    # sqlalchemy.exc.IntegrityError on SQLite, the driver's own error on PostgreSQL
    assert re.search(r"error: [\w.]+(Error|Exception) \(its text is left out", done.stderr)
    assert "in import_messages" in done.stderr  # where it happened
