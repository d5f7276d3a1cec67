"""A per-process cache of a pure function that keeps only the answers worth keeping.

``functools.lru_cache`` keeps every answer. Some answers must not be kept: a
parse that ran out of stack (another call, from a shallower stack, may not),
or a parsed header whose defects the stdlib adds to each time it is read.
:class:`CacheIf` keeps an answer only if ``keep`` accepts it and hands the
others out for that call alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["CacheIf"]

R = TypeVar("R")


class _NotKept(Exception):
    """Carries an answer out of the cache, which keeps no exceptions."""

    def __init__(self, answer: Any) -> None:
        super().__init__()
        self.answer = answer


class CacheIf(Generic[R]):
    """``fn`` with up to ``maxsize`` of its answers kept (least recently used go first),
    each only if ``keep(answer)``; ``cache_info`` and ``cache_clear`` as lru_cache's."""

    def __init__(self, fn: Callable[..., R], maxsize: int, keep: Callable[[R], bool]) -> None:
        @functools.lru_cache(maxsize=maxsize)
        def cached(*args: Hashable) -> R:
            answer = fn(*args)
            if not keep(answer):
                raise _NotKept(answer)
            return answer

        self._cached = cached
        self.cache_info = cached.cache_info
        self.cache_clear = cached.cache_clear
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Hashable) -> R:
        try:
            return self._cached(*args)
        except _NotKept as not_kept:
            answer: R = not_kept.answer
            return answer
