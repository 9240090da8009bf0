"""``extract``: a jq expression over a step's JSON result.

The procedures this tool replaces are written with jq, so extract uses jq itself (the ``jq``
package) rather than a new language. The runbook's parameters are available as ``$name``, and
``$config``, ``$profile`` and ``$plan`` hold the cluster config, the profile and its plan. A single
result is returned as is; several results as a list; none as null.

A jq ``error("...")`` (or any failure while running the expression) fails the step with that
message: it is how a runbook refuses on what the cluster answered ("VM 1042 does not exist").
"""

from __future__ import annotations

from typing import Any

import jq

from .. import exitcodes
from ..errors import RunbookError
from ..load.problems import InputError, Problem
from .model import Step


class ExtractRefused(RunbookError):
    """The jq expression failed on the step's result (often on purpose, with ``error(...)``)."""

    exit_code = exitcodes.FAILED


def apply_extract(expression: str, data: Any, variables: dict[str, Any], file: str, step: Step) -> Any:
    """``expression`` applied to ``data`` with ``variables`` as ``$name``; raises ``ExtractRefused``."""
    try:
        program = jq.compile(expression, args=dict(variables))
    except ValueError as exc:
        raise InputError(Problem(file, step.line, "attributes.extract", f"bad jq expression: {exc}")) from None
    try:
        results = program.input_value(data).all()
    except ValueError as exc:
        raise ExtractRefused(_jq_message(str(exc))) from None
    if not results:
        return None
    return results[0] if len(results) == 1 else results


def _jq_message(text: str) -> str:
    """jq's error text without its wrapping (``jq: error (at <unknown>): VM 1042 ...``)."""
    for prefix in ("jq: error (at <unknown>): ", "jq: error: "):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text
