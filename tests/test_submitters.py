"""Who may submit: app passwords over TLS, trusted relays' DKIM, forged results stripped."""

from __future__ import annotations

import base64
import smtplib
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email import policy
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from app import server
from app.db import transaction
from app.models import AppPassword, DecisionRecord, Message
from app.security import Role
from app.settings import BUNDLED_POLICY, Settings
from capture.submitters import (
    authenticate_app_password,
    dkim_domains,
    dmarc_failed,
    new_app_password,
    revoke_app_password,
    strip_our_results,
)
from tests.conftest import Running, add_employee, issue_token, run_service
from tests.mail import CAPTURE, compose, send

FORGED = "Authentication-Results: mailroom.example.com; dkim=pass header.d=example.com"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _client_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a throwaway self-signed test certificate
    return context


@pytest.fixture
def strict(settings: Settings, certificate: tuple[Path, Path]) -> Iterator[tuple[Running, str]]:
    cert, key = certificate
    tight = settings.model_copy(
        update={
            "require_submitter_proof": True,
            "tls_cert": cert,
            "tls_key": key,
            "smtps_port": 0,
        }
    )
    with run_service(tight) as service:
        alice = add_employee(service.runtime.sessions, "alice@example.com")
        with transaction(service.runtime.sessions) as session:
            password = new_app_password(session, alice, "laptop")
        yield service, password


def _outcomes(running: Running) -> list[str]:
    with running.runtime.sessions() as session:
        return list(session.scalars(sa.select(DecisionRecord.outcome).order_by(DecisionRecord.id)))


def test_auth_is_offered_only_after_starttls_and_an_app_password_proves_the_submitter(
    strict: tuple[Running, str],
) -> None:
    running, password = strict
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.ehlo("client.example.com")
        assert not client.has_extn("auth")
        assert client.docmd("AUTH", "PLAIN")[0] == 538
        client.starttls(context=_client_tls())
        client.ehlo("client.example.com")
        assert client.has_extn("auth")
        client.login("alice@example.com", password)
        client.sendmail("alice@example.com", [CAPTURE], compose().as_bytes(policy=policy.SMTP))

    assert _outcomes(running) == ["capture"]


def test_a_revoked_app_password_is_refused_with_535(strict: tuple[Running, str]) -> None:
    running, password = strict
    with transaction(running.runtime.sessions) as session:
        made = session.scalars(sa.select(AppPassword)).one()
        assert revoke_app_password(session, made.id, datetime.now(UTC))
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.starttls(context=_client_tls())
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("alice@example.com", password)
    assert refused.value.smtp_code == 535


def test_a_wrong_app_password_is_refused_with_535(strict: tuple[Running, str]) -> None:
    running, _ = strict
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.starttls(context=_client_tls())
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("alice@example.com", "not-the-password")
    assert refused.value.smtp_code == 535


def test_a_connection_is_closed_after_three_failed_auth_attempts(
    strict: tuple[Running, str],
) -> None:
    """One connection may not guess app passwords for ever; two slips are forgiven."""
    running, password = strict
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.starttls(context=_client_tls())
        client.ehlo("client.example.com")
        for attempt in range(2):
            assert client.docmd("AUTH", _plain("alice@example.com", f"guess{attempt}"))[0] == 535
        assert client.docmd("AUTH", _plain("alice@example.com", password))[0] == 235
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.starttls(context=_client_tls())
        client.ehlo("client.example.com")
        for attempt in range(3):
            assert client.docmd("AUTH", _plain("alice@example.com", f"guess{attempt}"))[0] == 535
        code, reply = client.getreply()
        assert (code, reply[:5]) == (421, b"4.7.0")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.docmd("AUTH", _plain("alice@example.com", password))


def test_a_login_with_a_control_character_is_refused_with_535_and_counted(
    strict: tuple[Running, str],
) -> None:
    """Not 451 (PostgreSQL refuses NUL in a query, which read as a local fault) and not a
    free try: the third such login closes the connection as any wrong password does."""
    running, _ = strict
    login = "LOGIN " + base64.b64encode(b"alice\x00@example.com").decode()
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.starttls(context=_client_tls())
        client.ehlo("client.example.com")
        for attempt in range(3):
            assert client.docmd("AUTH", login)[0] == 334
            assert client.docmd(base64.b64encode(b"guess%d" % attempt).decode())[0] == 535
        code, reply = client.getreply()
    assert (code, reply[:5]) == (421, b"4.7.0")


def _plain(login: str, password: str) -> str:
    return "PLAIN " + base64.b64encode(f"\0{login}\0{password}".encode()).decode()


def test_a_login_with_a_unicode_domain_is_the_employee_it_names(
    strict: tuple[Running, str],
) -> None:
    """RFC 4616 logins are UTF-8: `anna@bücher.example.com` is the employee whose address mail
    (and the employee list) spells `anna@xn--bcher-kva.example.com`."""
    running, _ = strict
    anna = add_employee(running.runtime.sessions, "anna@xn--bcher-kva.example.com")
    with transaction(running.runtime.sessions) as session:
        password = new_app_password(session, anna)
    raw = compose(sender="Anna <anna@xn--bcher-kva.example.com>").as_bytes(policy=policy.SMTP)
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.starttls(context=_client_tls())
        client.ehlo("client.example.com")
        code, _ = client.docmd("AUTH", _plain("Anna@Bücher.example.com", password))
        client.mail("anna@xn--bcher-kva.example.com")
        client.rcpt(CAPTURE)
        sent = client.data(raw)

    assert code == 235
    assert sent[0] == 250
    assert _outcomes(running) == ["capture"]


def test_the_implicit_tls_port_offers_auth_at_once(strict: tuple[Running, str]) -> None:
    running, password = strict
    port = running.service.smtps_port
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=_client_tls()) as client:
        client.ehlo("client.example.com")
        assert client.has_extn("auth")
        client.login("alice@example.com", password)
        client.sendmail("alice@example.com", [CAPTURE], compose().as_bytes(policy=policy.SMTP))

    assert _outcomes(running) == ["capture"]


def test_an_implicit_tls_port_or_a_key_without_a_certificate_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without MAILROOM_TLS_CERT the service used to start with no implicit-TLS listener at
    all (and no STARTTLS), and /readyz, which checks the listeners there are, said ready."""
    for variable in ("MAILROOM_SMTPS_PORT", "MAILROOM_TLS_KEY"):
        monkeypatch.delenv("MAILROOM_TLS_CERT", raising=False)
        monkeypatch.setenv(variable, "465" if variable.endswith("PORT") else "/etc/key.pem")
        with pytest.raises(ValidationError, match="need MAILROOM_TLS_CERT"):
            Settings()
        monkeypatch.setenv("MAILROOM_TLS_CERT", "/etc/cert.pem")
        assert Settings().tls_cert == Path("/etc/cert.pem")
        monkeypatch.delenv(variable)


def test_without_proof_a_correct_envelope_is_not_enough(strict: tuple[Running, str]) -> None:
    running, _ = strict

    code, reply = send(running.smtp_port, compose())

    assert (code, reply[:5]) == (550, b"5.7.1")
    assert _outcomes(running) == ["reject"]


def test_a_message_refused_for_want_of_proof_is_accepted_when_sent_again_with_auth(
    strict: tuple[Running, str],
) -> None:
    """A refusal's receipt does not answer the retry: what refused it can be put right."""
    running, password = strict
    raw = compose().as_bytes(policy=policy.SMTP)
    assert send(running.smtp_port, raw)[0] == 550
    assert send(running.smtp_port, raw)[0] == 550
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.starttls(context=_client_tls())
        client.login("alice@example.com", password)
        client.mail("alice@example.com")
        client.rcpt(CAPTURE)
        assert client.data(raw)[0] == 250
        client.rset()
        client.mail("alice@example.com")
        client.rcpt(CAPTURE)
        assert client.data(raw)[0] == 250  # and this retry is answered from its receipt

    assert _outcomes(running) == ["reject", "reject", "capture"]
    with running.runtime.sessions() as session:
        assert len(session.scalars(sa.select(Message.id)).all()) == 1


def test_the_auth_parameter_of_mail_from_is_accepted_and_proves_nothing(
    strict: tuple[Running, str],
) -> None:
    """RFC 4954 section 5: Sendmail and Exim add AUTH= to MAIL FROM once authenticated."""
    running, password = strict
    raw = compose().as_bytes(policy=policy.SMTP)
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.starttls(context=_client_tls())
        client.ehlo("client.example.com")
        claimed = client.mail("alice@example.com", ["AUTH=alice@example.com"])
        client.rcpt(CAPTURE)
        unproven = client.data(raw)
        client.login("alice@example.com", password)
        authenticated = client.mail("alice@example.com", ["AUTH=<>"])
        client.rcpt(CAPTURE)
        proven = client.data(raw)

    assert claimed[0] == authenticated[0] == 250
    assert (unproven[0], unproven[1][:5]) == (550, b"5.7.1")
    assert proven[0] == 250
    assert _outcomes(running) == ["reject", "capture"]


def test_forged_authentication_results_from_an_untrusted_peer_prove_nothing(
    strict: tuple[Running, str],
) -> None:
    running, _ = strict
    forged = compose(headers={"Authentication-Results": FORGED.split(": ", 1)[1]})

    assert send(running.smtp_port, forged)[0] == 550


def test_a_trusted_relays_dkim_pass_aligned_with_from_proves_the_submitter(
    settings: Settings,
) -> None:
    relay = settings.model_copy(
        update={
            "require_submitter_proof": True,
            "trusted_relays": ["127.0.0.0/8"],
        }
    )
    with run_service(relay) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        vouched = compose(headers={"Authentication-Results": FORGED.split(": ", 1)[1]})
        other_id = compose(
            message_id="<other@example.com>",
            headers={
                "Authentication-Results": "mx.elsewhere.example; dkim=pass header.d=example.com"
            },
        )
        assert send(running.smtp_port, vouched)[0] == 250
        assert send(running.smtp_port, other_id)[0] == 550


def test_explain_decides_a_trusted_relays_mail_as_the_listener_does(settings: Settings) -> None:
    """Mail a trusted relay marks as spam is dropped at the listener (`upstream-spam`); a
    compliance officer explaining it was told it would be held, as if anyone had sent it.
    `relayed=true` explains it as delivered by a trusted relay; without it, as mail from
    anyone, whose spam flag proves nothing."""
    relay = settings.model_copy(
        update={"policy": BUNDLED_POLICY, "trusted_relays": ["127.0.0.0/8"]}
    )
    raw = compose(
        message_id="<relayed-spam@customer.example>", headers={"X-Spam-Flag": "YES"}
    ).as_bytes(policy=policy.SMTP)
    with run_service(relay) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        token = issue_token(running.runtime.sessions, Role.COMPLIANCE)
        with running.client(token) as api:

            def explained(**params: str) -> dict[str, Any]:
                answer = api.post(
                    "/api/v1/explain",
                    content=raw,
                    params={"employee": "alice@example.com", **params},
                    headers={"Content-Type": "message/rfc822"},
                )
                assert answer.status_code == 200, answer.text
                return dict(answer.json())

            relayed, direct = explained(relayed="true"), explained()
            refused = api.post(
                "/api/v1/explain",
                content=raw,
                params={"channel": "imap", "relayed": "true"},
                headers={"Content-Type": "message/rfc822"},
            )
        assert send(running.smtp_port, raw)[0] == 250
        with running.runtime.sessions() as session:
            record = session.scalars(sa.select(DecisionRecord)).one()

    assert (record.outcome, record.rules) == ("drop", ["upstream-spam"])
    assert (relayed["outcome"], relayed["rules"]) == (record.outcome, record.rules)
    assert "upstream-spam" not in direct["rules"]
    assert refused.status_code == 422  # a mailbox's mail comes by no relay


def test_a_trusted_relay_that_is_not_an_ip_address_or_network_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A host name (or a typo) among the relays used to start the service all the same; then
    every SMTP connection failed at its first step, without even a greeting, while /readyz
    answered ready."""
    monkeypatch.setenv("MAILROOM_TRUSTED_RELAYS", "10.0.0.0/8, 192.0.2.7, 10.1.2.3/24")
    assert Settings().trusted_relays == ["10.0.0.0/8", "192.0.2.7", "10.1.2.3/24"]
    for typo in ("mx1.example.com", "10.0.0.0/33", "192.0.2.300"):
        monkeypatch.setenv("MAILROOM_TRUSTED_RELAYS", f"10.0.0.0/8,{typo}")
        with pytest.raises(ValidationError, match=f"'{typo}' is not an IP address or network"):
            Settings()


def test_a_forged_dkim_pass_below_the_trusted_relays_own_results_proves_nothing(
    settings: Settings,
) -> None:
    """The relay prepends its verdict (no signature) and passes along, below it, a field the
    sender wrote under our authserv-id: only those above the relay's Received are the relay's
    (RFC 8601)."""
    relay = settings.model_copy(
        update={"require_submitter_proof": True, "trusted_relays": ["127.0.0.0/8"]}
    )
    with run_service(relay) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        raw = compose().as_bytes(policy=policy.SMTP)
        relays_own = b"Authentication-Results: mailroom.example.com; dkim=none; spf=softfail\r\n"
        received = b"Received: from attacker.example.net by relay.example.com\r\n"
        forged = relays_own + received + FORGED.encode() + b"\r\n" + raw

        assert send(running.smtp_port, forged)[0] == 550
        assert _outcomes(running) == ["reject"]


def test_a_trusted_relay_writing_dkim_and_dmarc_in_fields_of_their_own_proves_the_submitter(
    settings: Settings,
) -> None:
    """OpenDKIM and OpenDMARC each prepend a field of their own, under the relay's authserv-id,
    above the Received field the relay added: OpenDMARC's, written last, is the topmost."""
    relay = settings.model_copy(
        update={"require_submitter_proof": True, "trusted_relays": ["127.0.0.0/8"]}
    )
    with run_service(relay) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        raw = compose().as_bytes(policy=policy.SMTP)
        relays_own = (
            b"Authentication-Results: mailroom.example.com; dmarc=pass header.from=example.com\r\n"
            b"Authentication-Results: mailroom.example.com;\r\n"
            b"\tdkim=pass (2048-bit key) header.d=example.com header.b=abcdefgh\r\n"
            b"Received: from laptop.example.com by relay.example.com\r\n"
        )

        assert send(running.smtp_port, relays_own + raw)[0] == 250
        assert _outcomes(running) == ["capture"]


def test_a_forged_dkim_pass_right_below_a_relays_own_results_under_its_received_proves_nothing(
    settings: Settings,
) -> None:
    """A relay that writes its verdict below its own Received (Exim's :at_start_rfc:) leaves
    nothing between it and the fields the sender wrote: only the topmost is the relay's."""
    relay = settings.model_copy(
        update={"require_submitter_proof": True, "trusted_relays": ["127.0.0.0/8"]}
    )
    with run_service(relay) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        raw = compose().as_bytes(policy=policy.SMTP)
        received = b"Received: from attacker.example.net by relay.example.com\r\n"
        relays_own = b"Authentication-Results: mailroom.example.com; dkim=none; spf=softfail\r\n"
        forged = received + relays_own + FORGED.encode() + b"\r\n" + raw

        assert send(running.smtp_port, forged)[0] == 550
        assert _outcomes(running) == ["reject"]


def test_an_app_password_proves_only_its_own_employees_from_address(
    strict: tuple[Running, str],
) -> None:
    """Authenticated as alice, MAIL FROM alice, From the CEO: the CRM would show the CEO
    writing to the customer."""
    running, password = strict
    add_employee(running.runtime.sessions, "ceo@example.com", name="The CEO")
    ceo = compose(sender="The CEO <ceo@example.com>", subject="We agree to the 90% discount")
    with smtplib.SMTP("127.0.0.1", running.smtp_port, timeout=10) as client:
        client.starttls(context=_client_tls())
        client.login("alice@example.com", password)
        client.mail("alice@example.com")
        client.rcpt(CAPTURE)
        code, _ = client.data(ceo.as_bytes(policy=policy.SMTP))

    assert code == 550
    assert _outcomes(running) == ["reject"]
    with running.runtime.sessions() as session:
        assert session.scalars(sa.select(Message.id)).all() == []


def test_a_relays_dkim_pass_for_alices_from_does_not_make_bob_its_owner(
    settings: Settings,
) -> None:
    """DKIM vouches for the From domain, not for the envelope: alice's signed message,
    replayed with bob's envelope, would be filed with bob as its owner."""
    relay = settings.model_copy(
        update={"require_submitter_proof": True, "trusted_relays": ["127.0.0.0/8"]}
    )
    with run_service(relay) as running:
        add_employee(running.runtime.sessions, "alice@example.com")
        add_employee(running.runtime.sessions, "bob@example.com")
        vouched = compose(headers={"Authentication-Results": FORGED.split(": ", 1)[1]})

        assert send(running.smtp_port, vouched, mail_from="bob@example.com")[0] == 550
        assert send(running.smtp_port, vouched, mail_from="alice@example.com")[0] == 250
        assert _outcomes(running) == ["reject", "capture"]


def test_only_our_authserv_ids_results_are_stripped() -> None:
    raw = (
        b"Authentication-Results: mailroom.example.com;\r\n dkim=pass header.d=example.com\r\n"
        b"Authentication-Results: mx.elsewhere.example; spf=pass\r\n"
        b"Subject: hi\r\n\r\nbody\r\n"
    )

    stripped = strip_our_results(raw, "mailroom.example.com")

    assert stripped == (
        b"Authentication-Results: mx.elsewhere.example; spf=pass\r\nSubject: hi\r\n\r\nbody\r\n"
    )
    assert dkim_domains(raw, "mailroom.example.com") == {"example.com"}
    assert dkim_domains(stripped, "mailroom.example.com") == set()


def test_a_field_folded_into_85000_lines_is_read_at_once_not_line_by_line() -> None:
    """The listener strips forged results (and reads a trusted relay's) on its event loop,
    where every session waits: such a field, within the 256 KiB a header section may hold,
    took it well over half a second a message when the field was built up line by line."""
    head = FORGED.encode() + b"\r\nX-Folded: a\r\n"
    folds = b" \r\n" * ((256 * 1024 - len(head) - 100) // 3)
    raw = head + folds + b"From: alice@example.com\r\n\r\nHi\r\n"

    started = time.perf_counter()
    stripped = strip_our_results(raw, "mailroom.example.com")
    vouched = dkim_domains(raw, "mailroom.example.com")
    elapsed = time.perf_counter() - started

    assert stripped == raw[len(FORGED) + 2 :]
    assert vouched == {"example.com"}
    assert elapsed < 0.1  # a few milliseconds


@pytest.mark.parametrize(
    ("fields", "failed"),
    [
        ([("authentication-results", "mx.example.com; dmarc=fail header.from=example.com")], True),
        ([("authentication-results", "MX.Example.com;\r\n spf=pass; DMARC=fail (p=reject)")], True),
        ([("authentication-results", "mx.example.com; dmarc=pass header.from=example.com")], False),
        ([("authentication-results", "mx.example.com; spf=pass (said: dmarc=fail)")], False),
        ([("authentication-results", "other.example; dmarc=fail")], False),
        ([("authentication-results", "mx.example.com")], False),
        ([("x-authentication-results", "mx.example.com; dmarc=fail")], False),
        (  # only ours above our server's Received count: what lies below came with the message
            [
                ("authentication-results", "other.example; dmarc=pass"),
                ("authentication-results", "mx.example.com; dmarc=pass"),
                ("received", "from mail.sender.example by mx.example.com"),
                ("authentication-results", "mx.example.com; dmarc=fail"),
            ],
            False,
        ),
        (  # a field per filter above its Received, OpenDMARC's below OpenDKIM's: all ours
            [
                ("authentication-results", "mx.example.com; dkim=pass header.d=example.com"),
                ("x-spam-status", "No"),
                ("authentication-results", "mx.example.com; dmarc=fail header.from=example.com"),
                ("received", "from mail.sender.example by mx.example.com"),
            ],
            True,
        ),
        (  # below a Received only the topmost: the next one could be the sender's
            [
                ("received", "from mail.sender.example by mx.example.com"),
                ("authentication-results", "mx.example.com; dmarc=pass header.from=example.com"),
                ("authentication-results", "mx.example.com; dmarc=fail header.from=example.com"),
            ],
            False,
        ),
    ],
)
def test_dmarc_failed_reads_the_verdict_our_server_wrote(
    fields: list[tuple[str, str]], failed: bool
) -> None:
    assert dmarc_failed(fields, "mx.example.com") is failed


def test_an_app_password_is_checked_off_the_event_loop(
    settings: Settings, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database slow to answer one session's AUTH holds up no other session."""
    asked, answer = threading.Event(), threading.Event()

    def slow(
        sessions: sa.orm.sessionmaker[sa.orm.Session], login: str, password: str
    ) -> str | None:
        asked.set()
        answer.wait(10)
        return authenticate_app_password(sessions, login, password)

    monkeypatch.setattr(server, "authenticate_app_password", slow)
    cert, key = certificate
    with run_service(settings.model_copy(update={"tls_cert": cert, "tls_key": key})) as service:
        alice = add_employee(service.runtime.sessions, "alice@example.com")
        with transaction(service.runtime.sessions) as session:
            password = new_app_password(session, alice, "laptop")
        codes: list[int] = []

        def log_in() -> None:
            with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=20) as client:
                client.starttls(context=_client_tls())
                client.ehlo("client.example.com")
                codes.append(client.docmd("AUTH", _plain("alice@example.com", password))[0])

        first = threading.Thread(target=log_in)
        first.start()
        try:
            assert asked.wait(10)
            with smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=5) as other:
                assert other.ehlo("other.example.com")[0] == 250  # while the lookup waits
        finally:
            answer.set()
            first.join()
    assert codes == [235]
