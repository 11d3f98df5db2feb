"""Errors the CLI turns into one line on stderr, and the exit codes every command uses.

| code | meaning |
| --- | --- |
| 0 | done |
| 1 | a task or a check failed |
| 2 | unreachable: a host, or the Kubernetes API server |
| 3 | bad input: arguments, usage, inventory, variables, files; nothing was changed |
| 4 | refused by the cluster (forbidden, over quota) or by the environment (a missing tool) |
| 130 | interrupted (Ctrl-C) |
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_UNREACHABLE = 2
EXIT_BAD_INPUT = 3
EXIT_REFUSED = 4
EXIT_INTERRUPTED = 130


class ToolkitError(Exception):
    """A failure the user can act on. The message is one line; no traceback is shown."""

    exit_code = EXIT_REFUSED


class BadInputError(ToolkitError):
    """The user's input (arguments, inventory, variables) is wrong. Nothing was changed."""

    exit_code = EXIT_BAD_INPUT


class UnreachableError(ToolkitError):
    """No answer from a host or from the API server a kubeconfig names: it is down, or the address
    is wrong."""

    exit_code = EXIT_UNREACHABLE


class Interrupted(ToolkitError):
    """Ctrl-C stopped the command; the message says what was undone."""

    exit_code = EXIT_INTERRUPTED


class MissingToolError(ToolkitError):
    """A program the command needs is not installed."""
