"""One scheduler pass in a process of its own, for ``clock.py``: prints a JSON line.

    python bench/clock_pass.py CONFIG NOW [--warm WHEN]

It imports whichever ``maild`` comes first on ``sys.path`` (``clock.py`` runs
it with ``PYTHONPATH`` set to this checkout or to ``--before DIR``), so the
same pass can be timed with two versions of maild on copies of one store.
A warm-up pass at ``--warm`` (default: two minutes before NOW, when nothing
is due and the roster is the same) comes first: imports, the connection
pool, compiled templates and SQL are then ready, as in the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import datetime, timedelta
from pathlib import Path


async def one_pass(config_path: Path, now: datetime, warm: datetime) -> dict[str, object]:
    from maild.config import load_config
    from maild.service.pipeline import Pipeline
    from maild.service.scheduler import Scheduler
    from maild.store.db import make_engine, make_sessionmaker, prepare

    config = load_config(config_path)
    engine = make_engine(config.database.url)
    await prepare(engine)
    sessions = make_sessionmaker(engine)
    scheduler = Scheduler(config, sessions, Pipeline(config, sessions))
    await scheduler.run_pass(warm)
    wall, cpu = time.perf_counter(), time.process_time()
    result = await scheduler.run_pass(now)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await engine.dispose()
    return {"wall": wall, "cpu": cpu, "actions": len(result.actions), "sent": result.sent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("now", type=datetime.fromisoformat)
    parser.add_argument("--warm", type=datetime.fromisoformat)
    args = parser.parse_args()
    warm = args.warm or args.now - timedelta(minutes=2)
    print(json.dumps(asyncio.run(one_pass(args.config, args.now, warm))))


if __name__ == "__main__":
    main()
