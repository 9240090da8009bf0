"""Markdown runbook -> ``Runbook``.

CommonMark is parsed by markdown-it-py, so every fence form (backticks or tildes, longer fences,
fences nested in lists and block quotes) is recognised exactly as a markdown renderer would show
it, and every token carries its source lines. A fence whose language word is a step kind is a step;
its attributes are the YAML flow mapping after that word, checked strictly against the kind's
schema. Nothing here renders templates: bodies are kept raw, with their line numbers, for later.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from pathlib import Path
from typing import Any

import frontmatter
from markdown_it import MarkdownIt
from markdown_it.token import Token

from ..load import patterns, schemas
from ..load.problems import InputError, Problem
from ..load.yamlsource import YamlDoc, load_yaml, read_text
from .formatversion import format_problems
from .headings import HeadingScope, check_merged, closing_brace, heading_attributes, merge, split_heading
from .model import RESERVED_NAMES, STEP_KINDS, Parameter, Runbook, Step

API_METHODS = ("GET", "POST", "PUT", "DELETE")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
_INFO = re.compile(r"(?P<word>[^\s{]*)(?P<space>\s*)(?P<rest>.*)", re.S)
_INNER_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<word>[A-Za-z]+)")
# What people write instead of a step kind, and the kind they most likely meant.
_KIND_HINTS = {
    "shell": "ssh (runs on a PVE node) or local (runs on this machine)",
    "sh": "ssh (runs on a PVE node) or local (runs on this machine)",
    "bash": "ssh (runs on a PVE node) or local (runs on this machine)",
    "console": "ssh (runs on a PVE node) or local (runs on this machine)",
    "pvesh": "api (a Proxmox REST call)",
    "rest": "api (a Proxmox REST call)",
    "curl": "http (a request to another service)",
    "talos": "talosctl",
    "yaml": "file (writes its body to a file: file {path: ...})",
    "json": "file (writes its body to a file: file {path: ...})",
    "write": "file (writes its body to a file: file {path: ...})",
}
_EMPTY_BODY = {
    "api": "has no request: write 'METHOD /path' on the line after the fence, e.g. 'GET /version'",
    "http": "has no request: write 'METHOD URL' on the line after the fence, e.g. "
    "'GET https://factory.talos.dev/versions'",
    "ssh": "has no command: write the shell commands to run on the PVE node between the fences",
    "local": "has no command: write the shell commands to run on this machine between the fences",
    "talosctl": "has no arguments: write the talosctl arguments between the fences, e.g. 'health'",
    "runbook": "names no runbook: write the runbook to run (NAME or NAME#section) on the line after the fence",
}
#: Kinds whose body may be empty: a file step's body is the file's content, and an empty file is one.
_EMPTY_ALLOWED = ("file",)
_REQUEST_LINE = re.compile(r"^(?P<method>[A-Za-z]+)\s+(?P<target>\S.*?)\s*$")
# Steps are fences and ids come from headings: inline markup (about 40% of markdown-it's time) is
# parsed for heading text alone, by a second parser.
_MARKDOWN = MarkdownIt("commonmark").disable("inline")
_INLINE = MarkdownIt("commonmark")
_FRONTMATTER = frontmatter.YAMLHandler()


def parse_runbook_file(path: Path, shown_as: str) -> Runbook:
    """Read and parse a runbook file; its name must equal the file name without ``.md``."""
    text = read_text(path, shown_as)
    return parse_runbook(text, shown_as, expected_name=path.name.removesuffix(".md"), require_format=True)


def parse_runbook(text: str, file: str, expected_name: str | None = None, *, require_format: bool = False) -> Runbook:
    """Parse runbook ``text``; raises ``InputError`` listing every problem found.

    ``require_format``: refuse a runbook without ``format: 2``, naming each format-1 form in it.
    Every runbook file loaded (run, validate, show, list, resume) is held to it; text parsed in
    process (ingest checking what it composed, unit tests of the grammar) need not be.
    """
    text = text.removeprefix("\ufeff")
    problems: list[Problem] = []
    meta, fm_doc, body, body_first_line = _split_frontmatter(text, file)
    problems += fm_doc.problems
    if isinstance(fm_doc.data, dict):  # else the frontmatter problem is already in fm_doc.problems
        problems += schemas.check(fm_doc, "runbook-frontmatter.schema.json")
    if require_format:
        problems += format_problems(meta, fm_doc, text, file)
    name = meta.get("name") if isinstance(meta.get("name"), str) else None
    if expected_name is not None and name is not None and name != expected_name:
        problems.append(
            fm_doc.problem(
                ("name",), f"name '{name}' does not match the file name '{expected_name}.md'; rename one so they agree"
            )
        )
    parameters = _parameters(meta, fm_doc, problems)
    steps = _steps(body, body_first_line, file, problems)
    if problems:
        raise InputError(sorted(set(problems), key=lambda p: (p.line or 0, p.field or "", p.message)))
    return Runbook(
        name=str(name),
        description=str(meta.get("description", "")),
        file=file,
        parameters=parameters,
        requires=tuple(meta.get("requires") or ()),
        steps=steps,
        markdown=body,
        body_first_line=body_first_line,
        frontmatter=meta,
    )


def _split_frontmatter(text: str, file: str) -> tuple[dict[str, Any], YamlDoc, str, int]:
    """Frontmatter mapping, its YamlDoc, the markdown body and the file line of the body's line 0.

    Frontmatter that is not a YAML mapping gives an empty mapping and a YamlDoc (whose data is not
    a dict) carrying the problem, so that the steps below it are still checked in the same run.
    """
    opening = _FRONTMATTER.FM_BOUNDARY.match(text)
    if opening is None:
        raise InputError(
            Problem(
                file,
                1,
                None,
                "no YAML frontmatter: a runbook starts with a line '---', "
                "then name, description and parameters, then '---'",
            )
        )
    try:
        fm_text, body = _FRONTMATTER.split(text)
    except ValueError:
        raise InputError(
            Problem(file, 1, None, "the frontmatter is never closed: add a line '---' after its last field")
        ) from None
    fm_first_line = text[: opening.end()].count("\n") + 1
    body_first_line = text[: len(text) - len(body)].count("\n") + 1
    try:
        doc = load_yaml(fm_text, file, first_line=fm_first_line)
    except InputError as exc:
        return {}, YamlDoc(None, file, problems=list(exc.problems)), body, body_first_line
    if doc.data is None:
        doc.problems.append(
            Problem(
                file,
                fm_first_line,
                None,
                "the frontmatter is empty: write name: and description: (and any parameters:) between the '---' lines",
            )
        )
        return {}, doc, body, body_first_line
    if not isinstance(doc.data, dict):
        doc.problems.append(
            Problem(
                file,
                fm_first_line,
                None,
                "the frontmatter must be a YAML mapping (name: ..., "
                f"description: ...), but it holds "
                f"{schemas.describe(doc.data)}",
            )
        )
        return {}, doc, body, body_first_line
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
        if pname in RESERVED_NAMES:
            problems.append(
                doc.problem(
                    ("parameters", pname),
                    f"'{pname}' is a name templates already use for the engine's own value, so "
                    f"this parameter would hide it; name it differently (e.g. '{pname}_value')",
                )
            )
        for where in patterns.unbounded_keywords(spec):
            problems.append(
                doc.problem(
                    ("parameters", pname, *where),
                    "patternProperties is not supported in a parameter's spec: its regular "
                    "expressions would be matched without a time bound; check the values "
                    "with pattern instead",
                )
            )
        problems += _secret_problems(str(pname), spec, doc)
        usable = _patterns_usable(spec, ("parameters", pname), doc, problems)
        if "default" in spec and spec.get("type") in ("string", "integer", "number", "boolean", "array") and usable:
            try:
                for message in parameter_value_errors(spec, spec["default"]):
                    problems.append(doc.problem(("parameters", pname, "default"), f"default {message}"))
            except patterns.PatternTooSlow as slow:
                what = (
                    f"the default {patterns.short(slow.text)}"
                    if slow.text == spec["default"]
                    else f"{patterns.short(slow.text)}, an item of the default"
                )
                problems.append(slow.problem(doc.file, line, str(pname), spec, what))
        out.append(
            Parameter(
                name=str(pname),
                type=str(spec.get("type")),
                description=str(spec.get("description", "")),
                spec=dict(spec),
                line=line,
            )
        )
    return tuple(out)


def _secret_problems(name: str, spec: dict[str, Any], doc: YamlDoc) -> list[Problem]:
    """A secret parameter is a string given at run time: a default would sit in the file for all to read."""
    if spec.get("secret") is not True:
        return []
    found = []
    if "default" in spec:
        found.append(
            doc.problem(
                ("parameters", name, "default"),
                "a secret parameter has no default: a value written in the runbook is no secret. Remove it; "
                f"the value is given at run time with --secret {name}=env:VAR or --secret {name}=pass:PATH",
            )
        )
    if spec.get("type") != "string":
        found.append(
            doc.problem(
                ("parameters", name, "type"),
                f"a secret parameter is a string (got type {spec.get('type')!r}): write type: string",
            )
        )
    return found


def _patterns_usable(spec: dict[str, Any], where: tuple[str, ...], doc: YamlDoc, problems: list[Problem]) -> bool:
    """Whether every pattern of a parameter spec compiles, so values can be checked against it.

    A broken top-level ``pattern`` is reported once, by the frontmatter schema (``format: regex``);
    a broken nested one (``items.pattern``) is reported here, in the same words.
    """
    usable = True
    for path, pattern in patterns.pattern_paths(spec):
        error = patterns.regex_error(pattern) if isinstance(pattern, str) else None
        if error is None:
            continue
        usable = False
        if path != ("pattern",):
            problems.append(
                doc.problem(
                    where + path, f"pattern {patterns.short(pattern)} is not a valid regular expression ({error})"
                )
            )
    return usable


def parameter_value_errors(spec: dict[str, Any], value: Any) -> list[str]:
    """Why ``value`` does not satisfy a parameter spec (empty when it does).

    The spec's patterns are matched within one time bound for the whole value (its items and the
    messages' rewrites included): a pattern that backtracks catastrophically raises
    ``patterns.PatternTooSlow``, which the caller reports where it knows the runbook's file.
    """
    schema = {k: v for k, v in spec.items() if k not in ("description", "default")}
    try:
        check = patterns.BoundedValidator(schema)
        with patterns.budget():
            return [schemas.explain(err, ())[1] for err in check.iter_errors(value)]
    except patterns.PatternTooSlow:
        raise
    except Exception as exc:  # a broken pattern in the spec is reported by the frontmatter schema
        return [f"cannot be checked, because the parameter's spec is broken ({exc}): run 'runbook validate'"]


def _steps(body: str, first_line: int, file: str, problems: list[Problem]) -> tuple[Step, ...]:
    tokens = _MARKDOWN.parse(body)
    lines = body.splitlines()
    drafts: list[dict[str, Any]] = []
    heading: str | None = None
    scope = HeadingScope()
    for index, token in enumerate(tokens):
        if token.type == "heading_open":
            heading = _heading(token, tokens[index + 1], scope, first_line, file, problems)
        elif token.type == "fence":
            draft = _fence_step(token, heading, scope, first_line, file, problems)
            if draft is not None:
                drafts.append(draft)
                _check_fence_closed(token, draft, lines, first_line, file, problems)
    return _assign_ids(drafts, file, problems)


def _heading(
    token: Token, inline: Token, scope: HeadingScope, first_line: int, file: str, problems: list[Problem]
) -> str:
    """The heading's title (its attribute mapping left out); the heading opens a scope for its attributes."""
    line = first_line + (token.map[0] if token.map else 0)
    title, attr_text = split_heading(inline.content)
    attributes = heading_attributes(attr_text, line, file, problems) if attr_text else {}
    scope.enter(int(token.tag[1:]), line, attributes)
    return _inline_text(title)


def _inline_text(content: str) -> str:
    """A heading's text without its markup (``## Clone **each** VM`` -> ``Clone each VM``)."""
    children = _INLINE.parseInline(content)[0].children or []
    return "".join(child.content for child in children if child.type in ("text", "code_inline"))


def _fence_step(
    token: Token, heading: str | None, scope: HeadingScope, first_line: int, file: str, problems: list[Problem]
) -> dict[str, Any] | None:
    line = first_line + (token.map[0] if token.map else 0)
    kind, rest = _fence_kind(token.info.strip(), line, file, problems)
    if kind is None:
        return None
    own: dict[str, Any] | None = {}
    if rest:
        own = _attributes(rest, kind, line, file, problems)
    attrs, origins, conditions = merge(own or {}, line, scope)
    if own is not None:  # None: the mapping itself was broken, and that problem is already reported
        check_merged(kind, attrs, origins, line, file, problems)
    body = token.content
    _check_body(kind, body, line, file, problems)
    return {
        "kind": kind,
        "attrs": attrs,
        "body": body,
        "line": line,
        "title": heading,
        "origins": origins,
        "conditions": conditions,
    }


def _fence_kind(info: str, line: int, file: str, problems: list[Problem]) -> tuple[str | None, str]:
    """The step kind of a fence's info string and the attribute text after it; no kind for prose.

    The kind is the word before the first whitespace (space or tab) or brace. A fence that carries
    attributes is meant as a step, so an unknown kind there is an error, not prose; so is a step
    kind in the wrong case, or a kind glued to its braces (markdown would read ``api{id:`` as the
    language, so the step would silently not run).
    """
    match = _INFO.match(info)
    assert match is not None
    word, rest = match["word"], match["rest"].strip()
    glued = not match["space"] and rest.startswith("{")
    if word in STEP_KINDS:
        if glued:
            problems.append(
                Problem(file, line, None, f"put a space between the step kind and its attributes: '{word} {rest}'")
            )
            return None, ""
        return word, rest
    if word.lower() in STEP_KINDS:
        problems.append(
            Problem(file, line, None, f"step kinds are lower case: did you mean '{word.lower()}'? (got '{word}')")
        )
        return None, ""
    if rest.startswith("{"):
        if not word:
            problems.append(
                Problem(
                    file,
                    line,
                    None,
                    f"the step kind is missing before the attributes: write "
                    f"one of {', '.join(STEP_KINDS)} first, e.g. 'api {rest}'",
                )
            )
            return None, ""
        guess = _KIND_HINTS.get(word.lower()) or next(
            iter(difflib.get_close_matches(word.lower(), STEP_KINDS, 1)), None
        )
        hint = f"did you mean {guess}? " if guess else ""
        problems.append(
            Problem(
                file,
                line,
                None,
                f"unknown step kind '{word}': {hint}(a step is a fence of kind "
                f"{', '.join(STEP_KINDS)}; a fence of any other language is "
                "prose and takes no attributes)",
            )
        )
    return None, ""


def _check_fence_closed(
    token: Token, draft: dict[str, Any], lines: list[str], first_line: int, file: str, problems: list[Problem]
) -> None:
    """A step fence left open runs on to the next closing fence, swallowing the steps in between."""
    char, length = token.markup[0], len(token.markup)
    what = (
        f"step '{draft['attrs']['id']}'" if isinstance(draft["attrs"].get("id"), str) else f"the {draft['kind']} step"
    )
    for offset, text in enumerate(token.content.splitlines()):
        inner = _INNER_FENCE.match(text)
        if (
            inner
            and inner["fence"][0] == char
            and len(inner["fence"]) >= length
            and inner["word"].lower() in STEP_KINDS
        ):
            problems.append(
                Problem(
                    file,
                    draft["line"] + 1 + offset,
                    None,
                    f"this line looks like the start of a step inside the body of {what} "
                    f"(line {draft['line']}); is the closing {token.markup} of {what} missing "
                    f"before it? (to show a fence inside a body, open the step with a longer "
                    f"fence: {char * (len(inner['fence']) + 1)})",
                )
            )
            return
    if token.map is None:
        return
    last = lines[token.map[1] - 1] if token.map[1] - 1 < len(lines) else ""
    closing = re.sub(r"^[\s>]*", "", last).rstrip()
    if token.map[1] - token.map[0] < 2 or not re.fullmatch(re.escape(char) + f"{{{length},}}", closing):
        problems.append(
            Problem(file, draft["line"], None, f"{what} is never closed: add a line {token.markup} after its body")
        )


def _attributes(text: str, kind: str, line: int, file: str, problems: list[Problem]) -> dict[str, Any] | None:
    """The fence's own attribute mapping, None when it is not one (reported); checked by kind after merging."""
    if not text.startswith("{"):
        pairs = re.findall(r"(\w+)=(\S+)", text)
        example = (
            "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
            if pairs and re.fullmatch(r"(\s*\w+=\S+)+\s*", text)
            else "{id: clone}"
        )
        problems.append(
            Problem(
                file,
                line,
                "attributes",
                f"step attributes must be one YAML flow mapping in braces "
                f"after the kind, e.g. '{kind} {example}' (got {text!r})",
            )
        )
        return None
    end = closing_brace(text)
    if end is None:
        problems.append(
            Problem(
                file,
                line,
                "attributes",
                "the '{' of the attributes is never closed: attributes "
                "fit on the fence line and end with '}', "
                f"e.g. '{kind} {{id: clone, retries: 3}}'",
            )
        )
        return None
    if text[end + 1 :].strip():
        problems.append(
            Problem(
                file,
                line,
                "attributes",
                f"text after the closing '}}' of the attributes: "
                f"{text[end + 1 :].strip()!r}; move it inside the braces "
                "as a field, or remove it",
            )
        )
        return None
    try:
        doc = load_yaml(text, file, first_line=line, within="the attributes")
    except InputError as exc:
        problems.extend(Problem(p.file, line, "attributes", p.message) for p in exc.problems)
        return None
    problems.extend(
        Problem(p.file, line, f"attributes.{p.field}" if p.field else "attributes", p.message) for p in doc.problems
    )
    if not isinstance(doc.data, dict):
        problems.append(
            Problem(file, line, "attributes", f"step attributes must be a mapping like {{id: clone}} (got {text!r})")
        )
        return None
    return doc.data


def _check_body(kind: str, body: str, fence_line: int, file: str, problems: list[Problem]) -> None:
    if kind in _EMPTY_ALLOWED:
        return
    line = fence_line + 1
    lines = body.splitlines()
    first = next((i for i, text in enumerate(lines) if text.strip() and not text.lstrip().startswith("#")), None)
    if first is None:
        comments = " (only comments)" if body.strip() else ""
        problems.append(Problem(file, fence_line, "body", f"the {kind} step {_EMPTY_BODY[kind]}{comments}"))
        return
    if kind not in ("api", "http"):
        return
    request = lines[first].strip()
    match = _REQUEST_LINE.match(request)
    where = line + first
    methods = API_METHODS if kind == "api" else HTTP_METHODS
    if kind == "api" and match and match["method"].upper() in HTTP_METHODS and match["method"].upper() not in methods:
        problems.append(
            Problem(
                file,
                where,
                "body",
                f"the Proxmox API has no {match['method'].upper()}: use one of "
                f"{', '.join(methods)} (PUT changes a configuration)",
            )
        )
        return
    if not match or match["method"].upper() not in methods:
        target = "/path" if kind == "api" else "URL"
        if request.startswith("/") or request.startswith(("https://", "http://")):
            problems.append(
                Problem(
                    file,
                    where,
                    "body",
                    f"the request line has no method: write 'METHOD {request}' with METHOD one of {', '.join(methods)}",
                )
            )
            return
        example = (
            "POST /nodes/{{ node }}/qemu/{{ vmid }}/status/start"
            if kind == "api"
            else "POST https://factory.talos.dev/schematics"
        )
        problems.append(
            Problem(
                file,
                where,
                "body",
                f"the first line of an {kind} step must be "
                f"'METHOD {target}' with METHOD one of "
                f"{', '.join(methods)}, e.g. '{example}'",
            )
        )
        return
    if match["method"] != match["method"].upper():
        problems.append(Problem(file, where, "body", f"write the method in capitals: {match['method'].upper()}"))
    target = match["target"]
    if kind == "api":
        prefixed = re.match(r"^/api2/(?P<format>[^/]*)(?P<rest>/.*)?$", target)
        if not target.startswith("/"):
            problems.append(Problem(file, where, "body", f"the API path must start with '/': write '/{target}'"))
        elif prefixed:
            problems.append(
                Problem(
                    file,
                    where,
                    "body",
                    f"write the API path without '/api2/{prefixed['format']}' "
                    "(runbook always calls /api2/json itself), e.g. "
                    f"'{prefixed['rest'] or '/'}'",
                )
            )
    elif not (target.startswith(("https://", "http://")) or target.startswith("{{")):
        problems.append(
            Problem(file, where, "body", f"the http step needs an absolute URL starting with https:// (got {target!r})")
        )


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
                problems.append(
                    Problem(
                        file,
                        draft["line"],
                        "attributes.id",
                        f"duplicate step id '{step_id}' (first used on line {given[step_id]}); "
                        "ids must be unique because checkpoints key on them",
                    )
                )
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
        steps.append(
            Step(
                kind=draft["kind"],
                id=str(step_id),
                title=draft["title"],
                attrs=draft["attrs"],
                body=draft["body"],
                line=draft["line"],
                body_line=draft["line"] + 1,
                id_given=id_given,
                origins=draft["origins"],
                conditions=draft["conditions"],
            )
        )
    return tuple(steps)
