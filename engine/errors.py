"""The one base of the engine's errors: ``RunbookError`` knows its exit code and its message lines.

Every error an operator can cause (a broken runbook, no home, a held lock, a damaged run record,
a page that cannot be ingested...) derives from ``RunbookError``. The command line catches it in
one place, the way click treats its own ``ClickException``: the group around every command prints
``lines()`` on stderr and exits with ``exit_code`` (``engine.exitcodes``). A command therefore
lets the library's error go by, and raises one itself for a refusal of its own; it needs no
``try``/``except`` of its own to turn an error into a message and an exit code.

``exit_code`` is a class attribute: each subclass says once which documented code it means
(``HomeError`` 3, ``LockHeld`` 6, ``InputError`` 1...), so the same error ends every command the
same way. Where a command means another code for an error than its class does (the cluster
config's problems are exit 3 "no usable home", not 1), the command raises a subclass carrying
that code, explicitly, rather than the CLI special-casing the class.

``lines()`` is ``["error: <message>"]``; an error that carries several findings gives one line
each (``InputError``, one per ``Problem``). Errors the engine raises and handles itself (a step
that failed inside the runner, a pattern that took too long to match) derive from it too, with
the code their outcome ends in, so that one that escapes still ends as a message, not a traceback.
"""

from __future__ import annotations

from . import exitcodes


class RunbookError(Exception):
    """An error for the operator: the message says what is wrong and what to do; ``exit_code`` ends the command."""

    exit_code: int = exitcodes.PROBLEMS

    def lines(self) -> list[str]:
        """The lines printed on stderr for this error, each ``error: ...``."""
        return [f"error: {self}"]
