"""The commands ``maild demo`` prints must survive being pasted into a shell, whatever the text."""

from __future__ import annotations

import ast
import shlex

from hypothesis import given
from hypothesis import strategies as st

from maild.cli.demo import SUPPORT, python_send


def _sent(command: str) -> tuple[object, ...]:
    """(From, To, Subject, body, host, port) as the pasted command would send them."""
    argv = shlex.split(command)
    assert argv[:2] == ["python3", "-c"] and len(argv) == 3
    tree = ast.parse(argv[2])
    values: list[object] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple):
            values.extend(ast.literal_eval(e) for e in node.value.elts)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("set_content",):
            values.append(ast.literal_eval(node.args[0]))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "SMTP":
            values.extend(ast.literal_eval(a) for a in node.args)
    return tuple(values)


@given(subject=st.text(), body=st.text())
def test_any_subject_and_body_reach_python_unchanged(subject: str, body: str) -> None:
    command = python_send("127.0.0.1", 2525, "alice@demo.localhost", subject, body)
    assert _sent(command) == ("alice@demo.localhost", SUPPORT, subject, body, "127.0.0.1", 2525)


def test_a_steward_reply_reads_plainly() -> None:
    command = python_send("127.0.0.1", 2525, "alice@demo.localhost", "Re: it's [incident]", "Hi")
    assert "'\"'\"'" in command  # the one single quote, escaped for the shell
    assert command.count("'\"'\"'") == 1
