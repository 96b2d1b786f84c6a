"""Errors of the importers and exporters: each message is one line naming the file and the reason."""

from __future__ import annotations


class InteropError(ValueError):
    """An input cannot be imported or an output cannot be exported (bad layout, shapes, dtypes, ids)."""


class UnsafePickleError(InteropError):
    """A pickle refers to something other than plain containers, strings, numbers and numpy arrays."""
