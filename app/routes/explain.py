"""Serve: /api/v1/explain, the decision a raw message would get, stored nowhere."""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status

from app.models import Employee
from app.policy_schemas import ExplanationOut, VerdictOut
from app.routes.deps import allow, read_body
from app.runtime import Runtime
from app.schemas import Text
from app.security import Principal, Role
from capture.pipeline import MAILBOX_CHANNELS, Envelope, Standing
from capture.spamd import Spamd
from capture.submitters import as_received
from policies.model import Channel

router = APIRouter(tags=["explain"])
# Compliance and admins see employees' addresses and names, never their settings; an
# integration sees neither (an alias is no contact: it would learn one by guessing).
STANDING = {
    Role.EMPLOYEE: Standing.OWN,
    Role.COMPLIANCE: Standing.NAMED,
    Role.ADMIN: Standing.NAMED,
    Role.INTEGRATION: Standing.ADDRESS,
}
MAX_MESSAGE_BYTES = 25 * 1024 * 1024
# An explanation says whether a participant is a contact (or was erased, or objected):
# integrations need the scope that reads contacts.
Explainer = Annotated[
    Principal,
    Depends(allow(Role.EMPLOYEE, Role.COMPLIANCE, Role.ADMIN, scope="contacts:read")),
]


@router.post(
    "/explain",
    response_model=ExplanationOut,
    openapi_extra={
        "requestBody": {
            "content": {"message/rfc822": {"schema": {"type": "string"}}},
            "required": True,
        }
    },
)
async def explain(
    request: Request,
    principal: Explainer,
    employee: Annotated[Text | None, Query(max_length=320)] = None,
    channel: Channel = Channel.BCC,
    sent: Annotated[bool, Query(description="Read from a Sent folder (imap, import).")] = False,
    relayed: Annotated[
        bool, Query(description="Delivered by a trusted relay (bcc, forward).")
    ] = False,
) -> ExplanationOut:
    """Every verdict, reason and evidence for a raw message (body: the RFC 5322 bytes).
    Employees explain as themselves, their own settings included; other tokens as the
    employee with the given (or the From) address (see STANDING), never with their settings,
    so that no one learns a colleague's personal contacts or paused capture from the answer;
    nor, since the mail it answers counts only if the caller may see it, their private mail.
    `sent`: read from the employee's Sent folder, as a mailbox's sync or `import --sent`
    reads it (outbound, the employee's own). `relayed`: delivered to the listener by a
    trusted relay, whose spam verdict and DKIM results count; without it they are mail
    from anyone, and Authentication-Results claiming our authserv-id are stripped, as the
    listener strips them."""
    if principal.role is Role.EMPLOYEE and employee is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Employees explain as themselves.")
    if sent and channel not in MAILBOX_CHANNELS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "Only mail read from a mailbox has a folder."
        )
    if relayed and channel in MAILBOX_CHANNELS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "Only mail sent to the listener is relayed."
        )
    raw = await read_body(request, MAX_MESSAGE_BYTES)
    runtime = request.app.state.runtime
    settings = runtime.settings
    vouched: frozenset[str] = frozenset()
    scorer = None
    if channel not in MAILBOX_CHANNELS:  # as the listener receives it, and scores it
        raw, vouched = as_received(raw, settings.resolved_authserv_id, relayed=relayed)
        scorer = Spamd.configured(settings.spamd_host, settings.spamd_port)
    score = await scorer.score(raw) if scorer else None
    submitter = employee or await asyncio.to_thread(_own_address, runtime, principal.employee_id)
    explained = await asyncio.to_thread(
        functools.partial(
            runtime.pipeline.explain, standing=STANDING[principal.role], reader=principal
        ),
        raw,
        Envelope(
            submitter or "",
            dkim_domains=vouched,
            sent_folder=sent,
            trusted_relay=relayed,
            spamd_score=score,
        ),
        channel,
    )
    decision = explained.decision
    return ExplanationOut(
        outcome=decision.outcome.value,
        deciding_rule=decision.deciding_rule,
        rules=list(decision.rules_hit),
        policy=decision.policy_sha256,
        verdicts=[
            VerdictOut(id=v.rule, hit=v.hit, reason=v.reason, evidence=list(v.evidence))
            for v in decision.verdicts
        ],
        facts=decision.facts,
        contacts=list(explained.contacts),
    )


def _own_address(runtime: Runtime, employee_id: int | None) -> str | None:
    if employee_id is None:
        return None
    with runtime.read_sessions() as session:
        found = session.get(Employee, employee_id)
        return found.email if found else None
