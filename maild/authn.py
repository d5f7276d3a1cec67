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

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import authres
import dkim
from publicsuffixlist import PublicSuffixList

__all__ = [
    "DnsLookup",
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

# DKIM signatures looked at per mail: a mail with hundreds is hostile
_MAX_SIGNATURES = 5


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


def _topmost_ours(headers: Sequence[str], authserv_id: str) -> Any:
    for value in headers:  # in order: the topmost, added last, first
        try:
            parsed = authres.AuthenticationResultsHeader.parse_value(value)
        except Exception:  # noqa: S112 - authres raises many kinds on garbage
            continue
        if str(parsed.authserv_id).lower() == authserv_id.lower():
            return parsed
    return None


def results_verdict(headers: Sequence[str], authserv_id: str | None, from_addr: str) -> Verdict:
    """Read the topmost ``Authentication-Results`` of ours (RFC 8601)."""
    from_domain = _domain_of(from_addr)
    if not authserv_id:
        return Verdict(False, ("commands.authserv_id is not set: Authentication-Results not read",))
    if not from_domain:
        return Verdict(False, ("the mail has no From domain",))
    header = _topmost_ours(headers, authserv_id)
    if header is None:
        return Verdict(False, (f"no Authentication-Results header from {authserv_id}",))
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


def dkim_verdict(raw: bytes, from_addr: str, lookup: DnsLookup, timeout: float) -> Verdict:
    """maild's own DKIM check: a valid signature with ``d=`` aligned to From.

    Blocking (DNS): call it from a worker thread.
    """
    from_domain = _domain_of(from_addr)
    count = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].lower().count(b"dkim-signature:")
    if not count:
        return Verdict(False, ("no DKIM signature",))
    findings: list[str] = []
    for idx in range(min(count, _MAX_SIGNATURES)):
        checker = dkim.DKIM(raw, timeout=int(max(1, timeout)))
        try:
            ok = checker.verify(idx=idx, dnsfunc=lookup)
        except Exception as exc:  # DNS trouble, bad keys, garbage: not authenticated
            findings.append(f"DKIM signature {idx + 1}: {type(exc).__name__}: {exc}")
            continue
        domain = (checker.domain or b"").decode("ascii", "replace").lower()
        weak = _weakness(checker, raw) if ok else None
        if weak is not None:
            findings.append(f"DKIM signature {idx + 1} (d={domain or '?'}): {weak}")
            continue
        if ok and domain and aligned(domain, from_domain):
            return Verdict(True, (f"DKIM signature valid for d={domain}",))
        findings.append(
            f"DKIM signature {idx + 1} (d={domain or '?'}): "
            + ("valid but not aligned with the From domain" if ok else "does not verify")
        )
    return Verdict(False, tuple(findings))


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
    for name in (b"from", b"subject"):
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
