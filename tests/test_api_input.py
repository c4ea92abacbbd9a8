"""Bad input through the real API gets a clear 4xx problem, never a 500: cursors."""

from __future__ import annotations

import base64

import pytest

from app.security import Role
from tests.conftest import Running, add_employee, issue_token


@pytest.fixture
def tokens(running: Running) -> dict[str, str]:
    sessions = running.runtime.sessions
    alice = add_employee(sessions, "alice@example.com")
    return {
        "employee": issue_token(sessions, Role.EMPLOYEE, employee_id=alice),
        "compliance": issue_token(sessions, Role.COMPLIANCE),
        "admin": issue_token(sessions, Role.ADMIN),
    }


def _cursor(n: int) -> str:
    return base64.urlsafe_b64encode(str(n).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("role", "path"),
    [
        ("admin", "/api/v1/employees"),
        ("admin", "/api/v1/tokens"),
        ("employee", "/api/v1/messages"),
        ("employee", "/api/v1/contacts"),
        ("employee", "/api/v1/companies"),
        ("employee", "/api/v1/review"),
        ("employee", "/api/v1/me/personal-contacts"),
        ("compliance", "/api/v1/decisions"),
    ],
)
def test_a_cursor_past_the_ids_a_database_holds_is_a_400(
    running: Running, tokens: dict[str, str], role: str, path: str
) -> None:
    with running.client(tokens[role]) as api:
        past = api.get(path, params={"cursor": _cursor(2**63)})
        last = api.get(path, params={"cursor": _cursor(2**31 - 1)})

    assert past.status_code == 400, past.text
    assert past.headers["content-type"] == "application/problem+json"
    assert past.json()["detail"] == "Malformed cursor."
    assert last.status_code == 200
