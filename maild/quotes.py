"""Split a plain-text mail body into new text, quoted history and signature.

Pure and total: :func:`split_reply` never raises and never returns an empty
``new_text`` for a body that has text of its own. The split is a view for
relays and the CLI; the original body is always stored elsewhere, so the three
parts need not add up to the input byte for byte.

What is recognised as the start of quoted history:

- the trailing ``>``-quoted block, together with the attribution line above it
  ("On <date>, <name> wrote:" and its translations, possibly wrapped over up
  to three lines). Inline answers between quoted blocks stay in the new text;
  only the block that ends the mail is cut.
- separators that start an unquoted copy of an earlier mail: Outlook's
  "-----Original Message-----" (and translations), forward banners
  ("-------- Forwarded Message --------", "Begin forwarded message:"), an
  Outlook header block ("From:/Sent:/To:/Subject:" and translations, also in
  ``*bold*``), optionally after a "____"/"----" rule, and an attribution line
  that is followed by unquoted text (Gmail's "inbox" style).
- a mail that *starts* with quoted history and answers below it (bottom
  posting) keeps only the answer as new text.

Signatures: a line exactly "-- " (or "--") followed by a short block, and
mobile-client footers ("Sent from my iPhone", "Get Outlook for iOS",
"Von meinem iPhone gesendet", "Envoyé de mon iPhone" …).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ReplyParts", "split_reply"]


@dataclass(frozen=True, slots=True)
class ReplyParts:
    """The three views of a body. ``new_text`` is never empty for a non-empty body."""

    new_text: str
    quoted: str
    signature: str


# Longest line looked at when matching headers: keeps regex work linear on
# pathological bodies (kilobyte-long lines of DNA, base64 pasted as text).
_MAX_HEADER_LEN = 600

_SEPARATOR_RE = re.compile(
    r"^\s*-{2,}\s*(?:"
    r"original message|ursprüngliche nachricht|message d'origine|mensaje original|"
    r"mensagem original|messaggio originale|oorspronkelijk bericht|originalmeddelande|"
    r"oprindelig meddelelse|opprinnelig melding|alkuperäinen viesti|wiadomość oryginalna|"
    r"původní zpráva|eredeti üzenet|исходное сообщение|原始邮件|原始郵件|元のメッセージ|"
    r"forwarded message|weitergeleitete nachricht|message transféré|mensaje reenviado|"
    r"mensagem encaminhada|messaggio inoltrato|doorgestuurd bericht|"
    r"vidarebefordrat meddelande|videresendt meddelelse|videresendt melding|"
    r"välitetty viesti|wiadomość przekazana dalej|přeposlaná zpráva|"
    r"пересылаемое сообщение|转发的邮件|轉寄的郵件|転送されたメッセージ"
    r")\s*-{2,}\s*$",
    re.IGNORECASE,
)
_BEGIN_FORWARD_RE = re.compile(
    r"^\s*(?:begin forwarded message|anfang der weitergeleiteten nachricht|"
    r"début du message réexpédié|inicio del mensaje reenviado|"
    r"início da mensagem reencaminhada|doorgestuurd bericht|"
    r"vidarebefordrat brev|videresendt brev)\s*[:：]\s*$",
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
    (name, re.compile(rf"^\s*[*_]{{0,2}}(?:{keys})[*_]{{0,2}}\s*[:：]", re.IGNORECASE))
    for name, keys in (
        ("from", _FROM_KEYS),
        ("date", _DATE_KEYS),
        ("to", _TO_KEYS),
        ("cc", _CC_KEYS),
        ("subject", _SUBJECT_KEYS),
    )
)

_ADDR = r"<[^<>]*@[^<>]*>"
_SCANDI_DAYS = r"(?:man|tir|ons|tor|fre|lør|søn|mån|tis|sön|lör)\.?\s"
# Attribution lines whose start is recognisable: the longest match wins.
_STRICT_ATTRIBUTIONS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"^[-\s]*on\s.*\bwrote\s*[:：]$",
        r"^am\s.*\bschrieb\b.*[:：]$",
        r"^le\s.*\ba\s+écrit\s*[:：]$",
        r"^el\s.*\bescribió\s*[:：]$",
        r"^em\s.*\bescreveu\s*[:：]$",
        r"^il\s.*\bha\s+scritto\s*[:：]$",
        r"^op\s.*\bschreef\b.*[:：]$",
        rf"^(?:den\s|{_SCANDI_DAYS}|\d).*\bskrev\b.*[:：]$",
        r"^(?:dnia|w dniu)\s.*\bnapisał(?:\(a\)|a)?\s*[:：]$",
        r"^\d.*\b(?:írta|написал(?:\(а\)|а)?|napsal(?:\(a\)|a)?|kirjoitti|yazdı)\s*[:：]$",
        rf"^\d{{4}}\s*年.*{_ADDR}\s*[:：]$",
        rf"^\d{{1,2}}[./]\d{{1,2}}[./]\d{{2,4}}.*{_ADDR}\s*[:：]$",
        r"^\d.*(?:写道|寫道)\s*[:：]$",
    )
)
# Attribution lines known only by their end: the shortest match wins, so a
# line of the reply above is not swallowed.
_LOOSE_ATTRIBUTIONS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        rf"^.*{_ADDR}\s*(?:wrote|schrieb|a\s+écrit|escribió|escreveu|skrev|schreef|"
        r"napisał(?:\(a\))?|ezt írta|написал(?:\(а\))?)\s*[:：]$",
        r"^.*(?:写道|寫道)\s*[:：]$",
    )
)

_MOBILE_SIGNATURE_RE = re.compile(
    r"^(?:"
    r"sent from my [^,;:!?]{1,40}|"
    r"sent from (?:mail|outlook|yahoo mail|aol mobile mail|gmail|proton ?mail)\b[^,;!?]{0,40}|"
    r"sent (?:with|via) [^,;]{1,80}|"
    r"get outlook for .{1,80}|"
    r"von meinem .{1,40} gesendet|gesendet von meinem .{1,40}|"
    r"envoyé de mon .{1,40}|enviado desde mi .{1,40}|enviado do meu .{1,40}|"
    r"inviato da(?:l mio)? .{1,40}|verzonden (?:met|vanaf) (?:mijn )?.{1,40}|"
    r"skickat från min .{1,40}|sendt fra min .{1,40}|wysłane z .{1,40}|"
    r"odesláno z .{1,40}|发自我的.{1,20}|從我的.{1,20}傳送|.{1,20}から送信"
    r")$",
    re.IGNORECASE,
)

# A trailing signature after the quote, or one inside the new text, is at most
# this many non-blank lines; a longer "signature" is really content.
_MAX_SIGNATURE_LINES = 10
# A footer a list server appends below the quote ("____\nfoo mailing list").
_MAX_FOOTER_LINES = 8


def _is_blank(line: str) -> bool:
    return not line.strip().strip("\ufeff\u200b\u200e\u200f").strip()


def _is_quoted(line: str) -> bool:
    return line.lstrip(" \ufeff").startswith(">")


def _has_digit_or_at(text: str) -> bool:
    return "@" in text or any(ch.isdigit() for ch in text)


class _Body:
    """The lines of one body with per-line facts precomputed."""

    def __init__(self, text: str) -> None:
        norm = text.replace("\r\n", "\n").replace("\r", "\n")
        self.lines = norm.split("\n")
        self.n = len(self.lines)
        self.quoted = [_is_quoted(line) for line in self.lines]
        self.blank = [_is_blank(line) for line in self.lines]

    def plain(self, i: int) -> bool:
        """Unquoted text."""
        return not self.quoted[i] and not self.blank[i]

    def has_content(self, start: int, end: int) -> bool:
        return any(self.plain(i) for i in range(max(0, start), min(end, self.n)))

    def continuation(self, i: int) -> bool:
        """An unquoted line wrapped out of a quote (the client re-wrapped a long ``>`` line)."""
        return (
            0 < i < self.n - 1
            and self.plain(i)
            and self.quoted[i - 1]
            and self.quoted[i + 1]
            and len(self.lines[i - 1].strip()) >= 50
        )

    # -- attribution lines ("On ..., X wrote:") ------------------------

    def attribution_ending_at(self, end: int, floor: int = 0) -> int | None:
        """Start index of an attribution whose last line is ``end``, or None."""
        if end < floor or not self.plain(end):
            return None
        last = self.lines[end].rstrip()
        if not last.endswith((":", "：")):
            return None
        candidates: list[tuple[int, str]] = []
        parts: list[str] = []
        for start in range(end, max(floor, end - 2) - 1, -1):
            if not self.plain(start):
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
        best: int | None = None
        for start, joined in candidates:  # shortest first
            if _has_digit_or_at(joined) and any(p.match(joined) for p in _STRICT_ATTRIBUTIONS):
                best = start  # keep going: the longest strict match wins
        if best is not None:
            return best
        for start, joined in candidates:
            if "@" in joined and any(p.match(joined) for p in _LOOSE_ATTRIBUTIONS):
                return start
        return None

    def attribution_starting_at(self, start: int) -> int | None:
        """End index of an attribution that starts at ``start``, or None."""
        for end in range(start, min(start + 3, self.n)):
            if self.attribution_ending_at(end, start) == start:
                return end
        return None

    # -- unquoted copies of earlier mail -------------------------------

    def header_block_at(self, i: int) -> int | None:
        """Start of an Outlook-style header block whose From line is ``i``, or None."""
        if not self.plain(i) or len(self.lines[i]) > _MAX_HEADER_LEN:
            return None
        if not _HEADER_KEY_RES[0][1].match(self.lines[i]):
            return None
        start = i
        while start - 1 >= 0 and self.plain(start - 1) and self._header_key(start - 1):
            start -= 1
        seen: set[str] = set()
        j = start
        while j < min(self.n, start + 14) and self.plain(j):
            key = self._header_key(j)
            if key:
                seen.add(key)
            j += 1
        if "from" not in seen or len(seen - {"from"}) < 2:
            return None
        # Take a rule ("____", "-----") just above the block with it.
        k = start - 1
        while k >= 0 and self.blank[k] and start - k <= 3:
            k -= 1
        if k >= 0 and not self.quoted[k] and _RULE_RE.match(self.lines[k]):
            return k
        return start

    def _header_key(self, i: int) -> str | None:
        line = self.lines[i]
        if len(line) > _MAX_HEADER_LEN:
            return None
        for name, pattern in _HEADER_KEY_RES:
            if pattern.match(line):
                return name
        return None

    def next_nonblank(self, i: int) -> int | None:
        while i < self.n:
            if not self.blank[i]:
                return i
            i += 1
        return None

    def strong_cut(self, start: int) -> int | None:
        """First line at or after ``start`` where an unquoted copy of earlier mail begins.

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
            if _SEPARATOR_RE.match(line) or _BEGIN_FORWARD_RE.match(line):
                cut = i
            else:
                block = self.header_block_at(i)
                if block is not None and block >= start:
                    cut = block
            attribution = self.attribution_ending_at(i, start) if cut is None else None
            if attribution is not None:
                following = self.next_nonblank(i + 1)
                if following is None or not self.quoted[following]:
                    cut = attribution
                elif soft is None and self.has_content(start, attribution):
                    soft = attribution
            if cut is not None:
                return soft if soft is not None else cut
        return None


def _signature_start(body: _Body, start: int, end: int) -> int | None:
    """Where a signature begins inside the new text ``[start, end)``, or None."""
    for i in range(start, end):
        if body.quoted[i] or body.lines[i].rstrip() != "--":
            continue
        if not body.has_content(start, i):
            continue
        tail = sum(1 for j in range(i + 1, end) if not body.blank[j])
        if tail <= _MAX_SIGNATURE_LINES:
            return i
    nonblank = [i for i in range(start, end) if not body.blank[i]]
    for i in nonblank[-2:]:
        if body.plain(i) and _MOBILE_SIGNATURE_RE.match(body.lines[i].strip()):
            if body.has_content(start, i):
                return i
            return None
    return None


def _join(body: _Body, indices: list[int]) -> str:
    lines = [body.lines[i] for i in indices]
    while lines and _is_blank(lines[0]):
        lines.pop(0)
    return "\n".join(lines).rstrip()


def split_reply(text: str) -> ReplyParts:
    """Split ``text`` into (new text, quoted history, signature).

    Line endings are normalised to ``\\n``. If nothing but quoted history is
    found, the whole text is the new text.
    """
    body = _Body(text)
    n = body.n
    label = ["new"] * n  # "new", "quoted" or "signature" per line

    floor = 0
    strong = body.strong_cut(0)
    if strong is not None and not body.has_content(0, strong):
        # The mail opens with a forwarded/header block (a forward, or a
        # client that puts the header on top): that block is the content;
        # look for quoted history only after it.
        block_end = strong
        while block_end < n and not body.blank[block_end]:
            block_end += 1
        floor = block_end
        strong = body.strong_cut(floor)

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
        elif _RULE_RE.match(body.lines[first]) and len(tail) <= _MAX_FOOTER_LINES:
            for i in range(last_q + 1, e):
                label[i] = "quoted"
            e = last_q + 1

    new_start, new_end = 0, e
    if e > floor and body.quoted[e - 1]:
        # A trailing quoted block: cut at its start, or at the attribution above it.
        k = e - 1
        while k - 1 >= floor and (
            body.quoted[k - 1] or body.blank[k - 1] or body.continuation(k - 1)
        ):
            k -= 1
        while k < e and body.blank[k]:
            k += 1
        j = k - 1
        while j >= floor and body.blank[j] and k - j <= 3:
            j -= 1
        if j >= floor:
            start = body.attribution_ending_at(j, floor)
            if start is not None:
                k = start
            elif body.plain(j) and (
                _RULE_RE.match(body.lines[j]) or _SEPARATOR_RE.match(body.lines[j])
            ):
                k = j
        if body.has_content(0, k):
            new_end = k
            for i in range(k, e):
                label[i] = "quoted"
    elif e > floor and floor == 0:
        # Bottom posting: quoted history first, the answer below it.
        top = body.next_nonblank(0)
        if top is not None and top < e:
            r = top
            header_end = body.attribution_starting_at(top) if body.plain(top) else None
            if header_end is not None:
                r = header_end + 1
            if r < e and (body.quoted[r] or body.blank[r]):
                while r < e and (body.quoted[r] or body.blank[r] or body.continuation(r)):
                    r += 1
                quoted_seen = any(body.quoted[i] for i in range(top, r))
                if quoted_seen and r < e and not any(body.quoted[i] for i in range(r, e)):
                    new_start = r
                    for i in range(0, r):
                        label[i] = "quoted"

    sig = _signature_start(body, new_start, new_end)
    if sig is not None:
        for i in range(sig, new_end):
            label[i] = "signature"

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
