"""A session's journal: what was submitted and how it ended, in one SQLite
file, so that a program run again with the same journal skips the tasks
that already ended DONE (see docs/durability.md)."""

from rhapsody.journal.session_journal import Journal

__all__ = ["Journal"]
