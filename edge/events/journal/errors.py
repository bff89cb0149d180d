"""What can go wrong with the journal, as exceptions whose message says why and what to do."""

from __future__ import annotations


class JournalError(Exception):
    """The journal cannot be used; the message says why and what to do."""


class JournalCorrupt(JournalError):
    pass


class JournalUnavailable(JournalError):
    """The file could not be read for a reason outside it (disk full, I/O error): never moved aside."""
