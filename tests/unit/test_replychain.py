"""In-Reply-To/References of outgoing mail, seen from each reader's mailbox (core.replychain)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from maild.core.replychain import MAX_REFERENCES, Seen, reply_chain, ticket_root

ROOT = ticket_root(7, "example.org")
REP = "rosa@pangeo.example"
STEWARDS = frozenset({"bob@example.org", "carol@example.org"})


def mail(mid: str, frm: str = "support@example.org", *to: str) -> Seen:
    sender = frozenset() if frm == "support@example.org" else frozenset({frm})
    return Seen(mid, sender, frozenset(to))


# a ticket as it goes: the request, the ack, the stewards' copy, bob's answer
# (relayed to Rosa), and Rosa's reply from a webmail that sends no References
TICKET = [
    mail("req-1", REP, "support@example.org"),
    mail("ack-1", "support@example.org", REP),
    mail("new-1", "support@example.org", "bob@example.org", "carol@example.org"),
    mail("bob-1", "bob@example.org", "support@example.org"),
    mail("relay-1", "support@example.org", REP, "carol@example.org"),
    mail("req-2", REP, "support@example.org"),
]


def test_the_root_is_no_real_mail_of_the_ticket() -> None:
    assert ROOT == "maild-ticket-7@example.org"


def test_stewards_copy_of_a_reply_without_references_threads_with_their_mails() -> None:
    # the trigger (Rosa's mail) is not in any steward's mailbox
    chain = reply_chain(TICKET, STEWARDS, "req-2", ROOT, opening="req-1")
    assert chain.in_reply_to == "relay-1"
    assert chain.references == (ROOT, "req-1", "new-1", "bob-1", "relay-1")


def test_a_relay_answers_the_requesters_last_mail_and_refers_to_all_she_has() -> None:
    chain = reply_chain(TICKET, {REP}, "bob-1", ROOT, opening="req-1", prefer_own=True)
    assert chain.in_reply_to == "req-2"
    assert chain.references == (ROOT, "req-1", "ack-1", "relay-1", "req-2")


def test_a_mail_to_whoever_wrote_the_trigger_answers_it() -> None:
    chain = reply_chain(TICKET, STEWARDS, "bob-1", ROOT)
    assert chain.in_reply_to == "bob-1"
    assert chain.references == (ROOT, "new-1", "bob-1")
    # the opening mail leads every chain: a common ancestor in every mailbox
    with_opening = reply_chain(TICKET, STEWARDS, "bob-1", ROOT, opening="req-1")
    assert with_opening.references == (ROOT, "req-1", "new-1", "bob-1")


def test_the_first_mail_to_someone_refers_to_the_root_and_the_trigger() -> None:
    chain = reply_chain(TICKET[:1], STEWARDS, "req-1", ROOT)
    assert chain == reply_chain([], STEWARDS, "req-1", ROOT)
    assert chain.in_reply_to == "req-1" and chain.references == (ROOT, "req-1")
    assert reply_chain([], STEWARDS, None, ROOT).references == (ROOT,)


ids = st.text("abcdef", min_size=1, max_size=3)
addresses = st.sampled_from([REP, "rep2@pangeo.example", "bob@example.org", "x@y.example"])


@st.composite
def tickets(draw: st.DrawFn) -> list[Seen]:
    mids = draw(st.lists(ids, unique=True, max_size=40))
    return [
        Seen(
            mid,
            frozenset(draw(st.lists(addresses, max_size=1))),
            frozenset(draw(st.lists(addresses, max_size=3))),
        )
        for mid in mids
    ]


@given(
    tickets(),
    st.sets(addresses, min_size=1),
    st.one_of(st.none(), ids),
    st.booleans(),
    st.booleans(),
)
def test_every_chain_is_one_a_client_can_thread(
    mails: list[Seen], audience: set[str], trigger: str | None, own: bool, first: bool
) -> None:
    opening = mails[0].message_id if first and mails else None
    chain = reply_chain(mails, audience, trigger, ROOT, opening=opening, prefer_own=own)
    refs = chain.references
    assert refs[0] == ROOT and len(refs) <= MAX_REFERENCES and len(set(refs)) == len(refs)
    if opening is not None:
        assert refs[1] == opening
    held = [m.message_id for m in mails if m.held_by(audience)]
    if chain.in_reply_to is not None:
        assert refs[-1] == chain.in_reply_to  # the parent is the last reference
    # it refers to nothing its readers cannot have, but the mail it answers and the first
    assert set(refs[1:]) <= {*held, trigger, opening}
    if held:
        assert chain.in_reply_to in held
        # oldest first, in the order the readers got them
        order = [r for r in refs[1:] if r in held]
        assert order == sorted(order, key=held.index)
    if opening is None and len(held) >= MAX_REFERENCES and chain.in_reply_to == held[-1]:
        assert refs[1:] == (held[0], *held[-(MAX_REFERENCES - 2) :])
