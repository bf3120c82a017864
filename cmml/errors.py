"""Errors that the command line reports as one readable line instead of a traceback."""

from __future__ import annotations


class CmmlError(Exception):
    """Base class of errors meant for the user (bad input, missing data, no network)."""


class DataFormatError(CmmlError):
    """A data file does not have the expected format.

    The message names the file and, where known, the line and field, e.g.
    ``ratings.dat line 17, field 'rating': 'x' is not a number``.
    """

    def __init__(self, path: str, message: str, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field, self.reason = str(path), line, field, message
        where = self.path
        if line is not None:
            where += f" line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


class DatasetNotFoundError(CmmlError):
    """A dataset name or path could not be resolved to files on disk."""


class NetworkUnavailableError(CmmlError):
    """A download was needed but the network is not reachable."""
