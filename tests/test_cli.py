"""The `mailroom` command line, run as a user would: a real process on a real database."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.db import transaction
from app.models import DecisionRecord, Employee, EmployeeAlias, PolicyVersion
from app.runtime import active_version, build_runtime, publish_policy
from app.settings import BUNDLED_POLICY, Settings
from capture.submitters import authenticate_app_password
from policies.loader import load_policy
from tests.conftest import TEST_SECRET, add_employee, own_cluster, run_service, server_url
from tests.mail import compose, send


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILROOM_")}
    env |= {
        "MAILROOM_DATA_DIR": str(settings.data_dir),
        "MAILROOM_DATABASE_URL": settings.resolved_database_url,
        "MAILROOM_SECRET_KEY": TEST_SECRET,
        "MAILROOM_POLICY": str(settings.policy),
        "MAILROOM_SMTP_PORT": "0",
        "MAILROOM_API_PORT": "0",
    }
    return env


BAD_POLICY = """
metadata: {name: Bad, version: "1", owner: Us, contact: us@example.com, purpose: Testing,
           lawful_basis: Testing, effective: 2026-11-23}
retention: {decision_days: 1000000}
surprise: true
rules:
  - id: keep-customers
    description: Keeps mail with customers.
    when: external-participant
    outcome: keep-forever
  - id: bulk-list-mail
    description: Drops newsletters and lists.
    when: bulk-mial
    outcome: drop
  - id: by-size
    description: Drops very large messages.
    when: {larger-than: {bytes: -5}}
    outcome: drop
  - id: Not-Kebab
    description: An id that is not kebab-case.
    when: internal-only
    outcome: drop
  - id: too-deep
    description: Nests further than anyone could read.
    when: {not: {not: {not: {not: {not: {not:
          {not: {not: {not: {not: {not: {not: bulk-mail}}}}}}}}}}}}
    outcome: drop
"""


def mailroom(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return mailroom_with(settings, {}, *args)


def mailroom_with(
    settings: Settings, changes: Mapping[str, str | None], *args: str
) -> subprocess.CompletedProcess[str]:
    """`mailroom ARGS` with these environment variables set (or, for None, unset)."""
    env = {k: v for k, v in {**_env(settings), **changes}.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_app_password_is_listed_and_revoked_and_then_proves_nothing(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    """A lost laptop's app password could not be revoked (nothing set `revoked_at`): with
    submitter proof required, whoever found it went on filing mail as the employee."""
    add_employee(sessions, "alice@example.com")
    laptop = mailroom(
        settings, "employees", "app-password", "alice@example.com", "--label", "laptop"
    )
    phone = mailroom(settings, "employees", "app-password", "alice@example.com", "--label", "phone")
    assert laptop.returncode == 0 and phone.returncode == 0

    listed = mailroom(settings, "employees", "app-passwords", "Alice@Example.com")
    laptop_id = next(line.split()[0] for line in listed.stdout.splitlines() if "laptop" in line)
    revoked = mailroom(settings, "employees", "revoke-app-password", laptop_id)
    again = mailroom(settings, "employees", "app-passwords", "alice@example.com")
    unknown = mailroom(settings, "employees", "revoke-app-password", "999")

    assert listed.returncode == 0 and laptop.stdout.strip() not in listed.stdout
    assert revoked.returncode == 0 and f"app password {laptop_id} revoked" in revoked.stdout
    assert "revoked" in next(line for line in again.stdout.splitlines() if "laptop" in line)
    assert "revoked" not in next(line for line in again.stdout.splitlines() if "phone" in line)
    assert (unknown.returncode, unknown.stderr.strip()) == (1, "error: no app password 999")
    check = authenticate_app_password
    assert check(sessions, "alice@example.com", laptop.stdout.strip()) is None
    assert check(sessions, "alice@example.com", phone.stdout.strip()) == "alice@example.com"


def test_employees_add_stores_a_lowercased_address_and_aliases(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    done = mailroom(
        settings,
        "employees",
        "add",
        "Dana@Example.com",
        "--name",
        "Dana",
        "--alias",
        "sales@example.com",
    )

    assert done.returncode == 0, done.stderr
    with sessions() as session:
        employee = session.scalars(sa.select(Employee)).one()
        aliases = session.scalars(sa.select(EmployeeAlias.address)).all()
    assert (employee.email, employee.name) == ("dana@example.com", "Dana")
    assert aliases == ["sales@example.com"]


@pytest.mark.parametrize(
    ("existing", "new"),
    [
        (("alice@example.com", ()), ("bob@example.com", "--alias", "alice@example.com")),
        (("alice@example.com", ("a.smith@example.com",)), ("A.Smith@example.com",)),
        (
            ("alice@example.com", ("sales@example.com",)),
            ("bob@example.com", "--alias", "sales@example.com"),
        ),
    ],
    ids=["alias-is-an-email", "email-is-an-alias", "alias-is-an-alias"],
)
def test_employees_add_refuses_an_address_that_is_already_an_employees_as_the_api_does(
    settings: Settings,
    sessions: sessionmaker[Session],
    existing: tuple[str, tuple[str, ...]],
    new: tuple[str, ...],
) -> None:
    email, aliases = existing
    add_employee(sessions, email, aliases=aliases)

    done = mailroom(settings, "employees", "add", *new)

    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "is already an employee's address" in done.stderr
    assert "Traceback" not in done.stderr
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Employee)) == 1
        assert session.scalar(sa.select(sa.func.count()).select_from(EmployeeAlias)) == len(aliases)


def test_employees_add_keeps_an_address_given_twice_once(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    done = mailroom(
        settings,
        "employees",
        "add",
        "dana@example.com",
        "--alias",
        "Dana@Example.com",
        "--alias",
        "d@example.com",
        "--alias",
        "d@example.com",
    )

    assert done.returncode == 0, done.stderr
    with sessions() as session:
        assert session.scalars(sa.select(EmployeeAlias.address)).all() == ["d@example.com"]


def test_tokens_create_prints_only_the_token(settings: Settings) -> None:
    assert mailroom(settings, "employees", "add", "dana@example.com").returncode == 0

    done = mailroom(
        settings, "tokens", "create", "--role", "employee", "--employee", "dana@example.com"
    )

    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"mr_[A-Za-z0-9_-]{40,}\n", done.stdout)


def test_commands_find_an_employee_by_any_address_of_theirs_as_written(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """`employees add` stores a Unicode domain as mail spells it (`xn--`) and knows aliases:
    the commands naming an employee found neither, nor an address with a space around it,
    and answered "no employee" for someone `employees add` had just printed."""
    added = mailroom(
        settings, "employees", "add", "Hans@Bücher.example", "--alias", "hb@example.com"
    )
    assert added.stdout == "employee 1: hans@xn--bcher-kva.example\n", added.stderr
    mbox = tmp_path / "hans.mbox"
    mbox.write_bytes(b"From hans@example.com Mon Nov 23 09:00:00 2026\n" + compose().as_bytes())

    for args in (
        ("tokens", "create", "--role", "employee", "--employee", "hans@bücher.example"),
        ("employees", "app-password", "HB@example.com"),
        ("login-link", " hans@bücher.example "),
        ("import", "mbox", str(mbox), "--employee", "hb@example.com"),
    ):
        done = mailroom(settings, *args)
        assert done.returncode == 0, (args, done.stderr)
    with sessions() as session:
        employees = session.scalars(sa.select(DecisionRecord.employee_id)).all()
    assert employees == [1]  # the import's message, filed as Hans's


def test_a_name_or_label_the_api_would_refuse_is_a_usage_error(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    """The columns hold 200 characters, as the API checks: PostgreSQL refused a longer one
    with a fault report, and SQLite stored it as given."""
    too_long = "N" * 201
    for args in (
        ("employees", "add", "dana@example.com", "--name", too_long),
        ("employees", "add", "dana@example.com", "--name", "Dana\nEvil"),
        ("tokens", "create", "--role", "admin", "--label", too_long),
    ):
        done = mailroom(settings, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Invalid value" in done.stderr and "error: builtins" not in done.stderr
    assert "at most 200 characters" in done.stderr
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Employee)) == 0
    added = mailroom(settings, "employees", "add", "dana@example.com", "--name", "N" * 200)
    assert added.returncode == 0, added.stderr
    labelled = mailroom(
        settings, "employees", "app-password", "dana@example.com", "--label", too_long
    )
    assert labelled.returncode == 2, labelled.stderr


def test_tokens_create_refuses_scopes_no_token_of_that_role_would_use(
    settings: Settings,
) -> None:
    """As the API refuses them: scopes count for integrations alone, and one not written like
    contacts:read matches no route. The command issued such a token, which then got 403."""
    assert mailroom(settings, "employees", "add", "dana@example.com").returncode == 0
    for args, said in (
        (("--role", "admin", "--scope", "contacts:read"), "only integrations have scopes"),
        (
            ("--role", "employee", "--employee", "dana@example.com", "--scope", "messages:read"),
            "only integrations have scopes",
        ),
        (("--role", "integration", "--scope", "Contacts:Read"), "'Contacts:Read' is no scope"),
    ):
        done = mailroom(settings, "tokens", "create", *args)
        assert (done.returncode, done.stdout) == (1, ""), (args, done.stdout)
        assert done.stderr.startswith(f"error: {said}"), done.stderr
    issued = mailroom(
        settings, "tokens", "create", "--role", "integration", "--scope", "contacts:read"
    )
    assert issued.returncode == 0, issued.stderr


def test_an_employee_token_needs_an_employee(settings: Settings) -> None:
    done = mailroom(settings, "tokens", "create", "--role", "employee")

    assert done.returncode == 1
    assert "employee" in done.stderr


def test_an_id_no_database_holds_is_a_usage_error_not_a_traceback(settings: Settings) -> None:
    for args in (("tokens", "revoke", str(2**63)), ("mailboxes", "sync", str(2**31))):
        done = mailroom(settings, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "Invalid value" in done.stderr and "1<=x<=2147483647" in done.stderr
        assert "Traceback" not in done.stderr
    missing = mailroom(settings, "tokens", "revoke", str(2**31 - 1))
    assert missing.returncode == 1 and "no token 2147483647" in missing.stderr


def test_explain_prints_one_decision_per_file_and_stores_nothing(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    files = {
        "business.eml": compose(),
        "internal.eml": compose(to="Carol <carol@example.com>"),
        "list.eml": compose(headers={"List-Id": "<news.customer.example>"}),
    }
    for name, msg in files.items():
        (tmp_path / name).write_bytes(msg.as_bytes())
    paths = [str(tmp_path / name) for name in files]

    done = mailroom(settings, "explain", *paths, "--json")

    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(Path(r["path"]).name, r["outcome"], r["rules"]) for r in results] == [
        ("business.eml", "capture", ["external-business-correspondent"]),
        ("internal.eml", "drop", ["internal-only"]),
        ("list.eml", "drop", ["bulk-list-mail"]),
    ]
    assert results[0]["contacts"] == ["bob@customer.example"]
    assert results[1]["contacts"] == []
    assert all(len(r["policy"]) == 64 for r in results)
    with sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(DecisionRecord)) == 0


def test_explain_relayed_reads_the_spam_verdict_of_a_trusted_relay(
    settings: Settings, tmp_path: Path
) -> None:
    """As the listener reads it from a trusted relay (and from no one else)."""
    bundled = settings.model_copy(update={"policy": BUNDLED_POLICY})
    spam = tmp_path / "spam.eml"
    spam.write_bytes(compose(headers={"X-Spam-Flag": "YES"}).as_bytes())
    explain = ("explain", str(spam), "--json", "--employee", "alice@example.com")

    relayed = mailroom(bundled, *explain, "--relayed")
    direct = mailroom(bundled, *explain)
    mailbox = mailroom(bundled, *explain, "--relayed", "--channel", "imap")

    assert json.loads(relayed.stdout)["rules"] == ["upstream-spam"], relayed.stderr
    assert "upstream-spam" not in json.loads(direct.stdout)["rules"]
    assert mailbox.returncode == 1
    assert "--relayed is for mail sent to the listener" in mailbox.stderr


def test_explain_decides_under_the_version_in_force_and_publishes_nothing(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """An operator trying an edited policy file with `explain` gets the decision of the
    version in force (as /api/v1/explain gives it), and the edit is not put in force."""
    with transaction(sessions) as session:
        in_force = publish_policy(session, load_policy(settings.policy)).sha256
    edited = tmp_path / "edited.yaml"
    edited.write_text(
        Path(settings.policy)
        .read_text()
        .replace("when: bulk-mail\n    outcome: drop", "when: bulk-mail\n    outcome: capture")
    )
    newsletter = tmp_path / "list.eml"
    newsletter.write_bytes(compose(headers={"List-Id": "<news.customer.example>"}).as_bytes())

    done = mailroom_with(
        settings, {"MAILROOM_POLICY": str(edited)}, "explain", str(newsletter), "--json"
    )

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["outcome"], result["policy"]) == ("drop", in_force)
    with sessions() as session:
        assert session.scalars(sa.select(PolicyVersion.sha256)).all() == [in_force]
        assert active_version(session).sha256 == in_force  # type: ignore[union-attr]


def test_explain_decides_as_the_employee_named_with_a_unicode_domain(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Hans, stored as hans@xn--bcher-kva.example, paused his capture: explained as
    hans@bücher.example, his mail was decided for someone hypothetical and captured."""
    add_employee(sessions, "hans@xn--bcher-kva.example")
    with transaction(sessions) as session:
        session.execute(sa.update(Employee).values(capture_paused=True))
    eml = tmp_path / "mail.eml"
    eml.write_bytes(compose(sender="Hans <hans@bücher.example>").as_bytes())

    done = mailroom(settings, "explain", str(eml), "--employee", "Hans@Bücher.example", "--json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rules"] == ["capture-paused"]


def test_explain_reports_an_unreadable_file_and_goes_on(settings: Settings, tmp_path: Path) -> None:
    """And ends with exit status 1, so that a script (`explain *.eml && ...`) learns that
    not every file was explained; without --json the error is said on stderr, as words."""
    (tmp_path / "ok.eml").write_bytes(compose().as_bytes())
    missing, ok = str(tmp_path / "missing.eml"), str(tmp_path / "ok.eml")

    done = mailroom(settings, "explain", missing, ok, "--json")
    said = mailroom(settings, "explain", missing, ok)

    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert first == {"path": missing, "error": "No such file or directory"}
    assert second["outcome"] == "capture"
    assert done.returncode == 1
    assert said.returncode == 1
    assert said.stderr == f"error: {missing}: No such file or directory\n"
    assert said.stdout == f"{ok}: capture (external-business-correspondent)\n"


def test_policy_check_names_the_rule_and_field_of_each_problem(
    settings: Settings, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_POLICY)

    done = mailroom(settings, "policy", "check", str(bad))

    assert done.returncode == 1
    assert "rule 'keep-customers': outcome" in done.stdout
    assert "rule 'bulk-list-mail': when: unknown predicate 'bulk-mial'" in done.stdout
    assert "rule 'by-size': when: larger-than.bytes" in done.stdout
    assert "rule 'Not-Kebab': id" in done.stdout
    assert "rule 'too-deep': when: Value error, an expression nests at most 12" in done.stdout
    assert "retention.decision_days: Input should be less than or equal to 36500" in done.stdout
    assert "surprise" in done.stdout


def test_policy_check_refuses_yaml_anchors_and_aliases(settings: Settings, tmp_path: Path) -> None:
    aliased = tmp_path / "aliased.yaml"
    tags = 'private_subject_tags: ["[private]", "[personal]"]'
    aliased.write_text(BUNDLED_POLICY.read_text().replace(tags, tags.replace(": ", ": &tags ")))

    done = mailroom(settings, "policy", "check", str(aliased))

    assert done.returncode == 1
    assert "a policy may not use YAML anchors or aliases" in done.stdout


def test_policy_check_accepts_the_bundled_policy(settings: Settings) -> None:
    done = mailroom(settings, "policy", "check", str(BUNDLED_POLICY))

    assert done.returncode == 0, done.stdout
    assert "valid" in done.stdout


def test_serve_refuses_to_start_with_an_invalid_policy(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(settings.policy).read_text().replace("when: bulk-mail", "when: bulky"))
    done = mailroom_with(settings, {"MAILROOM_POLICY": str(bad)}, "serve")

    assert done.returncode == 1
    assert "unknown predicate 'bulky'" in done.stderr


def test_a_version_in_force_this_release_refuses_is_named_rather_than_the_valid_file(
    settings: Settings, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """A version published through the API by an earlier release may not validate under a
    stricter one (here a threshold with five decimals). Starting must say that this
    version is at fault, not the policy file (which `policy check` finds valid), and how to
    put another in force."""
    stale = BUNDLED_POLICY.read_text().replace("above: 0.864}", "above: 0.86395}")
    with transaction(sessions) as session:
        published = publish_policy(session, load_policy(settings.policy))
        session.add(
            PolicyVersion(
                sha256=hashlib.sha256(stale.encode()).hexdigest(),
                name="Stale",
                version="2025.9",
                source=stale,
                activated_at=published.activated_at + timedelta(seconds=1),  # type: ignore[operator]
            )
        )
    newsletter = tmp_path / "list.eml"
    newsletter.write_bytes(compose(headers={"List-Id": "<news.customer.example>"}).as_bytes())

    done = mailroom(settings, "explain", str(newsletter))

    assert done.returncode == 1
    assert "the version in force (2, 2025.9" in done.stderr, done.stderr
    assert "at most 4 decimals" in done.stderr
    assert f"{settings.policy}: rule" not in done.stderr


def test_an_invalid_setting_is_named_by_its_variable_without_its_value(
    settings: Settings,
) -> None:
    """Not a fault report whose text is left out: the operator learns which variable is wrong,
    and a value that may be a secret (a database password) is not echoed."""
    invalid = {
        "MAILROOM_SMTP_PORT": "smtp",
        "MAILROOM_LOG_FORMAT": "xml",
        "MAILROOM_DATABASE_URL": "postgresql+psycopg://mailroom:hunter2@db/mailroom",
    }

    done = mailroom_with(settings, invalid, "serve")

    assert done.returncode == 1
    assert "MAILROOM_SMTP_PORT: Input should be a valid integer" in done.stderr, done.stderr
    assert "MAILROOM_LOG_FORMAT: Input should be 'json' or 'console'" in done.stderr
    assert "came through" not in done.stderr, done.stderr
    assert "smtp'" not in done.stderr and "xml" not in done.stderr
    assert "hunter2" not in done.stderr


def test_a_data_dir_that_cannot_be_a_folder_is_named(settings: Settings, tmp_path: Path) -> None:
    """Such as a file in its way, or ./var where the service user may not write: a fault
    report ("builtins.FileExistsError", its text left out) named neither setting nor path."""
    in_the_way = tmp_path / "var-file"
    in_the_way.write_text("")

    in_the_way_dir = {"MAILROOM_DATA_DIR": str(in_the_way)}
    done = mailroom_with(settings, in_the_way_dir, "employees", "add", "dana@example.com")

    assert done.returncode == 1
    assert (
        done.stderr == f"error: MAILROOM_DATA_DIR: cannot make {in_the_way} a folder: File exists\n"
    )


NO_URL = (
    "error: MAILROOM_DATABASE_URL is not a database URL (its value is left out: it may hold a "
    "password); write it as postgresql+psycopg://user:password@host:port/database\n"
)
CHECK_URL = "check MAILROOM_DATABASE_URL (postgresql+psycopg://… or sqlite:///…)\n"


def _closed_port() -> int:
    with socket.socket() as probe:  # bound, never listening, then closed: nothing answers
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "command",
    [("serve",), ("migrate",), ("employees", "add", "dana@example.com"), ("login-link", "d@e.x")],
)
def test_a_database_that_does_not_answer_is_named_with_its_password_masked(
    settings: Settings, command: tuple[str, ...]
) -> None:
    """A fault report said `sqlalchemy.exc.OperationalError`, its text left out (an error while
    filing may quote mail), and a traceback: not which database, nor why. Opening the database
    at start quotes no mail: the URL (but its password), the driver's reason, what to check."""
    port = _closed_port()
    url = f"postgresql+psycopg://mailroom:hunter2@127.0.0.1:{port}/mailroom"

    done = mailroom_with(settings, {"MAILROOM_DATABASE_URL": url}, *command)

    assert done.returncode == 1
    masked = f"postgresql+psycopg://mailroom:***@127.0.0.1:{port}/mailroom"
    assert done.stderr.startswith(f"error: cannot open the database {masked}: "), done.stderr
    assert f'"127.0.0.1", port {port} failed: Connection refused' in done.stderr
    hint = f"is PostgreSQL running and reachable at 127.0.0.1:{port}? check MAILROOM_DATABASE_URL"
    assert done.stderr.endswith(f"; {hint}\n")
    assert done.stderr.count("\n") == 1, "one paragraph, no traceback"
    assert "hunter2" not in done.stderr + done.stdout


@pytest.fixture
def password_cluster() -> Iterator[sa.URL]:
    """A throwaway PostgreSQL cluster whose role `app`, the database's owner, signs in with the
    password `right-pw`, as does `guest`, who owns nothing (scripts/pg-cluster trusts every
    local sign-in; this one asks them for their passwords)."""
    with own_cluster() as owner:
        admin = sa.create_engine(owner, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE ROLE app LOGIN PASSWORD 'right-pw'"))
            conn.execute(sa.text("ALTER DATABASE mailroom OWNER TO app"))
            conn.execute(sa.text("CREATE ROLE guest LOGIN PASSWORD 'right-pw'"))
            # As PostgreSQL 15 has it, whatever the server's release: only the owner creates.
            conn.execute(sa.text("ALTER SCHEMA public OWNER TO app"))
            conn.execute(sa.text("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
            hba = Path(conn.execute(sa.text("SHOW hba_file")).scalar_one())
            hba.write_text(
                f"host all {owner.username} 127.0.0.1/32 trust\n"
                "host all all 127.0.0.1/32 scram-sha-256\n"
            )
            conn.execute(sa.text("SELECT pg_reload_conf()"))
        admin.dispose()
        app = owner.set(username="app", password="right-pw")
        _wait_for_passwords(app.set(password="not-it"))
        yield app


def _wait_for_passwords(wrong: sa.URL) -> None:
    """Until the server has read its new pg_hba.conf (a reload is a signal, taken in a while)."""
    engine = sa.create_engine(wrong)
    try:
        for _ in range(100):
            try:
                engine.connect().close()
            except sa.exc.OperationalError:
                return
            time.sleep(0.05)
        pytest.fail("the cluster still lets `app` in without its password")
    finally:
        engine.dispose()


def test_a_wrong_database_password_or_name_is_said_without_the_password(
    settings: Settings, password_cluster: sa.URL
) -> None:
    def run(url: sa.URL, command: str) -> subprocess.CompletedProcess[str]:
        given = {"MAILROOM_DATABASE_URL": url.render_as_string(hide_password=False)}
        return mailroom_with(settings, given, command)

    wrong = password_cluster.set(password="hunter2")
    missing = password_cluster.set(database="mailroom_not_made")
    for command in ("serve", "migrate"):
        refused, absent = run(wrong, command), run(missing, command)

        assert refused.returncode == 1
        masked = f"error: cannot open the database {wrong.render_as_string()}: "
        assert refused.stderr.startswith(masked), refused.stderr
        why = 'FATAL: password authentication failed for user "app"; check the user name and '
        assert refused.stderr.endswith(why + "password in MAILROOM_DATABASE_URL\n")
        assert "hunter2" not in refused.stderr + refused.stdout
        assert absent.returncode == 1
        assert absent.stderr.startswith(f"error: cannot open the database {missing}: ")
        why = 'FATAL: database "mailroom_not_made" does not exist; create the database, or '
        assert absent.stderr.endswith(why + "check its name in MAILROOM_DATABASE_URL\n")
        assert "right-pw" not in absent.stderr + absent.stdout
    assert run(password_cluster, "migrate").stdout == "database is up to date\n"


def test_a_database_user_refused_a_privilege_is_told_to_own_the_database(
    settings: Settings, password_cluster: sa.URL
) -> None:
    """PostgreSQL 15 on lets only a database's owner create tables in schema public (earlier
    releases let anyone unless revoked): migrating as another user, as every start does by
    default, stopped with a fault report (ProgrammingError, its text left out)."""
    guest = password_cluster.set(username="guest")
    given = {"MAILROOM_DATABASE_URL": guest.render_as_string(hide_password=False)}

    for command in ("serve", "migrate"):
        done = mailroom_with(settings, given, command)

        assert done.returncode == 1
        assert done.stderr.endswith(
            f"error: the database user guest was refused a privilege on Mailroom's tables in "
            f"{guest} (permission denied): Mailroom's user should own the database and its "
            "tables, e.g. ALTER DATABASE mailroom OWNER TO guest; or, for a user that only "
            "reads and writes them, their owner migrates (`mailroom migrate`) and this one "
            "starts with MAILROOM_AUTO_MIGRATE=false\n"
        ), done.stderr
        assert "came through" not in done.stderr
        assert "right-pw" not in done.stderr + done.stdout


def test_an_sqlite_database_whose_folder_is_missing_or_cannot_be_made_is_named(
    settings: Settings, tmp_path: Path
) -> None:
    """Opened without migrating, no folder is made: SQLite's "unable to open database file"
    said neither which file nor why. Migrating makes the folder, unless a file is in its way."""
    missing = tmp_path / "no-such-folder" / "mailroom.db"
    unmigrated = {"MAILROOM_DATABASE_URL": f"sqlite:///{missing}", "MAILROOM_AUTO_MIGRATE": "false"}
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    under_a_file = {"MAILROOM_DATABASE_URL": f"sqlite:///{in_the_way / 'mailroom.db'}"}

    opened = mailroom_with(settings, unmigrated, "serve")
    migrated = mailroom_with(settings, under_a_file, "migrate")

    check = "check MAILROOM_DATABASE_URL (or MAILROOM_DATA_DIR)\n"
    assert opened.returncode == 1
    assert opened.stderr == (
        f"error: cannot open the database sqlite:///{missing}: its folder {missing.parent} "
        f"does not exist; {check}"
    )
    assert migrated.returncode == 1
    assert migrated.stderr == (
        f"error: cannot make {in_the_way}, the SQLite database's folder: File exists; {check}"
    )


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql+psycopg://mailroom:hunter2@db:port/mailroom", NO_URL),
        ("hunter2", NO_URL),
        (
            "postgres://mailroom:hunter2@db/mailroom",
            "error: the database postgres://mailroom:***@db/mailroom: no database driver is "
            f"called 'postgres'; {CHECK_URL}",
        ),
        (
            "mysql://mailroom:hunter2@db/mailroom",
            "error: the database mysql://mailroom:***@db/mailroom: its driver (MySQLdb) is not "
            f"installed; {CHECK_URL}",
        ),
    ],
)
def test_a_database_url_that_cannot_be_used_is_said_without_its_password(
    settings: Settings, url: str, said: str
) -> None:
    for command in ("serve", "migrate"):
        done = mailroom_with(settings, {"MAILROOM_DATABASE_URL": url}, command)
        assert done.returncode == 1
        assert done.stderr == said
        assert "hunter2" not in done.stdout


def test_an_empty_secret_key_stops_the_start_instead_of_keying_with_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    """An empty key seals mailbox passwords and keys every digest with a key anyone has. It
    came from MAILROOM_SECRET_KEY set to nothing, or from a secret.key left empty by a first
    start that died (or found the disk full) between creating the file and writing it."""
    eml = tmp_path / "message.eml"
    eml.write_bytes(compose().as_bytes())
    empty_variable = mailroom_with(settings, {"MAILROOM_SECRET_KEY": " "}, "explain", str(eml))
    assert empty_variable.returncode == 1
    assert "MAILROOM_SECRET_KEY: Value error, empty" in empty_variable.stderr

    data_dir = Path(settings.data_dir)
    data_dir.mkdir(exist_ok=True)
    (data_dir / "secret.key").write_text("\n")
    empty_file = mailroom_with(settings, {"MAILROOM_SECRET_KEY": None}, "explain", str(eml))
    assert empty_file.returncode == 1, empty_file.stdout
    assert f"error: {data_dir / 'secret.key'} is empty" in empty_file.stderr

    (data_dir / "secret.key").unlink()
    generated = mailroom_with(settings, {"MAILROOM_SECRET_KEY": None}, "explain", str(eml))
    assert generated.returncode == 0, generated.stderr
    assert len((data_dir / "secret.key").read_text()) == 64
    assert (data_dir / "secret.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "command",
    [
        ("import", "mbox", "{mbox}", "--employee", "alice@example.com"),
        ("mailboxes", "list"),
        ("explain", "{eml}"),
    ],
)
def test_a_command_that_applies_an_invalid_policy_names_its_problems(
    settings: Settings, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """As `serve` does: the file and each problem, rather than a fault report that says
    the error's text is left out for it may quote mail."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(settings.policy).read_text().replace("when: bulk-mail", "when: bulky"))
    eml, mbox = tmp_path / "message.eml", tmp_path / "alice.mbox"
    eml.write_bytes(compose().as_bytes())
    mbox.write_bytes(b"From alice@example.com Mon Nov 23 09:00:00 2026\n" + compose().as_bytes())
    args = [arg.format(eml=eml, mbox=mbox) for arg in command]

    done = mailroom_with(settings, {"MAILROOM_POLICY": str(bad)}, *args)

    assert done.returncode == 1
    assert f"{bad}: rule 'bulk-list-mail': when: unknown predicate 'bulky'" in done.stderr
    assert "came through" not in done.stderr, done.stderr


@pytest.mark.parametrize("variable", ["MAILROOM_SMTP_PORT", "MAILROOM_API_PORT"])
def test_serve_names_a_listener_address_already_in_use(settings: Settings, variable: str) -> None:
    """Not a fault report whose text is left out: which listener, which address, and why."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = mailroom_with(settings, {variable: str(port)}, "serve")
    listener = "SMTP" if "SMTP" in variable else "HTTP"
    assert done.returncode == 1
    expected = f"error: the {listener} listener cannot listen on 127.0.0.1:{port}: "
    assert expected + "Address already in use" in done.stderr, done.stderr
    assert "came through" not in done.stderr


@pytest.mark.parametrize("certificate", ["missing.pem", "not-pem.pem"])
def test_serve_names_a_tls_certificate_it_cannot_load(
    settings: Settings, tmp_path: Path, certificate: str
) -> None:
    (tmp_path / "not-pem.pem").write_text("this is no certificate\n")
    path = tmp_path / certificate
    done = mailroom_with(settings, {"MAILROOM_TLS_CERT": str(path)}, "serve")
    assert done.returncode == 1
    reason = "No such file or directory" if certificate == "missing.pem" else "PEM lib"
    assert f"error: MAILROOM_TLS_CERT {path} cannot be loaded: " in done.stderr, done.stderr
    assert reason in done.stderr
    assert "came through" not in done.stderr


def test_serve_demo_accepts_mail_serves_the_api_and_stops_on_sigterm(settings: Settings) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--demo"],
        env=_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = _read_banner(proc)
        smtp_port = int(re.search(r"SMTP\s+127\.0\.0\.1:(\d+)", banner).group(1))  # type: ignore[union-attr]
        api = re.search(r"(http://127\.0\.0\.1:\d+)/docs", banner).group(1)  # type: ignore[union-attr]
        token = re.search(r"Bearer (mr_[\w-]+)", banner).group(1)  # type: ignore[union-attr]

        assert send(smtp_port, compose())[0] == 250
        page = httpx.get(f"{api}/api/v1/messages", headers={"Authorization": f"Bearer {token}"})
        assert page.json()["items"][0]["contacts"][0]["address"] == "bob@customer.example"
        assert httpx.get(f"{api}/docs").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def _read_banner(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if "/api/v1/messages" in line:
            return "".join(lines)
    pytest.fail("serve ended before printing its banner: " + "".join(lines))


def test_a_schema_a_later_release_migrated_is_left_as_it_is_rather_than_a_fault(
    settings: Settings,
) -> None:
    """A rolling upgrade runs the next release's `mailroom migrate` before it replaces the
    processes. Until then this release, migrating at start (MAILROOM_AUTO_MIGRATE, the
    default), met a revision Alembic does not know: every command and `serve` stopped with
    a fault report, where a process that does not migrate starts."""
    engine = sa.create_engine(settings.resolved_database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_later'"))
    engine.dispose()

    added = mailroom(settings, "employees", "add", "bob@example.com")
    migrated = mailroom(settings, "migrate")

    assert added.returncode == 0, added.stderr
    assert migrated.returncode == 0, migrated.stderr
    assert (
        migrated.stdout == "database is at revision 9999_later, of a later release: left as it is\n"
    )
    build_runtime(settings).close()  # as `mailroom serve` starts


def test_ledger_verify_prints_the_head_and_checks_an_anchor(settings: Settings) -> None:
    with run_service(settings) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        for n in range(2):
            assert send(running.smtp_port, compose(message_id=f"<l{n}@example.com>"))[0] == 250

    intact = mailroom(settings, "ledger", "verify")
    head = intact.stdout.splitlines()[-1].removeprefix("head: ")
    again = mailroom(settings, "ledger", "verify", "--anchor", head)
    forged = mailroom(settings, "ledger", "verify", "--anchor", "2:" + "0" * 64)
    garbled = [
        mailroom(settings, "ledger", "verify", "--anchor", anchor)
        # not a number, not hex, no record's id (verified nothing, and said intact)
        for anchor in ("two", "²:" + "0" * 64, "2:" + "g" * 64, "0:" + "0" * 64, "007:" + "0" * 64)
    ]

    assert intact.returncode == 0 and "2 records verified" in intact.stdout
    assert head.startswith("2:") and len(head) == 66
    assert again.returncode == 0, again.stdout + again.stderr
    assert forged.returncode == 1 and "differs from the anchor" in forged.stdout
    for done in garbled:
        assert done.returncode == 2 and "ID:HASH" in done.stderr, done.stdout + done.stderr


@pytest.mark.skipif(server_url() is not None, reason="SQLite's write lock")
def test_ledger_verify_and_simulate_read_without_holding_up_the_listener(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    """Both walk the whole log, which takes minutes on a large one. Holding SQLite's write
    lock meanwhile, they would keep every batch of the listener waiting, and after 30 s
    failing with 451; so they read, while a batch (here, the lock held) is being written."""
    with run_service(settings) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        assert send(running.smtp_port, compose())[0] == 250
    env = _env(settings) | {"MAILROOM_AUTO_MIGRATE": "false"}  # as with several processes
    commands = [("ledger", "verify"), ("policy", "simulate", str(settings.policy), "--json")]

    with sessions() as batch, batch.begin():
        batch.connection()  # BEGIN IMMEDIATE: the write lock, as the listener's writer takes it
        done = [
            subprocess.run(
                [sys.executable, "-m", "app.cli", *command],
                env=env,
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            for command in commands
        ]

    assert [d.returncode for d in done] == [0, 0], [d.stderr for d in done]
    assert "1 records verified" in done[0].stdout


def test_the_command_line_imports_no_server_until_a_command_needs_one() -> None:
    """`employees add` or `tokens create` should not pay for importing the server, the API
    and the mail pipeline (a second or more on this machine): `serve`, `explain`, the
    mailbox and import commands import them when they run."""
    probe = (
        "import sys, app.cli; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'aiosmtpd', 'imapclient', 'alembic', "
        "'app.server', 'app.api', 'app.runtime', 'capture.pipeline') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
