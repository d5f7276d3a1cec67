"""Mail maild sends (SPEC sections 2, 6 and 7): the shipped templates, overrides,
StrictUndefined, and the headers of a built message, including what untrusted
text cannot do to them."""

from __future__ import annotations

import base64
import email
import email.policy
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maild.config import Config
from maild.core.subjects import clean_subject
from maild.mail.render import (
    TEMPLATE_NAMES,
    Rendered,
    Renderer,
    TemplateError,
    build_message,
    new_message_id,
    sample_context,
    shipped_template_dir,
)
from tests.unit.core_fixtures import NOW, REQUESTER, SUPPORT, make_config, make_mail

CONFIG = make_config()
CONTEXT = sample_context(CONFIG)
RENDERER = Renderer(CONFIG)
TAG = "[support #42]"
# mail about no single ticket: the tag alone, without a number
NOT_ABOUT_A_TICKET = {"automatic_ceiling", "handoff", "weekly_report", "budget_warning"}


# --- the shipped templates ------------------------------------------------------


def test_every_shipped_template_file_is_a_known_template() -> None:
    shipped = {p.name[: -len(".j2")] for p in shipped_template_dir().glob("*.j2")}
    assert shipped == set(TEMPLATE_NAMES)


@pytest.mark.parametrize("name", [n for n in TEMPLATE_NAMES if n != "resolved_footer"])
def test_each_template_renders_a_tagged_subject_and_a_text(name: str) -> None:
    rendered = RENDERER.render(name, CONTEXT)
    assert rendered.subject == " ".join(rendered.subject.split())  # one line
    expected_tag = "[support]" if name in NOT_ABOUT_A_TICKET else TAG
    assert expected_tag in rendered.subject
    assert rendered.text.strip() and rendered.text.endswith("\n")


def test_the_resolved_footer_is_all_text() -> None:
    rendered = RENDERER.render("resolved_footer", CONTEXT)
    assert rendered.subject == ""
    assert TAG in rendered.text and "48 working hours" in rendered.text


SAYS = [
    ("ack", "opened ticket [support #42]"),
    ("ack", "Hello Rosa Rep"),
    ("relay", "We are on it."),
    ("relay", "Wed 2026-11-25 18:00 UTC"),  # every incident mail names the next update
    ("incident_update", "Next update by Wed 2026-11-25 18:00 UTC"),
    ("requester_reply", "the hub returns 502"),
    ("requester_reply", "log.txt"),
    ("command_error", "[priority=asap]: 'asap' is not a priority"),
    ("command_error", "[priority=low|normal|high|urgent]"),
    ("closed", "is now closed"),
    ("too_large", "25.0 MB"),
    ("sla_reminder", "due Wed 2026-11-25 17:00 UTC"),
    ("confirm_command", "Xy3kP0q9LmN2"),
    ("budget_warning", "80%"),
]


@pytest.mark.parametrize(("name", "text"), SAYS, ids=[f"{n}: {t}" for n, t in SAYS])
def test_a_template_says_what_its_reader_needs(name: str, text: str) -> None:
    rendered = RENDERER.render(name, CONTEXT)
    assert text in rendered.subject + "\n" + rendered.text


def test_check_finds_no_problem_in_the_shipped_templates_and_replies() -> None:
    assert RENDERER.check(CONTEXT) == []
    assert {"need_info", "not_supported", "budget_used_up"} <= set(RENDERER.reply_names())


def test_a_canned_reply_renders_with_the_ticket_fields() -> None:
    context = {**CONTEXT, "steward": {"name": "alice", "display_name": "Alice Liddell"}}
    text = RENDERER.canned("need_info", {**context, "budget_hours": 10.0})
    assert text and "{{" not in text


@pytest.mark.parametrize("name", ["../ack", "Need Info", "", "replies/x", "nope"])
def test_an_unknown_or_malformed_canned_reply_is_a_template_error(name: str) -> None:
    with pytest.raises(TemplateError, match="canned reply"):
        RENDERER.canned(name, CONTEXT)


# --- StrictUndefined -------------------------------------------------------------

MISSING = [
    ("ack", "ticket"),
    ("ack", "support"),
    ("relay", "body"),
    ("command_error", "errors"),
    ("sla_reminder", "due"),
    ("weekly_report", "report"),
    ("budget_warning", "budget"),
]


@pytest.mark.parametrize(("name", "key"), MISSING, ids=[f"{n} without {k}" for n, k in MISSING])
def test_a_missing_name_fails_loudly_instead_of_mailing_a_blank(name: str, key: str) -> None:
    context = {k: v for k, v in CONTEXT.items() if k != key}
    with pytest.raises(TemplateError, match=name):
        RENDERER.render(name, context)


def test_a_missing_attribute_fails_too() -> None:
    ticket = {k: v for k, v in CONTEXT["ticket"].items() if k != "subject"}
    with pytest.raises(TemplateError, match="ack"):
        RENDERER.render("ack", {**CONTEXT, "ticket": ticket})


# --- a templates directory overrides, one file at a time ------------------------------


def _override(tmp_path: Path, files: dict[str, str]) -> Config:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return make_config(templates={"dir": str(tmp_path)})


ACK = "{% block subject %}{{ tag }} Got it{% endblock %}{% block text %}Thanks!{% endblock %}"


def test_an_override_wins_and_the_rest_stay_shipped(tmp_path: Path) -> None:
    renderer = Renderer(_override(tmp_path, {"ack.j2": ACK}))
    ack = renderer.render("ack", CONTEXT)
    assert (ack.subject, ack.text) == ("[support #42] Got it", "Thanks!\n")
    assert renderer.render("closed", CONTEXT) == RENDERER.render("closed", CONTEXT)


def test_an_override_with_a_typo_is_reported_by_check(tmp_path: Path) -> None:
    broken = ACK.replace("{{ tag }}", "{{ tikcet.id }}")
    renderer = Renderer(_override(tmp_path, {"ack.j2": broken}))
    problems = renderer.check(CONTEXT)
    assert len(problems) == 1 and "'ack'" in problems[0] and "tikcet" in problems[0]


def test_an_override_can_add_html(tmp_path: Path) -> None:
    html = ACK + "{% block html %}<p>{{ ticket.subject | e }}</p>{% endblock %}"
    renderer = Renderer(_override(tmp_path, {"ack.j2": html}))
    assert renderer.render("ack", CONTEXT).html == "<p>Hub is down</p>"


def test_canned_replies_override_and_add(tmp_path: Path) -> None:
    renderer = Renderer(
        _override(
            tmp_path,
            {
                "replies/need_info.j2": "{# ours #}\nPlease send the log of {{ ticket.id }}.\n",
                "replies/holiday.j2": "We are away until Monday.\n",
                "replies/Bad Name.j2": "never listed\n",
            },
        )
    )
    replies = {r.name: r for r in renderer.replies()}
    assert replies["need_info"].override and replies["need_info"].first_line == (
        "Please send the log of {{ ticket.id }}."
    )
    assert not replies["not_supported"].override
    assert "holiday" in replies and "bad name" not in replies
    assert renderer.canned("need_info", CONTEXT) == "Please send the log of 42."


# --- building the message ----------------------------------------------------------


def build(**overrides: Any) -> EmailMessage:
    args: dict[str, Any] = {
        "config": CONFIG,
        "rendered": Rendered("Re: [support #42] Hub is down", "We are on it.\n", None),
        "to": [REQUESTER],
        "message_id": "maild-42-abc@example.org",
        "in_reply_to": "m1@client.example",
        "references": ["root@client.example", "m1@client.example"],
        "now": NOW,
        "auto": None,
    }
    args.update(overrides)
    return build_message(**args)


def reparse(msg: EmailMessage) -> EmailMessage:
    """What the receiving side sees: the bytes we would send, parsed again."""
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_threading_headers_point_at_the_thread() -> None:
    got = reparse(build())
    assert got["Message-ID"] == "<maild-42-abc@example.org>"
    assert got["In-Reply-To"] == "<m1@client.example>"
    assert got["References"] == "<root@client.example> <m1@client.example>"
    assert got["From"] == f"Example Support <{SUPPORT}>"
    assert got["X-Loop"] == SUPPORT
    assert got["Subject"] == "Re: [support #42] Hub is down"


def test_references_keep_the_thread_root_and_the_nineteen_most_recent() -> None:
    # RFC 5322 3.6.4: a trimmed References keeps the first id (the thread's root)
    refs = [f"r{i}@client.example" for i in range(30)]
    got = reparse(build(references=refs))
    expected = ["<r0@client.example>"] + [f"<r{i}@client.example>" for i in range(11, 30)]
    assert got["References"].split() == expected


def test_a_new_thread_has_no_in_reply_to_or_references() -> None:
    got = reparse(build(in_reply_to=None, references=[]))
    assert got["In-Reply-To"] is None and got["References"] is None


AUTO = [
    ("an acknowledgment", "auto-replied", "auto-replied"),
    ("a scheduled reminder", "auto-generated", "auto-generated"),
    ("a relayed human reply", None, None),
]


@pytest.mark.parametrize(("what", "auto", "header"), AUTO, ids=[a[0] for a in AUTO])
def test_auto_submitted_marks_automatic_mail_only(
    what: str, auto: str | None, header: str | None
) -> None:
    got = reparse(build(auto=auto))
    assert got["Auto-Submitted"] == header
    assert (got["X-Auto-Response-Suppress"] == "All") == (auto is not None)


def test_a_relay_shows_the_stewards_name_and_the_outlook_thread() -> None:
    got = reparse(
        build(from_name="Alice Liddell", thread_index="AQHZabc=", thread_topic="Hub is down")
    )
    assert got["From"] == f"Alice Liddell <{SUPPORT}>"
    assert (got["Thread-Index"], got["Thread-Topic"]) == ("AQHZabc=", "Hub is down")


def test_new_message_ids_are_ours_and_unique() -> None:
    ids = {new_message_id(CONFIG, 42) for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("maild-42-") and i.endswith("@example.org") for i in ids)


INJECTIONS = [
    "Hello\r\nBcc: victim@example.com",
    "Hello\nBcc: victim@example.com",
    "Hello\rBcc: victim@example.com",
    "Hello\r\n\r\nInjected body",
    "Hello\u2028Bcc: victim@example.com",
    "Hello\x00\x0bBcc: victim@example.com",
]


@pytest.mark.parametrize("evil", INJECTIONS, ids=repr)
@pytest.mark.parametrize("where", ["subject", "from_name", "thread_topic", "message_id"])
def test_cr_lf_in_untrusted_text_cannot_add_a_header(evil: str, where: str) -> None:
    rendered = Rendered(evil, "body\n", None)
    choices: dict[str, dict[str, Any]] = {
        "subject": {"rendered": rendered},
        "from_name": {"from_name": evil},
        "thread_topic": {"thread_topic": evil},
        "message_id": {"message_id": evil.replace(" ", "") + "@example.org"},
    }
    overrides = choices[where]

    got = reparse(build(**overrides))

    assert got["Bcc"] is None
    assert got.get_content().strip() == ("body" if where == "subject" else "We are on it.")
    assert [k.lower() for k in got if k.lower() == "subject"] == ["subject"]


# An RFC 2047 encoded word is decoded again by email.headerregistry when the
# header is set, so CR/LF hidden in one would survive strip_header_unsafe alone. A requester
# reaches this with a double-encoded Subject: parse_mail decodes the outer word
# and the ticket subject keeps the inner one as plain text.
ENCODED = "=?utf-8?q?Hub_down=0D=0ABcc:_victim@example.com?="


@pytest.mark.parametrize("where", ["subject", "from_name", "thread_topic"])
def test_an_encoded_word_cannot_smuggle_cr_lf_into_a_header(where: str) -> None:
    choices: dict[str, dict[str, Any]] = {
        "subject": {"rendered": Rendered(f"[support #42] {ENCODED}", "body\n", None)},
        "from_name": {"from_name": ENCODED},
        "thread_topic": {"thread_topic": ENCODED},
    }
    overrides = choices[where]
    got = reparse(build(**overrides))
    assert got["Bcc"] is None


def test_a_double_encoded_inbound_subject_cannot_add_a_header_to_the_ack() -> None:
    outer = base64.b64encode(ENCODED.encode()).decode()
    mail = make_mail(f"=?utf-8?b?{outer}?=")
    ticket = {**CONTEXT["ticket"], "subject": clean_subject(mail.subject, "support")}
    ack = RENDERER.render("ack", {**CONTEXT, "ticket": ticket})

    got = reparse(build(rendered=ack, auto="auto-replied"))

    assert got["Bcc"] is None


def test_an_address_with_cr_lf_cannot_add_a_header() -> None:
    got = reparse(build(to=["rosa@example.net\r\nBcc: victim@example.com"]))
    assert [k.lower() for k in got].count("to") == 1
    assert got["Bcc"] is None


@given(st.text(max_size=120))
def test_any_subject_stays_one_header(subject: str) -> None:
    got = reparse(build(rendered=Rendered(subject, "body\n", None)))
    headers = [k.lower() for k in got]
    assert headers.count("subject") == 1
    assert set(headers) <= {
        "from", "to", "subject", "date", "message-id", "in-reply-to", "references",
        "x-loop", "content-type", "content-transfer-encoding", "mime-version",
    }  # fmt: skip
    assert got.get_content().strip() == "body"


def test_a_non_ascii_address_is_sent_as_smtputf8() -> None:
    msg = build(to=["josé@exämple.net"])
    assert getattr(msg.policy, "utf8", False)
    assert "josé@exämple.net" in msg.as_bytes().decode("utf-8")


def test_the_date_is_utc() -> None:
    got = reparse(build(now=NOW + timedelta(minutes=1)))
    assert got["Date"] == "Wed, 25 Nov 2026 15:01:00 +0000"
