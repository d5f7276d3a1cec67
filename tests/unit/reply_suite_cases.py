"""What three public reply-parser test suites state, restated as maild cases.

Each case is written here in our own words and data (names, addresses and
text are ours); it keeps the shape of the mail the source test is about and
its statement of what the visible reply is. The source of each case is named
in its ``source`` field: the suite and the test (or fixture) it restates.

- ``talon``: mailgun/talon, ``tests/text_quotations_test.py`` (reply =
  everything ``extract_from_plain`` keeps, signatures included),
  ``tests/html_quotations_test.py`` with its HTML fixtures (same, for HTML
  run through :func:`maild.core.htmltext.html_to_text`, compared without regard
  to whitespace and ``>`` marks, as talon compares with whitespace removed)
  and ``tests/signature/bruteforce_test.py`` (text and signature apart).
- ``email_reply_parser``: github/email_reply_parser,
  ``test/email_reply_parser_test.rb`` with its emails (visible text =
  fragments neither quoted-below nor signature), and the extra tests of the
  Python port zapier/email-reply-parser (``test/test_email_reply_parser.py``).
- ``mail-parser-reply``: alfonsrv/mail-parser-reply,
  ``test/test_email_reply_parser.py`` with its multilingual emails (the
  latest reply's ``body`` and ``signatures``; ``in``/``not in`` checks stay
  ``in``/``not in`` checks).

Where the source test reads a fixture file that is in the shared corpus
(``../shared/corpus``), the case reads that file in place (``corpus=``); the
others carry a mail of our own with the same features. Assertions that are
about a parser's internals (marker strings, fragment counts without a
statement of the text, patched limits, timing) are not restated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TALON = "talon"
ERP = "email_reply_parser"
MPR = "mail-parser-reply"


@dataclass(frozen=True)
class Case:
    suite: str
    source: str
    text: str = ""
    corpus: str | None = None
    html: bool = False
    eml: bool = False
    # What the new text must be (compared line by line, blank lines ignored).
    new: str | None = None
    # new text + signature, for suites whose "reply" keeps the signature.
    reply: str | None = None
    signature: str | None = None
    contains: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    sig_contains: tuple[str, ...] = ()
    sig_absent: tuple[str, ...] = ()
    notes: str = field(default="", compare=False)


def talon(source: str, text: str, reply: str | None = None) -> Case:
    return Case(TALON, source, text=text, reply=text if reply is None else reply)


def talon_html(source: str, html: str, reply: str) -> Case:
    return Case(TALON, source, text=html, html=True, reply=reply)


def talon_sig(source: str, text: str, new: str, signature: str) -> Case:
    return Case(TALON, source, text=text, new=new, signature=signature)


QUOTE_OF_ONE = "\n\n>\n> Are the nightly backups running?\n>\n> Maren"

CASES: list[Case] = [
    # -- talon: tests/text_quotations_test.py ------------------------------------
    talon(
        "text: test_pattern_on_date_somebody_wrote",
        "Yes, since Monday.\n\nOn 3-May-2019, at 9:12 AM, Maren Holt <maren@example.org> wrote:"
        + QUOTE_OF_ONE,
        "Yes, since Monday.",
    ),
    talon(
        "text: test_pattern_on_date_polymail",
        "Yes, since Monday.\n\nOn Wed, May 8, 2019 at 11:40 AM Maren Holt\n\n<\n"
        "mailto:Maren Holt <maren@example.org>\n> wrote:\nAre the nightly backups running?\n",
        "Yes, since Monday.",
    ),
    talon(
        "text: test_pattern_sent_from_samsung_smb_wrote",
        "Yes, since Monday.\n\nSent from Samsung MobileMaren <maren@example.org> wrote:"
        + QUOTE_OF_ONE,
        "Yes, since Monday.",
    ),
    talon(
        "text: test_pattern_on_date_wrote_somebody",
        "Klopt.\n\nOp 14-03-2016 4:20 schreef Joost Vermeer <joost@example.nl>:\n    \n"
        "De back-up van gisteren is niet compleet, kun je kijken?\n",
        "Klopt.",
    ),
    talon(
        "text: test_pattern_on_date_somebody_wrote_date_with_slashes",
        "Yes, since Monday.\n\nOn 05/20/2013 08:15 AM, Maren Holt wrote:" + QUOTE_OF_ONE,
        "Yes, since Monday.",
    ),
    talon(
        "text: test_date_time_email_splitter",
        "Yes, since Monday.\n\n2015-11-02 10:41 GMT+01:00 Notifier <\n"
        "notifier@bounce-0123456789abcdef0123456789abcdef.example.net>:\n\n"
        "> First message from the portal\n>\n    ",
        "Yes, since Monday.",
    ),
    talon(
        "text: test_pattern_on_date_somebody_wrote_allows_space_in_front",
        'Thanks Ilse\n On Jun 2, 2014 7:05 PM, "Portal Team" <\n'
        "r+9a8b7c6d5e4f30211a2b3c4d5e6f7a8b@example.com> wrote:\n\n\n>**\n"
        ">  The ticket was updated",
        "Thanks Ilse",
    ),
    talon(
        "text: test_pattern_on_date_somebody_sent",
        "Yes, since Monday.\n\nOn 3-May-2019, at 9:12 AM, Maren Holt <maren@example.org> sent:"
        + QUOTE_OF_ONE,
        "Yes, since Monday.",
    ),
    talon(
        "text: test_appointment",
        "Confirmed\n\n    03/14/2019 @ 2:00 pm for the site visit\n    Gate B\n"
        "    22 Harbour Road, Unit 4\n    Leith EH6 7XX, 0131-555-0199\n\n"
        "    Petra Lind, CISSP\n    Example Facilities Ltd\n    0131-555-0142\n\n"
        "    From: bookings@example.com [mailto:bookings@example.com]\n"
        "    Sent: Tuesday, March 12, 2019 4:10 PM\n"
        "    To: Petra Lind - FAC <petra@example.com>\n    Subject: RE: Visit # 7731-2\n\n"
        "    Details",
        "Confirmed\n\n    03/14/2019 @ 2:00 pm for the site visit\n    Gate B\n"
        "    22 Harbour Road, Unit 4\n    Leith EH6 7XX, 0131-555-0199\n\n"
        "    Petra Lind, CISSP\n    Example Facilities Ltd\n    0131-555-0142",
    ),
    talon("text: test_line_starts_with_on", "Noted, will check\nOn second thought, wait"),
    talon(
        "text: test_reply_and_quotation_splitter_share_line (same line)",
        "ok On Thu, Feb 6, 2014 at 1:12 PM, maren@example.org wrote:\n> Question",
        "ok",
    ),
    talon(
        "text: test_reply_and_quotation_splitter_share_line (--- On)",
        "ok--- On Thu, Feb 6, 2014 at 1:12 PM, maren@example.org wrote:\n> Question",
        "ok",
    ),
    talon(
        "text: test_reply_and_quotation_splitter_share_line (dashes in reply)",
        "ok\nfine - really - fine--- On Thu, Feb 6, 2014 at 1:12 PM, maren@example.org wrote:\n"
        "> Question",
        "ok\nfine - really - fine",
    ),
    *(
        talon(
            f"text: _check_pattern_original_message ({word})",
            f"Yes, since Monday.\n\n-----{word}-----\n\nAre the nightly backups running?",
            "Yes, since Monday.",
        )
        for word in (
            "Original Message",
            "Reply Message",
            "Ursprüngliche Nachricht",
            "Antwort Nachricht",
            "Oprindelig meddelelse",
        )
    ),
    talon(
        "text: test_reply_after_quotations",
        "On 05/20/2013 08:15 AM, Maren Holt wrote:\n\n>\n> Question\nYes, since Monday.",
        "Yes, since Monday.",
    ),
    talon(
        "text: test_android_wrote",
        "Yes, since Monday.\n\n---- Maren Holt wrote ----\n\n> are the\n> backups running\n",
        "Yes, since Monday.",
    ),
    talon(
        "text: test_reply_wraps_quotations",
        "Yes, since Monday.\n\nOn 05/20/2013 08:15 AM, Maren Holt wrote:\n\n>\n> Question\n\n"
        "Cheers, Ilse",
        "Yes, since Monday.\n\nCheers, Ilse",
    ),
    talon(
        "text: test_reply_wraps_nested_quotations",
        "Yes, since Monday.\nOn 05/20/2013 08:15 AM, Maren Holt wrote:\n\n>Question two\n"
        ">On 05/19/2013 07:00 AM, Ilse Berg wrote:\n>\n>>\n>> Question one.\n>>\n>> Ilse\n\n"
        "Cheers, Ilse",
        "Yes, since Monday.\nCheers, Ilse",
    ),
    talon(
        "text: test_quotation_separator_takes_2_lines",
        "Yes, since Monday.\n\nOn Sat, Jun 8, 2013 at 5:30 PM, Maren Holt of the Backup Team\n"
        "<maren@example.org> wrote:\n\n> Question.\n>\n> Maren\n\nCheers, Ilse",
        "Yes, since Monday.\n\nCheers, Ilse",
    ),
    talon(
        "text: test_quotation_separator_takes_3_lines",
        "Yes, since Monday.\n\nOn Dec 1, 2012, at 10:05 AM, Portal <\n"
        "7c0ffee1234567890abcdef1234567890abcdef12@portal.example.com>\nwrote:\n\n"
        "The portal message\n",
        "Yes, since Monday.",
    ),
    talon(
        "text: test_short_quotation",
        "Yes\n\nOn 05/20/2013 08:15 AM, Maren Holt wrote:\n\n> Hello",
        "Yes",
    ),
    talon(
        "text: test_with_indent",
        "Tote bag fixie ugh, artisan lo-fi kombucha.\n\n"
        "------On 11/05/1990 09:15 AM, Maren Holt wrote-----\n\n"
        "Shoreditch readymade cray, chambray next level tousled. \n    ",
        "Tote bag fixie ugh, artisan lo-fi kombucha.",
    ),
    talon(
        "text: test_short_quotation_with_newline",
        'By the way...\n\nOn Wed, Mar 4, 2015 at 09:12 AM -0500, "Shop" <sales.team@example.com>'
        " wrote:\n\nHi Ilse,\nAny news? \nBest,Sam \n\n"
        "On Mar 3, 2015, at 4:01 PM, Ilse Berg <ilse@example.com> wrote:\n\nQuestion?\nIlse\n\n"
        "Sent from Acompli",
        "By the way...",
    ),
    talon(
        "text: test_pattern_date_email_with_unicode",
        "Replying now\n2012/6/9 Dmitri Ивановa <support@example.com>\n\n>  Sounds good, ta",
        "Replying now",
    ),
    talon(
        "text: test_english_from_block",
        "Hi! Follow-up below.\n\nFrom: portal@example.com\nSent: April-02-12 3:10 PM\n"
        "To: Someone\nSubject: A comment was added to your case\n\nThe old text\n",
        "Hi! Follow-up below.",
    ),
    talon(
        "text: test_german_from_block",
        "Hi! Follow-up below.\n\nVon: portal@example.com\nGesendet: Mittwoch, 3. Dezember 2014 "
        "09:12\nAn: Jemand\nBetreff: A comment was added to your case\n\nThe old text\n",
        "Hi! Follow-up below.",
    ),
    talon(
        "text: test_french_multiline_from_block",
        "Bien reçu\n\nDe : Camille Roux [mailto:camille.roux@example.fr]\n"
        "Envoyé : lundi 2 février 2015 09:41\nÀ : Luc Martin\nObjet : Suivi\n\nLe texte d'avant\n",
        "Bien reçu",
    ),
    talon(
        "text: test_french_from_block",
        "Bien reçu\n\nLe 2 févr. 2015 à 09:41, Camille Roux <camille.roux@example.fr"
        "<mailto:camille.roux@example.fr>> a écrit:\n\nBonjour !",
        "Bien reçu",
    ),
    talon(
        "text: test_polish_from_block",
        "Dziękuję\n\nW dniu 3 lutego 2015 10:15 użytkownik Ola Nowak <ola.nowak@example.pl>\n"
        "napisał:\n\nPytanie!\n",
        "Dziękuję",
    ),
    talon(
        "text: test_danish_from_block",
        "Hi! Follow-up below.\n\nFra: portal@example.com\nSendt: 2. april 2012 15:10\n"
        "Til: Nogen\nEmne: A comment was added to your case\n\nThe old text\n",
        "Hi! Follow-up below.",
    ),
    talon(
        "text: test_swedish_from_block",
        "Hi! Follow-up below.\nFrån: Nils Ek [mailto:nils.ek@example.se]\n"
        "Skickat: den 1 september 2015 09:30\nTill: Berg Ilse\nÄmne: SV: Vecka 36\n\nGammal text\n",
        "Hi! Follow-up below.",
    ),
    talon(
        "text: test_swedish_from_line",
        "Ok\nDen 2 oktober, 2015 11:05:40, Nils Ek (nils.ek@example.se) skrev:\n\n"
        "Kale chips umami pour-over, single-origin coffee.\n",
        "Ok",
    ),
    talon(
        "text: test_norwegian_from_line",
        "Ok\nPå 2 oktober 2015 på 11:05:40, Nils Ek (nils.ek@example.no) skrev:\n\n"
        "Kale chips umami pour-over, single-origin coffee.\n",
        "Ok",
    ),
    talon(
        "text: test_dutch_from_block",
        "Prima, dan doen we dat.\n\nOp 3-mrt.-2016, om 09:41 heeft Joost Vermeer "
        "<joost@example.nl> het volgende geschreven:\n    \nEerdere tekst.\n",
        "Prima, dan doen we dat.",
    ),
    talon(
        "text: test_vietnamese_from_block",
        "Cảm ơn\n\nVào 09:30 2 tháng 7, 2018, Lan Phạm <lan.pham@example.vn> đã viết:\n\n"
        "> Chào bạn\n",
        "Cảm ơn",
    ),
    talon(
        "text: test_quotation_marker_false_positive",
        "Call us today for help...\n>>> >>>  https://www.example.com <<<\n"
        "Or open the link above to reach us",
    ),
    talon(
        "text: test_link_closed_with_quotation_marker_on_new_line",
        "9.30am-2pm\n\nFrom: portal@example.com\nDate: Thu, 7 Jun 2012 10:20:11 -0500\n\n"
        "<https://mail.example.com/t/aGVsbG8gdGhlcmUgZnJpZW5kIHRoaXMgaXMgYSBsaW5r\n"
        ">  <ilse@example.com <mailto:ilse@example.com> >\n\nRequester: ",
        "9.30am-2pm",
    ),
    talon(
        "text: test_link_breaks_quotation_markers_sequence (one line)",
        "Done\n\nOn Friday, November 2, 2012 at 4:10 PM, the portal on Ilse wrote:\n\n>\n"
        "> Reply to this mail to answer\n>\n (https://example.com/t/QwErTy) >\n"
        "> the portal (https://example.com/t/AsDfG)\n>\n",
        "Done",
    ),
    talon(
        "text: test_link_breaks_quotation_markers_sequence (two lines)",
        "Done\n\nOn Tuesday, 2 October, 2012 at 1:15 PM, ilse wrote:\n\n> [Case #81] printer jam\n"
        ">\n> See case (https://example.com/cases/view\n_token=9f8e7d)\n>\n",
        "Done",
    ),
    talon(
        "text: test_from_block_starts_with_date",
        "Done\n\nDate: Thu, 7 Jun 2012 10:20:11 -0500\nTo: ilse@example.com\n\n",
        "Done",
    ),
    talon(
        "text: test_bold_from_block",
        "Yes\n\n  *From:* maren@example.com [mailto:\n  maren@example.com]\n"
        "  *Sent:* Friday, July 13, 2012 9:40 AM\n  *To:* ilse@example.com\n"
        "  *Subject:* Backups\n\n",
        "Yes",
    ),
    talon(
        "text: test_weird_date_format_in_date_block",
        "Done\nDate: Mon=2C 8 Oct 2012 09:14:02 +0000\nFrom: cases@example.com\n"
        "To: ilse@example.com\nSubject: [Case #12] Printer\n\n",
        "Done",
    ),
    talon(
        "text: test_dont_parse_quotations_for_forwarded_messages",
        "See below\n\n---------- Forwarded message ----------\nFrom: maren@example.com\n"
        "Date: Wed, Oct 3, 2012 at 2:20 PM\nSubject: A subject on\ntwo lines\n"
        "To: ilse@example.com\n\nThe forwarded text",
    ),
    talon(
        "text: test_forwarded_message_in_quotations",
        "Done\n\n-----Original Message-----\n\nSee below\n\n"
        "---------- Forwarded message ----------\nFrom: maren@example.com\n"
        "Date: Wed, Oct 3, 2012 at 2:20 PM\nSubject: A subject on\ntwo lines\n"
        "To: ilse@example.com\n\n",
        "Done",
    ),
    talon(
        "text: test_preprocess_postprocess_2_links", "<https://one.example> <https://two.example>"
    ),
    talon(
        "text: test_feedback_below_left_unparsed",
        "Please add your comments below. Thanks.\n\n-------------------------------------\n"
        "Comments Below\n-------------------------------------\n\n"
        "The new dashboard is very clear. Please keep it.\nI am adding this line to make sure\n"
        "that the text stays in one piece.",
    ),
    # talon's test_standard_replies: every fixture's plain part reduces to
    # "Hello" (or the fixture's *_reply_text).
    *(
        Case(
            TALON,
            f"text: test_standard_replies ({name})",
            corpus=f"talon/standard_replies/{name}.eml",
            eml=True,
            reply="Hello",
        )
        for name in (
            "android",
            "aol",
            "apple_mail",
            "apple_mail_2",
            "comcast",
            "gmail",
            "hotmail",
            "outlook",
            "thunderbird",
            "yahoo",
        )
    ),
    Case(
        TALON,
        "text: test_standard_replies (iphone)",
        corpus="talon/standard_replies/iphone.eml",
        eml=True,
        reply="Hello\n\nSent from my iPhone",
    ),
    Case(
        TALON,
        "text: test_standard_replies (sparrow)",
        corpus="talon/standard_replies/sparrow.eml",
        eml=True,
        reply="Hello\n\n-- \nxxx\nSent with Sparrow (http://www.sparrowmailapp.com/?sig)",
    ),
    # -- talon: tests/html_quotations_test.py ------------------------------------
    talon_html(
        "html: test_quotation_splitter_inside_blockquote",
        "Reply\n<blockquote>\n  <div>\n    On 3-May-2019, at 9:12 AM, Maren &lt;maren@example.org"
        "&gt; wrote:\n  </div>\n  <div>\n    Question\n  </div>\n</blockquote>",
        "Reply",
    ),
    talon_html(
        "html: test_quotation_splitter_outside_blockquote",
        "Reply\n<div>\n  On 3-May-2019, at 9:12 AM, Maren &lt;maren@example.org&gt; wrote:\n"
        "</div>\n<blockquote>\n  <div>\n    Question\n  </div>\n</blockquote>\n",
        "Reply",
    ),
    talon_html(
        "html: test_regular_blockquote",
        "Reply\n<blockquote>Ordinary</blockquote>\n<div>\n  On 3-May-2019, at 9:12 AM, Maren "
        "&lt;maren@example.org&gt; wrote:\n</div>\n<blockquote>\n  <div>\n"
        "    <blockquote>Deeper</blockquote>\n  </div>\n</blockquote>\n",
        "Reply Ordinary",
    ),
    talon_html(
        "html: test_no_blockquote",
        "<html>\n<body>\nReply\n<div>\n  On 3-May-2019, at 9:12 AM, Maren &lt;maren@example.org"
        "&gt; wrote:\n</div>\n<div>\n  Question\n</div>\n</body>\n</html>\n",
        "Reply",
    ),
    talon_html("html: test_empty_body", "", ""),
    talon_html(
        "html: test_gmail_quote",
        'Reply\n<div class="gmail_quote">\n  <div class="gmail_quote">\n    On 3-May-2019, at '
        "9:12 AM, Maren &lt;maren@example.org&gt; wrote:\n    <div>\n      Question\n    </div>\n"
        "  </div>\n</div>",
        "Reply",
    ),
    talon_html(
        "html: test_gmail_quote_compact",
        'Reply<div class="gmail_quote"><div class="gmail_quote">On 3-May-2019, at 9:12 AM, '
        "Maren &lt;maren@example.org&gt; wrote:<div>Question</div></div></div>",
        "Reply",
    ),
    talon_html(
        "html: test_gmail_quote_blockquote",
        'Message\n<blockquote class="gmail_quote">\n  <div class="gmail_default">\n'
        "    My name is Ilse Berg.\n    <br/>\n  </div>\n</blockquote>",
        "Message My name is Ilse Berg.",
    ),
    talon_html(
        "html: test_unicode_in_reply",
        "Reply \xa0 \xa0 Text<br>\n\n<div>\n  <br>\n</div>\n\n<blockquote>\n  Quote\n</blockquote>",
        "Reply Text",
    ),
    talon_html(
        "html: test_blockquote_disclaimer",
        "<html>\n  <body>\n  <div>\n    <div>\n      message\n    </div>\n    <blockquote>\n"
        "      Quote\n    </blockquote>\n  </div>\n  <div>\n    disclaimer\n  </div>\n  </body>\n"
        "</html>\n",
        "message disclaimer",
    ),
    talon_html(
        "html: test_date_block",
        "<div>\n  message<br>\n  <div>\n    <hr>\n    Date: Mon, 2 Apr 2012 09:20:11 -0600<br>\n"
        '    To: <a href="mailto:ilse@example.com">ilse@example.com</a><br>\n'
        '    From: <a href="mailto:maren@example.com">maren@example.com</a><br>\n'
        "    Subject: A new comment on your case<br><br>\n    text\n  </div>\n</div>\n",
        "message",
    ),
    talon_html(
        "html: test_from_block",
        '<div>\nmessage<br>\n<div>\n<hr>\nFrom: <a href="mailto:maren@example.com">'
        "maren@example.com</a><br>\nDate: Mon, 2 Apr 2012 09:20:11 -0600<br>\n"
        'To: <a href="mailto:ilse@example.com">ilse@example.com</a><br>\n'
        "Subject: A new comment on your case<br><br>\ntext\n</div></div>\n",
        "message",
    ),
    talon_html(
        "html: test_reply_shares_div_with_from_block",
        "\n<body>\n  <div>\n    Blah<br><br>\n    <hr>Date: Wed, 6 Jun 2012 11:02:44 -0600<br>\n"
        "    To: ilse@example.ca<br>\n    From: notices@example.com<br>\n"
        "    Subject: A new notice for you<br><br>\n  </div>\n</body>",
        "Blah",
    ),
    Case(
        TALON,
        "html: test_reply_quotations_share_block",
        corpus="talon/reply-quotations-share-block.eml",
        eml=True,
        absent=("From",),
        contains=("Hi Katharine",),
    ),
    Case(
        TALON,
        "html: test_OLK_SRC_BODY_SECTION_stripped",
        corpus="talon/OLK_SRC_BODY_SECTION.html",
        html=True,
        reply="Reply",
    ),
    Case(
        TALON,
        "html: test_reply_separated_by_hr",
        corpus="talon/reply-separated-by-hr.html",
        html=True,
        reply="Hi there",
    ),
    talon_html(
        "html: test_from_block_and_quotations_in_separate_divs",
        "\nReply\n<div>\n  <hr/>\n  <div>\n    <font>\n      <b>From: maren@example.com</b>\n"
        "      <b>Date: Fri, 8 Apr 2016 10:17:02 -0700</b>\n    </font>\n  </div>\n  <div>\n"
        "    The old message\n  </div>\n</div>\n",
        "Reply",
    ),
    *(
        Case(
            TALON,
            f"html: test_{name}_reply",
            corpus=f"talon/html_replies/{name}.html",
            html=True,
            reply="Hi. I am fine.\n\nThanks,\nAlex",
        )
        for name in ("gmail", "hotmail", "ms_outlook_2010", "thunderbird", "yandex_ru")
    ),
    talon_html(
        "html: test_mail_ru_reply (our mail in the fixture's shape)",
        "<HTML><BODY><p>All good here.</p><p>Thanks,<br>Ilse</p><br><br><br>"
        "Tue, 8 Jul 2014 09:20:31 +0400 от Maren Holt &lt;maren@example.org&gt;:<br>\n"
        '<blockquote style="border-left:1px solid #0857A6">\n<div><div dir="ltr">'
        "<div>Hi! How is it going?</div><div>Thanks,</div><div>Maren.</div></div></div>"
        "</blockquote>\n<br></BODY></HTML>",
        "All good here.\nThanks,\nIlse",
    ),
    talon_html(
        "html: test_windows_mail_reply (our mail in the fixture's shape)",
        '<html><body dir="ltr"><div><div>All good here.</div><div><br></div><div>Thanks,</div>'
        '<div>Ilse<br></div><div data-signatureblock="true"><div><br></div></div>'
        '<div style="padding-top: 5px; border-top: 1px solid"><div><font>'
        '<b>От:</b>&nbsp;<a href="mailto:maren@example.org">Maren Holt</a><br>'
        "<b>Отправлено:</b>&nbsp;вторник, 8 июля 2014 г. 10:05<br>"
        '<b>Кому:</b>&nbsp;<a href="mailto:ilse@example.org">Ilse</a></font></div></div>'
        '<div><br></div><div dir=""><div class="gmail_default">Hi! How is it going?</div>'
        '<div class="gmail_default">Thanks,</div><div class="gmail_default">Maren.</div></div>'
        "</div></body></html>",
        "All good here.\nThanks,\nIlse",
    ),
    talon_html(
        "html: test_ms_outlook_2003_reply (our mail in the fixture's shape)",
        "<html><body lang=EN-US><div class=Section1><p class=MsoNormal><font size=2 face=Arial>"
        "All good here.</font></p><p class=MsoNormal><font size=2 face=Arial>Thanks,<br>Ilse"
        '</font></p><div><div class=MsoNormal align=center style="text-align:center">'
        '<font size=3 face="Times New Roman"><hr size=2 width="100%" align=center tabindex=-1>'
        "</font></div><p class=MsoNormal><b><font size=2 face=Tahoma>From:</font></b>"
        "<font size=2 face=Tahoma> Maren Holt [mailto:maren@example.org] <br><b>Sent:</b> "
        "Tuesday, July 08, 2014 10:05 AM<br><b>To:</b> Ilse Berg<br><b>Subject:</b> Hi</font>"
        "</p></div><p class=MsoNormal>Hi! How is it going?<br>Thanks,<br>Maren.</p></div>"
        "</body></html>",
        "All good here.\nThanks,\nIlse",
    ),
    talon_html(
        "html: test_ms_outlook_2007_reply (our mail in the fixture's shape)",
        "<html><body lang=EN-US link=blue><div class=WordSection1><p class=MsoNormal>"
        '<span style="color:#1F497D">All good here.<o:p></o:p></span></p><p class=MsoNormal>'
        '<span style="color:#1F497D">Thanks,<br>Ilse<o:p></o:p></span></p>'
        "<div style='border:none;border-top:solid #B5C4DF 1.0pt;padding:3.0pt 0in 0in 0in'>"
        "<p class=MsoNormal><b>From:</b> Maren Holt [mailto:maren@example.org] <br>"
        "<b>Sent:</b> Tuesday, July 08, 2014 10:05 AM<br><b>To:</b> Ilse Berg<br>"
        "<b>Subject:</b> Hi<o:p></o:p></p></div><p class=MsoNormal>Hi! How is it going?"
        "<o:p></o:p></p><p class=MsoNormal>Thanks,<br>Maren.<o:p></o:p></p></div></body></html>",
        "All good here.\nThanks,\nIlse",
    ),
    talon_html(
        "html: test_CRLF",
        "My\r\nreply\r\n<blockquote>\r\n\r\n  <div>\r\n    On 3-May-2019, at 9:12 AM, Maren "
        "&lt;maren@example.org&gt; wrote:\r\n  </div>\r\n\r\n  <div>\r\n    Question\r\n"
        "  </div>\r\n\r\n</blockquote>",
        "My reply",
    ),
    talon_html(
        "html: test_gmail_forwarded_msg",
        '<div dir="ltr"><br><div class="gmail_quote">---------- Forwarded message ----------<br>'
        'From: <b class="gmail_sendername">Maren</b> <span dir="ltr">&lt;<a href="mailto:'
        'maren@example.org">maren@example.org</a>&gt;</span><br>Date: Tue, Mar 2, 2010 at 4:15 '
        'PM<br>Subject: Working from home<br>To: Ilse &lt;<a href="mailto:ilse@example.org">'
        'ilse@example.org</a>&gt;<br><br><br><div dir="ltr">back tomorrow</div>\n</div><br></div>',
        "---------- Forwarded message ---------- From: Maren <maren@example.org> Date: Tue, "
        "Mar 2, 2010 at 4:15 PM Subject: Working from home To: Ilse <ilse@example.org> "
        "back tomorrow",
    ),
    talon_html(
        "html: test_readable_html_empty",
        "\n<blockquote>\n  Reply\n  <div>\n    On 3-May-2019, at 9:12 AM, Maren &lt;"
        "maren@example.org&gt; wrote:\n  </div>\n  <div>\n    Question\n  </div>\n</blockquote>",
        "Reply On 3-May-2019, at 9:12 AM, Maren <maren@example.org> wrote: Question",
    ),
    # -- talon: tests/signature/bruteforce_test.py -------------------------------
    talon_sig("bruteforce: test_empty_body", "", "", ""),
    talon_sig("bruteforce: test_no_signature", "Hi there!", "Hi there!", ""),
    talon_sig("bruteforce: test_signature_only", "--\nIlse", "--\nIlse", ""),
    talon_sig(
        "bruteforce: test_signature_separated_by_dashes (---)",
        "Hi there! All well?\n---\nIlse",
        "Hi there! All well?",
        "---\nIlse",
    ),
    talon_sig(
        "bruteforce: test_signature_separated_by_dashes (-name)", "Hi!\n-ilse", "Hi!", "-ilse"
    ),
    talon_sig(
        "bruteforce: test_signature_separated_by_dashes (- name)", "Hi!\n\n- ilse", "Hi!", "- ilse"
    ),
    talon_sig(
        "bruteforce: test_signature_separated_by_dashes (--)",
        "Great. Thank you!\n--\nIlse Berg",
        "Great. Thank you!",
        "--\nIlse Berg",
    ),
    talon_sig(
        "bruteforce: test_signature_words (Thanks!)", "Hi!\n\nThanks!\nIlse", "Hi!", "Thanks!\nIlse"
    ),
    talon_sig(
        "bruteforce: test_signature_words (-- Best regards)",
        "Hi!\n--\nBest regards,\n\nIlse",
        "Hi!",
        "--\nBest regards,\n\nIlse",
    ),
    talon_sig(
        "bruteforce: test_signature_words (-- -- Regards)",
        "Hi!\n--\n--\nRegards,\nIlse",
        "Hi!",
        "--\n--\nRegards,\nIlse",
    ),
    talon_sig(
        "bruteforce: test_iphone_signature",
        "Hi!\n\nSent from my iPhone!",
        "Hi!",
        "Sent from my iPhone!",
    ),
    talon_sig(
        "bruteforce: test_mailbox_for_iphone_signature",
        "Noted\nSent from Mailbox for iPhone",
        "Noted",
        "Sent from Mailbox for iPhone",
    ),
    talon_sig(
        "bruteforce: test_line_starts_with_signature_word",
        "Hi there!\nThanks for looking.\n--\nThanks!\nIlse",
        "Hi there!\nThanks for looking.",
        "--\nThanks!\nIlse",
    ),
    talon_sig(
        "bruteforce: test_line_starts_with_dashes",
        "Hi there!\nHave a look:\n\n--> first\n--> second\n--\nIlse",
        "Hi there!\nHave a look:\n\n--> first\n--> second",
        "--\nIlse",
    ),
    talon_sig(
        "bruteforce: test_blank_lines_inside_signature (-name + mobile)",
        "Noted.\n\n-Per.\n\nSent from my HTC smartphone!",
        "Noted.",
        "-Per.\n\nSent from my HTC smartphone!",
    ),
    talon_sig(
        "bruteforce: test_blank_lines_inside_signature (-- blank name)",
        "Noted\n--\n\nIlse Berg",
        "Noted",
        "--\n\nIlse Berg",
    ),
    talon_sig(
        "bruteforce: test_blackberry_signature (two lines)",
        "Helloooo.\nSent wirelessly from my BlackBerry device on the Rogers network.\n"
        "Envoyé sans fil par mon terminal mobile BlackBerry sur le réseau de Rogers.",
        "Helloooo.",
        "Sent wirelessly from my BlackBerry device on the Rogers network.\n"
        "Envoyé sans fil par mon terminal mobile BlackBerry sur le réseau de Rogers.",
    ),
    talon_sig(
        "bruteforce: test_blackberry_signature (Spanish)",
        "Noted\nEnviado desde mi oficina móvil BlackBerry® de Movistar",
        "Noted",
        "Enviado desde mi oficina móvil BlackBerry® de Movistar",
    ),
    talon_sig(
        "bruteforce: test_signature_cant_start_from_first_line",
        "Thanks,\n\nNoted\n\nregards\n\nIlse Berg",
        "Thanks,\n\nNoted",
        "regards\n\nIlse Berg",
    ),
    talon_sig(
        "bruteforce: test_signature_max_lines_ignores_empty_lines",
        "Thanks,\nNoted\n\nregards\n\n\nIlse Berg",
        "Thanks,\nNoted",
        "regards\n\n\nIlse Berg",
    ),
    # -- github/email_reply_parser: test/email_reply_parser_test.rb ----------------
    Case(
        ERP,
        "test_reads_simple_body (email_1_1)",
        "Hello all\n\nHow do I empty a Bucket of every key after a test run?\n"
        "I use the HTTP API from Python.\n\n-Tomas Varga\n\n\n"
        "_______________________________________________\nstore-users mailing list\n"
        "store-users@lists.example.org\nhttp://lists.example.org/mailman/listinfo/store-users\n",
        new="Hello all\n\nHow do I empty a Bucket of every key after a test run?\n"
        "I use the HTTP API from Python.",
        sig_contains=("-Tomas Varga", "store-users mailing list"),
    ),
    Case(
        ERP,
        "test_reads_top_post (email_1_3)",
        corpus="email-reply-parser/email_1_3.txt",
        new="Oh thanks.\n\nHaving the function would be great.",
        sig_contains=("-Abhishek Kona",),
    ),
    Case(
        ERP,
        "test_reads_bottom_post (email_1_2)",
        corpus="email-reply-parser/email_1_2.txt",
        contains=(
            "Hi,\nOn Tue, 2011-03-01 at 18:02 +0530, Abhishek Kona wrote:",
            "> I am currently using the Java HTTP API.",
            "You can list the keys for the bucket",
            "to delete them all individually.",
        ),
        absent=("> -Abhishek Kona", "riak-users mailing list"),
    ),
    Case(
        ERP,
        "test_reads_inline_replies (email_1_8)",
        corpus="email-reply-parser/email_1_8.txt",
        contains=(
            "On Tue, Apr 29, 2014 at 4:22 PM, Example Dev",
            "I will reply under this one",
            "> okay?",
            "and under this.",
        ),
        absent=("-- Tim", "Hey there, this is my signature"),
        signature="--\nHey there, this is my signature",
    ),
    Case(
        ERP,
        "test_recognizes_date_string_above_quote (email_1_4)",
        "Great! It has not failed again since.\n\n"
        "On Sep 3, 2011, at 8:14 AM, octo<reply@reply.example.com> wrote:\n\n\n\n\n"
        "> The importer looks fine now.\n",
        new="Great! It has not failed again since.",
    ),
    Case(
        ERP,
        "test_a_complex_body_with_only_one_fragment (email_1_5)",
        "One: here is the plan.\n\n- This is the first point, which is long enough to wrap onto\n"
        "the next line\n- This is the second point and it does not wrap\n"
        "- This is the third point and I am running out of things\nto say\n"
        "- This is the fourth point\n\nTwo:\n- Another point\n- And one more\n\n"
        "This paragraph goes on about all kinds of things. It keeps going\nfor a while.\n",
        new="One: here is the plan.\n\n- This is the first point, which is long enough to wrap "
        "onto\nthe next line\n- This is the second point and it does not wrap\n"
        "- This is the third point and I am running out of things\nto say\n"
        "- This is the fourth point\n\nTwo:\n- Another point\n- And one more\n\n"
        "This paragraph goes on about all kinds of things. It keeps going\nfor a while.",
    ),
    Case(
        ERP,
        "test_reads_email_with_correct_signature (correct_sig)",
        "this mail has a proper -- signature.\n\n-- \nmarta\n",
        new="this mail has a proper -- signature.",
        signature="-- \nmarta",
    ),
    Case(
        ERP,
        "test_reads_email_containing_hyphens (email_hyphens)",
        "Keep in mind that the -- form is not the - form, and --- is neither.\n\n"
        "- Every visitor - staff or not - signs in.\n-- Badges are handed out at the desk.\n\n"
        "Visitors who stay longer need their physical exam.",
        new="Keep in mind that the -- form is not the - form, and --- is neither.\n\n"
        "- Every visitor - staff or not - signs in.\n-- Badges are handed out at the desk.\n\n"
        "Visitors who stay longer need their physical exam.",
    ),
    *(
        Case(
            ERP,
            f"test_arbitrary_hypens_and_underscores ({first!r})",
            f"{first}\n\n{sig}",
            new=first,
            signature=sig,
        )
        for first, sig in (
            ("here __and__ now.", "---\nMarta"),
            ("--okay", "-Marta"),
            ("__okay", "-Marta"),
            ("--1337", "-Marta"),
            ("__1337", "-Marta"),
            ("data -- __ foo", "-Marta"),
        )
    ),
    Case(
        ERP,
        "test_deals_with_multiline_reply_headers (email_1_6)",
        corpus="email-reply-parser/email_1_6.txt",
        contains=("I get proper rendering as well.",),
        absent=("Was this caching related",),
    ),
    Case(
        ERP,
        "test_deals_with_windows_line_endings (email_1_7)",
        corpus="email-reply-parser/email_1_7.txt",
        contains=(":+1:",),
        absent=("Steps 0-2",),
    ),
    Case(
        ERP,
        "test_parse_out_just_top_for_outlook_reply (email_2_1)",
        corpus="email-reply-parser/email_2_1.txt",
        new="Outlook with a reply",
    ),
    Case(
        ERP,
        "test_parse_out_just_top_for_outlook_with_reply_directly_above_line (email_2_2)",
        "The Outlook answer sits right on the line\n________________________________________\n"
        "From: Case Notes [notes@example.com]\nSent: Monday, 2 April 2012 3:10 p.m.\n"
        "To: Marta K. Vidal\nSubject: [case:211] Marta Vidal\n\n"
        "A note was added to the case 'Marta Vidal':\n\nThis is the note.\n",
        new="The Outlook answer sits right on the line",
    ),
    Case(
        ERP,
        "test_parse_out_just_top_for_outlook_with_unusual_headers_format (email_2_3)",
        corpus="email-reply-parser/email_2_3.txt",
        new="Outlook with a reply above headers using unusual format",
    ),
    Case(
        ERP,
        "test_parse_out_sent_from_iPhone",
        corpus="email-reply-parser/email_iPhone.txt",
        new="Here is another email",
    ),
    Case(
        ERP,
        "test_parse_out_sent_from_BlackBerry",
        "One more mail\n\nSent from my BlackBerry",
        new="One more mail",
    ),
    Case(
        ERP,
        "test_parse_out_send_from_multiword_mobile_device",
        "One more mail\n\nSent from my Verizon Wireless BlackBerry",
        new="One more mail",
    ),
    Case(
        ERP,
        "test_do_not_parse_out_send_from_in_regular_sentence",
        corpus="email-reply-parser/email_sent_from_my_not_signature.txt",
        new="Here is another email\n\nSent from my desk, is much easier then my mobile phone.",
    ),
    Case(
        ERP,
        "test_retains_bullets (email_bullets)",
        "second try, this should come second\n\nwith blank lines\n\nand keep its layout\n\n\n"
        "   - what about bullets\n   - and one more\n\n\n"
        "On Mon, Mar 5, 2012 at 9:40 AM, <cases@portal.example.com> wrote:\n\n"
        "> Tell us how you used what you learned\n> at work\n",
        new="second try, this should come second\n\nwith blank lines\n\nand keep its layout\n\n\n"
        "   - what about bullets\n   - and one more",
    ),
    Case(
        ERP,
        "test_one_is_not_on",
        corpus="email-reply-parser/email_one_is_not_on.txt",
        contains=("One outstanding question",),
        absent=("On Oct 1, 2012, at 11:55 PM, Dave Tapley wrote:",),
    ),
    Case(
        ERP,
        "test_doesnt_remove_signature_delimiter_in_mid_line",
        corpus="email-reply-parser/email_sig_delimiter_in_middle_of_line.txt",
        new="Hi there!\n\nStuff happened.\n\nAnd here is a fix -- this is not a signature.\n\n"
        "kthxbai",
    ),
    # -- zapier/email-reply-parser: the Python port's extra tests --------------------
    Case(
        ERP,
        "python port: test_reply_from_gmail",
        corpus="email-reply-parser/email_gmail.txt",
        new="This is a test for inbox replying to a github message.",
    ),
    Case(
        ERP,
        "python port: test_partial_quote_header",
        corpus="email-reply-parser/email_partial_quote_header.txt",
        contains=(
            "On your remote host you can run:",
            "telnet 127.0.0.1 52698",
            "This should connect to TextMate",
        ),
    ),
    Case(
        ERP,
        "python port: test_email_headers_no_delimiter",
        corpus="email-reply-parser/email_headers_no_delimiter.txt",
        new="And another reply!",
    ),
    Case(
        ERP,
        "python port: test_multiple_on",
        corpus="email-reply-parser/greedy_on.txt",
        contains=("On your remote host",),
        absent=("On 9 Jan 2014",),
    ),
    Case(
        ERP,
        "python port: test_issue_15",
        "This answers the test answer.\nOn function On  wrote:\n\n"
        "On Mon, Feb 12, 2018 at 10:20 AM, Ola Berg <ola@example.com>\nwrote: \n\n"
        "> This is a test answer.\n>\n> On Mon, Feb 12, 2018 at 10:15 AM, Ola Berg "
        "<ola@example.com>\n> wrote:\n>\n>> Only a test.\n>>\n>\n>",
        new="This answers the test answer.\nOn function On  wrote:",
    ),
    # -- alfonsrv/mail-parser-reply: test/test_email_reply_parser.py ---------------
    Case(
        MPR,
        "test_simple_body / test_hyphen_signature (email_1_1)",
        "Hello all\n\nHow do I empty a Bucket of every key after a test run?\n\n-Tomas Varga\n\n\n"
        "_______________________________________________\nstore-users mailing list\n"
        "store-users@lists.example.org\nhttp://lists.example.org/mailman/listinfo/store-users\n",
        contains=("How do I empty a Bucket",),
        absent=("store-users", "-Tomas Varga"),
        sig_contains=("store-users", "-Tomas Varga"),
    ),
    Case(
        MPR,
        "test_simple_quoted_body (email_1_3)",
        corpus="email-reply-parser/email_1_3.txt",
        absent=("On 01/03/11 7:07 PM, Russell Brown wrote:", "-Abhishek Kona"),
        sig_contains=("-Abhishek Kona",),
    ),
    Case(
        MPR,
        "test_simple_scrambled_body (email_1_4)",
        "Great! It has not failed again since.\n\n"
        "On Sep 3, 2011, at 8:14 AM, octo<reply@reply.example.com> wrote:\n\n\n\n\n"
        "> The importer looks fine now.\n",
        contains=("Great!",),
        absent=("octo<reply@reply.example.com>", "importer"),
    ),
    Case(
        MPR,
        "test_simple_scrambled_header (email_1_6)",
        corpus="email-reply-parser/email_1_6.txt",
        contains=("I get",),
        absent=("<reply@reply.github.com>",),
    ),
    Case(
        MPR,
        "test_simple_scrambled_header2 (email_1_7)",
        corpus="email-reply-parser/email_1_7.txt",
        absent=("<notifications@github.com>wrote:",),
    ),
    Case(
        MPR,
        "test_gmail_header (email_2_1)",
        corpus="email-reply-parser/email_2_1.txt",
        new="Outlook with a reply",
        absent=("Google Apps Sync Team",),
        notes="mail-parser-reply keeps the rule line under the reply; rules carry no words",
    ),
    Case(
        MPR,
        "test_gmail_indented (email_2_3)",
        corpus="email-reply-parser/email_2_3.txt",
        new="Outlook with a reply above headers using unusual format",
    ),
    Case(
        MPR,
        "test_complex_mail_thread (email_3_1)",
        corpus="mail-parser-reply/email_3_1.txt",
        contains=("First reply.",),
        absent=("Second reply",),
    ),
    Case(
        MPR,
        "test_header_no_delimiter",
        corpus="email-reply-parser/email_headers_no_delimiter.txt",
        new="And another reply!",
    ),
    Case(
        MPR,
        "test_sent_from_junk1",
        "One more mail\n\nSent from my iPhone",
        new="One more mail",
        signature="Sent from my iPhone",
    ),
    Case(
        MPR,
        "test_sent_from_junk2",
        "One more mail\n\nSent from my Verizon Wireless BlackBerry",
        new="One more mail",
        signature="Sent from my Verizon Wireless BlackBerry",
    ),
    Case(
        MPR,
        "test_sent_from_junk3",
        "One more mail\n\nSent from my BlackBerry",
        new="One more mail",
        signature="Sent from my BlackBerry",
    ),
    Case(
        MPR,
        "test_sent_from_junk4",
        "One more mail\n\nSent from my desk, which beats my phone by far.",
        new="One more mail\n\nSent from my desk, which beats my phone by far.",
        signature="",
    ),
    Case(
        MPR,
        "test_ja_simple_body",
        "こんにちは。\n\n明日の会議は予定どおりです。\n",
        contains=("こんにちは",),
    ),
    Case(
        MPR,
        "test_ja_simple_quoted_reply",
        corpus="mail-parser-reply/email_ja_1_2.txt",
        contains=("お世話になっております。織田です。", "それでは 11:00 にお待ちしております。"),
        absent=("かしこまりました",),
    ),
    Case(
        MPR,
        "test_zh_name_before_date_quoted_reply",
        corpus="mail-parser-reply/email_zh_1.txt",
        contains=("周末聚会的时间和地点我这边已经整理好了",),
        absent=(
            "雨州 <yuzhou.liu@example.com> 在 2026年2月29日 周六 19:47 写道：",
            "——————————————————————————————",
        ),
    ),
    Case(
        MPR,
        "test_zh_date_first_quoted_reply (email_zh_2)",
        "小林：\n我这边没有问题，就按这个时间安排。\n\n"
        "2026年3月7日 周六 10:05 周明 <zhou.ming@example.com> 写道：\n"
        "各位好，下周想安排一次项目回顾，先发一个初步时间表。\n1、周二上午；\n2、周三下午。\n",
        contains=("我这边没有问题",),
        absent=("写道", "项目回顾"),
    ),
    Case(
        MPR,
        "test_dutch_simple_body (email_nl_1_1)",
        "Hallo allemaal\n\nHoe maak ik een bucket leeg na een test?\n\n-Tomas Varga\n\n\n"
        "_______________________________________________\nopslag-gebruikers mailinglijst\n"
        "opslag-gebruikers@lists.example.org\n"
        "http://lists.example.org/mailman/listinfo/opslag-gebruikers\n",
        contains=("Hoe maak ik een bucket leeg",),
        absent=("opslag-gebruikers",),
        sig_contains=("opslag-gebruikers",),
    ),
    Case(
        MPR,
        "test_dutch_gmail_header (email_nl_1_2)",
        corpus="mail-parser-reply/email_nl_1_2.txt",
        new="Outlook met een antwoord",
        absent=("Google Apps Sync Team",),
        notes="mail-parser-reply keeps the rule line under the reply; rules carry no words",
    ),
    Case(
        MPR,
        "test_pl_simple_body (email_pl_1_1)",
        corpus="mail-parser-reply/email_pl_1_1.txt",
        contains=("Czesc Anno",),
        absent=("Pozdrawiam,\nJan",),
        sig_contains=("Pozdrawiam,\nJan",),
    ),
    Case(
        MPR,
        "test_pl_simple_quoted_reply (email_pl_1_2)",
        corpus="mail-parser-reply/email_pl_1_2.txt",
        absent=("Dnia 28 lutego 2023 14:00 Anna Nowak <anna.nowak@example.com>", "> Pozdrawiam,"),
    ),
    Case(
        MPR,
        "test_pl_simple_signature (email_pl_1_3)",
        "Od: Piotr Zielinski <piotr@example.pl>\nWysłano: czwartek, 9 marca 2023 09:00\n"
        "Do: Ewa Mazur <ewa@example.pl>\nTemat: Spotkanie\n\nCześć Ewo,\n\nCo słychać?\n\n"
        "Z poważaniem,\nPiotr\n",
        contains=("Cześć Ewo",),
        absent=("Z poważaniem,\nPiotr",),
        sig_contains=("Z poważaniem,\nPiotr",),
    ),
    Case(
        MPR,
        "test_header_begins_w_signature",
        corpus="mail-parser-reply/begins_with_signature.txt",
        contains=("I have sent an invite",),
        sig_contains=("Regards,",),
    ),
    Case(
        MPR,
        "test_swedish_simple_body (email_swedish_2)",
        corpus="mail-parser-reply/email_swedish_2.txt",
        contains=("Hello Anna,",),
        absent=("/John", "Hej John"),
        sig_contains=("/John",),
    ),
    Case(
        MPR,
        "test_swedish_quoted_reply (email_swedish_1)",
        corpus="mail-parser-reply/email_swedish_1.txt",
        contains=("Ursäkta mitt sena svar!",),
        absent=("Hej Person B,",),
    ),
    Case(
        MPR,
        "test_swedish_realistic_anonymized (email_sv_anon_1)",
        corpus="mail-parser-reply/email_sv_anon_1.txt",
        contains=("Berättar gärna.",),
        absent=("Kan inte se att det står något", "Jag har försökt få tag"),
    ),
    Case(
        MPR,
        "test_sv_wrapped_gmail_header (email_swedish_3)",
        "Hej Karin,\nlåter intressant. Jag har en månads uppsägning på nuvarande\nuppdrag.\n"
        "Vi kan väl ringas på torsdag (jag sitter på kontoret, 9.30-10.00?).\n\n/T\n\n\n"
        "Den tis 4 feb. 2025 14:20 Karin Lund <karin.lund@example.se>\nskrev:\n\n"
        "> Upplägget passar nog den här gången.\n>\n> * Mest på distans.\n>\n"
        "> Hur lång uppsägningstid har du?\n",
        contains=("Hej Karin,",),
        absent=("/T", "Upplägget passar"),
        sig_contains=("/T",),
    ),
    Case(
        MPR,
        "test_danish_simple_body (email_danish_1)",
        corpus="mail-parser-reply/email_danish_1.txt",
        contains=("Hej Peter,",),
        absent=("Med venlig hilsen\nAnders Andersen", "Hej Anders,"),
        sig_contains=("Med venlig hilsen\nAnders Andersen",),
    ),
    Case(
        MPR,
        "test_danish_outlook_header (email_danish_2)",
        corpus="mail-parser-reply/email_danish_2.txt",
        contains=("Jeg har modtaget filerne.",),
        absent=("Her er filerne du bad om.",),
        sig_contains=("Hilsen\nSøren",),
    ),
    Case(
        MPR,
        "test_danish_gmail_header (email_danish_3)",
        "Hej,\n\nTak, det passer fint.\n\nDen 3. dec. 2025 kl. 09.15 skrev Mette Holm "
        "<mette@example.dk>:\n> Hej\n>\n> Passer fredag?\n\n",
        contains=("Tak, det passer fint.",),
        absent=("Passer fredag?",),
    ),
    Case(
        MPR,
        "test_danish_outlook_separator (email_danish_4)",
        corpus="mail-parser-reply/email_danish_4.txt",
        contains=("Svar.",),
        absent=("-----Oprindelig meddelelse-----",),
    ),
    Case(
        MPR,
        "test_danish_signatures_short (email_danish_5)",
        "Hej,\n\nDet er i orden.\n\nKh\nMette\n\n",
        contains=("Det er i orden.",),
        absent=("Kh\nMette",),
        sig_contains=("Kh\nMette",),
    ),
    Case(
        MPR,
        "test_hungarian_gmail_quoted_reply (email_hu_1)",
        corpus="mail-parser-reply/email_hu_1.txt",
        contains=("Az uj beallitasokat feltoltottem",),
        absent=("meg tudnad nezni",),
    ),
    Case(
        MPR,
        "test_hungarian_gmail_parenthesised_timestamp (email_hu_2)",
        "Koszi, igy mar minden jo.\n\nEszter\n\nIroda <iroda@example.hu> ezt írta (időpont: "
        "2026. márc. 3., K 09:41):\nKedves Eszter,\n\nA szamlat kiallitottuk, a fiokja ujra "
        "aktiv.\n",
        contains=("igy mar minden jo",),
        absent=("szamlat kiallitottuk",),
    ),
    Case(
        MPR,
        "test_hungarian_outlook_headers (email_hu_3)",
        "Jo, penteken megbeszeljuk.\n\nFeladó: Toth Gabor <gabor@example.hu>\n"
        "Elküldve: 2026. április 2. 14:05\nCímzett: Varga Eszter <eszter@example.hu>\n"
        "Tárgy: Megbeszeles\n\nSzia Eszter, mikor erünk ra? Fontos lenne.\n",
        contains=("penteken megbeszeljuk",),
        absent=("Fontos lenne",),
    ),
    Case(
        MPR,
        "test_hungarian_thunderbird_header (email_hu_4)",
        "A szerzodest elolvastam, alairhato.\n\nTisztelettel,\nVarga Eszter\n\n"
        "2026. 02. 11. 09:15 keltezéssel, Toth Gabor a következőt írta:\n"
        "Kedves Eszter, olvasd el a szerzodest, mielott alairjuk.\n",
        contains=("A szerzodest elolvastam",),
        absent=("olvasd el a szerzodest",),
    ),
    Case(
        MPR,
        "test_hungarian_signature_without_accents (email_hu_5)",
        "Szia,\n\nRoviden: a szamla kesz, holnap kuldom.\n\nUdv\nEszter\n",
        contains=("a szamla kesz",),
        absent=("Udv",),
        sig_contains=("Udv",),
    ),
    *(
        Case(
            MPR,
            f"test_{lang}_wrapped_gmail_header (email_{lang}_wrap)",
            f"{hello}\n\n{own}\n\n{closing}\n\n\n{attribution}\n\n> {theirs}\n",
            contains=(own.split(".")[0],),
            absent=(theirs,),
        )
        for lang, hello, own, closing, attribution, theirs in (
            (
                "en",
                "Hi Karin,",
                "Thanks for asking. Tuesday works; what is the rate?",
                "/T",
                "On Tue, Feb 4, 2025, 2:20 PM Karin Lund <karin.lund@example.com>\nwrote:",
                "Hi T, the project I told you about starts in March.",
            ),
            (
                "de",
                "Hallo Karin,",
                "danke für die Anfrage. Dienstag passt mir.",
                "Viele Grüße\nT",
                "Am Di., 4. Feb. 2025, 14:20 Karin Lund <karin.lund@example.de>\nschrieb:",
                "Hallo T, das Projekt startet im März.",
            ),
            (
                "fr",
                "Bonjour Karin,",
                "Merci pour votre message. Mardi me convient.",
                "Cordialement\nT",
                "Le mar. 4 févr. 2025 à 14:20, Karin Lund <karin.lund@example.fr>\na écrit:",
                "Bonjour T, le projet démarre en mars.",
            ),
            (
                "es",
                "Hola Karin,",
                "Gracias por escribir. El martes me va bien.",
                "Saludos\nT",
                "El mar, 4 feb 2025 a las 14:20, Karin Lund <karin.lund@example.es>\nescribió:",
                "Hola T, el proyecto empieza en marzo.",
            ),
            (
                "it",
                "Ciao Karin,",
                "grazie del messaggio. Martedì va bene.",
                "Saluti\nT",
                "Il mar 4 feb 2025 alle 14:20, Karin Lund <karin.lund@example.it>\nha scritto:",
                "Ciao T, il progetto parte a marzo.",
            ),
            (
                "nl",
                "Hoi Karin,",
                "dank voor je bericht. Dinsdag past mij.",
                "Groet\nT",
                "Op di 4 feb. 2025 14:20 Karin Lund <karin.lund@example.nl>\nschreef:",
                "Hoi T, het project start in maart.",
            ),
            (
                "da",
                "Hej Karin,",
                "tak for beskeden. Tirsdag passer mig fint.",
                "Hilsen\nT",
                "Den tir 4 feb 2025 14:20 Karin Lund <karin.lund@example.dk>\nskrev:",
                "Hej T, projektet starter i marts.",
            ),
            (
                "cs",
                "Ahoj Karin,",
                "díky za zprávu. Úterý mi vyhovuje.",
                "S pozdravem,\nT",
                "Dne út 4. úno. 2025 14:20 Karin Lundová <karin.lundova@example.cz>\nnapsal(a):",
                "Ahoj T, projekt začíná v březnu.",
            ),
            (
                "sv_inside",
                "Hej Karin,",
                "tack för meddelandet. Tisdag passar bra.",
                "/T",
                "Den tis 4 feb. 2025 14:20 skrev Karin Lund <\nkarin.lund@example.se>:",
                "Hej T, projektet börjar i mars.",
            ),
            (
                "de_inside",
                "Hallo Karin,",
                "danke für die Anfrage. Dienstag passt mir.",
                "Viele Grüße\nT",
                "Am Di., 4. Feb. 2025, 14:20 schrieb Karin Lund <\nkarin.lund@example.de>:",
                "Hallo T, das Projekt startet im März.",
            ),
        )
    ),
]
