"""A requester's reply to a resolved ticket: confirmation closes, anything else reopens."""

from __future__ import annotations

import pytest

from maild.core.lifecycle import is_confirmation

CONFIRMATIONS = [
    "Thanks, that works now!",
    "Thank you so much, it's working again.",
    "Perfect, thanks!",
    "Works now, cheers",
    "Confirmed, all good. Thanks!\n\nRosa",
    "Danke, funktioniert jetzt!",
    "Vielen Dank, klappt wieder.",
    "Merci, ça marche !",
    "Gracias, ya funciona.",
    "Dank je wel, het werkt weer.",
    "Tack, det fungerar nu.",
    "谢谢，好了",
    "Спасибо, работает!",
]

NOT_CONFIRMATIONS = [
    "Thanks, but it still fails for the admin users.",
    "Thanks! One more thing: can you also raise the quota?",
    "thanks, however the error is back",
    "Danke, aber es geht immer noch nicht.",
    "Merci, mais ça ne marche toujours pas.",
    "Gracias, pero sigue sin funcionar.",
    "It does not work.",
    "Is it fixed?",
    "",
    "Hello, I have a new request about storage quotas for next semester. " * 3,
]


@pytest.mark.parametrize("text", CONFIRMATIONS)
def test_confirmations_close(text: str) -> None:
    assert is_confirmation(text)


@pytest.mark.parametrize("text", NOT_CONFIRMATIONS)
def test_anything_else_reopens(text: str) -> None:
    assert not is_confirmation(text)
