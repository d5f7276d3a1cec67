"""maild.service.batch.split_chunks: how many mails share one transaction of maild ingest."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from maild.service.batch import Item, split_chunks

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def mails(*sizes: int) -> list[Item]:
    return [(f"m{i}", b"x" * size, NOW) for i, size in enumerate(sizes)]


@pytest.mark.parametrize(
    ("sizes", "size", "max_bytes", "chunked"),
    [
        ((), 3, 100, []),
        ((1, 1, 1, 1, 1), 2, 100, [2, 2, 1]),  # by count
        ((40, 40, 40, 40), 10, 100, [3, 1]),  # by bytes: the mail that reaches them ends it
        ((500, 1, 1), 10, 100, [1, 2]),  # a mail larger than the budget goes alone
        ((10,) * 6, 3, 25, [3, 3]),  # whichever comes first
    ],
)
def test_split_chunks(
    sizes: tuple[int, ...], size: int, max_bytes: int, chunked: list[int]
) -> None:
    assert [len(c) for c in split_chunks(mails(*sizes), size, max_bytes)] == chunked


def test_an_error_reading_comes_after_the_mails_before_it() -> None:
    def source() -> Iterator[Item]:
        yield from mails(1, 1, 1)
        raise FileNotFoundError("missing.eml")

    got = split_chunks(source(), 2, 100)
    assert len(next(got)) == 2
    assert len(next(got)) == 1
    with pytest.raises(FileNotFoundError):
        next(got)
