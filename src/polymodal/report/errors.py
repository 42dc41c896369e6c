"""The one error a report raises: its message is meant for the user as is."""

from __future__ import annotations

from polymodal.evaluate.results import ResultFileError


class ReportError(ResultFileError):
    """An input cannot be reported on (a bad result file is one such case, hence the base class)."""
