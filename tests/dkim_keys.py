"""A DKIM key the tests generate, a signer, and a resolver that serves its TXT record.

DNS is the only part of DKIM that is not local; maild takes the look-up
function as a parameter (``maild.mail.authn.dns_txt`` by default), so tests serve
the public key of a key pair made here with ``openssl`` instead of asking
the internet.
"""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import dkim


@dataclass
class DkimKey:
    """An RSA key for ``selector._domainkey.domain``."""

    domain: str
    selector: str
    private_pem: bytes
    public_der: bytes
    served: dict[str, bytes] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    @classmethod
    def generate(
        cls, tmp: Path, domain: str, selector: str = "mail", exponent: int = 65537
    ) -> DkimKey:
        key = tmp / f"{domain}-{selector}.pem"
        subprocess.run(
            [
                "openssl", "genpkey", "-algorithm", "RSA", "-out", str(key),
                "-pkeyopt", "rsa_keygen_bits:2048",
                "-pkeyopt", f"rsa_keygen_pubexp:{exponent}",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        der = subprocess.run(
            ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        made = cls(domain, selector, key.read_bytes(), der)
        made.served[f"{selector}._domainkey.{domain}."] = made.txt
        return made

    @property
    def txt(self) -> bytes:
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(self.public_der)

    def sign(self, raw: bytes, domain: str | None = None) -> bytes:
        """``raw`` with a DKIM-Signature of ``d=domain`` (default: the key's) on top."""
        signature = dkim.sign(
            raw,
            self.selector.encode(),
            (domain or self.domain).encode(),
            self.private_pem,
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        )
        return bytes(signature) + raw

    def lookup(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        """dkimpy's ``dnsfunc``: the TXT record, as a resolver would give it."""
        text = name.decode() if isinstance(name, bytes) else name
        self.lookups.append(text)
        return self.served.get(text if text.endswith(".") else text + ".")
