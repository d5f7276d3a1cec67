"""Reply splitting: unit cases, the shared reply corpus, and properties.

The corpus is read from the shared folder at test time (``../shared/corpus``
next to the repository, or ``$MAILD_CORPUS``); it is never copied into the
repository. Without it the corpus tests are skipped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maild.core.htmltext import QUOTE_MARKER, html_to_text
from maild.core.inbound import parse_mail
from maild.core.quotes import ReplyParts, split_reply, unflow
from tests.conftest import require_corpus


def _corpus_dir() -> Path:
    env = os.environ.get("MAILD_CORPUS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


CORPUS = _corpus_dir()


def _corpus_file(rel: str) -> Path:
    require_corpus()  # skips with the reason, or fails in CI
    path = CORPUS / rel
    if not path.is_file():
        pytest.skip(f"{rel} not in the shared corpus")
    return path


def _body(rel: str) -> str:
    text = _corpus_file(rel).read_text(encoding="utf-8", errors="replace")
    return html_to_text(text) if rel.endswith(".html") else text


def _words(text: str) -> str:
    return " ".join(text.split())


# -- unit cases --------------------------------------------------------------


def test_plain_text_is_all_new() -> None:
    parts = split_reply("Hello,\n\nthe hub is down.\n\nRosa\n")
    assert parts == ReplyParts(
        new_text="Hello,\n\nthe hub is down.\n\nRosa", quoted="", signature=""
    )


def test_empty_text() -> None:
    assert split_reply("") == ReplyParts("", "", "")
    assert split_reply("\n\n  \n").new_text == ""


def test_top_post_with_on_wrote() -> None:
    parts = split_reply(
        "Fixed now.\n\nOn Mon, 3 Mar 2025 at 10:12, Bob <b@x.org> wrote:\n> broken?\n"
    )
    assert parts.new_text == "Fixed now."
    assert parts.quoted.startswith("On Mon, 3 Mar 2025 at 10:12, Bob <b@x.org> wrote:")
    assert "> broken?" in parts.quoted


def test_crlf_is_normalised() -> None:
    parts = split_reply("Fixed.\r\n\r\nOn 3/3/25, Bob wrote:\r\n> broken?\r\n")
    assert parts.new_text == "Fixed."
    assert "\r" not in parts.quoted


def test_attribution_wrapped_over_two_lines() -> None:
    text = (
        "Yes.\n\nOn Mon, 3 Mar 2025 at 10:12, Bob Example\n"
        "<bob@example.org> wrote:\n\n> Is it up?\n"
    )
    assert split_reply(text).new_text == "Yes."


@pytest.mark.parametrize(
    "header",
    [
        "Am 03.03.2025 um 10:32 schrieb Alice Steward:",
        "Am Mo., 3. März 2025 um 10:32 Uhr schrieb Alice <alice@example.org>:",
        "Le lun. 3 mars 2025 à 10:32, Alice <alice@example.org> a écrit :",
        "El lun, 3 mar 2025 a las 10:32, Alice (<alice@example.org>) escribió:",
        "Op ma 3 mrt 2025 om 10:32 schreef Alice <alice@example.org>:",
        "Den 3 mars 2025 kl. 10:32 skrev Alice <alice@example.org>:",
        "Alice <alice@example.org> 于2025年3月3日周一 10:32写道：",
        "On 3 Mar 2025, at 10:32, Alice <alice@example.org> wrote:",
        "On 03/03/2025 10:32, Alice wrote:",
        "Dnia 3 marca 2025 10:32 Alice <alice@example.org> napisał(a):",
    ],
)
def test_localised_attribution(header: str) -> None:
    for quote in ("> Frage?\n> Zweite Zeile\n", "Frage?\nZweite Zeile\n"):
        parts = split_reply(f"Antwort.\n\n{header}\n{quote}")
        assert parts.new_text == "Antwort.", (header, quote)
        assert "Frage?" in parts.quoted


@pytest.mark.parametrize(
    "block",
    [
        "-----Original Message-----\nFrom: Bob\nSent: Monday\nTo: Alice\nSubject: x\n\nold",
        "-----Ursprüngliche Nachricht-----\nVon: Bob\nGesendet: Montag\nAn: Alice\n\nold",
        "_" * 32 + "\nFrom: Bob <b@x.org>\nSent: Monday\nTo: Alice\nSubject: x\n\nold",
        "From: Bob <b@x.org>\nSent: Monday\nTo: Alice\nSubject: x\n\nold",
        "*From:* Bob <b@x.org>\n*Sent:* Monday\n*To:* Alice\n*Subject:* x\n\nold",
        "Von: Bob <b@x.org>\nGesendet: Montag\nAn: Alice\nBetreff: x\n\nold",
        "De : Bob <b@x.org>\nEnvoyé : lundi\nÀ : Alice\nObjet : x\n\nold",
        "Van: Bob <b@x.org>\nVerzonden: maandag\nAan: Alice\nOnderwerp: x\n\nold",
        "Från: Bob <b@x.org>\nSkickat: måndag\nTill: Alice\nÄmne: x\n\nold",
        "发件人: Bob <b@x.org>\n发送时间: 2025年3月3日\n收件人: Alice\n主题: x\n\nold",
        f"{QUOTE_MARKER}\nold",
    ],
)
def test_unquoted_history_blocks(block: str) -> None:
    parts = split_reply(f"New text here.\n\n{block}\n")
    assert parts.new_text == "New text here."
    assert "old" in parts.quoted


@pytest.mark.parametrize(
    "block",
    [
        "-------- Forwarded Message --------\nSubject: x\nDate: Mon\nFrom: Bob\n\nold",
        "---------- Forwarded message ---------\nFrom: Bob <b@x.org>\nDate: Mon\n\nold",
        "Begin forwarded message:\n\nFrom: Bob <b@x.org>\nDate: Mon\n\nold",
        f"{QUOTE_MARKER}\n---------- Forwarded message ---------\nFrom: Bob <b@x.org>\n\nold",
    ],
)
def test_forwarded_mail_is_part_of_the_new_text(block: str) -> None:
    # Issue 13: for a helpdesk the forwarded mail is usually the request itself.
    parts = split_reply(f"New text here.\n\n{block}\n")
    assert parts.new_text.startswith("New text here.")
    assert parts.new_text.endswith("old")
    assert QUOTE_MARKER not in parts.new_text


def test_forward_without_comment_keeps_everything() -> None:
    text = "-------- Forwarded Message --------\nSubject: x\nFrom: Bob\n\nPlease help with this."
    parts = split_reply(text)
    assert parts.new_text == text


def test_everything_quoted_keeps_everything() -> None:
    text = "> only\n> a quote\n"
    assert split_reply(text).new_text == "> only\n> a quote"


def test_inline_answers_stay_in_new_text() -> None:
    text = (
        "On Mon, 3 Mar 2025, Bob <b@x.org> wrote:\n"
        "> First question?\n\n"
        "First answer.\n\n"
        "> Second question?\n\n"
        "Second answer.\n\n"
        "> Thanks, Bob\n"
        "> Old signature\n"
    )
    parts = split_reply(text)
    assert "First answer." in parts.new_text
    assert "Second answer." in parts.new_text
    assert "> Second question?" in parts.new_text
    assert parts.new_text.endswith("Second answer.")
    assert "Old signature" in parts.quoted


def test_bottom_post_keeps_only_the_answer() -> None:
    parts = split_reply("On 03/03/2025 10:32, Bob wrote:\n> Is it up?\n\nYes, it is.\n")
    assert parts.new_text == "Yes, it is."
    assert "Is it up?" in parts.quoted


@pytest.mark.parametrize(
    ("text", "new", "signature"),
    [
        ("Hello\n\n-- \nRosa Rep\nPangeo\n", "Hello", "-- \nRosa Rep\nPangeo"),
        ("Hello\n--\nRosa\n", "Hello", "--\nRosa"),
        ("Hello\n\nSent from my iPhone\n", "Hello", "Sent from my iPhone"),
        (
            "Hello\n\nSent from my Samsung Galaxy smartphone.\n",
            "Hello",
            "Sent from my Samsung Galaxy smartphone.",
        ),
        ("Hello\n\nGet Outlook for Android\n", "Hello", "Get Outlook for Android"),
        ("Hallo\n\nVon meinem iPhone gesendet\n", "Hallo", "Von meinem iPhone gesendet"),
        ("Bonjour\n\nEnvoyé de mon iPhone\n", "Bonjour", "Envoyé de mon iPhone"),
        (
            "Hello\n\nSent from my desk, which is nicer.\n",
            "Hello\n\nSent from my desk, which is nicer.",
            "",
        ),
        ("Use a -- b for that.\n", "Use a -- b for that.", ""),
    ],
)
def test_signatures(text: str, new: str, signature: str) -> None:
    parts = split_reply(text)
    assert parts.new_text == new
    assert parts.signature == signature


def test_signature_only_is_kept_as_text() -> None:
    assert split_reply("Sent from my iPhone\n").new_text == "Sent from my iPhone"
    assert split_reply("-- \nRosa\n").new_text == "-- \nRosa"


def test_long_block_after_dashes_is_not_a_signature() -> None:
    body = "\n".join(f"log line {i}" for i in range(30))
    text = f"The hub fails, log below.\n--\n{body}\n"
    assert split_reply(text).new_text == text.rstrip()


def test_one_and_on_your_are_not_headers() -> None:
    text = "One question: on your side, does it work?\n\nOn your host run: ls\n"
    assert split_reply(text).new_text == text.rstrip()


def test_mid_sentence_wrote_is_not_a_header() -> None:
    text = "On Monday I wrote 2 notes:\n- first\n- second\n"
    assert split_reply(text).new_text == text.rstrip()


def test_html_gmail_reply() -> None:
    html = (
        '<div dir="ltr">Thanks, works.</div><div class="gmail_quote">'
        '<div class="gmail_attr">On Mon, 3 Mar 2025 at 10:12, Bob &lt;b@x.org&gt; wrote:<br></div>'
        '<blockquote class="gmail_quote">Is it up?</blockquote></div>'
    )
    parts = split_reply(html_to_text(html))
    assert parts.new_text == "Thanks, works."
    assert "Is it up?" in parts.quoted


# -- the shared corpus --------------------------------------------------------

# (file, text the new part must contain, text it must not contain).
# A file absent from this table is either not a reply or not supported (see
# test_corpus_unsupported_files_still_split).
CORPUS_EXPECTATIONS: list[tuple[str, list[str], list[str]]] = [
    (
        "email-reply-parser/chinese.txt",
        ["Hi, I want to cancel my order"],
        ["Shipping Confirmation"],
    ),
    (
        "email-reply-parser/chinese2.txt",
        ["Can I cancel my order please"],
        ["Thank you for shopping"],
    ),
    (
        "email-reply-parser/email_1_2.txt",
        ["You can list the keys for the bucket", "would do it."],
        ["lists.basho.com/mailman"],
    ),
    (
        "email-reply-parser/email_1_3.txt",
        ["Oh thanks.\n\nHaving the function would be great."],
        ["Russell Brown wrote", "What is the best way"],
    ),
    (
        "email-reply-parser/email_1_6.txt",
        ["I get proper rendering as well."],
        ["Was this caching related", "Corey Donohoe"],
    ),
    ("email-reply-parser/email_1_7.txt", [":+1:"], ["Steps 0-2", "Chris Wanstrath"]),
    (
        "email-reply-parser/email_1_8.txt",
        ["I will reply under this one", "and under this."],
        ["After you reply to this I'm going to send you", "Hey there, this is my signature"],
    ),
    ("email-reply-parser/email_2_1.txt", ["Outlook with a reply"], ["Google Apps Sync user"]),
    (
        "email-reply-parser/email_2_3.txt",
        ["Outlook with a reply above headers using unusual format"],
        ["Respond to Kim"],
    ),
    (
        "email-reply-parser/email_android_gmail_inline.txt",
        ["This is a test"],
        ["Pitchfork", "frugal"],
    ),
    (
        "email-reply-parser/email_gmail.txt",
        ["This is a test for inbox replying to a github message."],
        ["That way people can tell"],
    ),
    (
        "email-reply-parser/email_headers_no_delimiter.txt",
        ["And another reply!"],
        ["A reply", "This is a message."],
    ),
    ("email-reply-parser/email_iPhone.txt", ["Here is another email"], ["Sent from my iPhone"]),
    (
        "email-reply-parser/email_one_is_not_on.txt",
        [
            "Thank, this is really helpful.",
            "One outstanding question I had:",
            "Locally (on development)",
        ],
        ["Dave Tapley wrote", "much better query"],
    ),
    (
        "email-reply-parser/email_partial_quote_header.txt",
        [
            "On your remote host you can run:",
            "telnet 127.0.0.1 52698",
            "This should connect to TextMate",
        ],
        ["George Plymale wrote", "odd issue"],
    ),
    (
        "email-reply-parser/email_sent_from_my_not_signature.txt",
        ["Here is another email\n\nSent from my desk, is much easier then my mobile phone."],
        [],
    ),
    (
        "email-reply-parser/email_sig_delimiter_in_middle_of_line.txt",
        ["And here is a fix -- this is not a signature.\n\nkthxbai"],
        [],
    ),
    (
        "email-reply-parser/greedy_on.txt",
        ["On your remote host you can run:"],
        ["George Plymale", "odd issue"],
    ),
    (
        "email-reply-parser/pathological.txt",
        ["I think you're onto something."],
        ["John Sullivan", "ATGGAG"],
    ),
    (
        "mail-parser-reply/begins_with_signature.txt",
        ["I have sent an invite for 10:30am Monday PDT (today)."],
        ["10.30 AM pacific is good for me", "Cody Hart", "Christopher Edwards"],
    ),
    ("mail-parser-reply/caution.txt", ["Below THIS and THAT file", "job at our end."], []),
    ("mail-parser-reply/caution2.txt", ["I am trying to place an order"], []),
    (
        "mail-parser-reply/email_3_1.txt",
        ["First reply.\n\nThis is fairly common; nothing too hard here!"],
        ["second test reply", "Fourth reply", "Fifth reply"],
    ),
    (
        "mail-parser-reply/email_danish_1.txt",
        ["Hej Peter,\n\nTak for din mail. Det lyder godt."],
        ["Hvordan går det"],
    ),
    (
        "mail-parser-reply/email_danish_2.txt",
        ["Jeg har modtaget filerne."],
        ["Her er filerne", "Emne:"],
    ),
    ("mail-parser-reply/email_danish_4.txt", ["Svar."], ["Oprindelig meddelelse", "Emne:"]),
    (
        "mail-parser-reply/email_de_wrap.txt",
        ["danke für die Nachricht"],
        ["die Stelle ist wieder offen", "schrieb"],
    ),
    (
        "mail-parser-reply/email_fr_wrap.txt",
        ["Merci pour votre message"],
        ["le poste est de nouveau", "a écrit"],
    ),
    (
        "mail-parser-reply/email_hu_1.txt",
        ["Az uj beallitasokat feltoltottem"],
        ["meg tudnad nezni", "ezt írta"],
    ),
    (
        "mail-parser-reply/email_ja_1_2.txt",
        ["お世話になっております。織田です。", "それでは 11:00 にお待ちしております。"],
        ["かしこまりました", "田中太郎"],
    ),
    (
        "mail-parser-reply/email_nl_1_2.txt",
        ["Outlook met een antwoord"],
        ["Google Apps Sync-gebruiker", "Van:"],
    ),
    ("mail-parser-reply/email_pl_1_1.txt", ["Czesc Anno", "Jak się masz?"], []),
    (
        "mail-parser-reply/email_pl_1_2.txt",
        ["Czesc Anno", "Jak się masz?"],
        ["Wszystko w porządku", "napisał"],
    ),
    (
        "mail-parser-reply/email_sv_anon_1.txt",
        ["Berättar gärna."],
        ["Ursäkta mitt sena svar", "skrev"],
    ),
    (
        "mail-parser-reply/email_swedish_1.txt",
        ["Ursäkta mitt sena svar!"],
        ["Jag har försökt", "skrev"],
    ),
    (
        "mail-parser-reply/email_swedish_2.txt",
        ["Hello Anna,"],
        ["I hope you are well", "skrev", "/John"],
    ),
    (
        "mail-parser-reply/email_zh_1.txt",
        ["周末聚会的时间和地点我这边已经整理好了", "活动协调人"],
        ["写道", "大家好"],
    ),
    ("mail-parser-reply/forward.txt", ["Can I get 1 Arrival Notice without PU# and invoice?"], []),
    (
        "mail-parser-reply/multi_header.txt",
        ["No problem. I’ll just start a new order."],
        ["Unfortunately", "wrote:"],
    ),
    (
        "mail-parser-reply/outlook.txt",
        ["What is the best way to clear a Riak bucket", "My number is"],
        ["Get Outlook"],
    ),
    ("talon/OLK_SRC_BODY_SECTION.html", ["Reply"], ["From:", "Hi"]),
    ("talon/reply-separated-by-hr.html", ["Hi\nthere"], ["Hello", "From:"]),
    (
        "talon/html_replies/gmail.html",
        ["Hi. I am fine.\n\nThanks,\nAlex"],
        ["How are you", "wrote:"],
    ),
    (
        "talon/html_replies/hotmail.html",
        ["Hi. I am fine.\n\nThanks,\nAlex"],
        ["How are you", "From:"],
    ),
    (
        "talon/html_replies/ms_outlook_2010.html",
        ["Hi. I am fine."],
        ["How are you", "From:", "MsoNormal"],
    ),
    (
        "talon/html_replies/thunderbird.html",
        ["Hi. I am fine.\n\nThanks,\nAlex"],
        ["How are you", "wrote:"],
    ),
    (
        "talon/html_replies/yandex_ru.html",
        ["Hi. I am fine.\n\nThanks,\nAlex"],
        ["How are you", "Alexander L"],
    ),
]


@pytest.mark.parametrize(
    ("rel", "present", "absent"), CORPUS_EXPECTATIONS, ids=[row[0] for row in CORPUS_EXPECTATIONS]
)
def test_corpus_reply(rel: str, present: list[str], absent: list[str]) -> None:
    started = time.perf_counter()
    parts = split_reply(_body(rel))
    assert time.perf_counter() - started < 1.0
    for text in present:
        assert text in parts.new_text, (text, parts.new_text)
    for text in absent:
        assert text not in parts.new_text, (text, parts.new_text)


def test_corpus_signatures() -> None:
    assert (
        split_reply(_body("email-reply-parser/email_iPhone.txt")).signature == "Sent from my iPhone"
    )
    assert split_reply(_body("email-reply-parser/email_1_8.txt")).signature == (
        "--\nHey there, this is my signature"
    )
    outlook = split_reply(_body("mail-parser-reply/outlook.txt"))
    assert outlook.signature.startswith("Get Outlook for iOS")
    sent_from_desk = split_reply(_body("email-reply-parser/email_sent_from_my_not_signature.txt"))
    assert sent_from_desk.signature == ""


def test_corpus_sign_offs_are_signatures() -> None:
    # Issue 13: a closing with the name under it, or "/Name", is the signature;
    # it is still stored (the signature part), only not in the new text.
    assert split_reply(_body("mail-parser-reply/begins_with_signature.txt")).signature == (
        "Regards,\n\nChristopher Edwards"
    )
    assert split_reply(_body("mail-parser-reply/email_swedish_2.txt")).signature == "/John"


def test_corpus_ml_footer_is_quoted() -> None:
    parts = split_reply(_body("email-reply-parser/email_1_2.txt"))
    assert parts.new_text.startswith("Hi,\nOn Tue, 2011-03-01 at 18:02 +0530, Abhishek Kona wrote:")
    assert "riak-users mailing list" in parts.quoted


TALON_STANDARD = [
    "android.eml",
    "aol.eml",
    "apple_mail.eml",
    "apple_mail_2.eml",
    "comcast.eml",
    "gmail.eml",
    "hotmail.eml",
    "iphone.eml",
    "outlook.eml",
    "sparrow.eml",
    "thunderbird.eml",
    "yahoo.eml",
]


@pytest.mark.parametrize("name", TALON_STANDARD)
def test_corpus_talon_standard_replies(name: str) -> None:
    mail = parse_mail(_corpus_file(f"talon/standard_replies/{name}").read_bytes())
    assert mail.new_text == "Hello"
    assert "Hi" not in mail.new_text.split()


def test_corpus_talon_signatures() -> None:
    iphone = parse_mail(_corpus_file("talon/standard_replies/iphone.eml").read_bytes())
    assert iphone.signature == "Sent from my iPhone"
    expected = _corpus_file("talon/standard_replies/sparrow_reply_text").read_text()
    sparrow = parse_mail(_corpus_file("talon/standard_replies/sparrow.eml").read_bytes())
    # talon keeps the signature in the reply; we split it off but lose nothing.
    assert _words(sparrow.new_text + "\n" + sparrow.signature) == _words(expected)


def test_corpus_talon_share_block() -> None:
    mail = parse_mail(_corpus_file("talon/reply-quotations-share-block.eml").read_bytes())
    assert mail.new_text.startswith("Hi Katharine.")
    assert "From" not in mail.new_text
    assert "booking inquiry" in mail.quoted_text


@pytest.mark.parametrize(
    "rel", ["mail-parser-reply/multiline_on.txt", "mail-parser-reply/multiline_on_de.txt"]
)
def test_corpus_unsupported_files_still_split(rel: str) -> None:
    # Synthetic lists of attribution variants with no reply of their own:
    # no expectation beyond "nothing is lost".
    text = _body(rel)
    parts = split_reply(text)
    together = "\n".join(p for p in (parts.new_text, parts.quoted, parts.signature) if p)
    assert _nonblank_lines(together) == _nonblank_lines(text)
    assert parts.new_text.strip()


# -- properties ----------------------------------------------------------------

_LINES = st.sampled_from(
    [
        "",
        " ",
        "Hello",
        "> quoted",
        ">",
        "> > deeper",
        "-- ",
        "--",
        "Sent from my iPhone",
        "On Mon, 3 Mar 2025 at 10:12, Bob <b@x.org> wrote:",
        "On Mon, 3 Mar 2025 at 10:12, Bob",
        "ok On Mon, 3 Mar 2025 at 10:12, Bob <b@x.org> wrote:",
        "[EXTERNAL]",
        "CAUTION: This email originated from outside of the organization.",
        "---------- Forwarded message ---------",
        "Best regards,",
        "-Bob",
        "/Bob",
        "Sent from my iPhone!",
        "Date: Mon, 3 Mar 2025 10:12:00 +0100",
        "To: alice@example.org",
        "---- Bob wrote ----",
        "<b@x.org> wrote:",
        "Am 03.03.2025 um 10:32 schrieb Alice:",
        "-----Original Message-----",
        "From: Bob <b@x.org>",
        "Sent: Monday",
        "To: Alice",
        "Subject: x",
        "________________________________",
        QUOTE_MARKER,
        "\ufeff",
        "x" * 700,
    ]
)
_TEXTS = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(_LINES, st.text(max_size=20)), max_size=40).map("\n".join),
)


def _visible(text: str) -> bool:
    # Byte-order marks and zero-width characters count as blank, as in split_reply.
    return any(line.strip().strip("\ufeff\u200b\u200e\u200f").strip() for line in text.split("\n"))


def _nonblank_lines(text: str) -> list[str]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return sorted(line.rstrip() for line in lines if _visible(line))


def _visible_chars(text: str) -> list[str]:
    # split_reply may cut a line in two ("reply On … wrote:"), so the
    # property compares the characters that are not white space.
    return sorted(c for c in text if not c.isspace() and c not in "\ufeff\u200b\u200e\u200f")


@settings(max_examples=200, deadline=None)
@given(_TEXTS)
def test_split_reply_loses_nothing(text: str) -> None:
    parts = split_reply(text)
    assert isinstance(parts, ReplyParts)
    together = "\n".join(p for p in (parts.new_text, parts.quoted, parts.signature) if p)
    assert _visible_chars(together) == _visible_chars(text)
    if _visible(text):
        assert _visible(parts.new_text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_html_to_text_never_raises(markup: str) -> None:
    assert isinstance(html_to_text(markup), str)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "<p>",
                "</p>",
                "<div>",
                "</div>",
                "<br>",
                "<blockquote>",
                "</blockquote>",
                "<a href='http://x'>",
                "</a>",
                "<li>",
                "<pre>",
                "</pre>",
                "<style>",
                "</style>",
                "<script>",
                "<head>",
                "<body>",
                "<![if x]>",
                "<!--",
                "-->",
                "&amp;",
                "&#x0;",
                "&nbsp;",
                "<div class='gmail_quote'>",
                "<hr id=stopSpelling>",
                "text",
                " ",
                "\n",
                "<",
                ">",
            ]
        ),
        max_size=40,
    ).map("".join)
)
def test_html_to_text_never_raises_on_tag_soup(markup: str) -> None:
    text = html_to_text(markup)
    assert isinstance(text, str)
    split_reply(text)


def test_html_to_text_basics() -> None:
    html = (
        "<html><head><title>t</title><style>p{}</style></head><body>"
        "<p>Hello&nbsp;<b>world</b> &amp; friends</p>"
        "<ul><li>one</li><li>two</li></ul>"
        "<p>See <a href='https://example.org/x'>the page</a> or "
        "<a href='https://example.org'>https://example.org</a>.</p>"
        "<script>alert(1)</script>"
        "<blockquote>old<br>text</blockquote>"
        "</body></html>"
    )
    assert html_to_text(html) == (
        "Hello world & friends\n\n- one\n- two\n\n"
        "See the page (https://example.org/x) or https://example.org.\n\n"
        "> old\n> text"
    )


def test_html_to_text_unclosed_head_and_pre() -> None:
    assert html_to_text("<head><title>x</title><body>Body text") == "Body text"
    assert html_to_text("<pre>a  b\n  c</pre>") == "a  b\n  c"


# -- issue 13: banners, format=flowed, forwards, hostile input -------------------


@pytest.mark.parametrize(
    "banner",
    [
        "[EXTERNAL]",
        "CAUTION: This email originated from outside of the organization. Do not click links"
        " or open attachments unless you recognize the sender and know the content is safe.",
        "[EXTERNAL]\n\nCAUTION: This email originated from outside your organisation.\n"
        "Exercise caution when opening attachments or clicking links.",
        "EXTERNAL EMAIL: Do not click links or open attachments unless you know the sender.",
        "You don't often get email from rosa@pangeo.example. Learn why this is important",
    ],
)
def test_gateway_banner_on_top_is_left_out(banner: str) -> None:
    text = f"{banner}\n\nHello,\n\nthe hub is down.\n\nOn 3/3/25, Bob wrote:\n> broken?\n"
    parts = split_reply(text)
    assert parts.new_text == "Hello,\n\nthe hub is down."
    assert banner.splitlines()[0] in parts.quoted  # still there, just not in the new text


def test_text_that_mentions_caution_is_not_a_banner() -> None:
    text = "Caution: the disk is almost full, please look.\n\nRosa\n"
    assert split_reply(text).new_text == text.rstrip()
    one_paragraph = (
        "CAUTION: this email originated from outside of the organization, so I cannot\n"
        "open the link you sent. Could you paste the text instead? The hub is down\n"
        "for all of us and we need the steps. It worked yesterday and now it does not.\n"
        "We tried restarting it twice, cleared the cache, and logged in again.\n"
        "Nothing helped so far, and the deadline is tomorrow morning.\n"
        "Please help!\n"
        "Rosa"
    )
    assert split_reply(one_paragraph).new_text == one_paragraph


def test_banner_alone_is_kept() -> None:
    assert split_reply("[EXTERNAL]\n").new_text == "[EXTERNAL]"


@pytest.mark.parametrize(
    ("flowed", "delsp", "plain"),
    [
        ("The hub is \ndown since \nnoon.\n", False, "The hub is down since noon.\n"),
        ("The hub is\x20\ndown.\n", True, "The hub isdown.\n"),
        ("> It is \n> down.\nOk \nthen.\n", False, "> It is down.\nOk then.\n"),
        (">> deep \n> shallow\n", False, ">> deep\n> shallow\n"),
        ("Hello \n-- \nRosa\n", False, "Hello\n-- \nRosa\n"),
        (" From here\n", False, "From here\n"),
        ("No soft breaks.\r\nAt all.", False, "No soft breaks.\nAt all."),
    ],
)
def test_unflow(flowed: str, delsp: bool, plain: str) -> None:
    assert unflow(flowed, delsp=delsp) == plain


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab >\n\r-")), max_size=200), st.booleans())
def test_unflow_keeps_every_visible_character(text: str, delsp: bool) -> None:
    """Only spaces, line breaks and the quote marks of joined lines may go.

    A flowed line's continuation repeats its quote marks (RFC 3676 4.5): joined,
    they are not text (">a \\n>" is the one quoted line ">a").
    """

    def visible(s: str) -> str:
        return "".join(s.replace(">", "").split())

    assert visible(unflow(text, delsp)) == visible(text)


def _flowed_mail(body: str) -> bytes:
    return (
        "From: Rosa <rosa@pangeo.example>\r\nTo: support@example.org\r\n"
        "Subject: Re: hub\r\nMessage-ID: <flowed-1@pangeo.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"; format=flowed; delsp=no\r\n'
        "Content-Transfer-Encoding: 8bit\r\n\r\n" + body.replace("\n", "\r\n")
    ).encode()


def test_format_flowed_body_is_unwrapped_before_splitting() -> None:
    mail = parse_mail(
        _flowed_mail(
            "It is still down for the whole team, and the login page \n"
            "times out as well.\n\n"
            "On Mon, 3 Mar 2025 at 10:12, Pangeo Support \n"
            "<support@example.org> wrote:\n"
            "> Hello Rosa, we restarted the hub; does it work \n"
            "> now?\n"
        )
    )
    assert mail.new_text == (
        "It is still down for the whole team, and the login page times out as well."
    )
    assert "> Hello Rosa, we restarted the hub; does it work now?" in mail.quoted_text


def test_html_only_gmail_forward_keeps_the_forward_without_the_marker() -> None:
    html = (
        '<div dir="ltr">Can you help with this one?<br><br>'
        '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">'
        "---------- Forwarded message ---------<br>From: <b>Pat</b> "
        "&lt;pat@example.net&gt;<br>Date: Mon, 3 Mar 2025 at 09:00<br>"
        "Subject: Hub<br>To: Rosa &lt;rosa@pangeo.example&gt;<br></div><br><br>"
        '<div dir="ltr">The hub is down for me.</div></div></div>'
    )
    raw = (
        "From: Rosa <rosa@pangeo.example>\r\nTo: support@example.org\r\n"
        "Subject: Fwd: Hub\r\nMessage-ID: <fwd-1@pangeo.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: text/html; charset="utf-8"\r\n\r\n' + html
    ).encode()
    assert QUOTE_MARKER not in html_to_text(html)
    mail = parse_mail(raw)
    assert mail.new_text.startswith("Can you help with this one?")
    assert QUOTE_MARKER not in mail.new_text
    assert "The hub is down for me." in mail.new_text
    alone = split_reply(html_to_text(html.replace("Can you help with this one?<br><br>", "")))
    assert alone.new_text.startswith("---------- Forwarded message")


def _seconds(text: str) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        split_reply(text)
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize(
    "make",
    [
        lambda n: "\n".join(">" + "a" * 49 for _ in range(n)),
        lambda n: "x" * (50 * n),
        lambda n: "\n".join("On Mon, 3 Mar 2025 at 10:12, Bob <b@x.org> wrote:" for _ in range(n)),
        lambda n: "\n".join(("> q" if i % 2 else "From: a@b.c") for i in range(n)),
        lambda n: "\n".join(("Regards," if i % 2 else "-Bob") for i in range(n)),
    ],
    ids=["quote lines", "one long line", "attributions", "headers and quotes", "sign-offs"],
)
def test_work_grows_linearly_with_the_body(make: Callable[[int], str]) -> None:
    # 8x the lines must not take anywhere near 64x the time (quadratic); the
    # bound is loose so a busy machine does not fail it. Absolute figures are
    # in bench/quotes.py and bench/README.md.
    small = _seconds(make(2_000))
    large = _seconds(make(16_000))
    assert large < 24 * small + 0.05, (small, large)


@pytest.mark.parametrize(
    "text",
    [
        "Status:\n- done",
        "Todo for tomorrow:\n\n- Restart",
        "The command is\n-v",
        "Use the flag\n\n-verbose",
        "Hello\n\nRegards\nI will call you tomorrow.",
        "It works now, thanks!\nRosa",
        "Date: Monday\nTo: everyone\nSubject: the party",
    ],
)
def test_text_that_only_looks_like_a_signature_or_header_stays(text: str) -> None:
    assert split_reply(text) == ReplyParts(new_text=text, quoted="", signature="")


@pytest.mark.parametrize(
    ("text", "new", "signature"),
    [
        (
            "Fixed.\n\nBest regards,\nRosa Rep\nPangeo\n",
            "Fixed.",
            "Best regards,\nRosa Rep\nPangeo",
        ),
        (
            "Hej,\n\nDet virker.\n\nMed venlig hilsen\nRosa\n",
            "Hej,\n\nDet virker.",
            "Med venlig hilsen\nRosa",
        ),
        ("Fixed, thanks!\n\n-Rosa\n", "Fixed, thanks!", "-Rosa"),
        ("Fixed.\n/Rosa\n", "Fixed.", "/Rosa"),
        ("Fixed.\n\nSent from Mailbox for iPhone\n", "Fixed.", "Sent from Mailbox for iPhone"),
        (
            "Fixed.\n\n-Rosa\n\n___________________\nhub-users mailing list\n"
            "https://lists.example.org/mailman/listinfo/hub-users\n",
            "Fixed.",
            "-Rosa\n\n___________________\nhub-users mailing list\n"
            "https://lists.example.org/mailman/listinfo/hub-users",
        ),
    ],
)
def test_sign_offs_are_the_signature(text: str, new: str, signature: str) -> None:
    parts = split_reply(text)
    assert (parts.new_text, parts.signature) == (new, signature)
