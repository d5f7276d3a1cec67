"""Who sent a mail and whether it may be answered automatically.

Pure: takes an :class:`~maild.core.inbound.InboundMail` and the config, returns a
:class:`Classification`. The rules follow RFC 3834 (``Auto-Submitted``), the
de-facto autoresponder headers (``X-Autoreply``, ``X-Autorespond``,
``Precedence``), RFC 2919 list mail (``List-Id``) and RFC 3464 delivery reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from maild.config import Community, Config, Steward
from maild.core.inbound import InboundMail
from maild.core.policy import MACHINE_LOCALPARTS, not_a_person

__all__ = ["Classification", "Kind", "Role", "classify"]

Kind = Literal["normal", "auto_reply", "bounce", "list", "own"]
Role = Literal["steward", "representative", "requester"]


@dataclass(frozen=True, slots=True)
class Classification:
    """What a mail is and who sent it.

    ``kind`` other than ``normal`` means no automatic mail may answer it.
    ``reasons`` name the headers that decided, for ``maild explain``.
    """

    kind: Kind
    reasons: tuple[str, ...]
    role: Role
    steward: Steward | None
    community: Community | None
    bounce_of: str | None = None

    @property
    def automated(self) -> bool:
        return self.kind != "normal"


def _localpart(addr: str | None) -> str:
    return (addr or "").split("@", 1)[0].lower()


_REPORT_TYPE = re.compile(r"report-type\s*=\s*\"?([\w-]+)", re.IGNORECASE)
_ACTION = re.compile(rb"^action:\s*([a-z]+)", re.IGNORECASE | re.MULTILINE)


def _report_kind(mail: InboundMail) -> str:
    """``failed`` for an RFC 3464 report of a failed delivery, else what it reports."""
    found = _REPORT_TYPE.search(mail.header("content-type") or "")
    report_type = found.group(1).lower() if found else "delivery-status"
    if report_type != "delivery-status":
        return report_type  # disposition-notification: a read receipt
    actions = {a.lower() for a in _ACTION.findall(mail.raw)}
    if not actions or b"failed" in actions:
        return "failed"  # no Action field at all: an old-style bounce
    return "delivery " + "/".join(sorted(a.decode() for a in actions))


def _automation(mail: InboundMail, config: Config) -> tuple[Kind, list[str]]:
    support = config.support.address
    reasons: list[str] = []
    ctype = mail.content_type
    if mail.return_path == "":
        reasons.append("null return path (Return-Path: <>)")
    elif mail.return_path is not None and _localpart(mail.return_path) in MACHINE_LOCALPARTS:
        reasons.append(f"Return-Path: <{mail.return_path}>")
    if _localpart(mail.from_addr) in MACHINE_LOCALPARTS:
        reasons.append(f"sent by {mail.from_addr}")
    if ctype == "multipart/report":
        report = _report_kind(mail)
        if report != "failed":
            # a read receipt, a "delayed" or "delivered" notice: answer it never,
            # but it is not a failed delivery either
            return "auto_reply", [*reasons, f"multipart/report ({report})"]
        reasons.append("multipart/report (delivery failed)")
    if reasons:
        return "bounce", reasons

    if mail.from_addr == support:
        return "own", [f"From is our own address {support}"]
    for loop in mail.header_all("x-loop"):
        if support in loop.lower():
            return "own", [f"X-Loop: {loop.strip()}"]

    auto_submitted = (mail.header("auto-submitted") or "").strip().lower()
    if auto_submitted and not auto_submitted.startswith("no"):
        reasons.append(f"Auto-Submitted: {auto_submitted}")
    for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"):
        value = mail.header(name)
        if value is None:
            continue
        if name == "X-Auto-Response-Suppress":
            # Outlook puts this on its own out-of-office replies; on ordinary
            # mail it is absent or lists only some categories.
            if "oof" not in value.lower() and "all" not in value.lower():
                continue
            if not (mail.header("x-ms-exchange-generated-message-source") or "").strip():
                continue
        reasons.append(f"{name}: {value.strip()}")
    precedence = (mail.header("precedence") or "").strip().lower()
    if precedence in ("bulk", "junk", "auto_reply"):
        reasons.append(f"Precedence: {precedence}")
    if reasons:
        return "auto_reply", reasons

    if precedence == "list":
        return "list", ["Precedence: list"]
    list_id = mail.header("list-id")
    if list_id is not None:
        return "list", [f"List-Id: {list_id.strip()}"]
    return "normal", []


def classify(mail: InboundMail, config: Config) -> Classification:
    """Classify ``mail``: automation kind and the sender's role."""
    kind, reasons = _automation(mail, config)
    sender = mail.from_addr or ""
    steward = config.steward_by_address(sender) if sender else None
    community = config.community_for(sender) if sender else None
    role: Role
    if steward is not None:
        role = "steward"
    elif community is not None and sender in community.representatives:
        role = "representative"
    else:
        role = "requester"
    bounce_of = mail.report_original_message_id if kind == "bounce" else None
    return Classification(
        kind=kind,
        reasons=tuple(reasons),
        role=role,
        steward=steward,
        community=community,
        bounce_of=bounce_of,
    )


def why_not_answer(
    to: str, cls: Classification, config: Config, *, dmarc_fail: bool = False
) -> str | None:
    """Why the sender of a mail may get no automatic answer at all, or None.

    The one "may we answer this automatically" rule: not machines (SPEC 6),
    not ourselves, not a sender our MX saw fail DMARC (SPEC 11), not an
    address that is no person's. The per-address limits are applied to every
    automatic mail when it is queued (``service.outgoing``).
    """
    if cls.automated:
        return f"{cls.kind}: " + "; ".join(cls.reasons)
    if to == config.support.address:
        return "our own address"
    if dmarc_fail:
        return (
            f"{config.commands.authserv_id} reports dmarc=fail for the sender's "
            "domain: the From address is likely forged (no backscatter)"
        )
    return not_a_person(to)


def why_not_mail_requester(requester: str, requester_kind: str, config: Config) -> str | None:
    """Why no automatic mail may go to a ticket's requester at all, or None.

    A ticket opened by automatic mail gets none; a steward who opened one
    does, whatever their address looks like.
    """
    if requester_kind != "normal":
        return f"the ticket was opened by automatic mail ({requester_kind})"
    if config.steward_by_address(requester) is not None:
        return None
    return not_a_person(requester)
