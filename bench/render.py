"""Building outgoing mail: maild's own bytes against the stdlib's EmailMessage.

In one process and one run:

1. ingests ``--n`` generated mails (``common.generate_mails``) into a fresh
   SQLite store as ``maild ingest`` does, recording every ``build_message`` call
   the pipeline makes (acks, steward copies, relays, replies);
2. replays the recorded calls through ``maild.mail.render.build_message`` (the
   bytes written directly) and through the former builder, the stdlib's
   ``EmailMessage`` with ``policy.SMTP`` header objects, ``set_content`` and
   ``as_bytes`` (kept as the oracle in ``tests/unit/test_render_outgoing.py``),
   ``--rounds`` times taking turns, and checks that every mail parses back
   the same from both (exit 1 otherwise);
3. ingests the same mails into fresh stores, twice with each builder taking
   turns, and prints the best rates and the ratio;
4. with ``--due D``: a scheduler pass over D due incident updates in a store
   of ``--tickets`` tickets (``clock.py``'s fill), once with each builder: the
   cost per due ticket.

    python bench/render.py                      # N = 2,000
    python bench/render.py --n 500 --profile /tmp/render.prof
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import email
import email.policy
import io
import pstats
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from clock import NOW, config_for, fill, one_pass
from common import generate_mails, print_table, write_config
from ingest import _ingest

from maild.mail import render
from maild.mail.render import OutgoingMail
from tests.unit.test_render_outgoing import stdlib_message, summary

build_message = render.build_message


def stdlib_builder(**fields: Any) -> OutgoingMail:
    """The former build_message, returning what the pipeline stores."""
    utf8 = not all(a.isascii() for a in (*fields["to"], *fields.get("cc", ())))
    return OutgoingMail(stdlib_message(**fields), utf8)


@contextmanager
def builder(fn: Callable[..., OutgoingMail]) -> Iterator[None]:
    """``fn`` in place of ``build_message`` wherever maild imported it."""
    patched = [
        mod
        for name, mod in list(sys.modules.items())
        if name.startswith("maild.")
        and name != render.__name__
        and getattr(mod, "build_message", None) is build_message
    ]
    for mod in patched:
        mod.build_message = fn  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for mod in patched:
            mod.build_message = build_message  # type: ignore[attr-defined]


def parsed(raw: bytes) -> list[object]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return summary(msg)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="mails to ingest (2000)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (1)")
    parser.add_argument("--rounds", type=int, default=5, help="replay rounds per builder (5)")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the new builder's replay")
    parser.add_argument("--due", type=int, default=0, help="scheduler pass with D due (0: none)")
    parser.add_argument("--tickets", type=int, default=2000, help="tickets in that store (2000)")
    args = parser.parse_args(argv)

    mails = generate_mails(args.n, args.seed)
    calls: list[dict[str, Any]] = []

    def recording(**fields: Any) -> OutgoingMail:
        calls.append(fields)
        return build_message(**fields)

    with tempfile.TemporaryDirectory(prefix="maild-bench-") as tmp, builder(recording):
        asyncio.run(_ingest(write_config(Path(tmp), Path(tmp) / "maild.db"), mails, None))
    kinds = Counter(
        ("html " if c["rendered"].html else "")
        + ("attachments " if c.get("attachments") else "")
        + ("non-ASCII" if not all(ch.isascii() for ch in c["rendered"].subject) else "")
        for c in calls
    )
    print(
        f"{len(mails)} mails in, {len(calls)} built by the pipeline: "
        + ", ".join(f"{k.strip() or 'plain'} {v}" for k, v in kinds.most_common())
    )

    different = [
        i
        for i, c in enumerate(calls)
        if parsed(build_message(**c).as_bytes()) != parsed(stdlib_message(**c))
    ]
    if different:
        print(f"FAILED: {len(different)} mails parse back differently", file=sys.stderr)
        return 1

    def replay(fn: Callable[..., Any]) -> float:
        start = time.perf_counter()
        for c in calls:
            fn(**c).as_bytes()
        return time.perf_counter() - start

    replay(build_message)  # warm up: first calls, caches
    replay(stdlib_builder)
    new_times, old_times = [], []
    for _ in range(args.rounds):
        new_times.append(replay(build_message))
        old_times.append(replay(stdlib_builder))
    new, old = min(new_times), min(old_times)
    n = len(calls)
    print()
    print_table(
        [
            ["stdlib EmailMessage + as_bytes (before)", f"{old / n * 1e6:.0f}", "1.00x"],
            ["build_message, bytes written (after)", f"{new / n * 1e6:.0f}", f"{old / new:.2f}x"],
        ],
        ["build one outgoing mail", "µs", "speed-up"],
    )
    print(f"(best of {args.rounds} rounds over the {n} recorded mails; all parse back alike)")

    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        replay(build_message)
        profiler.disable()
        profiler.dump_stats(args.profile)
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
        text = out.getvalue()
        print(text[text.find("   ncalls") :])

    results = {}
    for label, fn in (
        ("after", build_message),
        ("before", stdlib_builder),
        ("after ", build_message),
        ("before ", stdlib_builder),
    ):
        with tempfile.TemporaryDirectory(prefix="maild-bench-") as tmp, builder(fn):
            config = write_config(Path(tmp), Path(tmp) / "maild.db")
            seconds, cpu, outcomes, _, _ = asyncio.run(_ingest(config, mails, None))
        results.setdefault(label.strip(), []).append((seconds, cpu, outcomes))
    first = [(o.action, o.ticket) for o in results["after"][0][2]]
    if any([(o.action, o.ticket) for o in r[2]] != first for rs in results.values() for r in rs):
        print("FAILED: the ingests disagree", file=sys.stderr)
        return 1
    rows = []
    best = {k: (min(r[0] for r in v), min(r[1] for r in v)) for k, v in results.items()}
    for label in ("before", "after"):
        wall, cpu = best[label]
        rows.append(
            [
                f"Pipeline.ingest, {label}",
                f"{wall:.2f}",
                f"{len(mails) / wall:.1f}",
                f"{wall / len(mails) * 1000:.2f}",
                f"{cpu / len(mails) * 1000:.2f}",
                f"{best['before'][0] / wall:.2f}x",
            ]
        )
    print()
    headers = ["ingest, best of 2", "seconds", "mails/s", "ms/mail", "CPU ms/mail", "vs before"]
    print_table(rows, headers)
    if args.due:
        print()
        print_table(scheduler_passes(args.tickets, args.due), ["scheduler pass", "ms", "per due"])
    return 0


def scheduler_passes(tickets: int, due: int) -> list[list[str]]:
    """A pass over ``due`` incident updates with each builder, each in a fresh store,
    twice taking turns (the first pass also warms the templates up); the best of two."""
    times: dict[str, list[float]] = {"before": [], "after": []}
    actions = 0
    for label, fn in [("before", stdlib_builder), ("after", build_message)] * 2:
        with tempfile.TemporaryDirectory(prefix="maild-bench-") as tmp, builder(fn):
            config = config_for(Path(tmp), None)
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'maild.db'}"
            asyncio.run(fill(url, tickets, tickets // 10, due))
            seconds, actions = asyncio.run(one_pass(config, NOW))
        times[label].append(seconds)
    before, after = min(times["before"]), min(times["after"])
    return [
        [f"before ({actions} actions)", f"{before * 1000:.0f}", f"{before / due * 1000:.2f} ms"],
        [f"after ({actions} actions)", f"{after * 1000:.0f}", f"{after / due * 1000:.2f} ms"],
        ["speed-up", "", f"{before / after:.2f}x"],
    ]


if __name__ == "__main__":
    sys.exit(main())
