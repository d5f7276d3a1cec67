"""The clock at 100,000 tickets: one scheduler pass, and ``maild queue`` as a whole process.

A store is filled with N tickets (default 100,000): 10 % active, of which
``--due`` (default 2,000) have work due now (incident updates); the rest
are closed. Then:

- a scheduler pass with nothing due, beside the same pass on an empty store
  (the baseline): what the indexed "what is due?" question costs;
- a pass with the due tickets, and its cost per ticket handled;
- ``maild queue`` over the 10,000 active tickets as a process, in three forms
  (the table, which shows the 50 most urgent; ``--json``, all of them;
  ``--json --limit 50``), each beside ``maild --help`` (interpreter and import
  time) in the same run.

    python bench/clock.py [--n 100000] [--due 2000] [--url postgresql+asyncpg://…]
    python bench/clock.py --before /tmp/old   # a checkout of an older commit, timed alike
    python bench/clock.py --start-up-only     # only the processes: no scheduler passes

Each pass runs in a process of its own (``bench/clock_pass.py``) after a
warm-up pass, and is timed in wall and CPU time. ``--before DIR`` runs the
same passes with the maild package of DIR on a copy of the same store
(SQLite only), and times ``--help`` and ``queue`` a second time with it
(``python -m maild`` run with DIR as working directory, so it is found
first), alternating with this checkout, for before/after figures measured
in the same run (an older maild without ``--limit`` skips that form). Run
it with ``PYTHONDONTWRITEBYTECODE`` unset, as an installed maild runs:
otherwise every process compiles maild from source.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import Timer, print_table, write_config

from maild.config import load_config
from maild.store.db import make_engine, prepare
from maild.store.models import Ticket

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)

# the forms of `maild queue` timed: what a person types (the table: the 50
# most urgent), what a script reads (every ticket), and a script's short read
QUEUE_FORMS = {"table": (), "json": ("--json",), "json 50": ("--json", "--limit", "50")}


def knows_limit(tree: Path) -> bool:
    """Whether the maild in ``tree`` has ``maild queue --limit``."""
    done = subprocess.run(
        [sys.executable, "-m", "maild", "queue", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tree,
    )
    return "--limit" in done.stdout


def _rows(n: int, active: int, due: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        created = NOW - timedelta(days=200) + timedelta(minutes=i)
        if i < due:
            status, kind, next_action = "open", "incident", NOW - timedelta(minutes=1)
        elif i < active:
            status, kind, next_action = "open", "guidance", NOW + timedelta(days=1, minutes=i)
        else:
            status, kind, next_action = "closed", "guidance", None
        rows.append(
            {
                "subject": f"Request {i}",
                "subject_key": f"request {i}",
                "status": status,
                "type": kind,
                "priority": "normal",
                "community": "pangeo",
                "requester": f"rep{i % 5000}@pangeo.example",
                "cc": [],
                "links": [],
                "time_spent_minutes": 0,
                "created_at": created,
                "updated_at": created,
                "last_activity_at": created,
                "triaged_at": created,
                "first_response_at": created,
                "last_update_at": NOW - timedelta(hours=4) if i < due else None,
                "closed_at": created if status == "closed" else None,
                "message_count": 0,
                "next_action_at": next_action,
                "next_due_at": next_action if status == "open" else None,
                "next_due_kind": "first_response" if status == "open" else None,
            }
        )
    return rows


async def fill(url: str, n: int, active: int, due: int) -> None:
    engine = make_engine(url)
    await prepare(engine)
    rows = _rows(n, active, due)
    async with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            await conn.execute(Ticket.__table__.insert(), rows[start : start + 5000])
    await engine.dispose()


def one_pass(config_path: Path, now: datetime, maild_root: Path) -> dict[str, Any]:
    """A warm scheduler pass at ``now`` in its own process, with the maild of ``maild_root``:
    its wall and CPU seconds and the number of actions."""
    script = Path(__file__).resolve().parent / "clock_pass.py"
    done = subprocess.run(
        [sys.executable, str(script), str(config_path), now.isoformat()],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
        cwd=maild_root,
        env={**os.environ, "PYTHONPATH": str(maild_root)},
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def copy_store(source: Path, root: Path, url: str | None) -> Path:
    """A config for a copy of the SQLite store of the config ``source``, in ``root``."""
    config = config_for(root, url)
    db = source.parent / "maild.db"
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{db}{suffix}").exists():
            shutil.copyfile(f"{db}{suffix}", f"{root / 'maild.db'}{suffix}")
    return config


def process_time(args: list[str], repeat: int = 5, cwd: Path | None = None) -> float:
    return statistics.median(run_timed(args, cwd)[0] for _ in range(repeat))


def run_timed(args: list[str], cwd: Path | None) -> tuple[float, float]:
    """One run of a command: its wall seconds and its CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with Timer() as t:
        subprocess.run(args, check=True, capture_output=True, timeout=300, cwd=cwd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return t.seconds, cpu


def process_times(
    commands: dict[str, tuple[list[str], Path | None]], repeat: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Median wall and CPU time of each command, run in turn ``repeat`` times (a busy spell
    hits all). On a shared machine the CPU time is the steadier of the two."""
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, (args, cwd) in commands.items():
            wall, cpu = run_timed(args, cwd)
            walls[name].append(wall)
            cpus[name].append(cpu)
    return (
        {name: statistics.median(t) for name, t in walls.items()},
        {name: statistics.median(t) for name, t in cpus.items()},
    )


def import_profile(
    args: list[str], cwd: Path | None, top: int = 8
) -> tuple[list[tuple[str, float]], set[str]]:
    """``python -X importtime``: the slowest top-level imports (cumulative ms) and the
    total, and the name of every module imported."""
    done = subprocess.run(
        [args[0], "-X", "importtime", *args[1:]],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    tops: list[tuple[str, float]] = []
    names: set[str] = set()
    for line in done.stderr.splitlines():
        # "import time: self [us] | cumulative | imported package", nested by indent
        if not line.startswith("import time:") or "|" not in line:
            continue
        _self, cumulative, name = line[len("import time:") :].split("|")
        names.add(name.strip())
        if cumulative.strip().isdigit() and not name[1:].startswith(" "):
            tops.append((name.strip(), int(cumulative) / 1000))
    total = sum(ms for _, ms in tops)
    return [*sorted(tops, key=lambda t: -t[1])[:top], ("all imports", total)], names


def config_for(root: Path, url: str | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = write_config(root, root / "maild.db")
    if url:
        text = path.read_text().replace(f'url = "sqlite+aiosqlite:///{root / "maild.db"}"', "")
        text = text.replace("[database]\n", f'[database]\nurl = "{url}"\n')
        path.write_text(text)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=2000)
    parser.add_argument("--url", help="store URL instead of a temporary SQLite file")
    parser.add_argument("--empty-url", help="an empty store of the same kind, for the baseline")
    parser.add_argument("--before", type=Path, help="a checkout of older maild to time alike")
    parser.add_argument(
        "--also",
        type=Path,
        action="append",
        default=[],
        help="another checkout whose scheduler passes to time alike (repeatable)",
    )
    parser.add_argument("--repeat", type=int, default=7, help="process timings, median of (7)")
    parser.add_argument(
        "--start-up-only",
        action="store_true",
        help="time only --help and the queue's processes, no scheduler passes",
    )
    args = parser.parse_args()
    active = args.n // 10
    with tempfile.TemporaryDirectory(prefix="maild-bench-") as tmp:
        root = Path(tmp)
        full = config_for(root / "full", args.url)
        empty = config_for(root / "empty", args.empty_url)
        url = load_config(full).database.url
        with Timer() as fill_time:
            asyncio.run(fill(url, args.n, active, args.due))
        took = fill_time.seconds
        print(f"filled {args.n} tickets ({active} active, {args.due} due) in {took:.1f}s")
        here = Path(__file__).resolve().parent.parent
        versions = {"after": (here, full, empty)}
        others = [("before", args.before)] if args.before else []
        others += [(path.name, path) for path in args.also]
        if others and not args.url:
            # copies of the same stores, made before any pass changed them
            for name, path in others:
                versions[name] = (
                    path.resolve(),
                    copy_store(full, root / f"{name}-full", None),
                    copy_store(empty, root / f"{name}-empty", None),
                )
        passes: dict[str, dict[str, dict[str, Any]]] = {v: {} for v in versions}
        # the versions take turns at each kind of pass
        for kind, config_of, at in (
            ("empty", 2, NOW),
            ("idle", 1, NOW - timedelta(minutes=2)),
            ("busy", 1, NOW),
        ):
            for version, paths in versions.items():
                if args.start_up_only:
                    break
                config_path = paths[config_of]
                passes[version][kind] = one_pass(config_path, at, paths[0])
        maild = [sys.executable, "-m", "maild"]
        queue_args = [*maild, "--config", str(full), "queue"]
        commands: dict[str, tuple[list[str], Path | None]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], None)
        }
        trees = [("", here)] + ([(" before", args.before)] if args.before else [])
        for suffix, tree in trees:
            commands[f"help{suffix}"] = ([*maild, "--help"], tree)
            for form, extra in QUEUE_FORMS.items():
                if not (suffix and "--limit" in extra and not knows_limit(tree)):
                    commands[f"{form}{suffix}"] = ([*queue_args, *extra], tree)
        times, cpu_times = process_times(commands, args.repeat)
        help_time = times["help"]
        profiles = {"queue": import_profile(queue_args, here)}
        help_modules = import_profile([*maild, "--help"], here)[1]
        if args.before:
            profiles["queue before"] = import_profile(queue_args, args.before)

    rows: list[tuple[str, str, str, str, object]] = []
    if passes["after"]:
        empty_pass = passes["after"]["empty"]["wall"]
        idle_pass, busy_pass = passes["after"]["idle"]["wall"], passes["after"]["busy"]["wall"]
        rows += [
            ("pass, empty store (baseline)", f"{empty_pass * 1000:.1f}", "1.00x", "-", 0),
            (
                f"pass, {args.n} tickets, none due",
                f"{idle_pass * 1000:.1f}",
                f"{idle_pass / empty_pass:.2f}x",
                "-",
                passes["after"]["idle"]["actions"],
            ),
            (
                f"pass, {args.n} tickets, {args.due} due",
                f"{busy_pass * 1000:.1f}",
                f"{busy_pass / empty_pass:.2f}x",
                "-",
                passes["after"]["busy"]["actions"],
            ),
        ]

    def process_row(what: str, name: str, baseline: str | None) -> tuple[str, str, str, str, str]:
        if name not in times:
            return (what, "-", "-", "-", "-")
        wall, cpu = times[name], cpu_times[name]
        if baseline is None:
            return (what, f"{wall * 1000:.0f}", "-", f"{cpu * 1000:.0f}", "-")
        return (
            what,
            f"{wall * 1000:.0f}",
            f"{wall / times[baseline]:.2f}x",
            f"{cpu * 1000:.0f} ({cpu / cpu_times[baseline]:.2f}x)",
            "-",
        )

    rows.append(process_row("python -c pass (the floor)", "python -c pass", None))
    for suffix, _tree in trees:
        label = ", before" if suffix else ""
        rows.append(
            process_row(f"maild --help{label} (baseline)", f"help{suffix}", f"help{suffix}")
        )
        for form, extra in QUEUE_FORMS.items():
            what = f"maild queue {' '.join(extra)}".rstrip() + f" ({active} active){label}"
            rows.append(process_row(what, f"{form}{suffix}", f"help{suffix}"))
    print_table(rows, ("what", "ms", "vs baseline", "CPU ms (vs baseline)", "actions"))
    print()
    pass_rows = []
    for version, kinds in passes.items():
        if not kinds:
            continue
        for kind, label in (
            ("empty", "empty store"),
            ("idle", f"{args.n} tickets, none due"),
            ("busy", f"{args.n} tickets, {args.due} due"),
        ):
            p = kinds[kind]
            pass_rows.append(
                (
                    f"{version}: pass, {label}",
                    f"{p['wall'] * 1000:.1f}",
                    f"{p['cpu'] * 1000:.1f}",
                    p["actions"],
                )
            )
        per_wall = (kinds["busy"]["wall"] - kinds["idle"]["wall"]) / args.due * 1000
        per_cpu = (kinds["busy"]["cpu"] - kinds["idle"]["cpu"]) / args.due * 1000
        pass_rows.append(
            (
                f"{version}: per due ticket, beyond the idle pass",
                f"{per_wall:.2f}",
                f"{per_cpu:.2f}",
                "-",
            )
        )
    if pass_rows:
        print_table(pass_rows, ("scheduler pass", "wall ms", "CPU ms", "actions"))
    for name, (profile, modules) in profiles.items():
        print(f"\nimports of `maild {name}` (python -X importtime, cumulative ms, top level):")
        print_table([(what, f"{ms:.1f}") for what, ms in profile], ("module", "ms"))
        heavy = [m for m in ("sqlalchemy", "asyncio", "aiosqlite") if m in modules]
        print(f"of SQLAlchemy, asyncio and aiosqlite it imports: {', '.join(heavy) or 'none'}")
    beyond = sorted(profiles["queue"][1] - help_modules)
    print(f"\n`maild queue` imports beyond --help ({len(beyond)}): {', '.join(beyond)}")
    aims = []
    if passes["after"]:
        per_ticket = (busy_pass - idle_pass) / args.due * 1000
        aims += [
            f"a due ticket <= 1 ms beyond the idle pass ({per_ticket:.2f} ms): "
            + ("met" if per_ticket <= 1 else "NOT met"),
            f"idle pass within 10 ms of the empty baseline "
            f"({(idle_pass - empty_pass) * 1000:.1f} ms): "
            + ("met" if idle_pass - empty_pass <= 0.01 else "NOT met"),
        ]
    aims.append("--help <= 120 ms: " + ("met" if help_time <= 0.12 else "NOT met"))
    for form, extra in QUEUE_FORMS.items():
        ratio = times[form] / help_time
        in_cpu = cpu_times[form] / cpu_times["help"]
        aims.append(
            f"`queue {' '.join(extra)}`".replace(" `", "`")
            + f" <= 1.5x --help ({ratio:.2f}x, {in_cpu:.2f}x in CPU): "
            + ("met" if ratio <= 1.5 else "NOT met")
        )
    print("aims: " + "; ".join(aims))
    return 0


if __name__ == "__main__":
    sys.exit(main())
