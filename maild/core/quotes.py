"""Split a plain-text mail body into new text, quoted history and signature.

Pure and total: :func:`split_reply` never raises and never returns an empty
``new_text`` for a body that has text of its own. The split is a view for
relays and the CLI; the original body is always stored elsewhere, so the three
parts need not add up to the input byte for byte (a line that carries both the
reply and an attribution, ``reply On … wrote:``, is cut in two).

What is recognised as the start of quoted history:

- the trailing ``>``-quoted block, together with the attribution line above it
  ("On <date>, <name> wrote:" and its translations, possibly wrapped over up
  to four lines and followed by a few blank lines). Inline answers between
  quoted blocks stay in the new text; only the block that ends the mail is
  cut. A single quoted block with an attribution between the reply and a few
  lines below it ("Regards, Roman") is cut and the lines below it kept.
- separators that start an unquoted copy of an earlier mail: Outlook's
  "-----Original Message-----" (and translations), "---- Name wrote ----", an
  Outlook header block ("From:/Sent:/To:/Subject:" and translations, also in
  ``*bold*``, or shorter blocks whose values look like a mail's: From + Date,
  Date + To), optionally after a "____"/"----" rule, and an attribution line
  that is followed by unquoted text (Gmail's "inbox" style).
- a mail that *starts* with quoted history and answers below it (bottom
  posting) keeps only the answer as new text.

Forwarded mail is not history: for a helpdesk the forwarded mail usually *is*
the request, so from a forward banner ("---------- Forwarded message
----------", "Begin forwarded message:") on, everything stays in the new text.

Banners a mail gateway puts on top ("[EXTERNAL]", "CAUTION: This email
originated from outside of the organization…") are left out of the new text
and go with the quoted part, as does the marker line :mod:`maild.core.htmltext`
puts where an HTML client's quoted history starts.

Signatures: a line "-- " (or "--", "---") followed by a short block,
mobile-client footers ("Sent from my iPhone", "Get Outlook for iOS", "Von
meinem iPhone gesendet", "Sent wirelessly from my BlackBerry" …), a mailing
list footer at the end, a "-Name" or "/Name" line at the end, and a closing
("Best regards", "Med venlig hilsen", "Pozdrawiam", "Kh" …) followed by a
name. A "Thanks"/"Thank you" line is the requester's words, not a signature:
it is what tells a confirmation ("Works now, thanks!") apart.

Work is linear in the size of the body: every pattern runs on one line (or
an attribution of at most a few lines) and lines longer than
``_MAX_HEADER_LEN`` are never matched against a pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from maild.core.htmltext import QUOTE_MARKER

__all__ = ["ReplyParts", "split_reply", "unflow"]


@dataclass(frozen=True, slots=True)
class ReplyParts:
    """The three views of a body. ``new_text`` is never empty for a non-empty body."""

    new_text: str
    quoted: str
    signature: str


# Longest line looked at when matching patterns: keeps regex work linear on
# pathological bodies (kilobyte-long lines of DNA, base64 pasted as text).
_MAX_HEADER_LEN = 600
# An attribution spans at most this many lines (Polymail's spans five).
_MAX_ATTRIBUTION_LINES = 5
# Blank lines allowed between an attribution and the quote it introduces.
_MAX_GAP = 5

_SEPARATOR_RE = re.compile(
    r"^\s*-{2,}\s*(?:"
    r"original message|reply message|ursprüngliche nachricht|antwort nachricht|"
    r"message d'origine|mensaje original|"
    r"mensagem original|messaggio originale|oorspronkelijk bericht|originalmeddelande|"
    r"oprindelig meddelelse|opprinnelig melding|alkuperäinen viesti|wiadomość oryginalna|"
    r"původní zpráva|eredeti üzenet|исходное сообщение|原始邮件|原始郵件|元のメッセージ|"
    # "---- John Smith wrote ----" (Android), "-----On <date>, X wrote-----"
    r".{0,200}\bwrote"
    r")\s*-{2,}\s*$",
    re.IGNORECASE,
)
_FORWARD_RE = re.compile(
    r"^\s*(?:-{2,}\s*(?:"
    r"forwarded message|weitergeleitete nachricht|message transféré|mensaje reenviado|"
    r"mensagem encaminhada|messaggio inoltrato|doorgestuurd bericht|"
    r"vidarebefordrat meddelande|videresendt meddelelse|videresendt melding|"
    r"välitetty viesti|wiadomość przekazana dalej|přeposlaná zpráva|továbbított üzenet|"
    r"пересылаемое сообщение|转发的邮件|轉寄的郵件|転送されたメッセージ"
    r")\s*-{2,}|"
    r"(?:begin forwarded message|anfang der weitergeleiteten nachricht|"
    r"début du message réexpédié|inicio del mensaje reenviado|"
    r"início da mensagem reencaminhada|doorgestuurd bericht|"
    r"vidarebefordrat brev|videresendt brev)\s*[:：])\s*$",
    re.IGNORECASE,
)
_RULE_RE = re.compile(r"^\s*(?:[-_=]\s*){5,}$")

_FROM_KEYS = (
    r"from|von|de|van|från|fra|od|da|lähettäjä|feladó|от|kimden|afzender|expéditeur|"
    r"remitente|mittente|发件人|寄件者|寄件人|差出人|보낸 사람"
)
_DATE_KEYS = (
    r"sent|date|gesendet|datum|envoyé|enviado|enviada|verzonden|skickat|sendt|wysłano|data|"
    r"inviato|lähetetty|küldve|elküldve|отправлено|дата|gönderildi|tarih|发送时间|发送日期|日期|"
    r"寄件日期|時間|送信日時|日時|날짜"
)
_TO_KEYS = r"to|an|à|a|para|aan|till|til|do|címzett|кому|kime|收件人|收件者|宛先|받는 사람"
_CC_KEYS = r"cc|kopie|kopia|másolat|копия|抄送|副本"
_SUBJECT_KEYS = (
    r"subject|betreff|objet|asunto|assunto|oggetto|onderwerp|ämne|emne|temat|aihe|tárgy|"
    r"тема|konu|předmět|主题|主旨|件名|제목"
)
_HEADER_KEY_RES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(rf"^\s*[*_]{{0,2}}(?:{keys})[*_]{{0,2}}\s*[:：]\s*(.*)$", re.IGNORECASE))
    for name, keys in (
        ("from", _FROM_KEYS),
        ("date", _DATE_KEYS),
        ("to", _TO_KEYS),
        ("cc", _CC_KEYS),
        ("subject", _SUBJECT_KEYS),
    )
)
# "From: bob@example.com Date: Thu, 24 Mar 2016 08:07:12 -0700" on one line
# (an HTML header block whose lines were inline elements).
_COMPACT_HEADER_RE = re.compile(r"@\S*\s+(?:date|sent)\s*:.*\d", re.IGNORECASE)
_TIME_RE = re.compile(r"\d{1,2}[:.]\d{2}")

_ADDR = r"<[^<>]*@[^<>]*>"
_SCANDI_DAYS = r"(?:man|tir|ons|tor|fre|lør|søn|mån|tis|sön|lör)\.?\s"
# Attribution lines whose start is recognisable. Tried on one line, then on
# two, three… joined: the shortest match wins, so a line of the reply above
# is not swallowed.
_STRICT_ATTRIBUTIONS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"^[-\s]*on\s.*\b(?:wrote|sent)\s*[:：]$",
        r"^(?:am\s|\d).*\bschrieb\b.*[:：]$",
        r"^le\s.*\ba\s+écrit\s*[:：]$",
        r"^el\s.*\bescribió\s*[:：]$",
        r"^em\s.*\bescreveu\s*[:：]$",
        r"^il\s.*\bha\s+scritto\s*[:：]$",
        r"^op\s.*\b(?:schreef\b.*|het volgende geschreven\s*)[:：]$",
        rf"^(?:den\s|på\s|{_SCANDI_DAYS}|\d).*\bskrev\b.*[:：]$",
        r"^(?:dnia|w dniu)\s.*\bnapisał(?:\(a\)|a)?\s*[:：]$",
        r"^dne\s.*\bnapsal(?:\(a\)|a)?\s*[:：]$",
        r"^vào\s.*\bđã viết\s*[:：]$",
        r"^\d.*\b(?:írta|написал(?:\(а\)|а)?|napsal(?:\(a\)|a)?|kirjoitti|yazdı)\s*[:：]$",
        r"^.*\bezt írta\s*\(időpont:[^()]*\)\s*[:：]$",
        rf"^\d{{4}}\s*年.*{_ADDR}\s*[:：]$",
        r"^\d.*(?:写道|寫道)\s*[:：]$",
    )
)
# One regex for all of them: one call per candidate instead of one per pattern.
_STRICT_ATTRIBUTION_RE = re.compile(
    "|".join(f"(?:{p.pattern})" for p in _STRICT_ATTRIBUTIONS), re.IGNORECASE
)
# A date and a time, then the sender's address: "26.06.2014, 14:41,
# "Alexander" <a@example.org>:", "Thu, 26 Jun 2014 14:00:51 +0400 от Alexander
# <a@example.org>:", "2014-10-17 11:28 GMT+03:00 X <a@b>:". Checked in two
# steps (address at the end, then a time before it) to stay linear.
_ADDR_END_RE = re.compile(rf"{_ADDR}\s*[:：]$")
_CLOCK_RE = re.compile(r"\d{1,2}:\d{2}")
# Attribution lines known only by their end: the shortest match wins.
_LOOSE_ATTRIBUTIONS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        rf"^.*{_ADDR}\s*(?:wrote|schrieb|a\s+écrit|escribió|escreveu|skrev|schreef|"
        r"napisał(?:\(a\))?|ezt írta|написал(?:\(а\))?|đã viết)\s*[:：]$",
        r"^.*(?:写道|寫道)\s*[:：]$",
    )
)
_LOOSE_ATTRIBUTION_RE = re.compile(
    "|".join(f"(?:{p.pattern})" for p in _LOOSE_ATTRIBUTIONS), re.IGNORECASE
)


def _dated_address(text: str) -> bool:
    m = _ADDR_END_RE.search(text)
    return m is not None and _CLOCK_RE.search(text, 0, m.start()) is not None


# The last line of an attribution holds its verb (or ends with the address).
_ATTRIBUTION_VERB_RE = re.compile(
    r"wrote|sent\s*[:：]|schrieb|écrit|escribió|escreveu|scritto|schreef|geschreven|skrev|"
    r"napisał|napsal|viết|írta|написал|kirjoitti|yazdı|写道|寫道",
    re.IGNORECASE,
)


# Only right above a quote: a date and an address with no colon at all
# ("2011/4/7 Nathan <support@example.com>").
_WEAK_ATTRIBUTION_RE = re.compile(rf"^\d{{1,4}}[./-]\d{{1,2}}[./-]\d{{1,4}}\b.*{_ADDR}$")
# "reply On Wed, Apr 4, 2012 at 3:59 PM, bob@example.com wrote:" — the reply
# and the attribution share a line.
_INLINE_ATTRIBUTION_RE = re.compile(r"^(.*?\S)\s*(-*\s*On\s.{5,400}\bwrote\s*:)\s*$")
# Polymail ends its attribution with a line "> wrote:".
_QUOTED_WROTE_RE = re.compile(r"^\s*>\s*wrote\s*:\s*$", re.IGNORECASE)

_MOBILE_SIGNATURE_RE = re.compile(
    r"^(?:"
    r"sent from my [^,;:!?]{1,40}[.!]?|"
    r"sent from (?:mail|outlook|yahoo mail|aol mobile mail|gmail|proton ?mail|mailbox|"
    r"acompli|spark|samsung mobile|blackberry|bluemail|aquamail)\b[^,;!?]{0,40}[.!]?|"
    r"sent (?:with|via) [^,;]{1,80}|"
    r"sent wirelessly from my .{1,80}|"
    r"get outlook for .{1,80}|"
    r"von meinem .{1,40} gesendet|gesendet von meinem .{1,40}|"
    r"envoyé de mon .{1,40}|envoyé sans fil par mon .{1,80}|"
    r"enviado desde mi .{1,60}|enviado do meu .{1,40}|"
    r"inviato da(?:l mio)? .{1,40}|verzonden (?:met|vanaf) (?:mijn )?.{1,40}|"
    r"skickat från min .{1,40}|sendt fra min .{1,40}|wysłane z .{1,40}|"
    r"odesláno z .{1,40}|发自我的.{1,20}|從我的.{1,20}傳送|.{1,20}から送信"
    r")$",
    re.IGNORECASE,
)
# "-Abhishek Kona", "- roman", "-Lev.", "/John": a name signed with a dash or
# a slash as the last line.
_DASH_NAME_RE = re.compile(r"^[-–—/]\s?[^\W\d_][^\W\d_.' -]*(?:[.' -]+[^\W\d_]*){0,4}\.?$")
_BULLET_RE = re.compile(r"^\s*(?:[-*•–]\s|\d+[.)]\s)")
# Closings that end a mail before the sender's name. "Thanks" and its
# translations are left out on purpose (see the module docstring).
_CLOSING_RE = re.compile(
    r"^(?:"
    r"(?:best|kind|warm|warmest|kindest|many|with kind)?\s*regards|best wishes|all the best|"
    r"best|cheers|sincerely|yours sincerely|yours truly|yours|br|"
    r"(?:mit )?(?:freundlichen|viele|liebe|beste|herzliche|schöne) grüße|"
    r"(?:mit )?(?:freundlichen|viele|liebe|beste|herzliche|schöne) grüsse|"
    r"grüße|gruß|grüsse|gruss|mfg|lg|vg|"
    r"(?:bien )?cordialement|bien à vous|salutations|amitiés|bises|"
    r"(?:un )?saludos?(?: cordiales)?|atentamente|"
    r"(?:cordiali |distinti )?saluti|"
    r"(?:met )?(?:vriendelijke|hartelijke)? ?groet(?:en)?|mvg|"
    r"(?:med )?(?:venlig|vennlig|kærlig|vänlig|vänliga) (?:hilsen|hälsning|hälsningar)|"
    r"hilsen|hälsningar|mvh|kh|vh|"
    r"pozdrawiam|serdecznie pozdrawiam|z poważaniem|z powazaniem|"
    r"s pozdravem|se srdečným pozdravem|"
    r"üdv|udv|üdvözlettel|udvozlettel|tisztelettel|"
    r"(?:ystävällisin )?terveisin|"
    r"atenciosamente|abraços|cumprimentos|"
    r"с уважением|всего доброго"
    r")\s*[,.!]?$",
    re.IGNORECASE,
)
# A mailing-list footer under a rule: "riak-users mailing list / …listinfo…".
_LIST_FOOTER_RE = re.compile(
    r"mailing list|listinfo|mailman|unsubscribe|abbestellen|désabonner", re.IGNORECASE
)
# Gateway banners on top of a mail.
_BANNER_START_RE = re.compile(
    r"^\W{0,3}(?:external|caution|warning|attention|notice|important|achtung|vorsicht|"
    r"you don'?t often get email from)\b",
    re.IGNORECASE,
)
_BANNER_TEXT_RE = re.compile(
    r"originated (?:from )?outside|outside (?:of )?(?:the|your|this|our) "
    r"(?:organi[sz]ation|company|network|firm|institution)|external (?:sender|e-?mail|source)|"
    r"do not click (?:on )?links|learn why this is important|von extern|außerhalb",
    re.IGNORECASE,
)
_BANNER_TAG_RE = re.compile(
    r"^\W{0,2}(?:external|ext|external (?:e-?mail|sender|message))\W{0,2}$", re.IGNORECASE
)
_MAX_BANNER_LINES = 6

# A trailing signature after the quote, or one inside the new text, is at most
# this many non-blank lines; a longer "signature" is really content.
_MAX_SIGNATURE_LINES = 10
# A footer a list server appends below the quote ("____\nfoo mailing list").
_MAX_FOOTER_LINES = 8
# The name (and title, phone) under a closing.
_MAX_NAME_LINES = 3


def _is_blank(line: str) -> bool:
    return not line.strip().strip("\ufeff\u200b\u200e\u200f").strip()


def _is_quoted(line: str) -> bool:
    return line.lstrip(" \ufeff\u200b").startswith(">")


_DIGIT_OR_AT_RE = re.compile(r"[\d@]")


def _has_digit_or_at(text: str) -> bool:
    return _DIGIT_OR_AT_RE.search(text) is not None


def _header_key(line: str) -> tuple[str, str] | None:
    """(key, value) if ``line`` opens with a header name such as "From:", else None."""
    # Header names are short: the colon comes early.
    head = line[:40]
    if len(line) > _MAX_HEADER_LEN or (":" not in head and "：" not in head):
        return None
    for name, pattern in _HEADER_KEY_RES:
        m = pattern.match(line)
        if m:
            return name, m.group(1)
    return None


def _split_inline_attributions(lines: list[str]) -> list[str]:
    """Cut "reply On <date>, X wrote:" in two when a quote follows it."""
    out: list[str] = []
    n = len(lines)
    for i, line in enumerate(lines):
        if (
            len(line) <= _MAX_HEADER_LEN
            and line.rstrip().endswith(":")
            and "On " in line
            and not _is_quoted(line)
        ):
            m = _INLINE_ATTRIBUTION_RE.match(line)
            if m and not m.group(1).lstrip().startswith(("On ", "-")):
                following = next((j for j in range(i + 1, min(n, i + 4)) if lines[j].strip()), None)
                attribution = m.group(2).strip().lstrip("-").strip()
                if (
                    following is not None
                    and _is_quoted(lines[following])
                    and _has_digit_or_at(attribution)
                    and _STRICT_ATTRIBUTIONS[0].match(attribution)
                ):
                    out.append(m.group(1).rstrip("- ").rstrip() or m.group(1))
                    out.append(m.group(2).strip())
                    continue
        out.append(line)
    return out


class _Body:
    """The lines of one body with per-line facts precomputed."""

    def __init__(self, text: str) -> None:
        norm = text.replace("\r\n", "\n").replace("\r", "\n")
        self.lines = _split_inline_attributions(norm.split("\n"))
        self.n = len(self.lines)
        self.quoted = [_is_quoted(line) for line in self.lines]
        self.blank = [_is_blank(line) for line in self.lines]
        for i in range(1, self.n):
            if (
                self.quoted[i]
                and self.lines[i - 1].lstrip().startswith("mailto:")
                and _QUOTED_WROTE_RE.match(self.lines[i][:40])
            ):
                self.quoted[i] = False
        self.keys = [
            _header_key(line) if self.plain(i) else None for i, line in enumerate(self.lines)
        ]
        self._blocks = self._header_blocks()

    def plain(self, i: int) -> bool:
        """Unquoted text."""
        return not self.quoted[i] and not self.blank[i]

    def has_content(self, start: int, end: int) -> bool:
        return any(self.plain(i) for i in range(max(0, start), min(end, self.n)))

    def marker(self, i: int) -> bool:
        return self.lines[i].strip() == QUOTE_MARKER

    def continuation(self, i: int) -> bool:
        """An unquoted line wrapped out of a quote (a re-wrapped long line, a broken link)."""
        if not (0 < i < self.n - 1 and self.plain(i) and self.quoted[i - 1] and self.quoted[i + 1]):
            return False
        above = self.lines[i - 1]
        line = self.lines[i].strip()
        return (
            len(above.strip()) >= 50
            or above.rstrip().endswith("=")  # a quoted-printable soft break left in
            or above.count("(") > above.count(")")
            or line.endswith(">")
            or (line.startswith("(") and "://" in line)
        )

    # -- attribution lines ("On ..., X wrote:") ------------------------

    def attribution_ending_at(self, end: int, floor: int = 0, weak: bool = False) -> int | None:
        """Start index of an attribution whose last line is ``end``, or None.

        ``weak`` also accepts a date and an address without a colon, which is
        only an attribution right above a quote.
        """
        if end < floor or not self.plain(end):
            return None
        last = self.lines[end].rstrip()
        if len(last) > _MAX_HEADER_LEN:
            return None
        if not last.endswith((":", "：")):
            if weak and last.endswith(">") and _WEAK_ATTRIBUTION_RE.match(last.strip()):
                return end
            return None
        tail = last
        if end > floor and self.lines[end - 1].endswith("="):
            tail = self.lines[end - 1][-40:-1] + last  # "w=" / "rote:"
        if not (tail.endswith((">:", ">：", "):", ")：")) or _ATTRIBUTION_VERB_RE.search(tail)):
            return None  # every attribution ends in its verb or the sender's address
        candidates: list[tuple[int, str]] = []
        parts: list[str] = []
        used = 0
        start = end
        while start >= max(floor, end - _MAX_ATTRIBUTION_LINES + 1):
            if self.blank[start]:
                # Polymail puts a blank line before "<" + "mailto:…".
                if not parts or not parts[0].startswith(("<", "mailto:")):
                    break
                start -= 1
                continue
            if self.quoted[start]:
                break
            piece = self.lines[start].strip().strip("\ufeff")
            if piece.endswith("=") and parts:
                # A quoted-printable soft break the sender's client left in
                # ("... w=" / "rote:"): glue the halves back together.
                parts[0] = piece[:-1] + parts[0]
            else:
                parts.insert(0, piece)
            joined = " ".join(parts)
            if len(joined) > _MAX_HEADER_LEN:
                break
            candidates.append((start, joined))
            used += 1
            if used >= 4:
                break
            start -= 1
        for start, joined in candidates:  # shortest first
            if _has_digit_or_at(joined) and (
                _STRICT_ATTRIBUTION_RE.match(joined) or _dated_address(joined)
            ):
                return start
        for start, joined in candidates:
            if "@" in joined and _LOOSE_ATTRIBUTION_RE.match(joined):
                return start
        return None

    def attribution_above(self, k: int, floor: int) -> int | None:
        """Start of the attribution (or separator) just above line ``k``, blank lines between."""
        j = k - 1
        while j >= floor and self.blank[j] and k - j <= _MAX_GAP:
            j -= 1
        if j < floor:
            return None
        start = self.attribution_ending_at(j, floor, weak=True)
        if start is not None:
            return start
        if self.plain(j) and len(self.lines[j]) <= _MAX_HEADER_LEN:
            if _RULE_RE.match(self.lines[j]) or _SEPARATOR_RE.match(self.lines[j]):
                return j
        return None

    # -- unquoted copies of earlier mail -------------------------------

    def _header_blocks(self) -> dict[int, int]:
        """Map the first line of each header block that reads like a mail's to its start.

        The start includes a rule ("____", "-----") just above the block.
        """
        blocks: dict[int, int] = {}
        i = 0
        n = self.n
        while i < n:
            if not (self.keys[i] and self.plain(i)):
                i += 1
                continue
            first = i
            seen: dict[str, str] = {}
            j = i
            last_key = i
            while j < n and j - first < 16 and self.plain(j):
                key = self.keys[j]
                if key:
                    seen.setdefault(key[0], key[1])
                    last_key = j
                elif not (j + 1 < n and self.keys[j + 1] and self.plain(j + 1)):
                    # A wrapped value is allowed only between two header lines.
                    break
                j += 1
            if self._reads_like_headers(seen, self.lines[first]):
                start = first
                k = first - 1
                while k >= 0 and self.blank[k] and first - k <= 3:
                    k -= 1
                if (
                    k >= 0
                    and not self.quoted[k]
                    and _RULE_RE.match(self.lines[k][:_MAX_HEADER_LEN])
                ):
                    start = k
                blocks[first] = start
            i = max(last_key + 1, i + 1)
        return blocks

    @staticmethod
    def _reads_like_headers(seen: dict[str, str], first_line: str) -> bool:
        if "from" in seen:
            others = len(seen) - 1
            if others >= 2:
                return True
            value = seen["from"]
            if others == 1 and "date" in seen:
                return ("@" in value or "mailto" in value) and _has_digit_or_at(seen["date"])
            return others == 0 and bool(_COMPACT_HEADER_RE.search(first_line))
        if "date" in seen and "to" in seen:
            return bool(_TIME_RE.search(seen["date"])) and "@" in seen["to"]
        return False

    def next_nonblank(self, i: int) -> int | None:
        while i < self.n:
            if not self.blank[i]:
                return i
            i += 1
        return None

    def is_forward(self, i: int) -> bool:
        line = self.lines[i]
        return len(line) <= _MAX_HEADER_LEN and bool(_FORWARD_RE.match(line))

    def strong_cut(self, start: int) -> tuple[int, bool] | None:
        """First line at or after ``start`` where an unquoted copy of earlier mail begins.

        Returns (line, is_forward), or None. A forward banner ends the search:
        what follows it is content, not history.

        An attribution followed by a ``>`` block does not count by itself, but
        when unquoted history follows later, the first such attribution below
        some new text is where the history starts: inline answers do not come
        with an unquoted copy of older mail underneath.
        """
        soft: int | None = None
        for i in range(start, self.n):
            if not self.plain(i):
                continue
            line = self.lines[i]
            if len(line) > _MAX_HEADER_LEN:
                continue
            cut: int | None = None
            if self.marker(i):
                following = self.next_nonblank(i + 1)
                if following is not None and self.is_forward(following):
                    continue
                cut = i
            elif _FORWARD_RE.match(line):
                if soft is not None:
                    return soft, False
                return i, True
            elif _SEPARATOR_RE.match(line):
                cut = i
            elif i in self._blocks and self._blocks[i] >= start:
                cut = self._blocks[i]
            attribution = self.attribution_ending_at(i, start) if cut is None else None
            if attribution is not None:
                following = self.next_nonblank(i + 1)
                if following is None or not self.quoted[following]:
                    cut = attribution
                elif soft is None and self.has_content(start, attribution):
                    soft = attribution
            if cut is not None:
                return (soft if soft is not None else cut), False
        return None


def _banner_end(body: _Body) -> int:
    """Index after the gateway banners at the top of the body (0 if there are none)."""
    i = 0
    n = body.n
    while True:
        top = body.next_nonblank(i)
        if top is None or not body.plain(top):
            return i
        end = top
        while end < n and body.plain(end) and end - top < _MAX_BANNER_LINES:
            end += 1
        if end < n and body.plain(end):
            return i  # a long first paragraph is the mail itself
        paragraph = " ".join(body.lines[top:end])
        if len(paragraph) > 2 * _MAX_HEADER_LEN:
            return i
        first = body.lines[top].strip()
        if end - top == 1 and _BANNER_TAG_RE.match(first):
            i = end
            continue
        if _BANNER_START_RE.match(first) and _BANNER_TEXT_RE.search(paragraph):
            i = end
            continue
        return i


def _signature_start(body: _Body, indices: list[int]) -> int | None:
    """Where a signature begins among the new-text lines ``indices`` (in order), or None."""
    nonblank = [i for i in indices if not body.blank[i]]
    if len(nonblank) < 2:
        return None
    # A "-- " delimiter with a short block under it.
    for pos, i in enumerate(nonblank):
        if pos == 0 or body.quoted[i]:
            continue
        stripped = body.lines[i].strip()
        if stripped in ("--", "---", "----") and len(nonblank) - pos - 1 <= _MAX_SIGNATURE_LINES:
            return i
    pos = len(nonblank)
    # A list footer under a rule at the very end.
    for rule_pos in range(len(nonblank) - 2, max(0, len(nonblank) - _MAX_FOOTER_LINES - 1), -1):
        line = body.lines[nonblank[rule_pos]]
        if len(line) <= _MAX_HEADER_LEN and _RULE_RE.match(line):
            tail = " ".join(body.lines[j] for j in nonblank[rule_pos + 1 :])
            if len(tail) <= 2 * _MAX_HEADER_LEN and _LIST_FOOTER_RE.search(tail):
                pos = rule_pos
            break
    # Mobile-client footers (at most three lines: some are bilingual).
    mobile = pos
    while mobile > 0 and pos - mobile < 3:
        line = body.lines[nonblank[mobile - 1]].strip()
        if len(line) > 120 or not body.plain(nonblank[mobile - 1]):
            break
        if not _MOBILE_SIGNATURE_RE.match(line):
            break
        mobile -= 1
    pos = mobile
    # "-Name" / "/Name" as the last line of the text.
    if pos > 1 and _is_dash_name(body.lines[nonblank[pos - 1]], body.lines[nonblank[pos - 2]]):
        pos -= 1
    # A closing and the sender's name (title, phone) under it.
    for back in range(1, _MAX_NAME_LINES + 1):
        c = pos - back - 1
        if c < 1:
            break
        if not _looks_like_name_line(body.lines[nonblank[c + 1]].strip()):
            break
        closing = body.lines[nonblank[c]].strip()
        if len(closing) <= 40 and _CLOSING_RE.match(closing):
            pos = c
            break
    if 1 <= pos < len(nonblank):
        return nonblank[pos]
    return None


def _is_dash_name(line: str, above: str) -> bool:
    """ "-Abhishek Kona", "- roman", "/John" under a sentence: a name, not a list item or a flag."""
    if len(line) > 42 or line.startswith((" ", "\t")) or len(line.split()) > 4:
        return False
    stripped = line.strip()
    if not _DASH_NAME_RE.match(stripped):
        return False
    above = above.rstrip()
    if _BULLET_RE.match(above) or above.endswith((":", "：")):
        return False  # the last item of a list
    # A lower-case word after a dash is a command-line flag ("-verbose")
    # unless the line above ends a sentence ("Hey!" / "-roman").
    name = stripped.lstrip("-–—/ ")
    return name[:1].isupper() or above.endswith((".", "!", "?"))


def _looks_like_name_line(line: str) -> bool:
    words = line.split()
    return (
        0 < len(line) <= 50
        and len(words) <= 6
        and not line.endswith(("?", ":", ",", "!"))
        and not (line.endswith(".") and len(words) >= 3)  # a sentence, not a name
        and not _CLOSING_RE.match(line)
    )


def _join(body: _Body, indices: list[int]) -> str:
    first = next((pos for pos, i in enumerate(indices) if not body.blank[i]), len(indices))
    return "\n".join(body.lines[i] for i in indices[first:]).rstrip()


def _quoted_block_start(body: _Body, e: int, floor: int) -> int:
    """First line of the quoted block that ends just before ``e``."""
    k = e - 1
    while k - 1 >= floor and (body.quoted[k - 1] or body.blank[k - 1] or body.continuation(k - 1)):
        k -= 1
    while k < e and body.blank[k]:
        k += 1
    return k


def split_reply(text: str) -> ReplyParts:
    """Split ``text`` into (new text, quoted history, signature).

    Line endings are normalised to ``\\n``. If nothing but quoted history is
    found, the whole text is the new text.
    """
    body = _Body(text)
    n = body.n
    label = ["new"] * n  # "new", "quoted" or "signature" per line
    for i in range(n):
        if body.marker(i):
            label[i] = "quoted"

    top = _banner_end(body)
    for i in range(top):
        label[i] = "quoted"

    floor = top
    found = body.strong_cut(top)
    forward = found is not None and found[1]
    strong = found[0] if found is not None and not forward else None
    if strong is not None and not body.has_content(top, strong):
        # The mail opens with a header block (a forward, or a client that
        # puts the header on top): that block is the content; look for
        # quoted history only after it.
        block_end = strong
        while block_end < n and not body.blank[block_end]:
            block_end += 1
        floor = block_end
        found = body.strong_cut(floor)
        forward = found is not None and found[1]
        strong = found[0] if found is not None and not forward else None

    if forward:
        # Everything from the forward banner on is the request itself.
        return _parts(body, label)

    end = strong if strong is not None else n
    for i in range(end, n):
        label[i] = "quoted"

    e = end
    while e > floor and body.blank[e - 1]:
        e -= 1

    # What follows the last quoted line: a signature or a list footer?
    last_q = next((i for i in range(e - 1, floor - 1, -1) if body.quoted[i]), None)
    if last_q is not None and last_q < e - 1 and body.has_content(floor, last_q):
        tail = [i for i in range(last_q + 1, e) if not body.blank[i]]
        first = tail[0]
        if body.lines[first].rstrip() == "--" and len(tail) - 1 <= _MAX_SIGNATURE_LINES:
            for i in range(first, e):
                label[i] = "signature"
            e = last_q + 1
        elif _RULE_RE.match(body.lines[first][:_MAX_HEADER_LEN]) and len(tail) <= _MAX_FOOTER_LINES:
            for i in range(last_q + 1, e):
                label[i] = "quoted"
            e = last_q + 1

    if e > floor and body.quoted[e - 1]:
        # A trailing quoted block: cut at its start, or at the attribution above it.
        k = _quoted_block_start(body, e, floor)
        start = body.attribution_above(k, floor)
        if start is not None:
            k = start
        if body.has_content(0, k):
            for i in range(k, e):
                label[i] = "quoted"
    elif e > floor and floor == top:
        top_line = body.next_nonblank(top)
        last_quoted = next((i for i in range(e - 1, floor - 1, -1) if body.quoted[i]), None)
        if top_line is not None and last_quoted is not None:
            _middle_or_bottom(body, label, top_line, last_quoted, e)

    indices = [i for i in range(n) if label[i] == "new"]
    sig = _signature_start(body, indices)
    if sig is not None:
        for i in indices:
            if i >= sig:
                label[i] = "signature"
    return _parts(body, label)


def _middle_or_bottom(body: _Body, label: list[str], first: int, last_q: int, e: int) -> None:
    """Unquoted text after the last quote: the answer below a quote, or lines after a reply.

    Bottom posting (quoted history first, the answer below it) keeps only the
    answer. A reply, then one attributed quote, then a few lines ("Regards,
    Roman") keeps the reply and the lines.
    """
    q_start = _quoted_block_start(body, last_q + 1, first)
    attribution = body.attribution_above(q_start, first)
    block_start = attribution if attribution is not None else q_start
    if not body.has_content(first, block_start):
        # Bottom posting: everything above the answer is history.
        if not any(body.quoted[i] for i in range(first, last_q + 1)):
            return
        for i in range(first, last_q + 1):
            label[i] = "quoted"
        return
    if attribution is None:
        return
    if any(body.quoted[i] for i in range(first, block_start)):
        return  # several quoted blocks: inline answers, all kept
    for i in range(block_start, last_q + 1):
        label[i] = "quoted"


def _parts(body: _Body, label: list[str]) -> ReplyParts:
    n = body.n
    new_idx = [i for i in range(n) if label[i] == "new"]
    new_text = _join(body, new_idx)
    if not new_text.strip():
        # Everything looked like quote or signature: keep it all as the text.
        return ReplyParts(new_text=_join(body, list(range(n))), quoted="", signature="")
    return ReplyParts(
        new_text=new_text,
        quoted=_join(body, [i for i in range(n) if label[i] == "quoted"]),
        signature=_join(body, [i for i in range(n) if label[i] == "signature"]),
    )


def unflow(text: str, delsp: bool = False) -> str:
    """Undo RFC 3676 ``format=flowed`` soft line breaks.

    A line that ends in a space continues on the next line of the same quote
    depth; with ``delsp`` the space itself was added by the sender's client
    and is dropped. Space-stuffing (one leading space) is removed, and the
    signature separator "-- " is never joined. Quote prefixes are kept as
    ``>`` marks. Linear in the size of ``text``; never raises.
    """
    out: list[str] = []
    parts: list[str] = []
    prefix = ""
    depth = -1
    for raw in text.split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        d = len(line) - len(line.lstrip(">"))
        content = line[d:]
        if content.startswith(" "):
            content = content[1:]
        if parts and (d != depth or content == "-- "):
            # A new quote depth, or the signature separator: a hard break.
            out.append(prefix + "".join(parts).rstrip(" "))
            parts = []
        if not parts:
            depth = d
            prefix = ">" * d + (" " if d else "")
        flowed = content.endswith(" ") and content != "-- "
        if flowed and delsp:
            content = content[:-1]
        parts.append(content)
        if not flowed:
            out.append(prefix + "".join(parts))
            parts = []
    if parts:
        out.append(prefix + "".join(parts).rstrip(" "))
    return "\n".join(out)
