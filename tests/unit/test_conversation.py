"""Threading (SPEC section 2): which ticket a mail belongs to, rule by rule.

Each row is one mail and the tickets the store would have found for it; the
expected answer is what a steward would see: appended to #N, a follow-up of a
closed #N, or a new ticket (naming a tag a stranger quoted).
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maild.core.classify import classify
from maild.core.conversation import (
    Candidates,
    Rule,
    TicketView,
    decide,
    referenced_ids,
    thread_root,
)
from maild.core.inbound import InboundMail
from maild.core.subjects import normalize_for_match
from maild.mail.render import new_thread_root, thread_index_for
from tests.unit.core_fixtures import (
    ALICE,
    COLLEAGUE,
    NOW,
    REP,
    REQUESTER,
    STRANGER,
    make_config,
    make_mail,
)

CONFIG = make_config()
DAY = timedelta(days=1)
KEY = normalize_for_match("Hub is down", "support")

# Outlook: one conversation root, and a reply's Thread-Index inside it
ROOT = new_thread_root(NOW - 3 * DAY)
REPLY_INDEX = thread_index_for(ROOT, NOW)
OTHER_INDEX = thread_index_for(new_thread_root(NOW - 3 * DAY), NOW)


def view(
    id: int,
    status: str = "open",
    *,
    requester: str = REQUESTER,
    community: str | None = None,
    key: str = KEY,
    active: datetime = NOW - 2 * DAY,
    members: frozenset[str] = frozenset({COLLEAGUE}),
) -> TicketView:
    return TicketView(id, status, requester, community, key, active, members)


OPEN = view(7)
CLOSED = view(5, "closed")
PANGEO = view(9, requester="someone@pangeo.example", community="pangeo")
BY_MID = {"out-7@example.org": OPEN, "out-5@example.org": CLOSED}


@dataclass(frozen=True)
class Case:
    name: str
    subject: str = "Hub is down"
    sender: str = REQUESTER
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    candidates: Candidates = Candidates()
    rule: Rule = "new"
    ticket: int | None = None
    follow_up_of: int | None = None
    quoted: int | None = None

    def __str__(self) -> str:
        return self.name


CASES = [
    # rule 1: In-Reply-To / References
    Case(
        "In-Reply-To names our message on #7 -> appended to #7",
        subject="Re: something else entirely",
        in_reply_to="out-7@example.org",
        candidates=Candidates(by_message_id=BY_MID),
        rule="references",
        ticket=7,
    ),
    Case(
        "only an older References id is known -> appended to #7",
        subject="Re: something else",
        references=("out-7@example.org", "unknown@client.example"),
        candidates=Candidates(by_message_id=BY_MID),
        rule="references",
        ticket=7,
    ),
    Case(
        "reply by References to a closed ticket from the requester -> follow-up of #5",
        references=("out-5@example.org",),
        candidates=Candidates(by_message_id=BY_MID),
        rule="references",
        follow_up_of=5,
    ),
    Case(
        "reply by In-Reply-To to a closed ticket from a steward -> stays on #5",
        sender=ALICE,
        in_reply_to="out-5@example.org",
        candidates=Candidates(by_message_id=BY_MID),
        rule="references",
        ticket=5,
    ),
    Case(
        "In-Reply-To #7 wins over a subject tag naming #9 (rule 1 before rule 3)",
        subject="Re: [support #9] Hub is down",
        in_reply_to="out-7@example.org",
        candidates=Candidates(by_message_id=BY_MID, by_number={9: PANGEO}),
        rule="references",
        ticket=7,
    ),
    Case(
        "In-Reply-To wins over the References when both are known",
        in_reply_to="out-5@example.org",
        references=("out-7@example.org",),
        sender=ALICE,
        candidates=Candidates(by_message_id=BY_MID),
        rule="references",
        ticket=5,
    ),
    # rule 2: Outlook Thread-Index + Thread-Topic
    Case(
        "Outlook Thread-Index in #7's conversation and the same Thread-Topic -> #7",
        subject="AW: Hub is down",
        headers={"Thread-Index": REPLY_INDEX, "Thread-Topic": "Hub is down"},
        candidates=Candidates(by_thread_root=OPEN),
        rule="thread-index",
        ticket=7,
    ),
    Case(
        "Thread-Index without a Thread-Topic: the subject stands in for the topic -> #7",
        subject="RE: Hub is down",
        headers={"Thread-Index": REPLY_INDEX},
        candidates=Candidates(by_thread_root=OPEN),
        rule="thread-index",
        ticket=7,
    ),
    Case(
        "Thread-Index matches but the Thread-Topic is another conversation's -> new",
        subject="Printer on fire",
        headers={"Thread-Index": REPLY_INDEX, "Thread-Topic": "Printer on fire"},
        candidates=Candidates(by_thread_root=OPEN),
    ),
    Case(
        "Thread-Index too short to name a conversation -> not used, new ticket",
        subject="Hub is down",
        headers={"Thread-Index": "AQHZ", "Thread-Topic": "Hub is down"},
        candidates=Candidates(by_thread_root=OPEN),
    ),
    Case(
        "Thread-Index to a closed ticket from the requester -> follow-up of #5",
        headers={"Thread-Index": REPLY_INDEX, "Thread-Topic": "Hub is down"},
        candidates=Candidates(by_thread_root=CLOSED),
        rule="thread-index",
        follow_up_of=5,
    ),
    # rule 3: subject tag and membership
    Case(
        "subject tag [support #7] from the requester -> #7",
        subject="Re: [support #7] Hub is down",
        candidates=Candidates(by_number={7: OPEN}),
        rule="subject-tag",
        ticket=7,
    ),
    Case(
        "bare tag [#7] from the requester -> #7",
        subject="[#7] one more thing",
        candidates=Candidates(by_number={7: OPEN}),
        rule="subject-tag",
        ticket=7,
    ),
    Case(
        "tag in another case [SUPPORT #7] -> #7",
        subject="[SUPPORT #7] one more thing",
        candidates=Candidates(by_number={7: OPEN}),
        rule="subject-tag",
        ticket=7,
    ),
    Case(
        "tag from someone on the ticket's cc -> #7",
        subject="[support #7] me too",
        sender=COLLEAGUE,
        candidates=Candidates(by_number={7: OPEN}),
        rule="subject-tag",
        ticket=7,
    ),
    Case(
        "tag from a steward who is not on the ticket -> #7",
        subject="[support #7] status?",
        sender=ALICE,
        candidates=Candidates(by_number={7: OPEN}),
        rule="subject-tag",
        ticket=7,
    ),
    Case(
        "tag from a representative of the ticket's community -> #9",
        subject="[support #9] any news?",
        sender=REP,
        candidates=Candidates(by_number={9: PANGEO}),
        rule="subject-tag",
        ticket=9,
    ),
    Case(
        "a stranger quoting #7 gets a new ticket that names the quoted tag",
        subject="Re: [support #7] Hub is down",
        sender=STRANGER,
        candidates=Candidates(by_number={7: OPEN}),
        quoted=7,
    ),
    Case(
        "a representative of another community quoting #7 is a stranger to it",
        subject="[support #7] Hub is down",
        sender=REP,
        candidates=Candidates(by_number={7: OPEN}),
        quoted=7,
    ),
    Case(
        "a tag for a ticket that does not exist -> new, nothing quoted",
        subject="[support #99] hello",
        candidates=Candidates(),
    ),
    Case(
        "the second tag is the sender's ticket: the first, foreign one is skipped",
        subject="[support #9] and [support #7]",
        candidates=Candidates(by_number={9: PANGEO, 7: OPEN}),
        rule="subject-tag",
        ticket=7,
    ),
    Case(
        "a tag of a closed ticket from its requester -> follow-up of #5",
        subject="Re: [support #5] Hub is down again",
        candidates=Candidates(by_number={5: CLOSED}),
        rule="subject-tag",
        follow_up_of=5,
    ),
    Case(
        "a steward's tag on a closed ticket -> stays on #5 (to reopen it)",
        subject="Re: [support #5] Hub is down [open]",
        sender=ALICE,
        candidates=Candidates(by_number={5: CLOSED}),
        rule="subject-tag",
        ticket=5,
    ),
    Case(
        "another product's tag [billing #7] is not ours -> new",
        subject="Re: [billing #7] Hub is down",
        candidates=Candidates(by_number={7: OPEN}),
    ),
    # rule 4: reply by subject, window and membership
    Case(
        "'Re:' + the cleaned subject from the requester, active 2 days ago -> #7",
        subject="Re: Hub is down",
        candidates=Candidates(by_subject=(OPEN,)),
        rule="reply-subject",
        ticket=7,
    ),
    Case(
        "German 'AW:' and other case, from someone on the cc -> #7",
        subject="AW: HUB IS DOWN",
        sender=COLLEAGUE,
        candidates=Candidates(by_subject=(OPEN,)),
        rule="reply-subject",
        ticket=7,
    ),
    Case(
        "reply subject, ticket last active exactly 30 days ago -> still #7",
        subject="Re: Hub is down",
        candidates=Candidates(by_subject=(view(7, active=NOW - 30 * DAY),)),
        rule="reply-subject",
        ticket=7,
    ),
    Case(
        "reply subject, ticket last active 31 days ago -> new",
        subject="Re: Hub is down",
        candidates=Candidates(by_subject=(view(7, active=NOW - 31 * DAY),)),
    ),
    Case(
        "reply subject from a stranger -> new (never a look into another's ticket)",
        subject="Re: Hub is down",
        sender=STRANGER,
        candidates=Candidates(by_subject=(OPEN,)),
    ),
    Case(
        "the same subject without a reply prefix is a new request -> new",
        subject="Hub is down",
        candidates=Candidates(by_subject=(OPEN,)),
    ),
    Case(
        "a forward 'Fwd:' is not a reply -> new",
        subject="Fwd: Hub is down",
        candidates=Candidates(by_subject=(OPEN,)),
    ),
    Case(
        "several tickets share the subject -> the most recently active",
        subject="Re: Hub is down",
        candidates=Candidates(
            by_subject=(
                view(3, active=NOW - 20 * DAY),
                view(8, active=NOW - 1 * DAY),
                view(6, active=NOW - 10 * DAY),
            )
        ),
        rule="reply-subject",
        ticket=8,
    ),
    Case(
        "reply subject to a closed ticket -> follow-up of #5",
        subject="Re: Hub is down",
        candidates=Candidates(by_subject=(CLOSED,)),
        rule="reply-subject",
        follow_up_of=5,
    ),
    Case(
        "a stranger quoting #7 whose own reply subject matches #8 -> #8",
        subject="Re: [support #7] Hub is down",
        sender=STRANGER,
        candidates=Candidates(
            by_number={7: OPEN}, by_subject=(view(8, requester=STRANGER, members=frozenset()),)
        ),
        rule="reply-subject",
        ticket=8,
    ),
    # rule 5
    Case("nothing matches -> a new ticket", subject="Printer on fire"),
    Case(
        "unknown In-Reply-To and References -> a new ticket",
        in_reply_to="nobody@client.example",
        references=("older@client.example",),
        candidates=Candidates(by_message_id=BY_MID),
    ),
]


def _mail(case: Case) -> InboundMail:
    return make_mail(
        case.subject,
        sender=case.sender,
        in_reply_to=case.in_reply_to,
        references=case.references,
        extra=case.headers,
    )


@pytest.mark.parametrize("case", CASES, ids=str)
def test_threading_rules(case: Case) -> None:
    mail = _mail(case)

    decision = decide(mail, classify(mail, CONFIG), case.candidates, CONFIG, NOW)

    assert (decision.rule, decision.ticket_id, decision.follow_up_of, decision.quoted_tag) == (
        case.rule,
        case.ticket,
        case.follow_up_of,
        case.quoted,
    ), decision.reason


def test_the_reason_names_the_rule_for_maild_explain() -> None:
    mail = make_mail("Re: x", references=("out-5@example.org",))
    decision = decide(mail, classify(mail, CONFIG), Candidates(by_message_id=BY_MID), CONFIG, NOW)
    assert "References <out-5@example.org>" in decision.reason
    assert "#5 is closed, so this opens a follow-up" in decision.reason

    stranger = make_mail("[support #7] x", sender=STRANGER)
    quoted = decide(
        stranger, classify(stranger, CONFIG), Candidates(by_number={7: OPEN}), CONFIG, NOW
    )
    assert "quotes tag #7" in quoted.reason and STRANGER in quoted.reason


@pytest.mark.parametrize(
    ("days", "active_days_ago", "ticket"),
    [
        (7, 6, 7),  # inside a shorter window
        (7, 8, None),  # outside it
        (90, 60, 7),  # a longer window keeps older tickets
    ],
)
def test_subject_match_days_sets_the_reply_subject_window(
    days: int, active_days_ago: int, ticket: int | None
) -> None:
    config = make_config(tickets={"subject_match_days": days})
    mail = make_mail("Re: Hub is down")
    candidates = Candidates(by_subject=(view(7, active=NOW - active_days_ago * DAY),))
    assert decide(mail, classify(mail, config), candidates, config, NOW).ticket_id == ticket


def test_a_configured_tag_replaces_support() -> None:
    config = make_config(support={"tag": "help"})
    tagged = make_mail("Re: [Help #7] Hub is down")
    old_tag = make_mail("Re: [support #7] Hub is down", message_id="m2@client.example")
    candidates = Candidates(by_number={7: OPEN})
    assert decide(tagged, classify(tagged, config), candidates, config, NOW).ticket_id == 7
    assert decide(old_tag, classify(old_tag, config), candidates, config, NOW).rule == "new"


# --- the Outlook thread root and the referenced ids ----------------------------


def test_a_reply_thread_index_names_its_conversation_root() -> None:
    assert thread_root(REPLY_INDEX) == ROOT
    assert thread_root(OTHER_INDEX) != ROOT
    # Outlook folds long headers: whitespace inside the value does not matter
    assert thread_root(REPLY_INDEX[:10] + "\r\n " + REPLY_INDEX[10:]) == ROOT


@pytest.mark.parametrize("value", [None, "", "AQHZ", "not base64 at all!!", "===="])
def test_an_unusable_thread_index_has_no_root(value: str | None) -> None:
    assert thread_root(value) is None


@given(st.text(max_size=80))
def test_any_thread_index_header_gives_a_root_or_none(value: str) -> None:
    root = thread_root(value)
    assert root is None or len(base64.b64decode(root)) == 22


def test_referenced_ids_most_specific_first_without_self_or_repeats() -> None:
    mail = make_mail(
        message_id="self@client.example",
        in_reply_to="parent@x",
        references=("root@x", "self@client.example", "parent@x", "middle@x"),
    )
    assert referenced_ids(mail) == ("parent@x", "middle@x", "root@x")


# --- wide input: decide always answers with a rule it is allowed to give -----------

ALLOWED_RULES = set(get_args(Rule))
BASE_MAIL = make_mail()
ADDRESSES = st.sampled_from([REQUESTER, COLLEAGUE, STRANGER, REP, ALICE, ""])
STATUSES = st.sampled_from(["new", "open", "waiting", "resolved", "closed"])
MIDS = st.sampled_from(["a@x", "b@x", "c@x", "d@x"])


@st.composite
def ticket_views(draw: st.DrawFn) -> TicketView:
    return TicketView(
        id=draw(st.integers(1, 30)),
        status=draw(STATUSES),
        requester=draw(ADDRESSES),
        community=draw(st.sampled_from([None, "pangeo", "gone"])),
        subject_key=draw(st.sampled_from([KEY, "", "printer on fire"])),
        last_activity_at=NOW - timedelta(days=draw(st.integers(-5, 60))),
        members=frozenset(draw(st.lists(ADDRESSES, max_size=3))),
    )


@settings(max_examples=300, deadline=None)
@given(
    subject=st.one_of(
        st.text(max_size=60),
        st.sampled_from(["Re: Hub is down", "[support #7] x", "AW: [#3] Hub is down", "[#0]"]),
    ),
    sender=ADDRESSES,
    in_reply_to=st.lists(MIDS, max_size=2),
    references=st.lists(MIDS, max_size=4),
    thread_index=st.one_of(st.none(), st.text(max_size=40), st.just(REPLY_INDEX)),
    by_mid=st.dictionaries(MIDS, ticket_views(), max_size=3),
    by_root=st.one_of(st.none(), ticket_views()),
    by_number=st.dictionaries(st.integers(0, 30), ticket_views(), max_size=3),
    by_subject=st.lists(ticket_views(), max_size=4),
)
def test_decide_never_raises_and_never_hands_a_closed_ticket_to_a_non_steward(
    subject: str,
    sender: str,
    in_reply_to: list[str],
    references: list[str],
    thread_index: str | None,
    by_mid: dict[str, TicketView],
    by_root: TicketView | None,
    by_number: dict[int, TicketView],
    by_subject: list[TicketView],
) -> None:
    mail = dataclasses.replace(
        BASE_MAIL,
        subject=subject,
        from_addr=sender or None,
        in_reply_to=tuple(in_reply_to),
        references=tuple(references),
        thread_index=thread_index,
        thread_topic=None,
    )
    cls = classify(mail, CONFIG)
    candidates = Candidates(by_mid, by_root, by_number, tuple(by_subject))

    decision = decide(mail, cls, candidates, CONFIG, NOW)

    assert decision.rule in ALLOWED_RULES
    assert decision.reason
    offered = [*by_mid.values(), *by_number.values(), *by_subject]
    offered += [by_root] if by_root is not None else []
    if decision.ticket_id is not None:
        assert decision.rule != "new"
        assert any(
            t.id == decision.ticket_id and (cls.steward is not None or t.status != "closed")
            for t in offered
        )
    if decision.follow_up_of is not None:
        assert decision.ticket_id is None and decision.rule != "new"
    if decision.rule == "new":
        assert decision.ticket_id is None and decision.follow_up_of is None
    if decision.quoted_tag is not None:
        assert decision.rule == "new"
