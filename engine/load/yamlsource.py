"""Safe YAML loading that remembers where every value came from.

PyYAML's safe loader builds plain data but forgets positions. Errors found later (by a JSON Schema,
by a cross-profile rule) must still name the line, so we compose the node tree once, construct the
data from it with the safe constructor, and keep a map from each value's path to its line. Duplicate
keys, which PyYAML silently overwrites, are reported: in a cluster file the second ``vmid:`` winning
quietly is how a wrong VM gets deleted.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from .problems import InputError, Problem

Path = tuple[str, ...]
#: Deepest nesting accepted. Real files nest a few levels; every reader after the loader (the line
#: map, the schema checks, the templates) recurses per level, so this stays far from Python's limit.
MAX_DEPTH = 32
#: Most values a document may expand to through aliases (a shipped profile has a few hundred).
MAX_VALUES = 100_000


@dataclass
class YamlDoc:
    """Loaded data plus the line (1-based, in the original file) of every path in it."""

    data: Any
    file: str
    lines: dict[Path, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, path: Iterable[object]) -> int | None:
        """Line of ``path``, or of its nearest ancestor that has one."""
        key = tuple(str(p) for p in path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), None)

    def problem(self, path: Iterable[object], message: str) -> Problem:
        """A Problem located at ``path`` in this document."""
        parts = [str(p) for p in path]
        return Problem(self.file, self.line_of(parts), dotted(parts) or None, message)


def dotted(path: Iterable[object]) -> str:
    """``('nodes', 'controlplane', 'assignments', '0', 'vmid')`` -> ``nodes.controlplane.assignments[0].vmid``."""
    out = ""
    for part in path:
        part = str(part)
        if part.isdigit():
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def load_yaml(text: str, file: str, first_line: int = 1, within: str | None = None) -> YamlDoc:
    """Parse ``text`` safely; ``first_line`` is the file line of the text's first line.

    Raises ``InputError`` for text that is not YAML at all, worded as advice with PyYAML's own
    words kept in parentheses; structural problems that still leave usable data (duplicate keys)
    are returned in ``YamlDoc.problems``. ``within`` names what the text is (e.g. "the attributes")
    for messages about a key given twice on one line.
    """
    loader = None
    try:
        loader, node = _compose(text)
        if node is not None:
            _check_shape(node, file, first_line)
        data = loader.construct_document(node) if node is not None else None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise InputError(
            Problem(
                file,
                first_line,
                None,
                f"the YAML is nested far more than {MAX_DEPTH} levels "
                "deep; no runbook, profile or config needs that: flatten "
                "it",
            )
        ) from None
    except yaml.MarkedYAMLError as exc:
        line, advice = yaml_error_advice(exc, text, first_line)
        raise InputError(Problem(file, line, None, f"invalid YAML: {advice}")) from None
    except yaml.reader.ReaderError as exc:
        line = first_line + text.count("\n", 0, max(exc.position, 0))
        raise InputError(
            Problem(file, line, None, f"the control character {chr(exc.character)!r} is not allowed in YAML: delete it")
        ) from None
    except yaml.YAMLError as exc:
        raise InputError(Problem(file, first_line, None, f"invalid YAML: {exc}")) from None
    finally:
        if loader is not None:
            loader.dispose()
    doc = YamlDoc(data, file)
    doc.lines[()] = node.start_mark.line + first_line if node is not None else first_line
    if node is not None:
        _walk(node, (), doc, first_line, within)
    return doc


def _compose(text: str) -> tuple[Any, yaml.Node | None]:
    """(loader, node tree) of ``text``: through libyaml when PyYAML has it, about ten times faster
    (``runbook validate`` reads every step's attributes as YAML). Text libyaml refuses is read again
    by the pure-Python loader, whose error marks and wording ``yaml_error_advice`` is written for.
    libyaml bounds nesting itself (1000 levels), so it cannot overflow the stack on hostile input."""
    if _FAST_LOADER is not None:
        fast = _FAST_LOADER(text)
        try:
            return fast, fast.get_single_node()
        except yaml.YAMLError:
            fast.dispose()
    loader = yaml.SafeLoader(text)
    return loader, loader.get_single_node()


_FAST_LOADER = getattr(yaml, "CSafeLoader", None)


def _check_shape(root: yaml.Node, file: str, first_line: int) -> None:
    """Refuse a document every later reader would choke on, before its data is built: nesting deeper
    than MAX_DEPTH, an alias inside the value it refers to (endless data), or aliases of aliases that
    expand to more than MAX_VALUES values (a "billion laughs": tiny text, exponential work).

    Iterative, and each node is measured once however many aliases refer to it, so the check itself
    is linear in the text.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values when expanded, height)
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, measured = stack.pop()
        key = id(node)
        children = _children(node)
        if measured:
            on_path.discard(key)
            size = 1 + sum(sizes[id(child)][0] for child in children)
            height = 1 + max((sizes[id(child)][1] for child in children), default=0)
            sizes[key] = (size, height)
            line = node.start_mark.line + first_line
            if height > MAX_DEPTH:
                raise InputError(
                    Problem(
                        file,
                        line,
                        None,
                        f"the YAML is nested more than {MAX_DEPTH} levels deep "
                        "here; no runbook, profile or config needs that: "
                        "flatten it",
                    )
                )
            if size > MAX_VALUES:
                raise InputError(
                    Problem(
                        file,
                        line,
                        None,
                        f"through its aliases (*name) the YAML here expands to "
                        f"more than {MAX_VALUES} values: write the values out "
                        "instead of nesting aliases of aliases",
                    )
                )
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise InputError(
                Problem(
                    file,
                    node.start_mark.line + first_line,
                    None,
                    "an alias (*name) here refers to a value that contains it, so the value "
                    "would never end: remove the alias",
                )
            )
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def yaml_error_advice(exc: yaml.MarkedYAMLError, text: str, first_line: int = 1) -> tuple[int, str]:
    """The file line a PyYAML error is really about, and what to do, with PyYAML's words kept.

    PyYAML marks where it gave up, which for an unclosed bracket or quote is the end of the
    file; its ``context_mark`` marks where the bracket or quote was opened, which is where the
    fix goes. Its wording ("mapping values are not allowed here") is about the parser, not the
    file, so the common cases are translated into what to change.
    """
    problem, context = exc.problem or "", exc.context or ""
    at, opened = exc.problem_mark, exc.context_mark
    line = at.line if at is not None else (opened.line if opened is not None else 0)
    lines = text.splitlines()
    here = lines[line] if 0 <= line < len(lines) else ""
    original = "; ".join(part for part in (problem, context) if part) or "malformed YAML"
    advice = None
    start = lines[opened.line] if opened is not None and opened.line < len(lines) else here
    if "{{" in start and (context.startswith("while parsing a flow") or problem == "found unhashable key"):
        line = opened.line if opened is not None else line
        before = start.split("{{", 1)[0]
        example = (
            f"{before.split(':', 1)[0].strip().removeprefix('- ')}: "
            if ":" in before
            else "- "
            if before.strip() == "-"
            else "key: "
        )
        advice = (
            f"a value starting with '{{{{' is read as a YAML mapping: put the template in quotes, "
            f'e.g. {example}"{{{{ ... }}}}"'
        )
    elif context.startswith("while parsing a flow") and opened is not None:
        bracket = "{" if "mapping" in context else "["
        closer = "}" if bracket == "{" else "]"
        if "<stream end>" in problem or at is None or at.line != opened.line:
            line = opened.line
            advice = f"the '{bracket}' opened on this line is never closed: end it with '{closer}'"
            if at is not None and "<stream end>" not in problem:
                advice = (
                    f"the '{bracket}' opened on this line is not closed before line {at.line + first_line}: "
                    f"add the missing '{closer}'"
                )
        else:
            advice = (
                f"inside this '{bracket}...{closer}', items must be separated by ', ' and a value holding ': ' "
                f"or ',' must be quoted"
            )
    elif (
        context.startswith("while scanning a")
        and "quoted scalar" in context
        and opened is not None
        and "end of stream" in problem
    ):
        line = opened.line
        quote = (
            lines[opened.line][opened.column]
            if opened.line < len(lines) and opened.column < len(lines[opened.line])
            else '"'
        )
        advice = f"the quote {quote} opened on this line is never closed: add the closing {quote}"
    elif problem.startswith("found unknown escape character"):
        advice = (
            "inside double quotes a backslash starts an escape: use single quotes ('C:\\path') or double the backslash"
        )
    elif problem == "mapping values are not allowed here":
        column = at.column if at is not None else 0
        key, sep, _ = here.partition(": ")
        key = key.strip().removeprefix("- ").strip()
        if sep and here.index(": ") < column and key:
            advice = (
                f"the value of '{key}' contains ': ', which YAML reads as the start of another key: "
                f'put the whole value in quotes, e.g. {key}: "..."'
            )
        else:
            advice = "this line is indented more than the key above it: indent it exactly like its sibling fields"
    elif problem.startswith("expected <block end>"):
        indent = len(here) - len(here.lstrip(" "))
        advice = (
            f"the indentation of this line ({indent} space{'s' if indent != 1 else ''}) matches no field above it: "
            "indent it exactly like its sibling fields, with spaces"
        )
    elif problem.startswith("found character '\\t'"):
        advice = "a tab is used for indentation; YAML indents with spaces only: replace the tab with spaces"
    elif problem.startswith("found character") and "cannot start any token" in problem:
        char = problem.split("'")[1] if "'" in problem else "this character"
        advice = f"a value cannot start with {char}: put the value in quotes"
    elif problem == "could not find expected ':'" and opened is not None:
        line = opened.line
        advice = "this line is neither 'key: value' nor '- item': add ': value' after the key, or remove the line"
    elif problem.startswith("found undefined alias"):
        advice = "a value starting with '*' is read as a YAML alias: put the value in quotes"
    elif problem.startswith("expected '<document start>'"):
        advice = "unexpected text here, after the end of the YAML value: remove it, or put the whole value in quotes"
    elif context.startswith("expected a single document"):
        advice = "a second YAML document starts here ('---'); this file holds one: remove the '---' line"
    if advice is None:
        return line + first_line, original
    return line + first_line, f"{advice} ({original})"


def _walk(node: yaml.Node, path: Path, doc: YamlDoc, first_line: int, within: str | None) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            line = key_node.start_mark.line + first_line
            if key in seen and seen[key] == line:
                doc.problems.append(
                    Problem(
                        doc.file,
                        line,
                        dotted(path + (key,)),
                        f"{key} is given twice {f'in {within}' if within else 'on this line'}; keep one",
                    )
                )
            elif key in seen:
                doc.problems.append(
                    Problem(
                        doc.file,
                        line,
                        dotted(path + (key,)),
                        f"{key} is given twice (first on line {seen[key]}); YAML would silently "
                        "keep only this last one: delete the one that is wrong",
                    )
                )
            else:
                seen[key] = line
            doc.lines[path + (key,)] = line
            _walk(value_node, path + (key,), doc, first_line, within)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            doc.lines[path + (str(index),)] = item.start_mark.line + first_line
            _walk(item, path + (str(index),), doc, first_line, within)


def read_text(path: os.PathLike[str] | str, shown_as: str) -> str:
    """The UTF-8 text of a file, turning I/O and encoding failures into a located Problem."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise InputError(Problem(shown_as, None, None, "file not found")) from None
    except IsADirectoryError:
        raise InputError(Problem(shown_as, None, None, "is a folder, not a file")) from None
    except OSError as exc:
        raise InputError(Problem(shown_as, None, None, f"cannot read: {exc.strerror}")) from None
    try:
        return raw.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = raw[exc.start : exc.start + 1].hex()
        raise InputError(
            Problem(
                shown_as,
                line,
                None,
                f"not UTF-8 text: byte 0x{byte} at column {column} cannot be read (the file was "
                "probably saved as Latin-1 or Windows-1252); save the file as UTF-8",
            )
        ) from None


def read_yaml_file(path: os.PathLike[str] | str, shown_as: str) -> YamlDoc:
    """Read and load a YAML file, turning I/O and encoding failures into a located Problem."""
    return load_yaml(read_text(path, shown_as), shown_as)
