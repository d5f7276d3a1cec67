"""Is a mail really from the domain in its ``From``? (SPEC section 11)

Two ways to know, either is enough for a steward's mail:

- maild's own DKIM check (``dkimpy``) passes for a signature whose ``d=`` is
  aligned with the ``From`` domain (DMARC relaxed alignment: the same
  organizational domain, from the Public Suffix List);
- the topmost ``Authentication-Results`` header carrying our
  ``commands.authserv_id``, parsed per RFC 8601 (``authres``), reports
  ``dmarc=pass`` for the ``From`` domain, ``dkim=pass`` with an aligned
  ``header.d``, or ``spf=pass`` with an aligned ``smtp.mailfrom``. Text in
  comments and quoted strings is never a result.

DNS is the only I/O: the lookup function is a parameter (dkimpy's
``dnsfunc(name, timeout=…)``), so tests serve keys they generated. A DNS
failure or time-out means "not authenticated": the confirmation path takes
over and nothing is lost.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import authres
import dkim
from dkim.crypto import parse_public_key
from dkim.util import parse_tag_value
from publicsuffixlist import PublicSuffixList

__all__ = [
    "DnsLookup",
    "raw_headers",
    "Verdict",
    "aligned",
    "check",
    "dkim_verdict",
    "dns_txt",
    "org_domain",
    "results_verdict",
]

log = logging.getLogger(__name__)

#: dkimpy's DNS interface: the TXT record for ``name`` (bytes), or None
DnsLookup = Callable[..., bytes | None]

# DKIM signatures verified per mail, among those aligned with From: more is hostile
_MAX_SIGNATURES = 2
# RSA verification is pure Python holding the GIL: a huge key or exponent from
# an attacker's DNS would freeze the daemon, so such keys are refused unread
_MAX_RSA_BITS = 4096
_RSA_EXPONENTS = (3, 65537)
# headers that must stand once: readers show the first, verifiers check the last
_SINGLE = (b"from", b"subject", b"message-id", b"in-reply-to", b"references")


@functools.lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


@functools.lru_cache(maxsize=4096)
def org_domain(domain: str) -> str | None:
    """The organizational domain (``mail.example.co.uk`` -> ``example.co.uk``).

    None for a public suffix itself (``org``, ``co.uk``): nobody owns those.
    """
    domain = domain.strip().strip(".").lower()
    if not domain:
        return None
    return _psl().privatesuffix(domain)


def aligned(domain: str, from_domain: str) -> bool:
    """DMARC relaxed alignment: both have the same organizational domain."""
    ours = org_domain(from_domain)
    return ours is not None and org_domain(domain) == ours


def _domain_of(value: str) -> str:
    return value.rsplit("@", 1)[-1].strip("<>\"' ").lower()


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the mail is authenticated for its From domain, and what was seen.

    ``dmarc_fail`` is True when our trusted header reports ``dmarc=fail`` for
    the From domain: no acknowledgment goes to such a sender.
    """

    authenticated: bool
    findings: tuple[str, ...]
    dmarc_fail: bool = False


_AUTHSERV = re.compile(r"^\s*(?:\((?:[^()\\]|\\.)*\)\s*)*([^\s;()]+)")


def _topmost_ours(headers: Sequence[str], authserv_id: str) -> tuple[bool, Any]:
    """(found, parsed) for the topmost header whose authserv-id is ours.

    The search stops at that header even when it cannot be parsed: the MX
    wrote it, and a header further down may be the sender's forgery.
    """
    for value in headers:  # in order: the topmost, added last, first
        found = _AUTHSERV.match(value)
        if found is None or found.group(1).lower() != authserv_id.lower():
            continue
        try:
            return True, authres.AuthenticationResultsHeader.parse_value(value)
        except Exception:  # authres raises many kinds on garbage
            return True, None
    return False, None


def results_verdict(headers: Sequence[str], authserv_id: str | None, from_addr: str) -> Verdict:
    """Read the topmost ``Authentication-Results`` of ours (RFC 8601)."""
    from_domain = _domain_of(from_addr)
    if not authserv_id:
        return Verdict(False, ("commands.authserv_id is not set: Authentication-Results not read",))
    if not from_domain:
        return Verdict(False, ("the mail has no From domain",))
    found, header = _topmost_ours(headers, authserv_id)
    if not found:
        return Verdict(False, (f"no Authentication-Results header from {authserv_id}",))
    if header is None:
        return Verdict(
            False, (f"the Authentication-Results header of {authserv_id} is unreadable",)
        )
    findings: list[str] = []
    dmarc_fail = False
    for result in header.results:
        method = str(result.method).lower()
        outcome = str(result.result).lower()
        props = {f"{p.type}.{p.name}".lower(): str(p.value) for p in result.properties}
        if method == "dmarc":
            domain = _domain_of(props.get("header.from", ""))
            if domain and aligned(domain, from_domain):
                if outcome == "pass":
                    return Verdict(True, (f"{authserv_id}: dmarc=pass for {from_domain}",))
                if outcome == "fail":
                    dmarc_fail = True
            findings.append(f"dmarc={outcome} ({domain or 'no header.from'})")
        elif method == "dkim":
            domain = _domain_of(props.get("header.d", "") or props.get("header.i", ""))
            if outcome == "pass" and domain and aligned(domain, from_domain):
                return Verdict(True, (f"{authserv_id}: dkim=pass header.d={domain}",))
            findings.append(f"dkim={outcome} ({domain or 'no header.d'})")
        elif method == "spf":
            domain = _domain_of(props.get("smtp.mailfrom", ""))
            if outcome == "pass" and domain and aligned(domain, from_domain):
                return Verdict(True, (f"{authserv_id}: spf=pass smtp.mailfrom={domain}",))
            findings.append(f"spf={outcome} ({domain or 'no smtp.mailfrom'})")
    return Verdict(False, tuple(findings) or ("no usable result",), dmarc_fail)


def _signatures(raw: bytes) -> list[dict[bytes, bytes] | None]:
    """The tags of each DKIM-Signature, top first; None where one cannot be read."""
    out: list[dict[bytes, bytes] | None] = []
    for value in raw_headers(raw, "dkim-signature"):
        try:
            out.append(parse_tag_value(value.encode("utf-8", "surrogateescape")))
        except Exception:
            out.append(None)
    return out


def _guarded(lookup: DnsLookup) -> DnsLookup:
    """``lookup``, refusing RSA keys too costly to verify (a freeze, not a check)."""

    def guarded(name: bytes | str, timeout: float = 5) -> bytes | None:
        txt = lookup(name, timeout=timeout)
        if txt is None:
            return None
        tags = parse_tag_value(txt)
        if tags.get(b"k", b"rsa").strip().lower() != b"rsa":
            return txt
        try:
            key = parse_public_key(base64.b64decode(b"".join(tags.get(b"p", b"").split())))
        except Exception as exc:
            raise ValueError(f"unreadable public key: {exc}") from exc
        bits = int(key["modulus"]).bit_length()
        if bits > _MAX_RSA_BITS or int(key["publicExponent"]) not in _RSA_EXPONENTS:
            raise ValueError(f"RSA key refused ({bits} bits, exponent {key['publicExponent']})")
        return txt

    return guarded


def dkim_verdict(raw: bytes, from_addr: str, lookup: DnsLookup, timeout: float) -> Verdict:
    """maild's own DKIM check: a valid signature with ``d=`` aligned to From.

    Only signatures whose ``d=`` is aligned are verified (at most
    ``_MAX_SIGNATURES``), with keys of a sane size. Never raises. Blocking
    (DNS): call it from a worker thread.
    """
    from_domain = _domain_of(from_addr)
    signatures = _signatures(raw)
    if not signatures:
        return Verdict(False, ("no DKIM signature",))
    findings: list[str] = []
    checked = 0
    guarded = _guarded(lookup)
    for idx, tags in enumerate(signatures):
        domain = (tags or {}).get(b"d", b"").decode("ascii", "replace").strip().lower()
        if tags is None or not domain or not aligned(domain, from_domain):
            findings.append(
                f"DKIM signature {idx + 1} (d={domain or '?'}): not aligned with the From domain"
            )
            continue
        if checked >= _MAX_SIGNATURES:
            findings.append(f"DKIM signature {idx + 1}: not checked (too many signatures)")
            continue
        checked += 1
        try:
            checker = dkim.DKIM(raw, timeout=int(max(1, timeout)))
            ok = checker.verify(idx=idx, dnsfunc=guarded)
        except Exception as exc:  # DNS trouble, bad keys, garbage: not authenticated
            findings.append(f"DKIM signature {idx + 1}: {type(exc).__name__}: {exc}")
            continue
        if not ok:
            findings.append(f"DKIM signature {idx + 1} (d={domain}): does not verify")
            continue
        weak = _weakness(checker, raw)
        if weak is not None:
            findings.append(f"DKIM signature {idx + 1} (d={domain}): {weak}")
            continue
        return Verdict(True, (f"DKIM signature valid for d={domain}",))
    return Verdict(False, tuple(findings))


def raw_headers(raw: bytes, name: str) -> list[str]:
    """The values of header ``name`` as they stand in ``raw``: unfolded, never decoded.

    RFC 2047 decoding must not touch a header whose syntax we check (an
    encoded word in a comment could decode into ``; dmarc=pass``).
    """
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    key = name.lower().encode() + b":"
    values: list[str] = []
    current: list[bytes] | None = None
    for line in head.splitlines():
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            values.append(b" ".join(x.strip() for x in current).decode("utf-8", "surrogateescape"))
            current = None
        if line.lower().startswith(key):
            current = [line[len(key) :]]
    if current is not None:
        values.append(b" ".join(x.strip() for x in current).decode("utf-8", "surrogateescape"))
    return values


def _header_count(raw: bytes, name: bytes) -> int:
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return sum(1 for line in head.splitlines() if line.lower().startswith(name + b":"))


def _weakness(checker: Any, raw: bytes) -> str | None:
    """Why a valid signature still does not vouch for a steward's commands, or None.

    The commands are in the Subject and the relay is the whole body: a
    signature must cover both. Without ``subject`` in ``h=``, or with a
    second Subject or From added above the signed one (readers take the
    first, DKIM checks the last), or with ``l=`` leaving room to append text,
    anyone holding one genuinely signed mail could rewrite what it asks for.
    """
    signed = [h.lower() for h in getattr(checker, "include_headers", ())]
    fields = getattr(checker, "signature_fields", {}) or {}
    if b"l" in fields:
        return "signs only part of the body (l=)"
    for name in (b"from", b"subject"):
        present = _header_count(raw, name)
        if name not in signed:
            return f"does not sign the {name.decode().title()} header"
        if present != 1 or signed.count(name) < present:
            return f"the mail has {present} {name.decode().title()} headers"
    return None


def dns_txt(name: bytes | str, timeout: float = 5) -> bytes | None:
    """The TXT record for ``name`` through dnspython, under ``timeout`` seconds."""
    import dns.exception
    import dns.resolver

    text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
    try:
        answer = dns.resolver.resolve(text, "TXT", lifetime=timeout, raise_on_no_answer=False)
    except (dns.exception.DNSException, OSError) as exc:
        log.info("DNS TXT look-up of %s failed: %s", text, exc)
        return None
    for rdata in answer:
        return b"".join(rdata.strings)
    return None


def check(
    raw: bytes,
    from_addr: str,
    results_headers: Sequence[str],
    authserv_id: str | None,
    lookup: DnsLookup | None,
    timeout: float = 5,
) -> Verdict:
    """Both checks: the trusted header first (no DNS), then our own DKIM check.

    A mail with more than one From or Subject is never authenticated: a
    verifier checks the last signed one, a reader shows the first.
    """
    for name in _SINGLE:
        count = _header_count(raw, name)
        if count > 1:
            return Verdict(False, (f"the mail has {count} {name.decode().title()} headers",))
    header = results_verdict(results_headers, authserv_id, from_addr)
    if header.authenticated:
        return header
    if lookup is None:
        return header
    own = dkim_verdict(raw, from_addr, lookup, timeout)
    if own.authenticated:
        return own
    return Verdict(False, (*header.findings, *own.findings), header.dmarc_fail)
