"""Subject lines: reply/forward prefixes, ticket tags, cleaning and matching.

Pure functions over ``str``; nothing here raises on odd input.

The prefix grammar covers what mail clients put in front of a subject when
replying or forwarding, in many languages (``Re:``, ``AW:``, ``SV:``, ``回复：``,
``Fwd:``, ``WG:``, ``TR:`` …), with optional counters (``Re[2]:``, ``Re(2):``,
``RE^2:``), the ASCII or the full-width colon, and any chain of them
(``Re: AW: Fwd: x``). Mailing-list tags such as ``[Ppp]`` are kept: only our own
ticket tags (``[support #42]``, ``[#42]``) are removed.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = [
    "FORWARD_PREFIXES",
    "REPLY_PREFIXES",
    "clean_subject",
    "find_ticket_refs",
    "has_forward_prefix",
    "is_reply_subject",
    "normalize_for_match",
    "strip_header_unsafe",
]

#: Prefixes that mark a reply ("answer to"), matched case-insensitively.
REPLY_PREFIXES: tuple[str, ...] = (
    "Re",  # English, and most clients everywhere
    "AW",  # German "Antwort"
    "Antw",  # Dutch/German
    "Antwort",  # German
    "SV",  # Swedish/Norwegian/Danish "Svar"
    "VS",  # Finnish "Vastaus"
    "Vast",  # Finnish
    "Réf",  # French "Référence"
    "Ref",  # French without the accent
    "Rif",  # Italian "Riferimento"
    "RES",  # Portuguese "Resposta"
    "Odp",  # Polish "Odpowiedź"
    "YNT",  # Turkish "Yanıt"
    "ATB",  # Welsh "Ateb"
    "Odg",  # Croatian/Slovenian "Odgovor"
    "Vá",  # Hungarian "Válasz"
    "ΑΠ",  # Greek "Απάντηση"
    "ΣΧΕΤ",  # Greek "Σχετικά"
    "Ответ",  # Russian
    "Отв",  # Russian, abbreviated
    "回复",  # Chinese (simplified)
    "回覆",  # Chinese (traditional)
    "答复",  # Chinese
    "返信",  # Japanese
    "답장",  # Korean
    "השב",  # Hebrew
    "رد",  # Arabic
)

#: Prefixes that mark a forward, matched case-insensitively.
FORWARD_PREFIXES: tuple[str, ...] = (
    "Fwd",
    "Fw",
    "WG",  # German "Weitergeleitet"
    "TR",  # French "Transféré"
    "RV",  # Spanish "Reenviado"
    "Enc",  # Portuguese "Encaminhado"
    "PD",  # Polish "Przekazane dalej"
    "VL",  # Finnish "Välitetty"
    "VB",  # Dutch "Doorgestuurd"
    "Doorst",  # Dutch
    "Továbbítás",  # Hungarian
    "İLT",  # Turkish "İletildi"
    "ΠΡΘ",  # Greek "Προώθηση"
    "Пересл",  # Russian "Переслано"
    "转发",  # Chinese (simplified)
    "轉寄",  # Chinese (traditional)
    "轉發",  # Chinese (traditional)
    "転送",  # Japanese
    "전달",  # Korean
    "הועבר",  # Hebrew
    "توجيه",  # Arabic
)


def _alternation(words: tuple[str, ...]) -> str:
    # Longest first so that "Antwort" is tried before "Antw".
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


_COUNTER = r"(?:\s*\[\s*\d{1,4}\s*\]|\s*\(\s*\d{1,4}\s*\)|\s*\^\s*\d{1,4})?"
_COLON = r"\s*[:：]"
_PREFIX_RE = re.compile(
    rf"(?P<word>{_alternation(REPLY_PREFIXES + FORWARD_PREFIXES)}){_COUNTER}{_COLON}\s*",
    re.IGNORECASE,
)
_REPLY_WORDS = frozenset(w.casefold() for w in REPLY_PREFIXES)
_FORWARD_WORDS = frozenset(w.casefold() for w in FORWARD_PREFIXES)
_BRACKETED_RE = re.compile(r"\[[^\[\]]{0,200}\]\s*")
_WS_RE = re.compile(r"\s+")


@lru_cache(maxsize=64)
def _tag_re(tag: str) -> re.Pattern[str]:
    """``[<tag> #N]`` (tag optional, any case, spaces tolerated) -> group ``n``."""
    words = tag.split()
    tag_part = r"\s*".join(re.escape(w) for w in words)
    optional = rf"(?:{tag_part}\s*)?" if words else ""
    return re.compile(rf"\[\s*{optional}#\s*(?P<n>\d{{1,18}})\s*\]", re.IGNORECASE)


def strip_header_unsafe(text: str) -> str:
    """Replace CR, LF and every other control or line/paragraph separator with a space.

    Use on any untrusted text before it goes into a header we build.
    """
    return _HEADER_UNSAFE.sub(" ", text)


# every character of the categories Cc (C0, DEL, C1: fixed by Unicode's stability
# policy), Zl (U+2028) and Zp (U+2029); CR, LF and TAB are among the C0 controls
_HEADER_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _collapse(text: str) -> str:
    return _WS_RE.sub(" ", text).strip()


def _leading_chain(subject: str, tag: str) -> tuple[list[str], list[str], str]:
    """Split the leading run of prefixes and bracketed tags off ``subject``.

    Returns (prefix words seen, other bracketed tags kept, rest of subject).
    Our own ticket tags in the leading run are dropped.
    """
    tag_re = _tag_re(tag)
    words: list[str] = []
    kept: list[str] = []
    rest = subject.lstrip()
    while rest:
        m = _PREFIX_RE.match(rest)
        if m:
            words.append(m.group("word"))
            rest = rest[m.end() :]
            continue
        t = tag_re.match(rest)
        if t:
            rest = rest[t.end() :].lstrip()
            continue
        b = _BRACKETED_RE.match(rest)
        if b:
            kept.append(b.group(0).strip())
            rest = rest[b.end() :]
            continue
        break
    return words, kept, rest


def is_reply_subject(subject: str) -> bool:
    """True if the subject starts with a reply prefix (``Re:``, ``AW:``, ``SV:`` …).

    Leading bracketed tags are skipped. A subject that carries only forward
    prefixes (``Fwd:``, ``WG:`` …) is not a reply.
    """
    words, _, _ = _leading_chain(strip_header_unsafe(subject), "")
    return any(w.casefold() in _REPLY_WORDS for w in words)


def has_forward_prefix(subject: str) -> bool:
    """True if the leading prefix chain contains a forward prefix (``Fwd:``, ``WG:`` …)."""
    words, _, _ = _leading_chain(strip_header_unsafe(subject), "")
    return any(w.casefold() in _FORWARD_WORDS for w in words)


def find_ticket_refs(subject: str, tag: str) -> tuple[int, ...]:
    """Ticket numbers referenced as ``[<tag> #N]`` or ``[#N]``, in order, without repeats."""
    seen: dict[int, None] = {}
    for m in _tag_re(tag).finditer(subject):
        seen.setdefault(int(m.group("n")), None)
    return tuple(seen)


def _clean_once(subject: str, tag: str) -> str:
    tag_re = _tag_re(tag)
    text = _collapse(strip_header_unsafe(subject))
    # Removing one tag can reveal another ("[#[#1]2]"), so repeat until stable.
    while True:
        stripped = tag_re.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    _, kept, rest = _leading_chain(_collapse(text), tag)
    return _collapse(" ".join([*kept, rest]))


def clean_subject(subject: str, tag: str) -> str:
    """Subject without reply/forward prefixes and without our ticket tags.

    ``Re: [support #42] Re: Hub down`` -> ``Hub down``. Prefixes are removed
    wherever they lead, also behind bracketed tags, which are kept
    (``[Ppp] Re: x`` -> ``[Ppp] x``). Whitespace is collapsed. Idempotent.
    """
    text = subject
    # Stopping at the fixed point is what makes the function idempotent; one
    # or two passes reach it in practice, the bound only guards against a loop.
    for _ in range(32):
        cleaned = _clean_once(text, tag)
        if cleaned == text:
            break
        text = cleaned
    return text


def normalize_for_match(subject: str, tag: str) -> str:
    """Key for comparing subjects (threading rule 4): cleaned, casefolded, single-spaced."""
    return _collapse(clean_subject(subject, tag).casefold())
