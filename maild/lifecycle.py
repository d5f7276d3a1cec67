"""Ticket states and what a requester's reply means for them (SPEC section 4).

Pure. The one judgement call here is :func:`is_confirmation`: a reply to a
resolved ticket that only confirms the fix closes it, while anything that
also reports a remaining problem, asks a question or says more reopens it.
When in doubt it answers False: reopening by mistake costs a steward a
glance, closing by mistake loses a request.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["STATUSES", "is_confirmation"]

STATUSES = ("new", "open", "waiting", "resolved", "closed")

# Thanks / it works, in the languages our communities write in.
_POSITIVE = re.compile(
    r"""
    \b(thanks?|thank\s+you|thx|ty|cheers|great|perfect|excellent|awesome|wonderful|
       (it|that|this|all|everything)('?s|\s+is)?\s+(now\s+)?(works?|working|fixed|solved|
       resolved|fine|good|ok(ay)?|back)|
       works?\s+(now|again|fine|great|perfectly)|(is|are)\s+(now\s+)?(working|fixed|back)|
       problem\s+solved|all\s+good|looks\s+good|confirmed?|
       danke|vielen\s+dank|funktioniert(\s+(jetzt|wieder))?|klappt(\s+(jetzt|wieder))?|
       merci|ça\s+marche|ca\s+marche|fonctionne|
       gracias|funciona|
       grazie|
       dank\s*(je|u)(\s+wel)?|werkt(\s+weer)?|
       tack|fungerar|virker|takk|kiitos|
       obrigad[oa]|
       спасибо|работает|
       谢谢|感谢|好了|可以了|ありがとう)\b
    """,
    re.IGNORECASE | re.VERBOSE,
)

# A remaining problem, a doubt or a new request.
_NEGATIVE = re.compile(
    r"""
    \b(but|however|still|yet|though|although|except|unfortunately|again\s+(down|failing|broken)|
       not|no|never|doesn'?t|don'?t|isn'?t|aren'?t|won'?t|can'?t|cannot|couldn'?t|didn'?t|
       fail(s|ed|ing|ure)?|error|errors|broken|issue|issues|problem|problems|bug|crash(es|ed)?|
       wrong|slow|timeout|missing|another|also|one\s+more|
       aber|noch|nicht|kein|leider|fehler|immer\s+noch|
       mais|toujours|pas|encore|erreur|
       pero|todavía|todavia|sigue|error|
       ma|ancora|
       maar|nog|niet|
       men|fortfarande|inte|ikke|
       но|ещё|еще|не|
       但|还是|仍然|不)\b
    """,
    re.IGNORECASE | re.VERBOSE,
)

_MAX_WORDS = 40


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    return text.replace("\u2019", "'")


def is_confirmation(new_text: str) -> bool:
    """True if a reply's new text (quotes and signature already removed) only confirms a fix."""
    text = _normalise(new_text).strip()
    if not text:
        return False
    if "?" in text:
        return False
    if len(text.split()) > _MAX_WORDS:
        return False
    if _NEGATIVE.search(text):
        return False
    return bool(_POSITIVE.search(text))
