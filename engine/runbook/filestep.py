"""Rendering a ``file`` step: its body is the file's content, checked as YAML or JSON after rendering.

A body is plain text, not a shell command, so values are not shell-quoted. They are written so a
YAML or JSON document stays one: ``true``/``false`` for booleans, JSON for lists and mappings (a
YAML flow collection too), nothing for none. A value that may hold YAML's special characters is
written ``{{ value | tojson }}``, a quoted string in both formats. After rendering, a ``yaml`` or
``json`` file must parse (every document of a YAML stream), or the step fails with the line:
a broken patch is found before it is written, not when Talos reads it. The error never quotes the
content (it may be secret): it says where and what.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any

import yaml
from jinja2 import Template

from ..load.problems import InputError, Problem
from .actions import FileWrite
from .model import Step
from .render import _TEMPLATE_FAILURES, COMPILED_KEPT, Renderer, _environment, _template_line
from .unknown import UnknownValue, contains_unknown

FORMATS = ("yaml", "json", "text")
_EXTENSIONS = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
DEFAULT_MODE = "0600"


def _file_value(value: Any) -> str:
    """How one ``{{ value }}`` appears in a file's content."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)


FILE_ENV = _environment(_file_value)


@functools.lru_cache(maxsize=COMPILED_KEPT)
def compiled_content(source: str) -> Template:
    """A file body compiled; raises on bad syntax."""
    return FILE_ENV.from_string(source)


def format_of(path: str, given: Any = None) -> str:
    """The step's ``format``, else the path's extension's (``.yaml``/``.yml``, ``.json``), else text."""
    if given:
        return str(given)
    suffix = path[path.rfind(".") :].lower() if "." in path.rsplit("/", 1)[-1] else ""
    return _EXTENSIONS.get(suffix, "text")


def file_action(renderer: Renderer, step: Step, local: dict[str, Any], node: str | None) -> FileWrite:
    """The ``FileWrite`` of a file step for one loop item; ``InputError`` when the content does not parse."""
    path = renderer.text(step, str(step.attrs["path"]), local, shell=False, line=step.line, field="attributes.path")
    path = path.strip()
    try:
        content = compiled_content(step.body).render(renderer.scope(step, local))
    except UnknownValue:
        raise
    except _TEMPLATE_FAILURES as exc:
        raise renderer._fail(step, exc, step.body_line + _template_line(sys.exc_info()[2]) - 1, "body") from None
    kind = format_of(path, step.attrs.get("format"))
    if not contains_unknown(content):
        problem = content_problem(content, kind, step, renderer.file)
        if problem is not None:
            raise InputError(problem)
    return FileWrite(
        path,
        content,
        mode=str(step.attrs.get("mode", DEFAULT_MODE)),
        format=kind,
        node=node or None,
        secret=bool(step.attrs.get("secret")),
        timeout=step.attrs.get("timeout"),
    )


def content_problem(content: str, kind: str, step: Step, file: str) -> Problem | None:
    """Why the rendered ``content`` is not the ``kind`` it should be, located; None when it is.

    The line is the body's line when the rendered content has the body's shape (no loop added
    lines), else the body's first line; the message gives the line within the rendered content.
    """
    if kind == "json":
        try:
            json.loads(content)
            return None
        except json.JSONDecodeError as exc:
            line, what = exc.lineno, exc.msg
    elif kind == "yaml":
        try:
            for _ in yaml.safe_load_all(content):
                pass
            return None
        except yaml.MarkedYAMLError as exc:
            mark = exc.context_mark or exc.problem_mark  # where the unclosed bracket, quote or key began
            line = mark.line + 1 if mark is not None else 1
            what = "; ".join(part for part in (exc.problem, exc.context) if part) or "malformed YAML"
        except yaml.YAMLError as exc:
            line, what = 1, type(exc).__name__
    else:
        return None
    same_shape = content.count("\n") == step.body.count("\n")
    at = step.body_line + line - 1 if same_shape else step.body_line
    return Problem(
        file,
        at,
        f"step {step.id}: body",
        f"the rendered content is not valid {kind.upper()} (line {line} of the content: {what}); "
        f"a file with format {kind} must parse (a value holding ':' or quotes is written "
        "{{ value | tojson }})",
    )
