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


def load_yaml(text: str, file: str, first_line: int = 1) -> YamlDoc:
    """Parse ``text`` safely; ``first_line`` is the file line of the text's first line.

    Raises ``InputError`` for text that is not YAML at all; structural problems that still leave
    usable data (duplicate keys) are returned in ``YamlDoc.problems``.
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + first_line if mark is not None else first_line
            what = exc.problem or "malformed YAML"
            context = f" ({exc.context})" if exc.context and exc.problem else ""
            raise InputError(Problem(file, line, None, f"invalid YAML: {what}{context}")) from None
        except yaml.YAMLError as exc:
            raise InputError(Problem(file, first_line, None, f"invalid YAML: {exc}")) from None
    finally:
        loader.dispose()
    doc = YamlDoc(data, file)
    if node is not None:
        doc.lines[()] = node.start_mark.line + first_line
        _walk(node, (), doc, first_line)
    return doc


def _walk(node: yaml.Node, path: Path, doc: YamlDoc, first_line: int) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            line = key_node.start_mark.line + first_line
            if key in seen:
                doc.problems.append(Problem(doc.file, line, dotted(path + (key,)),
                                            f"duplicate key '{key}' (first given on line {seen[key]}); "
                                            "YAML would silently keep only the last one"))
            else:
                seen[key] = line
            doc.lines[path + (key,)] = line
            _walk(value_node, path + (key,), doc, first_line)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            doc.lines[path + (str(index),)] = item.start_mark.line + first_line
            _walk(item, path + (str(index),), doc, first_line)


def read_yaml_file(path: os.PathLike[str] | str, shown_as: str) -> YamlDoc:
    """Read and load a YAML file, turning I/O and encoding failures into a located Problem."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise InputError(Problem(shown_as, None, None, "file not found")) from None
    except UnicodeDecodeError as exc:
        raise InputError(Problem(shown_as, None, None, f"not UTF-8 text (byte {exc.start})")) from None
    except OSError as exc:
        raise InputError(Problem(shown_as, None, None, f"cannot read: {exc.strerror}")) from None
    return load_yaml(text, shown_as)

