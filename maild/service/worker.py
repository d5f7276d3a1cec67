"""Set-up of the process that parses mail for ``maild ingest`` (``maild.service.batch``).

Imports nothing heavy: the worker process loads this module, and
``maild.core.intake`` for the parsing itself.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from multiprocessing.connection import wait

__all__ = ["start_worker"]


def start_worker() -> None:
    """Run at the worker's start: Ctrl-C is the parent's, and the parent's end is ours.

    Ctrl-C reaches the whole foreground process group; the parent handles it
    and shuts the worker down. If the parent dies without that (``kill -9``,
    SIGTERM), the worker would wait for work forever: a thread watches the
    parent and ends the worker with it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        wait([sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="maild-parent-watch", daemon=True).start()
