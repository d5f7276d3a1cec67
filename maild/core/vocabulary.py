"""The words a ticket's fields take (SPEC 3), spelled once.

Tags (``core.tags``), the status table (``core.lifecycle``), the config's
type names, the queue's filters and order (``store``) and the CLI's choices
all read them here. Nothing is imported: ``maild --help`` and ``maild queue``
load this module for its tuples alone.
"""

from __future__ import annotations

__all__ = ["ACTIVE_STATUSES", "DONE_STATUSES", "PRIORITIES", "PRIORITY_RANK", "STATUSES", "TYPES"]

STATUSES = ("new", "open", "waiting", "resolved", "closed")
# the statuses a clock runs in, and the ones `maild queue` lists without --all or --status
ACTIVE_STATUSES = ("new", "open", "waiting")
# no clock runs; leaving them reopens the ticket
DONE_STATUSES = ("resolved", "closed")
TYPES = ("incident", "change", "guidance")
PRIORITIES = ("low", "normal", "high", "urgent")
# the queue's order after the due time: most urgent first, unknown as normal
PRIORITY_RANK = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
