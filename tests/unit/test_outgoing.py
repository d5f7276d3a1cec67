"""The outgoing-mail layer's helpers that need no store: which attachments are passed
on, which addresses the stewards are mailed at, what the templates are told."""

from __future__ import annotations

import dataclasses

import pytest

from maild.core.inbound import Attachment
from maild.mail.render import Renderer
from maild.service.outgoing import FORWARD_LIMIT, Outgoing, forwarded
from tests.unit.core_fixtures import ALICE, BOB, REQUESTER, make_config, make_mail, ticket

CONFIG = make_config(
    stewards=[
        {"name": "alice", "addresses": [ALICE, "alice@home.example"]},
        {"name": "bob", "addresses": [BOB]},
    ]
)
OUT = Outgoing(CONFIG, Renderer(CONFIG))
MB = 1_048_576


def _att(name: str, size: int, *, inline: bool = False) -> Attachment:
    return Attachment(name, "application/octet-stream", size, b"\0" * size, None, inline)


@pytest.mark.parametrize(
    ("attachments", "passed"),
    [
        ([], []),
        ([_att("a.log", 10), _att("b.log", 20)], ["a.log", "b.log"]),
        # a pasted image is part of the body, not something to pass on
        ([_att("image001.png", 10, inline=True), _att("a.log", 10)], ["a.log"]),
        ([_att("all.bin", FORWARD_LIMIT)], ["all.bin"]),
        ([_att("big.bin", FORWARD_LIMIT + 1)], []),
        # one that does not fit is left out; smaller ones after it still go
        (
            [_att("a.bin", 6 * MB), _att("b.bin", 6 * MB), _att("c.bin", 4 * MB)],
            ["a.bin", "c.bin"],
        ),
    ],
)
def test_forwarded_attachments(attachments: list[Attachment], passed: list[str]) -> None:
    mail = dataclasses.replace(make_mail(), attachments=tuple(attachments))
    assert [a.filename for a in forwarded(mail)] == passed


def test_forwarded_attachments_keep_their_type_and_charset() -> None:
    yaml = Attachment("values.yaml", "text/x-yaml", 3, b"a: 1", None, False, "utf-8")
    [out] = forwarded(dataclasses.replace(make_mail(), attachments=(yaml,)))
    assert (out.filename, out.content_type, out.content, out.charset) == (
        "values.yaml",
        "text/x-yaml",
        b"a: 1",
        "utf-8",
    )


@pytest.mark.parametrize(
    ("names", "addresses"),
    [
        ([], []),
        (["bob", "alice"], [BOB, ALICE]),  # each steward's first address, in order
        (["nobody", "alice"], [ALICE]),  # an unknown name is skipped
    ],
)
def test_steward_addresses(names: list[str], addresses: list[str]) -> None:
    assert OUT.steward_addresses(names) == addresses


@pytest.mark.parametrize(
    ("address", "every"),
    [
        ("alice@home.example", (ALICE, "alice@home.example")),
        (ALICE, (ALICE, "alice@home.example")),
        (REQUESTER, (REQUESTER,)),
    ],
)
def test_all_addresses_of(address: str, every: tuple[str, ...]) -> None:
    assert OUT.all_addresses_of(address) == every


@pytest.mark.parametrize(
    ("oversize", "context"),
    [
        (0, {}),
        (30 * MB, {"size_mb": 30.0, "limit_mb": 25.0}),
        (26_500_000, {"size_mb": 25.3, "limit_mb": 25.0}),
    ],
)
def test_size_context(oversize: int, context: dict[str, float]) -> None:
    assert OUT.size_context(oversize) == context


def test_context_clips_what_a_forged_sender_controls() -> None:
    mail = make_mail("x" * 500)
    ctx = OUT.context(ticket(subject="y" * 500), mail, {"status_before": "new"})
    assert len(ctx["message"]["subject"]) == 200
    assert len(ctx["ticket"]["subject"]) == 200
    assert ctx["tag"] == "[support #42]"
    assert ctx["status_before"] == "new"


@pytest.mark.parametrize(
    ("sender", "greeted"),
    [(REQUESTER, "Someone"), ("colleague@example.net", None)],
)
def test_context_greets_the_requester_by_name_only_in_their_own_mail(
    sender: str, greeted: str | None
) -> None:
    ctx = OUT.context(ticket(), make_mail(sender=sender))
    assert ctx["ticket"]["requester_name"] == greeted
