"""``extract``: a jq expression over a step's JSON result.

The procedures this tool replaces are written with jq, so extract uses jq itself (the ``jq``
package) rather than a new language. The runbook's parameters are available as ``$name``.
A single result is returned as is; several results as a list; none as null.
"""

from __future__ import annotations

from typing import Any

import jq

from .model import Step
from .problems import InputError, Problem


def apply_extract(expression: str, data: Any, params: dict[str, Any], file: str, step: Step) -> Any:
    try:
        program = jq.compile(expression, args=dict(params))
    except ValueError as exc:
        raise InputError(Problem(file, step.line, "attributes.extract", f"bad jq expression: {exc}")) from None
    try:
        results = program.input_value(data).all()
    except ValueError as exc:
        raise InputError(Problem(file, step.line, "attributes.extract",
                                 f"jq failed on the step's result: {exc}")) from None
    if not results:
        return None
    return results[0] if len(results) == 1 else results
