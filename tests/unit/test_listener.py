"""Which clients the LMTP/SMTP listener serves (``lmtp.allow``, SPEC section 11, "Listener").

The real listener refusing at connect is in tests/integration/test_lmtp.py;
this is the rule itself, over the address forms a socket reports.
"""

from __future__ import annotations

import ipaddress

import pytest

from maild.mail.lmtp import Network, allowed


def nets(*texts: str) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(text) for text in texts)


@pytest.mark.parametrize(
    ("peer", "allow", "served"),
    [
        ("203.0.113.9", (), True),  # no allow: loopback-only listener, anyone who reaches it
        ("10.1.2.3", ("10.0.0.0/8",), True),
        ("11.1.2.3", ("10.0.0.0/8",), False),
        ("127.0.0.1", ("10.0.0.0/8", "::1/128"), False),
        ("::1", ("10.0.0.0/8", "::1/128"), True),
        ("2001:db8::7", ("2001:db8::/32",), True),
        ("2001:db9::7", ("2001:db8::/32",), False),
        ("::ffff:10.9.9.9", ("10.0.0.0/8",), True),  # IPv4 client of a dual-stack socket
        ("::ffff:10.9.9.9", ("::ffff:0:0/96",), False),  # judged as the IPv4 address it is
        ("fe80::1%eth0", ("fe80::/10",), True),
        ("?", ("0.0.0.0/0",), False),  # no address to judge: refused
        ("", ("0.0.0.0/0", "::/0"), False),
    ],
)
def test_allowed(peer: str, allow: tuple[str, ...], served: bool) -> None:
    assert allowed(peer, nets(*allow)) is served
