"""``extract``: a jq expression over a step's JSON result.

The procedures this tool replaces are written with jq, so extract uses jq itself (the ``jq``
package) rather than a new language. The runbook's parameters are available as ``$name``, and
``$config``, ``$profile`` and ``$plan`` hold the cluster config, the profile and its plan. A single
result is returned as is; several results as a list; none as null.

A jq ``error("...")`` (or any failure while running the expression) fails the step with that
message: it is how a runbook refuses on what the cluster answered ("VM 1042 does not exist").

A few functions for what PVE answers are defined for every expression (``FUNCTIONS``), so a step
reads like the sentence above it instead of repeating arithmetic: ``has_tags($list)`` (the
object's PVE ``tags`` include every one given: the engine's one membership rule, the one
``engine.load.facts.members`` and the ``tagged`` filter apply, for listings read with ``GET``; a
test holds the two equal), ``human_size`` (bytes as ``8 GiB``, ``512 MiB``) and
``human_duration`` (seconds as ``3d 4h``, ``12m 5s``; 0 and null give null).
"""

from __future__ import annotations

import re
from typing import Any

import jq

from .. import exitcodes
from ..errors import RunbookError
from ..load.problems import InputError, Problem
from .model import Step


class ExtractRefused(RunbookError):
    """The jq expression failed on the step's result (often on purpose, with ``error(...)``)."""

    exit_code = exitcodes.FAILED


#: Defined before every expression, on a line of their own (messages give the expression's own line numbers).
FUNCTIONS = (
    'def has_tags($tags): ((.tags // "") | [splits("[;, ]+")]) as $have | all($tags[]; . as $t | $have | index([$t]) != null); '
    'def human_size: if . == null then null elif . >= 1073741824 then "\\((. / 107374182.4 | round) / 10) GiB" '
    'elif . >= 1048576 then "\\(. / 1048576 | round) MiB" elif . >= 1024 then "\\(. / 1024 | round) KiB" else "\\(.) B" end; '
    "def human_duration: if (. // 0) <= 0 then null else floor | [(. / 86400 | floor), (. % 86400 / 3600 | floor), "
    '(. % 3600 / 60 | floor), (. % 60)] as [$d, $h, $m, $s] | if $d > 0 then "\\($d)d \\($h)h" elif $h > 0 then '
    '"\\($h)h \\($m)m" elif $m > 0 then "\\($m)m \\($s)s" else "\\($s)s" end end;\n'
)


def apply_extract(expression: str, data: Any, variables: dict[str, Any], file: str, step: Step) -> Any:
    """``expression`` applied to ``data`` with ``variables`` as ``$name``; raises ``ExtractRefused``."""
    try:
        program = jq.compile(FUNCTIONS + expression, args=dict(variables))
    except ValueError as exc:
        message = re.sub(r"line (\d+)", lambda m: f"line {int(m[1]) - 1}", str(exc))
        raise InputError(Problem(file, step.line, "attributes.extract", f"bad jq expression: {message}")) from None
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
