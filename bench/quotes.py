"""How long ``split_reply`` takes per mail, and that it stays linear on hostile bodies.

Generates ``--n`` mails with ``generate_mails`` (the ingest benchmark's mix:
70 % of replies quote the previous mail, 40 % carry HTML), parses them with
``parse_mail`` (not timed) and times ``split_reply`` on each body's text,
best of ``--repeat`` runs per mail. Then times hostile bodies at two sizes,
N and 4N lines, and prints the ratio (linear work gives about 4):

- 100,000 lines of ``>`` quote (the issue's 5 MB case), and one 5 MB line;
- lines that each look like an attribution, a header line, a ``-Name``
  signature, or a sign-off, and a mix of attributions and quotes.

Aims (issue 13): median at most 1 ms per mail; the two 5 MB cases under a
second each. Exit status 0 unless a body made ``split_reply`` fail.

    python bench/quotes.py                  # 3,000 mails, about a minute
    python bench/quotes.py --n 500 --repeat 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from common import generate_mails, print_table

from maild.core.inbound import parse_mail
from maild.core.quotes import split_reply


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


HOSTILE: dict[str, Callable[[int], str]] = {
    "'>' + 49 chars per line": lambda n: "\n".join(">" + "a" * 49 for _ in range(n)),
    "one line of 50 chars x N": lambda n: "x" * (50 * n),
    "'From: a@b.c' per line": lambda n: "\n".join("From: a@b.c" for _ in range(n)),
    "'On <date>, Bob <addr> wrote:' per line": lambda n: "\n".join(
        "On Mon, 3 Mar 2025 at 10:12, Bob <b@x.org> wrote:" for _ in range(n)
    ),
    "attribution / quote, alternating": lambda n: "\n".join(
        ("> q" if i % 2 else "On 3 Mar 2025, Bob <b@x.org> wrote:") for i in range(n)
    ),
    "'-Bob' per line": lambda n: "\n".join("-Bob" for _ in range(n)),
    "'Regards,' / 'Bob', alternating": lambda n: "\n".join(
        ("Regards," if i % 2 else "Bob") for i in range(n)
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="generated mails")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs per mail, best kept")
    parser.add_argument("--lines", type=int, default=25_000, help="N for the hostile bodies")
    args = parser.parse_args()

    texts = [parse_mail(m.raw).text for m in generate_mails(args.n, args.seed)]
    per_mail = [_best(lambda t=t: split_reply(t), args.repeat) * 1e6 for t in texts]
    per_mail.sort()
    sizes = sorted(len(t) for t in texts)
    median = statistics.median(per_mail)
    print(f"split_reply over {len(texts)} generated mails (text {sizes[len(sizes) // 2]} chars")
    print(f"median, {sizes[-1]} max), best of {args.repeat} runs per mail, in µs:\n")
    print_table(
        [
            [
                f"{median:.0f}",
                f"{per_mail[int(len(per_mail) * 0.9)]:.0f}",
                f"{per_mail[int(len(per_mail) * 0.99)]:.0f}",
                f"{per_mail[-1]:.0f}",
            ]
        ],
        ["median", "p90", "p99", "max"],
    )

    rows = []
    for name, make in HOSTILE.items():
        small, large = make(args.lines), make(4 * args.lines)
        t_small = _best(lambda s=small: split_reply(s), 2)
        t_large = _best(lambda s=large: split_reply(s), 2)
        rows.append(
            [
                name,
                f"{len(large) / 1e6:.1f}",
                f"{t_small * 1000:.0f}",
                f"{t_large * 1000:.0f}",
                f"{t_large / t_small:.1f}",
            ]
        )
    print(f"\nhostile bodies, N = {args.lines:,} and 4N lines (ms; ratio ~4 is linear):\n")
    print_table(rows, ["body", "MB at 4N", "N", "4N", "4N / N"])

    five_mb_quote = _best(lambda: split_reply("\n".join(">" + "a" * 49 for _ in range(100_000))), 2)
    five_mb_line = _best(lambda: split_reply("x" * 5_000_000), 2)
    print(
        f"\naims: median {median:.0f} µs (<= 1000): {'met' if median <= 1000 else 'MISSED'}; "
        f"100,000 '>' lines {five_mb_quote:.2f} s and one 5 MB line {five_mb_line:.2f} s "
        f"(< 1 s): {'met' if max(five_mb_quote, five_mb_line) < 1 else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
