"""How a steward's mail is read (SPEC 3, 11): whether it applies, is held until its
steward confirms, or stays a note; no store involved."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from maild.core.classify import classify
from maild.mail.authn import Verdict
from maild.service.steward import StewardMail
from tests.unit.core_fixtures import ALICE, REQUESTER, make_config, make_mail, ticket

STRICT = make_config()
LAB = make_config(commands={"require_authenticated": False})
SIGNED = Verdict(True, ())
UNSIGNED = Verdict(False, ("no DKIM signature",))


@dataclass(frozen=True)
class Case:
    name: str
    subject: str
    verdict: Verdict | None
    action: str
    is_note: bool
    lab: bool = False
    oversize: bool = False


CASES = [
    Case(
        "authenticated commands apply",
        "Re: [support #42] [status=resolved]",
        SIGNED,
        "apply",
        False,
    ),
    Case("a plain authenticated reply is relayed", "Re: [support #42] Hub", SIGNED, "apply", False),
    Case("unauthenticated commands are held", "Re: [status=resolved]", UNSIGNED, "hold", True),
    Case(
        "unasked (no verdict) counts as unauthenticated",
        "Re: [status=resolved]",
        None,
        "hold",
        True,
    ),
    Case("a lab applies them as sent", "Re: [status=resolved]", UNSIGNED, "apply", False, lab=True),
    Case("a plain note needs no authentication", "Re: [note] seen", UNSIGNED, "note", True),
    Case("[silent] is a command: held", "Re: [silent]", UNSIGNED, "hold", True),
    Case("a note with commands is held", "Re: [note] [priority=high]", UNSIGNED, "hold", True),
    Case("a bad tag keeps it a note", "Re: [status=bogus]", SIGNED, "apply", True),
    Case(
        "a confirmation is kept as a note", "Re: [confirm=Zm9vYmFyYmF6cXV4]", SIGNED, "apply", True
    ),
    Case("too large: a note", "Re: [status=resolved]", SIGNED, "apply", True, oversize=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_steward_mail_is_read(case: Case) -> None:
    config = LAB if case.lab else STRICT
    mail = make_mail(case.subject, sender=ALICE)
    read = StewardMail.read(
        config, mail, classify(mail, config), ticket(), case.verdict, case.oversize
    )
    assert read is not None
    assert (read.action, read.is_note) == (case.action, case.is_note)
    assert read.steward.name == "alice"
    assert read.authenticated == (case.verdict is not None and case.verdict.authenticated)


def test_the_confirmation_token_and_the_findings_are_kept() -> None:
    mail = make_mail("Re: [support #42] [confirm=Zm9vYmFyYmF6cXV4]", sender=ALICE)
    read = StewardMail.read(STRICT, mail, classify(mail, STRICT), ticket(), UNSIGNED)
    assert read is not None
    assert read.confirm == "Zm9vYmFyYmF6cXV4"
    assert read.findings == ("no DKIM signature",)


@pytest.mark.parametrize(
    ("sender", "extra"),
    [
        (REQUESTER, {}),  # not a steward
        (ALICE, {"Auto-Submitted": "auto-replied"}),  # a steward's out-of-office
    ],
)
def test_only_a_person_among_the_stewards_steers(sender: str, extra: dict[str, str]) -> None:
    mail = make_mail("Re: [status=closed]", sender=sender, extra=extra)
    assert StewardMail.read(STRICT, mail, classify(mail, STRICT), ticket(), SIGNED) is None
