"""The steward subject-tag grammar."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from maild.core.tags import ACCEPTED, parse_subject

STEWARDS = ("alice", "bob")
COMMUNITIES = ("pangeo", "Jupyter")


def parse(subject: str, ticket_subject: str = "") -> object:
    return parse_subject(
        subject, stewards=STEWARDS, communities=COMMUNITIES, ticket_subject=ticket_subject
    )


def test_spec_example() -> None:
    p = parse_subject(
        "Re: [support #42] Hub is down [type=incident] [ic=alice] [priority=urgent]",
        stewards=STEWARDS,
    )
    assert p.errors == ()
    assert [(c.key, c.value) for c in p.commands] == [
        ("type", "incident"),
        ("ic", "alice"),
        ("priority", "urgent"),
    ]
    assert p.subject == "Re: [support #42] Hub is down"


def test_several_in_one_bracket_and_spread_over_the_subject() -> None:
    p = parse_subject("[Status=Resolved; TIME=45m] Re: x [incident] [assign = me ]")
    assert p.errors == ()
    assert [(c.key, c.value) for c in p.commands] == [
        ("status", "resolved"),
        ("time", "45m"),
        ("type", "incident"),
        ("assign", "me"),
    ]
    assert p.get("time").minutes == 45  # type: ignore[union-attr]
    assert p.subject == "Re: x"


def test_shortcuts() -> None:
    p = parse_subject("[reopen][pending][closed][guidance][note][silent]")
    assert [(c.key, c.value) for c in p.commands] == [
        ("status", "open"),
        ("status", "waiting"),
        ("status", "closed"),
        ("type", "guidance"),
        ("note", None),
        ("silent", None),
    ]
    assert p.get("status").value == "closed"  # type: ignore[union-attr]


def test_durations() -> None:
    for text, minutes in [("30m", 30), ("1h", 60), ("1h30m", 90), ("1.5h", 90)]:
        p = parse_subject(f"[time={text}]")
        assert p.errors == () and p.commands[0].minutes == minutes


def test_every_bad_tag_is_named_with_what_is_accepted() -> None:
    p = parse_subject(
        "Re: [support #1] x [priority=asap] [ic=mallory] [frobnicate] [time=soon] [status=done]",
        stewards=STEWARDS,
    )
    assert p.commands == ()
    tags = [e.tag for e in p.errors]
    assert tags == [
        "[priority=asap]",
        "[ic=mallory]",
        "[frobnicate]",
        "[time=soon]",
        "[status=done]",
    ]
    assert "low|normal|high|urgent" in p.errors[0].message
    assert "steward" in p.errors[1].message
    assert "accepted tags" in p.errors[2].message
    assert "30m" in p.errors[3].message


def test_community_link_requester() -> None:
    p = parse_subject(
        "[community=jupyter] [link=https://github.com/o/r/issues/1] "
        "[requester=Someone@Lab.example]",
        communities=COMMUNITIES,
    )
    assert p.errors == ()
    assert [c.value for c in p.commands] == [
        "Jupyter",
        "https://github.com/o/r/issues/1",
        "someone@lab.example",
    ]
    assert parse_subject("[link=javascript:alert(1)]").errors


def test_brackets_from_the_ticket_subject_are_not_commands() -> None:
    p = parse_subject(
        "Re: [support #7] [pangeo-hub] login broken [waiting]",
        ticket_subject="[pangeo-hub] login broken",
    )
    assert p.errors == ()
    assert [(c.key, c.value) for c in p.commands] == [("status", "waiting")]
    assert p.subject == "Re: [support #7] [pangeo-hub] login broken"


def test_ticket_tags_are_not_commands() -> None:
    p = parse_subject("Re: [Support #42] [#43] hello")
    assert p.commands == () and p.errors == ()


@given(st.text())
def test_never_raises_and_text_outside_brackets_survives(subject: str) -> None:
    p = parse_subject(subject, stewards=STEWARDS, communities=COMMUNITIES)
    outside = "".join(ch for ch in subject if ch not in "[]")
    for word in p.subject.replace("[", " ").replace("]", " ").split():
        assert word in outside or word in subject


_COMMANDS = st.sampled_from(
    [
        ("status=waiting", "status", "waiting"),
        ("type=change", "type", "change"),
        ("priority=high", "priority", "high"),
        ("assign=bob", "assign", "bob"),
        ("ic=me", "ic", "me"),
        ("time=1h30m", "time", "1h30m"),
        ("update-every=2h", "update-every", "2h"),
        ("resolved", "status", "resolved"),
        ("note", "note", None),
    ]
)
_PLAIN = st.text(
    alphabet=st.characters(blacklist_characters="[]", blacklist_categories=("Cs",)), max_size=20
)


@given(st.lists(st.tuples(_PLAIN, _COMMANDS), max_size=6), _PLAIN)
def test_commands_anywhere_are_all_read(
    parts: list[tuple[str, tuple[str, str, str | None]]], tail: str
) -> None:
    subject = "".join(f"{text}[{tag}]" for text, (tag, _, _) in parts) + tail
    p = parse_subject(subject, stewards=STEWARDS)
    assert p.errors == ()
    assert [(c.key, c.value) for c in p.commands] == [(k, v) for _, (_, k, v) in parts]
    expected = " ".join([*(text for text, _ in parts), tail])
    assert p.subject == " ".join(expected.split())


def test_accepted_covers_the_spec_table() -> None:
    for key in (
        "status",
        "type",
        "priority",
        "assign",
        "ic",
        "community",
        "link",
        "time",
        "note",
        "update-every",
        "silent",
        "requester",
    ):
        assert key in ACCEPTED


def test_a_ticket_subject_bracket_excuses_only_its_own_occurrence() -> None:
    p = parse_subject(
        "Re: [support #1] [Note] new contact for billing [note]",
        ticket_subject="[Note] new contact for billing",
    )
    assert [c.key for c in p.commands] == ["note"]
    p = parse_subject(
        "Re: [support #1] [Incident] Hub is down [incident] [ic=alice]",
        stewards=STEWARDS,
        ticket_subject="[Incident] Hub is down",
    )
    assert [(c.key, c.value) for c in p.commands] == [("type", "incident"), ("ic", "alice")]
