"""Errors of the DeepSense loader: the user-facing one and the readers' internal one."""

from __future__ import annotations

from fedmoe.errors import UsageError


class DeepSenseFormatError(UsageError):
    """A DeepSense scenario folder, CSV or referenced file is missing or malformed.

    The message names the file and, for a file referenced by the CSV, the CSV, the
    1-based data row number and the row's ``index`` value.
    """


class FileProblem(Exception):
    """Raised by the file readers; the loader adds the CSV, row and column to the message."""

    kind = "malformed file"


class Unsupported(FileProblem):
    """A well-formed file whose content fedmoe does not know how to use."""

    kind = "unsupported file"
