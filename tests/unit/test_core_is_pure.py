"""The core is pure (maild/core/__init__.py): no SQLAlchemy, no asyncio, no clock.

A newcomer can read and test every rule without a database or an event loop,
and the clock is always a parameter, so auto-close and SLA timing are testable
to the minute.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import maild.core

CORE = Path(maild.core.__file__).parent
MODULES = sorted(f"maild.core.{m.name}" for m in pkgutil.iter_modules([str(CORE)]))

_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in ("sqlalchemy", "asyncio") if m in sys.modules)))
"""


def test_importing_the_whole_core_loads_neither_sqlalchemy_nor_asyncio() -> None:
    assert "maild.core.commands" in MODULES and "maild.core.lifecycle" in MODULES
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *MODULES],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout) == []


# calls that read the clock; the time must come in as a parameter
CLOCKS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "localtime"),
    ("time", "gmtime"),
}


def _clock_reads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in CLOCKS:
                found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module == "time":
            found.append(f"{path.name}:{node.lineno}: from time import ...")
    return found


def test_no_core_module_reads_the_clock() -> None:
    reads = [r for path in sorted(CORE.glob("*.py")) for r in _clock_reads(path)]
    assert reads == []


def test_the_clock_scan_would_notice_a_clock_read(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import time\nfrom datetime import datetime\nx = datetime.now()\n")
    assert _clock_reads(probe) == ["probe.py:3: datetime.now"]
