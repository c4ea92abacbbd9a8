"""People and companies from header addresses: names, role mailboxes, free mail, IDN domains."""

from __future__ import annotations

import pytest

from capture.parse import Address, parse_message
from capture.people import ROLE_MAILBOXES, company, people, person, registrable_domain
from policies import automated
from tests.conftest import FIXTURES


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes().replace(b"\n", b"\r\n")


def test_business_mail_gives_named_people_at_their_companies() -> None:
    found = {p.address: p for p in people(parse_message(fixture("business.eml")))}
    bob = found["bob@customer.example"]
    assert (bob.first, bob.last, bob.is_role, bob.freemail) == ("Bob", "Builder", False, False)
    assert bob.company is not None and bob.company.domain == "customer.example"
    assert bob.company.name == "Customer"


def test_the_employees_own_addresses_are_left_out() -> None:
    message = parse_message(fixture("business.eml"))
    found = people(message, exclude=frozenset({"alice@example.com", "carol@example.com"}))
    assert [p.address for p in found] == ["bob@customer.example"]


def test_domain_is_lowercased_and_the_company_is_the_registrable_domain() -> None:
    message = parse_message(fixture("signature_reply_de.eml"))
    hans = person(message.from_[0])
    assert hans is not None
    assert hans.address == "Hans.Mueller@vertrieb.muster-maschinen.de"
    assert hans.key == "hans.mueller@vertrieb.muster-maschinen.de"
    assert (hans.first, hans.last) == ("Hans", "Müller")  # "Müller, Hans" as written
    assert hans.company is not None
    assert hans.company.domain == "muster-maschinen.de"
    assert hans.company.name == "Muster Maschinen"


def test_free_mail_has_no_company() -> None:
    (dave,) = people(
        parse_message(fixture("freemail.eml")), exclude=frozenset({"alice@example.com"})
    )
    assert dave.freemail and dave.company is None
    assert (dave.first, dave.last) == ("Dave", "Smith")


def test_no_reply_senders_are_role_mailboxes_not_people() -> None:
    sender = person(parse_message(fixture("noreply.eml")).from_[0])
    assert sender is not None and sender.is_role
    assert (sender.first, sender.last) == ("", "")
    assert sender.company is not None and sender.company.domain == "customer.example"


@pytest.mark.parametrize(
    "local",
    [
        "info",
        "Support",
        "sales+eu",
        "noreply",
        "no-reply",
        "do_not_reply",
        "mailer-daemon",
        "postmaster",
        "notifications",
        "list-request",
        "bounces+12345=x",
        "owner-announce",
        "accounts.payable",
        "Accounts_Payable",
        "customer-service",
        "ap",
    ],
)
def test_role_mailboxes(local: str) -> None:
    found = person(Address(f"{local}@acme.com", "Acme Team"))
    assert found is not None and found.is_role


@pytest.mark.parametrize("local", ["john.doe", "jdoe", "informatics.jones", "salesforce.admin2"])
def test_personal_mailboxes_are_not_roles(local: str) -> None:
    found = person(Address(f"{local}@acme.com"))
    assert found is not None and not found.is_role


def test_every_role_the_policy_knows_is_a_role_here() -> None:
    assert automated.ROLE_MAILBOXES <= ROLE_MAILBOXES


@pytest.mark.parametrize(
    ("name", "first", "last"),
    [
        ("Doe, John", "John", "Doe"),
        ("JOHN DOE", "John", "Doe"),
        ("Dr. Jane A. Smith Jr.", "Jane", "Smith"),
        ("Ann Lee (Sales)", "Ann", "Lee"),
        ("Ann Lee | Acme", "Ann", "Lee"),
        ("Albert White - SUN Ireland", "Albert", "White"),  # not "Albert Ireland"
        ("Jane Roe \u2013 Acme Corp", "Jane", "Roe"),
        ("'john.doe@acme.com'", "John", "Doe"),  # the address as name: guessed from the address
        ("John Doe via LinkedIn", "John", "Doe"),  # a via-name is not theirs: guessed likewise
        ("???", "John", "Doe"),
        ("=?utf-8?q?garbage", "John", "Doe"),
    ],
)
def test_display_names(name: str, first: str, last: str) -> None:
    found = person(Address("john.doe@acme.com", name))
    assert found is not None
    assert (found.first, found.last) == (first, last)


def test_a_name_guessed_from_the_address_says_so() -> None:
    written = person(Address("jdoe@acme.com", "Jane Doe"))
    guessed = person(Address("jane.doe@acme.com", ""))
    assert written is not None and not written.name_from_address
    assert guessed is not None and guessed.name_from_address
    assert (guessed.first, guessed.last) == ("Jane", "Doe")


@pytest.mark.parametrize(("name", "expected"), [("Bob", "Bob"), ("bob", ""), ("BOB", "")])
def test_the_mailbox_name_is_a_name_only_when_written_as_one(name: str, expected: str) -> None:
    found = person(Address("bob@customer.example", name))
    assert found is not None and (found.name, found.first) == (expected, expected)


def test_via_names_are_dropped() -> None:
    found = person(Address("group@lists.acme.com", "'Jane Roe' via Sales Team"))
    assert found is not None and found.name == "" and found.first == ""


@pytest.mark.parametrize(
    "address", ["a..b@acme.com", "john@localhost", "john@acme.invalid", "john@-acme.com"]
)
def test_invalid_addresses_are_not_people(address: str) -> None:
    assert person(Address(address, "John")) is None


def test_idn_domains_are_punycoded_and_named_in_unicode() -> None:
    raw = "From: Jörg <joerg@Bücher-Haus.de>\r\nTo: x@example.com\r\n\r\nhi\r\n".encode()
    (joerg,) = parse_message(raw).from_
    found = person(joerg)
    assert found is not None
    assert found.address == "joerg@xn--bcher-haus-9db.de"
    assert found.company is not None and found.company.name == "Bücher Haus"
    assert company("mail.xn--e1afmkfd.xn--p1ai") is not None


def test_an_idn_domain_that_idna_2003_would_map_is_named_as_registered() -> None:
    """Addresses spell straße.de as IDNA 2008 does (xn--strae-oqa.de); its company was
    named by IDNA 2003's decoder, which refuses such a label: "Straenbau Mller TIB41C"."""
    raw = "From: Jörg <joerg@Straßenbau-Müller.de>\r\nTo: x@example.com\r\n\r\nhi\r\n".encode()
    (joerg,) = parse_message(raw).from_
    found = person(joerg)
    assert found is not None and found.address == "joerg@xn--straenbau-mller-tib41c.de"
    assert found.company is not None and found.company.name == "Straßenbau Müller"


def test_registrable_domains_follow_the_public_suffix_list() -> None:
    assert registrable_domain("mail.acme.co.uk") == "acme.co.uk"
    assert registrable_domain("a.b.acme.com.au") == "acme.com.au"
    assert registrable_domain("co.uk") is None
    ibm = company("us.ibm.com")
    assert ibm is not None and ibm.name == "IBM"
