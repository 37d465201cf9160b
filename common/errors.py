"""User-facing errors: one clear line, a documented exit code, no traceback.

A `UserError` means the user can fix it (bad file, bad config, missing token). Anything else
that escapes a command is a bug and keeps its traceback.
"""
from __future__ import annotations

# Exit codes, documented in README.md ("Exit codes"). 1 is left to Python for real bugs.
EXIT_USAGE = 2  # bad command line or configuration
EXIT_DATA = 3  # bad input data (malformed file, missing columns, nothing left after filtering)
EXIT_HUB = 4  # the Hub: missing token, no write access, missing repo or revision, network
EXIT_ENV = 5  # the machine: disk full, unwritable folder, missing GPU library
EXIT_VERIFY = 6  # a pushed revision failed verification and was not promoted


class UserError(Exception):
    """An error the user can fix; printed as one line `error: <message>`."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(UserError):
    exit_code = EXIT_USAGE


class DataError(UserError):
    exit_code = EXIT_DATA


class HubError(UserError):
    exit_code = EXIT_HUB


class EnvironmentProblem(UserError):
    exit_code = EXIT_ENV


class VerificationError(UserError):
    exit_code = EXIT_VERIFY
