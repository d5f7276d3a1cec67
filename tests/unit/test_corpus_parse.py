"""Every file of the shared third-party corpus goes through the parser unharmed.

The corpus lives outside the repository (``../shared/corpus`` next to it, or
``$MAILD_CORPUS``) and is read in place; nothing is copied. Without it these
tests are skipped.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import fields
from pathlib import Path

import pytest

from maild.core.htmltext import html_to_text
from maild.core.inbound import InboundMail, ParseError, parse_mail
from maild.core.quotes import ReplyParts, split_reply
from tests.conftest import require_corpus


def _corpus_dir() -> Path:
    env = os.environ.get("MAILD_CORPUS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


CORPUS = _corpus_dir()
_META = {"INDEX.tsv", "SOURCES.md"}
# Descriptions in INDEX.tsv that mark a file as something other than a mail.
_NOT_A_MAIL = ("Body-only", "HTML body fragment", "Expected-output", "Fragment of", "NOT RFC 5322")


def _files() -> list[str]:
    if not CORPUS.is_dir():
        return []
    return sorted(
        str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file() and p.name not in _META
    )


def _descriptions() -> dict[str, str]:
    index = CORPUS / "INDEX.tsv"
    if not index.is_file():
        return {}
    with index.open(encoding="utf-8", newline="") as fh:
        return {row["path"]: row["description"] for row in csv.DictReader(fh, delimiter="\t")}


FILES = _files()
DESCRIPTIONS = _descriptions() if FILES else {}


def _require_corpus() -> None:
    require_corpus()  # skips with the reason, or fails in CI


def test_corpus_present() -> None:
    _require_corpus()
    assert FILES


@pytest.mark.parametrize("rel", FILES or ["<no corpus>"])
def test_parse_mail_never_crashes(rel: str) -> None:
    _require_corpus()
    raw = (CORPUS / rel).read_bytes()
    started = time.perf_counter()
    try:
        mail = parse_mail(raw)
    except ParseError:
        description = DESCRIPTIONS.get(rel, "")
        assert description.startswith(_NOT_A_MAIL), f"{rel} is a mail but raised ParseError"
        return
    assert time.perf_counter() - started < 5.0
    assert isinstance(mail, InboundMail)
    assert mail.message_id
    assert mail.raw == raw
    for f in fields(mail):
        value = getattr(mail, f.name)
        if isinstance(value, str):
            value.encode("utf-8")
    for name, value in mail.headers:
        name.encode("utf-8")
        value.encode("utf-8")
    for attachment in mail.attachments:
        assert attachment.filename and "/" not in attachment.filename
        assert attachment.size == len(attachment.content)
    if mail.text.strip():
        assert mail.new_text.strip()


def test_full_messages_parse() -> None:
    """Everything INDEX.tsv describes as a message parses without ParseError."""
    _require_corpus()
    mails = [rel for rel in FILES if not DESCRIPTIONS.get(rel, "").startswith(_NOT_A_MAIL)]
    assert len(mails) > 100
    for rel in mails:
        parse_mail((CORPUS / rel).read_bytes())


@pytest.mark.parametrize(
    "rel",
    [
        rel
        for rel in FILES
        if rel.startswith(("email-reply-parser/", "mail-parser-reply/", "talon/"))
        and not rel.endswith(".eml")
    ]
    or ["<no corpus>"],
)
def test_body_only_files_split(rel: str) -> None:
    _require_corpus()
    text = (CORPUS / rel).read_bytes().decode("utf-8", "replace")
    if rel.endswith(".html"):
        text = html_to_text(text)
    started = time.perf_counter()
    parts = split_reply(text)
    assert time.perf_counter() - started < 1.0
    assert isinstance(parts, ReplyParts)
    if text.strip():
        assert parts.new_text.strip()
