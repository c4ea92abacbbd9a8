"""The pages in a real browser: Debian's Chromium driven by Playwright against the real service."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from app.db import transaction
from app.mailboxes import add_mailbox
from app.models import Contact, DecisionRecord, Message
from app.security import Role
from capture.pipeline import Envelope
from policies.model import Channel
from tests.conftest import ROOT, Running, add_employee
from tests.mail import compose
from tests.test_contacts_filing import INBOX, dsn
from tests.web import file_mail, login_link

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "Debian's chromium is not installed (apt-get install -y chromium; .ci/run does this)",
        allow_module_level=True,
    )

# Headless and quiet: without the background-networking flags Chromium floods the closed network.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts" / "web"
PHONE = ViewportSize(width=390, height=844)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=FLAGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh profile at phone width; any console error (a CSP refusal, a broken page) fails."""
    context = browser.new_context(viewport=PHONE)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield tab
    context.close()
    assert not [e for e in errors if "404" not in e], errors


def screenshot(page: Page, tmp_path: Path, name: str) -> None:
    """Kept with the test's files, and copied to test-artifacts/web/ (ignored by git)."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)


def sign_in(page: Page, link: str) -> None:
    page.goto(link)
    page.get_by_role("button", name="Sign in to Mailroom").click()


def fits_the_screen(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_an_employee_signs_in_with_a_link_and_captures_a_held_message(
    running: Running, page: Page, tmp_path: Path
) -> None:
    mail = file_mail(running)
    sign_in(page, login_link(running, mail.alice))
    assert page.url.endswith("/mail")
    held = page.locator(f"#held-{mail.held}")
    expect(held).to_contain_text("Note to self: quote follow-up")
    assert fits_the_screen(page)
    screenshot(page, tmp_path, "employee-held")

    held.get_by_role("button", name="Capture").focus()  # by keyboard, as anyone may
    page.keyboard.press("Enter")

    expect(page.get_by_role("status")).to_contain_text("Captured")
    expect(page.locator(f"#captured-{mail.held}")).to_contain_text("Note to self")
    expect(page.locator(f"#held-{mail.held}")).to_have_count(0)
    screenshot(page, tmp_path, "employee-captured")
    with running.runtime.sessions() as session:
        stored = session.get(Message, mail.held)
        assert stored is not None
        assert (stored.outcome, stored.visibility) == ("capture", "shared")  # policy default
        assert stored.held_until is None


def test_a_compliance_officer_sees_a_dropped_decision_without_content_and_verifies_the_ledger(
    running: Running, page: Page, tmp_path: Path
) -> None:
    mail = file_mail(running)
    sign_in(page, login_link(running, mail.carol, Role.COMPLIANCE))
    assert page.url.endswith("/compliance")
    with running.runtime.sessions() as session:
        dropped = sa.select(DecisionRecord.id).where(DecisionRecord.outcome == "drop")
        decision_id = session.execute(dropped).scalar_one()
    row = page.locator(f"#decision-{decision_id}")
    expect(row).to_contain_text("drop")
    expect(row).to_contain_text("internal-only")
    expect(row).to_contain_text("alice@example.com")

    page.get_by_role("button", name="Verify the ledger").click()

    expect(page.locator("#ledger-result")).to_have_text("Ledger intact: 5 records verified.")
    text = page.content()
    for content in ("DROPPED-CANARY", "lunch", "CAROL-PRIVATE", "Quote for 20", "bob@customer"):
        assert content not in text
    screenshot(page, tmp_path, "compliance-ledger")


def test_an_employee_cannot_open_a_colleagues_private_capture(
    running: Running, page: Page, tmp_path: Path
) -> None:
    mail = file_mail(running)
    sign_in(page, login_link(running, mail.alice))

    response = page.goto(f"{running.api_url}/mail/messages/{mail.carol_private}")

    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    assert "CAROL-PRIVATE" not in page.content()
    screenshot(page, tmp_path, "employee-colleague-private-404")
    shared = page.goto(f"{running.api_url}/mail/messages/{mail.carol_shared}")
    assert shared is not None and shared.status == 200


def test_a_contacts_freshness_and_the_admins_mailboxes_fit_a_phone(
    running_unsynced: Running, page: Page, tmp_path: Path
) -> None:
    mail = file_mail(running_unsynced)
    running_unsynced.runtime.pipeline.process(
        dsn(failed="bob@customer.example"), INBOX, Channel.IMPORT
    )
    with transaction(running_unsynced.runtime.sessions) as session:
        add_mailbox(
            session,
            running_unsynced.runtime.pipeline.secret,
            employee="alice@example.com",
            host="imap.example.com",
            port=993,
            username="alice.imap",
            password="not-shown",
            folders=["INBOX", "Sent"],
            tls="tls",
        )
        bob = session.scalar(sa.select(Contact.id).where(Contact.address == "bob@customer.example"))
    sign_in(page, login_link(running_unsynced, mail.alice))

    page.goto(f"{running_unsynced.api_url}/contacts/{bob}")

    expect(page.get_by_role("heading", name="Freshness")).to_be_visible()
    expect(page.get_by_text("Undeliverable since 2026-11-24")).to_be_visible()
    assert fits_the_screen(page)
    screenshot(page, tmp_path, "contact-freshness")
    page.context.clear_cookies()
    sign_in(page, login_link(running_unsynced, mail.carol, Role.ADMIN))
    page.goto(f"{running_unsynced.api_url}/admin")
    expect(page.get_by_role("heading", name="Mailboxes")).to_be_visible()
    expect(page.get_by_role("heading", name="alice@example.com: alice.imap")).to_be_visible()
    assert fits_the_screen(page) and "not-shown" not in page.content()
    screenshot(page, tmp_path, "admin-mailboxes")


def test_a_messages_long_lines_and_long_subject_read_on_a_phone_without_scrolling_sideways(
    running: Running, page: Page, tmp_path: Path
) -> None:
    """Most mail writes each paragraph as one line (and text made from HTML always does).
    Shown as preformatted, each paragraph was one line cut at the screen's edge, to be
    scrolled sideways line by line; a subject with a long unbroken word (a reference, a
    link) made the whole page wider than the phone."""
    alice = add_employee(running.runtime.sessions, "alice@example.com")
    paragraph = "We would like to order twenty licences for the new office before December. " * 4
    mail = compose(
        subject=f"Order REF-{'7' * 60} for the new office",
        body=f"Hi Bob,\n\n{paragraph}\n\n{paragraph}\n\nAlice\n",
    )
    filed = running.runtime.pipeline.process(
        mail.as_bytes(), Envelope("alice@example.com"), Channel.BCC
    )
    sign_in(page, login_link(running, alice))

    page.goto(f"{running.api_url}/mail/messages/{filed.message_id}")

    text = page.locator("pre", has_text="twenty licences")
    expect(text).to_be_visible()
    assert fits_the_screen(page)
    assert text.evaluate("pre => pre.scrollWidth <= pre.clientWidth")
    screenshot(page, tmp_path, "message-long-lines")
    page.get_by_role("link", name="contact").click()  # Bob's, with the subject in his mail
    expect(page.get_by_role("heading", name="Mail you may see")).to_be_visible()
    assert fits_the_screen(page)
