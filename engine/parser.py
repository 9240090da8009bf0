"""Markdown runbook -> ``Runbook``.

CommonMark is parsed by markdown-it-py, so every fence form (backticks or tildes, longer fences,
fences nested in lists and block quotes) is recognised exactly as a markdown renderer would show
it, and every token carries its source lines. A fence whose language word is a step kind is a step;
its attributes are the YAML flow mapping after that word, checked strictly against the kind's
schema. Nothing here renders templates: bodies are kept raw, with their line numbers, for later.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import frontmatter
from jsonschema import Draft202012Validator
from markdown_it import MarkdownIt
from markdown_it.token import Token

from . import schemas
from .model import STEP_KINDS, Parameter, Runbook, Step
from .problems import InputError, Problem
from .yamlsource import YamlDoc, load_yaml

API_METHODS = ("GET", "POST", "PUT", "DELETE")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
_KIND_GLUED = re.compile(rf"^({'|'.join(STEP_KINDS)})\{{")
_REQUEST_LINE = re.compile(r"^(?P<method>[A-Za-z]+)\s+(?P<target>\S.*?)\s*$")
_MARKDOWN = MarkdownIt("commonmark")
_FRONTMATTER = frontmatter.YAMLHandler()


def parse_runbook_file(path: Path, shown_as: str) -> Runbook:
    """Read and parse a runbook file; its name must equal the file name without ``.md``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(Problem(shown_as, None, None, "file not found")) from None
    except UnicodeDecodeError as exc:
        raise InputError(Problem(shown_as, None, None, f"not UTF-8 text (byte {exc.start})")) from None
    except OSError as exc:
        raise InputError(Problem(shown_as, None, None, f"cannot read: {exc.strerror}")) from None
    return parse_runbook(text, shown_as, expected_name=path.name.removesuffix(".md"))


def parse_runbook(text: str, file: str, expected_name: str | None = None) -> Runbook:
    """Parse runbook ``text``; raises ``InputError`` listing every problem found."""
    text = text.removeprefix("\ufeff")
    problems: list[Problem] = []
    meta, fm_doc, body, body_first_line = _split_frontmatter(text, file)
    problems += fm_doc.problems
    problems += schemas.check(fm_doc, "runbook-frontmatter.schema.json")
    name = meta.get("name") if isinstance(meta.get("name"), str) else None
    if expected_name is not None and name is not None and name != expected_name:
        problems.append(fm_doc.problem(("name",), f"name '{name}' does not match the file name "
                                                   f"'{expected_name}.md'; rename one so they agree"))
    parameters = _parameters(meta, fm_doc, problems)
    steps = _steps(body, body_first_line, file, problems)
    if problems:
        raise InputError(sorted(set(problems), key=lambda p: (p.line or 0, p.field or "", p.message)))
    return Runbook(name=str(name), description=str(meta.get("description", "")), file=file,
                   parameters=parameters, requires=tuple(meta.get("requires") or ()), steps=steps,
                   markdown=body, body_first_line=body_first_line, frontmatter=meta)


def _split_frontmatter(text: str, file: str) -> tuple[dict[str, Any], YamlDoc, str, int]:
    """Frontmatter mapping, its YamlDoc, the markdown body and the file line of the body's line 0."""
    opening = _FRONTMATTER.FM_BOUNDARY.match(text)
    if opening is None:
        raise InputError(Problem(file, 1, None, "no YAML frontmatter: a runbook starts with a line '---', "
                                                "then name, description and parameters, then '---'"))
    try:
        fm_text, body = _FRONTMATTER.split(text)
    except ValueError:
        raise InputError(Problem(file, 1, None, "the frontmatter is never closed: add a line '---' "
                                                "after its last field")) from None
    fm_first_line = text[:opening.end()].count("\n") + 1
    doc = load_yaml(fm_text, file, first_line=fm_first_line)
    if not isinstance(doc.data, dict):
        raise InputError(Problem(file, fm_first_line, None, "the frontmatter must be a YAML mapping "
                                                            "(name: ..., description: ...)"))
    body_first_line = text[:len(text) - len(body)].count("\n") + 1
    return doc.data, doc, body, body_first_line


def _parameters(meta: dict[str, Any], doc: YamlDoc, problems: list[Problem]) -> tuple[Parameter, ...]:
    specs = meta.get("parameters") or {}
    if not isinstance(specs, dict):
        return ()
    out = []
    for pname, spec in specs.items():
        if not isinstance(spec, dict):
            continue  # the schema check already reported it
        line = doc.line_of(("parameters", pname))
        if "default" in spec and spec.get("type") in ("string", "integer", "number", "boolean", "array"):
            for message in parameter_value_errors(spec, spec["default"]):
                problems.append(doc.problem(("parameters", pname, "default"), f"default {message}"))
        out.append(Parameter(name=str(pname), type=str(spec.get("type")), description=str(spec.get("description", "")),
                             spec=dict(spec), line=line))
    return tuple(out)


def parameter_value_errors(spec: dict[str, Any], value: Any) -> list[str]:
    """Why ``value`` does not satisfy a parameter spec (empty when it does)."""
    schema = {k: v for k, v in spec.items() if k not in ("description", "default")}
    try:
        check = Draft202012Validator(schema)
        return [schemas.explain(err, ())[1] for err in check.iter_errors(value)]
    except Exception as exc:  # a broken pattern in the spec is reported by the frontmatter schema
        return [f"cannot be checked: {exc}"]


def _steps(body: str, first_line: int, file: str, problems: list[Problem]) -> tuple[Step, ...]:
    tokens = _MARKDOWN.parse(body)
    drafts: list[dict[str, Any]] = []
    heading: str | None = None
    for index, token in enumerate(tokens):
        if token.type == "heading_open":
            heading = _inline_text(tokens[index + 1])
        elif token.type == "fence":
            draft = _fence_step(token, heading, first_line, file, problems)
            if draft is not None:
                drafts.append(draft)
    return _assign_ids(drafts, file, problems)


def _inline_text(token: Token) -> str:
    if token.children:
        return "".join(child.content for child in token.children if child.type in ("text", "code_inline"))
    return token.content


def _fence_step(token: Token, heading: str | None, first_line: int, file: str,
                problems: list[Problem]) -> dict[str, Any] | None:
    line = first_line + (token.map[0] if token.map else 0)
    info = token.info.strip()
    word, _, rest = info.partition(" ")
    rest = rest.strip()
    if _KIND_GLUED.match(info):
        problems.append(Problem(file, line, None, f"put a space between the step kind and its attributes: "
                                                  f"'{word.split('{')[0]} {{...}}'"))
        return None
    if word not in STEP_KINDS:
        if rest.startswith("{"):
            problems.append(Problem(file, line, None, f"unknown step kind '{word}' (a step is a fence of kind "
                                                      f"{', '.join(STEP_KINDS)}; any other fence is prose)"))
        return None
    attrs: dict[str, Any] = {}
    if rest:
        attrs = _attributes(rest, word, line, file, problems)
    body = token.content
    _check_body(word, body, line + 1, file, problems)
    return {"kind": word, "attrs": attrs, "body": body, "line": line, "title": heading}


def _attributes(text: str, kind: str, line: int, file: str, problems: list[Problem]) -> dict[str, Any]:
    if not text.startswith("{"):
        problems.append(Problem(file, line, None, f"step attributes must be one YAML flow mapping in braces "
                                                  f"after the kind, e.g. '{kind} {{id: clone}}' (got {text!r})"))
        return {}
    try:
        doc = load_yaml(text, file, first_line=line)
    except InputError as exc:
        problems.extend(Problem(p.file, line, "attributes", p.message) for p in exc.problems)
        return {}
    problems.extend(Problem(p.file, line, f"attributes.{p.field}" if p.field else "attributes", p.message)
                    for p in doc.problems)
    if not isinstance(doc.data, dict):
        problems.append(Problem(file, line, "attributes", f"step attributes must be a mapping like "
                                                          f"{{id: clone}} (got {text!r})"))
        return {}
    for problem in schemas.check(doc, f"steps/{kind}.schema.json"):
        field = f"attributes.{problem.field}" if problem.field else "attributes"
        problems.append(Problem(file, line, field, problem.message))
    return doc.data


def _check_body(kind: str, body: str, line: int, file: str, problems: list[Problem]) -> None:
    lines = body.splitlines()
    first = next((i for i, text in enumerate(lines) if text.strip() and not text.lstrip().startswith("#")), None)
    if first is None:
        problems.append(Problem(file, line, "body", f"the {kind} step is empty"))
        return
    if kind not in ("api", "http"):
        return
    match = _REQUEST_LINE.match(lines[first].strip())
    where = line + first
    methods = API_METHODS if kind == "api" else HTTP_METHODS
    if not match or match["method"].upper() not in methods:
        example = "POST /nodes/{{ node }}/qemu/{{ vmid }}/status/start" if kind == "api" else \
            "POST https://factory.talos.dev/schematics"
        problems.append(Problem(file, where, "body", f"the first line of an {kind} step must be "
                                                     f"'METHOD {'/path' if kind == 'api' else 'URL'}' with METHOD one of "
                                                     f"{', '.join(methods)}, e.g. '{example}'"))
        return
    if match["method"] != match["method"].upper():
        problems.append(Problem(file, where, "body", f"write the method in capitals: {match['method'].upper()}"))
    target = match["target"]
    if kind == "api":
        if not target.startswith("/"):
            problems.append(Problem(file, where, "body", f"the API path must start with '/' (got {target!r})"))
        elif target.startswith("/api2/"):
            problems.append(Problem(file, where, "body", "write the API path relative to /api2/json, "
                                                         f"e.g. '{target.split('/api2/json', 1)[-1] or '/'}'"))
    elif not (target.startswith(("https://", "http://")) or target.startswith("{{")):
        problems.append(Problem(file, where, "body", f"the http step needs an absolute URL (got {target!r})"))


def _slug(title: str | None, kind: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", (title or "").lower()).strip("_")
    if not slug:
        return kind
    if slug[0].isdigit():
        slug = f"step_{slug}"
    return slug[:60].rstrip("_")


def _assign_ids(drafts: list[dict[str, Any]], file: str, problems: list[Problem]) -> tuple[Step, ...]:
    """Give each step its stable id: the one it declares, else one derived from its heading."""
    given: dict[str, int] = {}
    for draft in drafts:
        step_id = draft["attrs"].get("id")
        if isinstance(step_id, str):
            if step_id in given:
                problems.append(Problem(file, draft["line"], "attributes.id",
                                        f"duplicate step id '{step_id}' (first used on line {given[step_id]}); "
                                        "ids must be unique because checkpoints key on them"))
            else:
                given[step_id] = draft["line"]
    used = set(given)
    counts: Counter[str] = Counter()
    steps = []
    for draft in drafts:
        step_id = draft["attrs"].get("id")
        id_given = isinstance(step_id, str)
        if not id_given:
            base = _slug(draft["title"], draft["kind"])
            counts[base] += 1
            step_id = base if counts[base] == 1 else f"{base}_{counts[base]}"
            while step_id in used:
                counts[base] += 1
                step_id = f"{base}_{counts[base]}"
            used.add(step_id)
        steps.append(Step(kind=draft["kind"], id=str(step_id), title=draft["title"], attrs=draft["attrs"],
                          body=draft["body"], line=draft["line"], body_line=draft["line"] + 1, id_given=id_given))
    return tuple(steps)
