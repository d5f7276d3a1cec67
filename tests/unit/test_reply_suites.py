"""maild's reply splitting against what three public reply-parser suites state.

The cases are in :mod:`tests.unit.reply_suite_cases` (our own words and data,
each naming the suite and test it restates). ``test_pass_rate_per_suite``
prints the pass rate per suite and fails when one falls below
:data:`AIM`; ``test_case`` runs each case on its own, with the cases maild
answers differently on purpose marked as expected failures (strict, so a
change in behaviour shows up either way).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest

from maild.core.htmltext import html_to_text
from maild.core.inbound import parse_mail
from maild.core.quotes import split_reply
from tests.conftest import require_corpus
from tests.unit.reply_suite_cases import CASES, Case

AIM = 0.95

# Cases where maild's answer differs from the suite's on purpose.
KNOWN_MISSES: dict[str, str] = {
    "bruteforce: test_signature_words (Thanks!)": (
        "a thanks line is the requester's words (it is what marks a confirmation), "
        "never a signature"
    ),
    "html: test_gmail_quote_blockquote": (
        "a trailing quote with no attribution is still quoted history for maild; talon keeps a "
        "blockquote of class gmail_quote"
    ),
    "html: test_blockquote_disclaimer": (
        "text under a quote without an attribution is kept with the quote (inline answer)"
    ),
    "html: test_reply_separated_by_hr": (
        "a name alone on the last line (no closing, no dash) is kept as the requester's words"
    ),
    "test_zh_name_before_date_quoted_reply": (
        "a rule of em dashes is not a signature delimiter; the name and role under it stay"
    ),
}


def _corpus_dir() -> Path:
    env = os.environ.get("MAILD_CORPUS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


CORPUS = _corpus_dir()


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]


def _words(text: str) -> str:
    lines = [line.lstrip(" >") for line in text.replace("\r\n", "\n").split("\n")]
    return " ".join(" ".join(lines).split())


def _run(case: Case) -> tuple[str, str] | None:
    """(new text, signature) for the case, or None if its corpus file is missing."""
    if case.corpus is not None:
        path = CORPUS / case.corpus
        if not path.is_file():
            return None
        if case.eml:
            mail = parse_mail(path.read_bytes())
            return mail.new_text, mail.signature
        body = path.read_bytes().decode("utf-8", "replace")
    else:
        body = case.text
    if case.html:
        body = html_to_text(body)
    parts = split_reply(body)
    return parts.new_text, parts.signature


def check(case: Case) -> list[str]:
    """What is wrong with maild's answer to ``case`` (empty if nothing)."""
    got = _run(case)
    if got is None:
        return []
    new, sig = got
    problems: list[str] = []
    same = (
        (lambda a, b: _words(a) == _words(b))
        if case.html
        else (lambda a, b: _lines(a) == _lines(b))
    )
    if case.new is not None and not same(new, case.new):
        problems.append(f"new text {new!r} != {case.new!r}")
    if case.reply is not None:
        reply = new + ("\n" + sig if sig else "")
        if not same(reply, case.reply):
            problems.append(f"reply {reply!r} != {case.reply!r}")
    if case.signature is not None and not same(sig, case.signature):
        problems.append(f"signature {sig!r} != {case.signature!r}")
    problems += [f"new text lacks {t!r}" for t in case.contains if t not in new]
    problems += [f"new text has {t!r}" for t in case.absent if t in new]
    problems += [f"signature lacks {t!r}" for t in case.sig_contains if t not in sig]
    problems += [f"signature has {t!r}" for t in case.sig_absent if t in sig]
    return problems


def _available(case: Case) -> bool:
    return case.corpus is None or (CORPUS / case.corpus).is_file()


def test_case_names_are_unique() -> None:
    names = [(c.suite, c.source) for c in CASES]
    assert len(names) == len(set(names))
    assert set(KNOWN_MISSES) <= {c.source for c in CASES}


@pytest.mark.parametrize("case", CASES, ids=[f"{c.suite}: {c.source}" for c in CASES])
def test_case(case: Case) -> None:
    if case.corpus is not None:
        require_corpus()  # skips with the reason, or fails in CI
    if not _available(case):
        pytest.skip(f"{case.corpus} not in the shared corpus")
    problems = check(case)
    if case.source in KNOWN_MISSES:
        assert problems, "passes now: take it out of KNOWN_MISSES"
        pytest.xfail(KNOWN_MISSES[case.source])
    assert not problems, problems


def test_pass_rate_per_suite(capsys: pytest.CaptureFixture[str]) -> None:
    passed: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    misses: list[str] = []
    for case in CASES:
        if not _available(case):
            continue
        total[case.suite] += 1
        problems = check(case)
        if problems:
            misses.append(f"  {case.suite}: {case.source}: {problems[0]}")
        else:
            passed[case.suite] += 1
    with capsys.disabled():
        print()
        for suite in sorted(total):
            rate = passed[suite] / total[suite]
            print(f"{suite:20} {passed[suite]:4d} / {total[suite]:4d}  {rate:6.1%}")
        for line in misses:
            print(line)
    assert total, "no cases"
    for suite in total:
        assert passed[suite] / total[suite] >= AIM, (suite, passed[suite], total[suite])
