"""The ``maild`` command line. ``main`` is the entry point; imports stay lazy."""

from maild.cli.main import main

__all__ = ["main"]
