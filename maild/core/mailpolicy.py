"""Email policies whose header classes are built once, not once per header, and
whose messages parse each MIME header once, not once per look.

The stdlib's ``HeaderRegistry`` creates a fresh class with ``type()`` for every
header it parses or sets; caching them per header name gives identical results
and takes a fifth off parsing and half off building a message.

``Message.get`` parses a header anew at every call, and walking a MIME tree
asks each part for its Content-Type over and over (``get_content_type``,
``get_content_maintype``, ``get_param``, ``is_attachment``, ``get_body``):
over half of what parsing a mail cost went there (bench/README.md, parse).
The messages of :data:`DEFAULT` keep the parsed header beside the stored
value it came from and hand it out again while that value is still the one
stored; a header set, replaced or deleted since is parsed afresh. Short values
without defects are parsed once a process (:func:`_shared_parse`): they come back
mail after mail. A header read from these messages is not for setting on another.
"""

from __future__ import annotations

from email import policy
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from typing import Any

from maild.core.memo import CacheIf

__all__ = ["DEFAULT", "SMTP", "SMTPUTF8"]


class _CachedRegistry(HeaderRegistry):
    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        key = name.lower()
        found = self._classes.get(key)
        if found is None:
            found = self._classes[key] = super().__getitem__(name)
        return found


#: the headers a MIME walk reads many times a part
_ONCE = frozenset({"content-type", "content-disposition", "content-transfer-encoding"})


class _Message(EmailMessage):
    """An ``EmailMessage`` that parses each of :data:`_ONCE` once (see the module's doc)."""

    def get(self, name: str, failobj: Any = None) -> Any:
        key = name.lower()
        if key not in _ONCE:
            return super().get(name, failobj)
        headers: list[tuple[str, Any]] = self._headers  # type: ignore[attr-defined]
        found = next((pair for pair in headers if pair[0].lower() == key), None)
        if found is None:
            return failobj
        stored_name, stored = found
        parsed: dict[str, tuple[Any, Any, Any]] = self.__dict__.setdefault("_maild_parsed", {})
        hit = parsed.get(key)
        # the cache keeps both alive, so their ids are not reused; a generator
        # flattening with another policy (compat32) reads the header its own way
        if hit is not None and hit[0] is stored and hit[1] is self.policy:
            return hit[2]
        if (
            self.policy is DEFAULT
            and type(stored) is str
            and len(stored) <= _SHARED_LONGEST
            and "boundary" not in stored.lower()  # one mail's own: it never comes back
        ):
            header = _shared_parse(stored_name, stored)
        else:
            header = self.policy.header_fetch_parse(stored_name, stored)
        parsed[key] = (stored, self.policy, header)
        return header


#: "text/plain; charset=utf-8", "quoted-printable": most values come back mail after
#: mail. A parsed header is a function of its name and value, read-only but for its
#: parse tree's defects, which the stdlib adds to as it reads a defective one again:
#: only headers without defects are shared. A parse tree takes up to ~1.2 KiB a
#: character of hostile value, so at most 128 values of 100 characters are kept
#: (~15 MiB at worst, a few hundred KiB for real mail).
_SHARED_LONGEST = 100
_SHARED_ENTRIES = 128


def _parse(name: str, value: str) -> Any:
    return DEFAULT.header_fetch_parse(name, value)


_shared_parse = CacheIf(_parse, _SHARED_ENTRIES, keep=lambda header: not header.defects)


_REGISTRY = _CachedRegistry()
DEFAULT = policy.default.clone(header_factory=_REGISTRY, message_factory=_Message)
SMTP = policy.SMTP.clone(header_factory=_REGISTRY)
SMTPUTF8 = policy.SMTPUTF8.clone(header_factory=_REGISTRY)
