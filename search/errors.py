"""The one error type a user sees: a single line saying what is wrong and where."""

from __future__ import annotations


class UserError(Exception):
    """Bad input the user can fix (config, data, storage); printed as one line, exit status 2."""


class ResultsWriteError(UserError):
    """The results folder refused a write (a full or read-only disk): the trial stops as interrupted and resumes."""
