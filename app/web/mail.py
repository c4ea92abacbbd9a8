"""Serve: an employee's pages: my mail, one message, one contact."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app import crm, review
from app.db import scrub_wal
from app.models import (
    Company,
    Contact,
    ContactChange,
    Employee,
    Message,
    Participant,
    Relationship,
)
from app.routes.pagination import Id
from app.web import actions
from app.web.auth import CsrfChecked, EmployeeUser, WebUser, secret_of
from app.web.render import PageRoute, PageSession, page
from capture.parse import normalize_address
from policies.model import Visibility

router = APIRouter(include_in_schema=False, route_class=PageRoute)
CHANGES_SHOWN = 50
VISIBILITY_WORDS = {
    Visibility.PRIVATE: "only me",
    Visibility.SUBJECT_ONLY: "team sees who and subject",
    Visibility.SHARED: "team sees everything",
}


# A review choice for a message not (or no longer) held: most often the same choice sent
# again by a double click or the back button, whose answer is the one the browser shows.
# Also for a colleague's message or none: the same answer whether it is missing or theirs.
NOT_HELD = "not-held"


def _back(note: str) -> RedirectResponse:
    return RedirectResponse(f"/mail?note={note}", status_code=303)


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, "No such message.")


@router.get("/mail", response_class=HTMLResponse)
def my_mail(request: Request, session: PageSession, user: EmployeeUser) -> HTMLResponse:
    return _my_mail(request, session, user)


def _my_mail(
    request: Request, session: Session, user: WebUser, problem: str | None = None
) -> HTMLResponse:
    """My mail; with a problem, the refusal of what I just asked, and status 409."""
    assert user.employee_id is not None
    employee = session.get(Employee, user.employee_id)
    return page(
        request,
        "mail.html",
        user,
        {
            "problem": problem,
            "employee": employee,
            "captures": crm.render_messages(
                session, user.principal, actions.captures(session, user.employee_id)
            ),
            "held": actions.held(session, user.employee_id),
            "dropped": actions.dropped(session, user.employee_id),
            "in_force": request.app.state.runtime.pipeline.engine.policy.sha256,
            "personal": actions.personal_contacts(session, user.employee_id),
            "visibilities": VISIBILITY_WORDS,
        },
        status_code=409 if problem else 200,
    )


@router.get("/mail/messages/{message_id}", response_class=HTMLResponse)
def message_page(
    request: Request, session: PageSession, user: EmployeeUser, message_id: Id
) -> HTMLResponse:
    """Mine, or a colleague's shared capture; anything else does not exist for me."""
    found = crm.get_message(session, user.principal, message_id)
    if found is None:  # the same answer whether it is missing or a colleague's private mail
        return page(request, "not_found.html", user, {"what": "This message"}, status_code=404)
    return page(request, "message.html", user, {"message": found})


@router.post("/mail/messages/{message_id}/visibility", dependencies=[CsrfChecked])
def change_visibility(
    request: Request,
    session: PageSession,
    user: EmployeeUser,
    message_id: Id,
    visibility: Annotated[Visibility, Form()],
) -> Response:
    assert user.employee_id is not None
    try:
        changed = actions.set_visibility(session, user.employee_id, message_id, visibility)
    except actions.NotAllowedError as refused:
        return _my_mail(request, session, user, f"Visibility not changed: {refused}.")
    if not changed:
        raise _not_found()
    return _back("visibility")


@router.post("/mail/messages/{message_id}/capture", dependencies=[CsrfChecked])
def capture(request: Request, session: PageSession, user: EmployeeUser, message_id: Id) -> Response:
    assert user.employee_id is not None
    at = review.reviewer(request.app.state.runtime, user.employee_id)
    try:
        captured = actions.capture_held(session, message_id, at)
    except actions.NotAllowedError as refused:
        return _my_mail(request, session, user, f"Not captured: {refused}.")
    return _back("captured" if captured else NOT_HELD)


@router.post("/mail/messages/{message_id}/discard", dependencies=[CsrfChecked])
def discard(
    request: Request, session: PageSession, user: EmployeeUser, message_id: Id
) -> RedirectResponse:
    assert user.employee_id is not None
    at = review.reviewer(request.app.state.runtime, user.employee_id)
    if not actions.discard_held(session, message_id, at):
        return _back(NOT_HELD)
    session.commit()
    scrub_wal(request.app.state.runtime.db)
    return _back("discarded")


@router.post("/mail/pause", dependencies=[CsrfChecked])
def pause(
    session: PageSession, user: EmployeeUser, paused: Annotated[bool, Form()]
) -> RedirectResponse:
    assert user.employee_id is not None
    actions.set_capture_paused(session, user.employee_id, paused=paused)
    return _back("paused" if paused else "resumed")


@router.post("/mail/personal-contacts", dependencies=[CsrfChecked])
def add_personal(
    request: Request, session: PageSession, user: EmployeeUser, address: Annotated[str, Form()]
) -> RedirectResponse:
    assert user.employee_id is not None
    normalized = normalize_address(address)
    if normalized is None:
        return _back("personal-invalid")
    actions.add_personal_contact(session, user.employee_id, str(normalized), secret_of(request))
    return _back("personal-added")


@router.post("/mail/personal-contacts/{contact_id}/remove", dependencies=[CsrfChecked])
def remove_personal(session: PageSession, user: EmployeeUser, contact_id: Id) -> RedirectResponse:
    assert user.employee_id is not None
    if not actions.remove_personal_contact(session, user.employee_id, contact_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such personal contact.")
    return _back("personal-removed")


@router.get("/contacts/{contact_id}", response_class=HTMLResponse)
def contact_page(
    request: Request, session: PageSession, user: EmployeeUser, contact_id: Id
) -> HTMLResponse:
    row = session.execute(
        sa.select(Contact, Company)
        .outerjoin(Company, Company.id == Contact.company_id)
        .where(Contact.id == contact_id)
    ).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such contact.")
    involved = sa.exists().where(
        Participant.message_id == Message.id, Participant.contact_id == contact_id
    )
    query = crm.visible_messages(user.principal).where(involved)
    messages = session.scalars(query.order_by(Message.id.desc()).limit(100)).all()
    known_by = session.execute(
        sa.select(Employee.name, Employee.email, Relationship)
        .join(Relationship, Relationship.employee_id == Employee.id)
        .where(Relationship.contact_id == contact_id)
        .order_by(Relationship.last_seen.desc())
    ).all()
    changes = _changes(session, contact_id)
    return page(
        request,
        "contact.html",
        user,
        {
            "contact": row[0],
            "company": row[1],
            "timeline": crm.render_messages(session, user.principal, messages),
            "known_by": known_by,
            "changes": changes,
            "may_open": _visible(session, user, {c.message_id for c in changes}),
            "changes_shown": CHANGES_SHOWN,
        },
    )


def _changes(session: Session, contact_id: int) -> list[ContactChange]:
    """The contact's newest changes: titles, phones, companies, bounces, merges. Contact data,
    which any employee may see (as the API's history shows it); never a message's content."""
    query = (
        sa.select(ContactChange)
        .where(ContactChange.contact_id == contact_id)
        .order_by(ContactChange.observed_at.desc(), ContactChange.id.desc())
        .limit(CHANGES_SHOWN)
    )
    return list(session.scalars(query))


def _visible(session: Session, user: WebUser, message_ids: set[int | None]) -> set[int]:
    """Which of these messages the viewer may open: only those get a link."""
    wanted = {i for i in message_ids if i is not None}
    if not wanted:
        return set()
    query = crm.visible_messages(user.principal).where(Message.id.in_(wanted))
    return set(session.scalars(query.with_only_columns(Message.id)))
