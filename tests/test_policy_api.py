"""Publishing, reading and explaining the policy through the real API; simulating it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from app import ledger
from app.models import DecisionRecord, Message, Receipt
from app.security import Role
from app.settings import Settings
from capture.pipeline import Envelope
from policies.model import Channel
from tests.conftest import FIXTURES, TEST_SECRET, Running, add_employee, issue_token, run_service
from tests.mail import compose, send

PLUMBING = (FIXTURES / "plumbing-policy.yaml").read_text()
LIST_MAIL_KEPT = PLUMBING.replace(
    "description: Newsletters and mailing lists are dropped.\n    when: bulk-mail\n"
    "    outcome: drop",
    "description: Newsletters and mailing lists are kept now.\n    when: bulk-mail\n"
    "    outcome: capture",
).replace('version: "test"', 'version: "test-2"')


DOMAIN_PROBE = PLUMBING.replace(
    "rules:\n",
    "rules:\n  - id: probe\n    description: Keeps all mail with one domain.\n"
    "    when: {domain-in: {domains: [customer.example]}}\n    outcome: capture\n",
    1,
).replace('version: "test"', 'version: "probe"')
CONTACTS = ("contacts:read",)  # what an integration needs to explain


def simulate(settings: Settings, candidate: Path) -> dict[str, Any]:
    """`mailroom policy simulate CANDIDATE --json`, run as a user would."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "policy", "simulate", str(candidate), "--json"],
        env={
            "MAILROOM_DATA_DIR": str(settings.data_dir),
            "PATH": "/usr/bin:/bin",
            "MAILROOM_DATABASE_URL": settings.resolved_database_url,
            "MAILROOM_SECRET_KEY": TEST_SECRET,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def put_policy(running: Running, token: str, source: str) -> dict[str, object]:
    with running.client(token) as api:
        response = api.put(
            "/api/v1/policy", content=source.encode(), headers={"Content-Type": "application/yaml"}
        )
    return {"status": response.status_code, "body": response.json()}


def test_any_employee_reads_the_policy_in_force_with_its_sha256_and_guardrails(
    running: Running, tokens: dict[str, str]
) -> None:
    with running.client(tokens["employee"]) as api:
        body = api.get("/api/v1/policy").json()

    assert body["sha256"] == running.runtime.pipeline.engine.policy.sha256
    assert [r["id"] for r in body["policy"]["rules"]] == [
        "internal-only",
        "bulk-list-mail",
        "external-business-correspondent",
    ]
    assert {g["id"] for g in body["guardrails"]} >= {"contact-erased", "marked-private"}


def test_compliance_publishes_a_new_version_that_decides_the_next_message(
    running: Running, tokens: dict[str, str]
) -> None:
    put = put_policy(running, tokens["compliance"], LIST_MAIL_KEPT)
    newsletter = compose(headers={"List-Id": "<news.customer.example>"})

    assert put["status"] == 200
    assert send(running.smtp_port, newsletter)[0] == 250
    with running.runtime.sessions() as session:
        record = session.scalars(sa.select(DecisionRecord)).one()
    assert (record.outcome, record.rules) == ("capture", ["bulk-list-mail"])
    assert record.policy_sha256 == put["body"]["sha256"]  # type: ignore[index]
    with running.client(tokens["employee"]) as api:
        versions = api.get("/api/v1/policy/versions").json()
        diff = api.get(
            "/api/v1/policy/diff", params={"from": versions[1]["id"], "to": versions[0]["id"]}
        ).json()
    assert [v["active"] for v in versions] == [True, False]
    assert diff["changed"] == [{"id": "bulk-list-mail", "fields": ["description", "outcome"]}]
    assert "+    outcome: capture" in diff["unified"]


def test_an_invalid_policy_is_refused_with_its_problems_and_the_old_one_stays(
    running: Running, tokens: dict[str, str]
) -> None:
    before = running.runtime.pipeline.engine.policy.sha256

    misspelt = PLUMBING.replace("when: bulk-mail", "when: bulk-mial")
    put = put_policy(running, tokens["admin"], misspelt)

    assert put["status"] == 422
    problems = put["body"]["problems"]  # type: ignore[index]
    assert problems == ["rule 'bulk-list-mail': when: unknown predicate 'bulk-mial'"]
    assert running.runtime.pipeline.engine.policy.sha256 == before


def test_a_policy_with_a_character_yaml_forbids_is_refused_not_an_error(
    running: Running, tokens: dict[str, str]
) -> None:
    """YAML allows no NUL or other control character (but tab and line breaks) in a
    document; a policy holding one is refused with its problem, as any invalid one is."""
    before = running.runtime.pipeline.engine.policy.sha256
    for stray in ("\x00", "\x1b"):
        bad = PLUMBING.replace("Newsletters", "News" + stray + "letters", 1)
        put = put_policy(running, tokens["compliance"], bad)

        assert put["status"] == 422, put
        problems = put["body"]["problems"]  # type: ignore[index]
        assert len(problems) == 1 and problems[0].startswith("not valid YAML"), problems
    assert running.runtime.pipeline.engine.policy.sha256 == before


def _aliased_policy(levels: int, width: int = 10) -> str:
    """About 1.2 KB of YAML whose anchors and aliases stand for width**levels predicates."""
    inline = "&a0 internal-only"
    for i in range(1, levels + 1):
        inline = f"&a{i} {{any: [{', '.join([inline] + [f'*a{i - 1}'] * (width - 1))}]}}"
    return PLUMBING.replace("    when: internal-only", "    when: " + inline, 1)


def test_a_policy_of_yaml_aliases_is_refused_at_once_and_nothing_else_waits(
    running: Running, tokens: dict[str, str]
) -> None:
    before = running.runtime.pipeline.engine.policy.sha256
    answers: list[dict[str, object]] = []
    publisher = threading.Thread(
        target=lambda: answers.append(put_policy(running, tokens["compliance"], _aliased_policy(6)))
    )

    publisher.start()
    started = time.monotonic()
    with running.client(None) as probe:
        assert probe.get("/healthz").status_code == 200
    waited = time.monotonic() - started
    publisher.join()

    assert waited < 2, f"/healthz waited {waited:.1f} s for a policy being validated"
    assert answers[0]["status"] == 422
    assert answers[0]["body"]["problems"] == [  # type: ignore[index]
        "line 16: a policy may not use YAML anchors or aliases"
    ]
    assert running.runtime.pipeline.engine.policy.sha256 == before


@pytest.mark.parametrize(
    ("when", "problem"),
    [
        ("{not: " * 301 + "bulk-mail" + "}" * 301, "a policy nests at most 64 levels deep"),
        ("{not: " * 12 + "bulk-mail" + "}" * 12, "an expression nests at most 12 levels deep"),
        (
            "{any: [" + ", ".join(["bulk-mail"] * 200) + "]}",
            "an expression has at most 200 predicates and combinators",
        ),
        ("{larger-than: {bytes: " + "9" * 5000 + "}}", "a number or date cannot be read"),
    ],
    ids=["yaml-depth", "expression-depth", "expression-size", "number-size"],
)
def test_a_when_nested_too_deep_or_too_large_is_refused_and_the_policy_stays_readable(
    running: Running, tokens: dict[str, str], when: str, problem: str
) -> None:
    before = running.runtime.pipeline.engine.policy.sha256
    source = PLUMBING.replace("    when: bulk-mail", "    when: " + when, 1)

    put = put_policy(running, tokens["compliance"], source)

    assert put["status"] == 422
    assert problem in " ".join(put["body"]["problems"])  # type: ignore[index]
    assert running.runtime.pipeline.engine.policy.sha256 == before
    with running.client(tokens["employee"]) as api:
        assert api.get("/api/v1/policy").json()["sha256"] == before


def test_a_when_at_the_limits_is_published_and_read_back(
    running: Running, tokens: dict[str, str]
) -> None:
    deepest = "{not: " * 10 + "{any: [" + ", ".join(["bulk-mail"] * 189) + "]}" + "}" * 10
    source = PLUMBING.replace("    when: bulk-mail", "    when: " + deepest, 1)

    put = put_policy(running, tokens["compliance"], source)

    assert put["status"] == 200, put["body"]
    with running.client(tokens["employee"]) as api:
        assert api.get("/api/v1/policy").json()["sha256"] == put["body"]["sha256"]  # type: ignore[index]


def test_an_employee_cannot_publish_a_policy(running: Running, tokens: dict[str, str]) -> None:
    assert put_policy(running, tokens["employee"], LIST_MAIL_KEPT)["status"] == 403


def test_the_policy_page_shows_every_rule_and_guardrail_without_a_token(
    running: Running,
) -> None:
    with running.client(None) as web:
        page = web.get("/policy")

    assert page.status_code == 200
    assert "Newsletters and mailing lists are dropped." in page.text
    assert "Mail with a person whose data was erased" in page.text
    assert "not kept: only a record that a decision was made" in page.text
    assert "A message that a rule drops\non its headers alone is never downloaded" in page.text


def test_ledger_verify_reports_ok_then_names_the_record_edited_behind_its_back(
    running: Running, tokens: dict[str, str]
) -> None:
    for n in range(3):
        assert send(running.smtp_port, compose(message_id=f"<v{n}@example.com>"))[0] == 250
    with running.client(tokens["compliance"]) as api:
        intact = api.get("/api/v1/decisions/verify").json()
        with running.runtime.db.begin() as conn:
            conn.execute(
                sa.update(DecisionRecord).where(DecisionRecord.id == 2).values(rules=["tampered"])
            )
        broken = api.get("/api/v1/decisions/verify").json()
        employee = api.get(
            "/api/v1/decisions/verify", headers={"Authorization": f"Bearer {tokens['employee']}"}
        )

    assert (intact["ok"], intact["checked"]) == (True, 3)
    assert (broken["ok"], broken["first_broken"]) == (False, 2)
    assert employee.status_code == 403


def _rewrite_from(conn: sa.Connection, first: int) -> None:
    """What someone with write access to the database could do: change a record and re-hash
    the chain from there, so that every link holds again."""
    prev = str(conn.scalar(sa.select(DecisionRecord.hash).where(DecisionRecord.id == first - 1)))
    with Session(bind=conn) as session:
        records = session.scalars(
            sa.select(DecisionRecord).where(DecisionRecord.id >= first).order_by(DecisionRecord.id)
        ).all()
        records[0].rules = ["rewritten"]
        for record in records:
            record.prev_hash = prev
            record.hash = prev = hashlib.sha256(ledger.canonical(record)).hexdigest()
        session.flush()


def test_an_anchor_noted_outside_catches_a_rewritten_or_shortened_log(
    running: Running, tokens: dict[str, str]
) -> None:
    for n in range(4):
        assert send(running.smtp_port, compose(message_id=f"<a{n}@example.com>"))[0] == 250
    with running.client(tokens["compliance"]) as api:
        noted = api.get("/api/v1/decisions/verify").json()
        anchor = {"anchor_id": noted["head_id"], "anchor_hash": noted["head_hash"]}
        still = api.get("/api/v1/decisions/verify", params=anchor).json()
        half = api.get("/api/v1/decisions/verify", params={"anchor_id": 2}).status_code
        with running.runtime.db.begin() as conn:
            _rewrite_from(conn, 2)
        plain = api.get("/api/v1/decisions/verify").json()
        rewritten = api.get("/api/v1/decisions/verify", params=anchor).json()
        with running.runtime.db.begin() as conn:  # cut back: the last two and their traces
            conn.execute(sa.delete(Receipt).where(Receipt.decision_id >= 3))
            conn.execute(sa.delete(Message).where(Message.decision_id >= 3))
            conn.execute(sa.delete(DecisionRecord).where(DecisionRecord.id >= 3))
        shortened = api.get(
            "/api/v1/decisions/verify",
            params={"anchor_id": 4, "anchor_hash": plain["head_hash"]},
        ).json()

    assert (noted["ok"], noted["head_id"]) == (True, 4) and len(noted["head_hash"]) == 64
    assert still["ok"] is True and half == 422
    assert plain["ok"] is True  # the chain alone cannot tell: every link holds again
    assert (rewritten["ok"], rewritten["first_broken"]) == (False, 4)
    assert rewritten["problem"] == "record differs from the anchor noted"
    assert (shortened["ok"], shortened["problem"]) == (False, "log ends before the anchor noted")


def test_simulate_does_not_tell_the_domains_of_mail_that_was_not_kept(
    running: Running, tokens: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    """Every decision keeps keyed digests of its external domains, so that `domain-in` rules
    can be replayed. For mail that was dropped (or held) they stay out of a replay: a
    candidate with a rule of its own choosing would otherwise say whether someone's personal
    mail went to a domain guessed by whoever simulates."""
    dropped = compose(headers={"List-Id": "<news.customer.example>"})
    assert send(running.smtp_port, dropped)[0] == 250
    assert send(running.smtp_port, compose(message_id="<kept@example.com>"))[0] == 250
    candidate = tmp_path / "probe.yaml"
    candidate.write_text(DOMAIN_PROBE)

    result = simulate(settings, candidate)
    # The kept message is replayed (the probe keeps it, as before); the dropped one is not.
    assert (result["evaluated"], result["changed"], result["not_replayable"]) == (1, 0, 1)
    assert result["transitions"] == []


def test_explain_returns_every_verdict_and_stores_nothing(
    running: Running, tokens: dict[str, str]
) -> None:
    raw = compose().as_bytes()
    with running.client(tokens["employee"]) as api:
        body = api.post(
            "/api/v1/explain", content=raw, headers={"Content-Type": "message/rfc822"}
        ).json()
        other = api.post("/api/v1/explain", content=raw, params={"employee": "bob@example.com"})

    assert body["outcome"] == "capture"
    assert body["contacts"] == ["bob@customer.example"]
    assert [v["id"] for v in body["verdicts"]][-1] == "external-business-correspondent"
    assert other.status_code == 403
    with running.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(DecisionRecord)) == 0


def test_explain_shows_an_employees_own_settings_to_them_alone(
    running: Running, tokens: dict[str, str]
) -> None:
    """Alice's personal contacts are kept as keyed digests so that no one can read the list;
    an explanation "as Alice" asked by anyone else must not answer whether an address is on
    it. They get the policy's answer for an employee with her address and no settings."""
    with running.client(tokens["employee"]) as api:
        added = api.post("/api/v1/me/personal-contacts", json={"address": "dr@clinic.example"})
        assert added.status_code == 201
    raw = compose(to="Dr <dr@clinic.example>").as_bytes()
    rfc822 = {"Content-Type": "message/rfc822"}
    integration = issue_token(running.runtime.sessions, Role.INTEGRATION, scopes=CONTACTS)

    answers = {}
    for who in ("employee", "compliance", "admin", "integration"):
        token = integration if who == "integration" else tokens[who]
        asked = {} if who == "employee" else {"employee": "alice@example.com"}
        with running.client(token) as api:
            response = api.post("/api/v1/explain", content=raw, params=asked, headers=rfc822)
            assert response.status_code == 200, (who, response.text)
            answers[who] = response.json()["deciding_rule"]
        # Without ?employee= the From address (Alice's) is the submitter: the same answer.
        with running.client(token) as api:
            unnamed = api.post("/api/v1/explain", content=raw, headers=rfc822).json()
        assert unnamed["deciding_rule"] == answers[who]

    assert answers == {
        "employee": "personal-contact",
        "compliance": "external-business-correspondent",
        "admin": "external-business-correspondent",
        "integration": "external-business-correspondent",
    }


def test_explain_confirms_no_colleagues_private_mail_by_its_message_id(
    running: Running, tokens: dict[str, str]
) -> None:
    """Whether a message answers mail Mailroom holds is asked of the mail the asker may see:
    else anyone who knows a Message-ID (a colleague, any integration) learned from `facts`
    that Alice's private capture of it is stored, which the API answers 404 to hide."""
    assert send(running.smtp_port, compose(message_id="<private-1@example.com>"))[0] == 250
    alice, rfc822 = tokens["employee"], {"Content-Type": "message/rfc822"}
    with running.runtime.sessions() as session:
        kept = session.scalars(sa.select(Message.id)).one()
    bob = issue_token(
        running.runtime.sessions,
        Role.EMPLOYEE,
        employee_id=add_employee(running.runtime.sessions, "bob@example.com"),
    )
    integration = issue_token(
        running.runtime.sessions, Role.INTEGRATION, scopes=(*CONTACTS, "messages:read")
    )
    blind = issue_token(running.runtime.sessions, Role.INTEGRATION, scopes=CONTACTS)

    def answers(token: str, message_id: str) -> tuple[bool, bool]:
        reply = compose(
            sender="Carol <carol@customer.example>",
            to="Bob <bob@example.com>",
            message_id="<reply@customer.example>",
            headers={"In-Reply-To": message_id},
        )
        with running.client(token) as api:
            explained = api.post("/api/v1/explain", content=reply.as_bytes(), headers=rfc822)
        assert explained.status_code == 200, explained.text
        facts = explained.json()["facts"]
        return facts["replies_to_known"], facts["replies_to_kept"]

    def shown(visibility: str) -> dict[str, tuple[bool, bool]]:
        with running.client(alice) as api:
            changed = api.patch(f"/api/v1/messages/{kept}", json={"visibility": visibility})
            assert changed.status_code == 200, changed.text
        asked = {"alice": alice, "bob": bob, "integration": integration, "blind": blind}
        return {who: answers(token, "<private-1@example.com>") for who, token in asked.items()}

    yes, no = (True, True), (False, False)  # the message answered is a capture: kept
    assert answers(bob, "<never-sent@example.com>") == no
    hidden = {"alice": yes, "bob": no, "integration": no, "blind": no}
    assert shown("private") == hidden
    # An integration without messages:read sees no message, shared or not.
    assert shown("shared") == {"alice": yes, "bob": yes, "integration": yes, "blind": no}


def test_an_integration_explains_only_with_the_contacts_read_scope(running: Running) -> None:
    """An explanation says whether a participant is a contact (`known-contact`), or was
    erased or objected (the guardrails): any integration token, one that only receives
    webhooks say, could ask it of any address, which the contacts API answers only to
    `contacts:read`."""
    add_employee(running.runtime.sessions, "alice@example.com")
    raw, rfc822 = compose().as_bytes(), {"Content-Type": "message/rfc822"}
    codes = {}
    for scopes in [(), ("webhooks:write",), ("messages:read", "decisions:read"), CONTACTS]:
        token = issue_token(running.runtime.sessions, Role.INTEGRATION, scopes=scopes)
        with running.client(token) as api:
            asked = {"employee": "alice@example.com"}
            answer = api.post("/api/v1/explain", content=raw, params=asked, headers=rfc822)
            codes[scopes] = answer.status_code
    assert codes == {
        (): 403,
        ("webhooks:write",): 403,
        ("messages:read", "decisions:read"): 403,
        CONTACTS: 200,
    }


def test_simulate_counts_what_a_candidate_would_change(
    running: Running, tokens: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    assert send(running.smtp_port, compose(headers={"List-Id": "<n.customer.example>"}))[0] == 250
    assert send(running.smtp_port, compose(message_id="<other@example.com>"))[0] == 250
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(LIST_MAIL_KEPT)

    result = simulate(settings, candidate)
    assert (result["evaluated"], result["changed"]) == (2, 1)
    assert result["transitions"] == [
        {"from": "drop", "to": "capture", "rule": "bulk-list-mail", "count": 1}
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [("version", '"' + "2026.1-" + "x" * 60 + '"'), ("name", '"Capture\\0policy"')],
    ids=["version-too-long", "nul-in-name"],
)
def test_a_policy_whose_name_or_version_cannot_be_stored_is_refused_with_its_problem(
    running: Running, tokens: dict[str, str], field: str, value: str
) -> None:
    before = running.runtime.pipeline.engine.policy.sha256
    line = {"version": 'version: "test"', "name": "name: Plumbing test policy"}[field]
    source = PLUMBING.replace(line, f"{field}: {value}", 1)

    put = put_policy(running, tokens["compliance"], source)

    assert put["status"] == 422, put
    assert put["body"]["problems"][0].startswith(f"metadata.{field}: ")  # type: ignore[index]
    assert running.runtime.pipeline.engine.policy.sha256 == before


def test_a_policy_that_is_not_utf8_is_refused_not_published_with_its_letters_replaced(
    running: Running, tokens: dict[str, str]
) -> None:
    """`policy check` refuses such a file; publishing it must not store other text (whose
    sha256, cited by every decision, no copy of the file would match)."""
    before = running.runtime.pipeline.engine.policy.sha256
    latin1 = PLUMBING.replace("Newsletters", "Newsletters (café menus too)", 1).encode("latin-1")

    with running.client(tokens["compliance"]) as api:
        put = api.put(
            "/api/v1/policy", content=latin1, headers={"Content-Type": "application/yaml"}
        )

    assert put.status_code == 422, put.json()
    assert put.json()["problems"][0].startswith("not UTF-8")
    assert running.runtime.pipeline.engine.policy.sha256 == before


def test_a_rule_id_with_a_trailing_line_break_is_refused_as_not_kebab_case(
    running: Running, tokens: dict[str, str]
) -> None:
    """Such an id would be logged as `"probe\\n"`: a rule no filter of the decision log,
    which takes kebab-case ids, could ever name, shown as if it were `probe`."""
    source = PLUMBING.replace("  - id: bulk-list-mail", '  - id: "bulk-list-mail\\n"', 1)

    put = put_policy(running, tokens["compliance"], source)

    assert put["status"] == 422, put
    assert put["body"]["problems"] == [  # type: ignore[index]
        "rule 'bulk-list-mail\n': id: Value error, rule ids are kebab-case, e.g. 'bulk-list-mail'"
    ]


def test_a_rule_named_as_a_guardrail_is_refused(running: Running, tokens: dict[str, str]) -> None:
    """Guardrail and rule verdicts are logged by id, side by side: a rule `contact-erased`
    that captures would log decisions that read as the erasure guardrail's, and count as
    its in every report."""
    source = PLUMBING.replace(
        "  - id: external-business-correspondent", "  - id: contact-erased", 1
    )

    put = put_policy(running, tokens["compliance"], source)

    assert put["status"] == 422, put
    assert put["body"]["problems"] == [  # type: ignore[index]
        "rule 'contact-erased': id: 'contact-erased' is a guardrail's id"
    ]


def test_compliance_explains_as_the_employee_named_with_their_name_and_aliases(
    settings: Settings,
) -> None:
    """The listener held Alice Example's quote to Bob Example (family-correspondent) and
    filed her mail from her alias at another domain as hers: a compliance officer asking
    why must get those decisions, though never her settings (see the test above)."""
    with run_service(settings) as running:
        sessions = running.runtime.sessions
        add_employee(
            sessions, "alice@example.com", name="Alice Example", aliases=("ae@own.example",)
        )
        source = PLUMBING.replace(
            "rules:\n",
            "rules:\n  - id: family-correspondent\n    description: Family mail waits for review.\n"
            "    when: shares-family-name\n    outcome: hold\n"
            "  - id: nobody-else\n    description: Mail to oneself is dropped.\n"
            "    when: no-correspondent\n    outcome: drop\n",
            1,
        )
        assert put_policy(running, issue_token(sessions, Role.ADMIN), source)["status"] == 200
        messages = [
            compose(to="Bob Example <bob@customer.example>", message_id="<q@example.com>"),
            compose(to="Alice at home <ae@own.example>", message_id="<n@example.com>"),
        ]
        officer = issue_token(sessions, Role.COMPLIANCE)
        for message in messages:
            raw = message.as_bytes()
            with running.client(officer) as api:
                explained = api.post(
                    "/api/v1/explain",
                    content=raw,
                    params={"employee": "alice@example.com"},
                    headers={"Content-Type": "message/rfc822"},
                ).json()
            live = running.runtime.pipeline.process(raw, Envelope("alice@example.com"), Channel.BCC)

            assert (explained["outcome"], tuple(explained["rules"])) == (
                live.outcome.value,
                live.rules,
            )


def test_a_policy_naming_a_key_twice_is_refused_not_read_by_its_last_value(
    running: Running, tokens: dict[str, str]
) -> None:
    """YAML readers keep the last of two equal keys: a rule published with `outcome: drop`
    and, further down, `outcome: capture` would capture, while people read that it drops;
    a second `rules:` would silently replace every rule above it."""
    before = running.runtime.pipeline.engine.policy.sha256
    source = PLUMBING.replace(
        "    when: bulk-mail\n    outcome: drop\n",
        "    outcome: drop\n    when: bulk-mail\n    outcome: capture\n",
        1,
    )

    put = put_policy(running, tokens["compliance"], source)

    assert put["status"] == 422, put
    assert put["body"]["problems"] == ["line 22: 'outcome' is given twice"]  # type: ignore[index]
    assert running.runtime.pipeline.engine.policy.sha256 == before


def test_simulate_does_not_replay_private_tags_the_candidate_changes(
    running: Running, tokens: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    """The log keeps whether a subject carried a private tag of the policy it was decided
    under, not the subject. A candidate replacing `[private]` by `[confidential]` would
    capture the mail tagged `[private]` and drop other mail: neither can be read from the
    log, so neither is replayed as unchanged."""
    tagged = compose(subject="[private] lunch on Friday?", message_id="<tagged@example.com>")
    assert send(running.smtp_port, tagged)[0] == 250
    assert send(running.smtp_port, compose(message_id="<plain@example.com>"))[0] == 250
    candidate = tmp_path / "tags.yaml"
    candidate.write_text(
        PLUMBING.replace("rules:\n", 'private_subject_tags: ["[confidential]"]\nrules:\n', 1)
    )

    result = simulate(settings, candidate)

    assert (result["evaluated"], result["changed"], result["not_replayable"]) == (0, 0, 2)


def test_simulate_tells_a_rule_named_default_from_the_default_outcome(
    running: Running, tokens: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    """`default` is a valid rule id: the default outcome's transitions must read otherwise."""
    newsletter = compose(headers={"List-Id": "<news.customer.example>"}, message_id="<n@x>")
    to_herself = compose(to="Alice Example <alice@example.com>", message_id="<self@x>")
    for message in (newsletter, to_herself):
        assert send(running.smtp_port, message)[0] == 250
    candidate = tmp_path / "default.yaml"
    candidate.write_text(
        LIST_MAIL_KEPT.replace("default_outcome: hold", "default_outcome: drop").replace(
            "  - id: bulk-list-mail\n", "  - id: default\n"
        )
    )

    result = simulate(settings, candidate)

    labels = {(t["from"], t["to"], t["rule"]) for t in result["transitions"]}
    assert labels == {("drop", "capture", "default"), ("hold", "drop", "(default)")}
