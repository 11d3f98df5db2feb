"""Errors the CLI turns into one line on stderr and an exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_UNREACHABLE = 2
EXIT_BAD_INPUT = 3
EXIT_ENVIRONMENT = 4


class ToolkitError(Exception):
    """A failure the user can act on. The message is one line; no traceback is shown."""

    exit_code = EXIT_ENVIRONMENT


class BadInputError(ToolkitError):
    """The user's input (arguments, inventory, variables) is wrong. Nothing was changed."""

    exit_code = EXIT_BAD_INPUT


class MissingToolError(ToolkitError):
    """A program the command needs is not installed."""

    exit_code = EXIT_ENVIRONMENT
