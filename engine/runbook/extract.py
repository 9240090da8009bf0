"""``extract``: a jq expression over a step's JSON result.

The procedures this tool replaces are written with jq, so extract uses jq itself (the ``jq``
package) rather than a new language. The runbook's parameters are available as ``$name``, and
``$config``, ``$profile`` and ``$plan`` hold the cluster config, the profile and its plan; in a
``foreach`` step the loop variable is ``$NAME`` too (the item a listing was read for: its node, its
storage), and ``$steps.X`` is the output of an earlier step X, so a step can join what several
reads returned (the volumes no VM config references) where templates could only loop. A single
result is returned as is; several results as a list; none as null.

A jq ``error("...")`` (or any failure while running the expression) fails the step with that
message: it is how a runbook refuses on what the cluster answered ("VM 1042 does not exist").

A few functions for what PVE answers are defined for every expression (``FUNCTIONS``), so a step
reads like the sentence above it instead of repeating arithmetic: ``tag_list`` (the object's PVE
``tags``, ``a;b;c``, as a list), ``has_tags($list)`` (the
object's PVE ``tags`` include every one given: the engine's one membership rule, the one
``engine.load.facts.members`` and the ``tagged`` filter apply, for listings read with ``GET``; a
test holds the two equal), ``human_size`` (bytes as ``8 GiB``, ``512 MiB``) and
``human_duration`` (seconds as ``3d 4h``, ``12m 5s``; 0 and null give null), ``gib`` (bytes as GiB
with one decimal, for a column of numbers) and ``percent($part; $whole)`` (a whole percent; null when
the whole is 0).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
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
    'def tag_list: [(.tags // "") | splits("[;, ]+") | select(length > 0)]; '
    "def has_tags($tags): tag_list as $have | all($tags[]; . as $t | $have | index([$t]) != null); "
    'def human_size: if . == null then null elif . >= 1073741824 then "\\((. / 107374182.4 | round) / 10) GiB" '
    'elif . >= 1048576 then "\\(. / 1048576 | round) MiB" elif . >= 1024 then "\\(. / 1024 | round) KiB" else "\\(.) B" end; '
    "def gib: ((. // 0) / 1073741824 * 10 | floor) / 10; "
    "def percent($part; $whole): if ($whole // 0) > 0 then (($part // 0) * 100 / $whole | floor) else null end; "
    "def human_duration: if (. // 0) <= 0 then null else floor | [(. / 86400 | floor), (. % 86400 / 3600 | floor), "
    '(. % 3600 / 60 | floor), (. % 60)] as [$d, $h, $m, $s] | if $d > 0 then "\\($d)d \\($h)h" elif $h > 0 then '
    '"\\($h)h \\($m)m" elif $m > 0 then "\\($m)m \\($s)s" else "\\($s)s" end end;\n'
)


#: ``$steps.X`` in an expression: the earlier step outputs it reads (only those are handed to jq).
_STEP_READ = re.compile(r"\$steps\.([A-Za-z_][A-Za-z0-9_]*)")


def extract_scope(expression: str, context: Mapping[str, Any], loop_var: str | None) -> dict[str, Any]:
    """The jq variables beyond the parameters that ``expression`` reads: the loop variable (``$vm``)
    and ``$steps`` with the outputs of the steps it names; only what it names is converted to JSON."""
    variables: dict[str, Any] = {}
    if loop_var and re.search(rf"\${re.escape(loop_var)}\b", expression) and loop_var in context:
        variables[loop_var] = _json_value(context[loop_var])
    ids = set(_STEP_READ.findall(expression))
    if ids:
        steps = context.get("steps")  # a call's view of them is an empty mapping that still answers its ids
        steps = {} if steps is None else steps
        variables["steps"] = {name: _json_value(steps[name]) for name in sorted(ids) if name in steps}
    return variables


def _json_value(value: Any) -> Any:
    """``value`` as plain JSON data (a planned VM's dataclass as its fields, anything else as text)."""

    def plain(item: Any) -> Any:
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            return dataclasses.asdict(item)
        if isinstance(item, Mapping):
            return dict(item)
        return str(item)

    return json.loads(json.dumps(value, default=plain))


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
