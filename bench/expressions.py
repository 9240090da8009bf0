"""How much expression a runbook carries: the measure of issue 16's targets, as a report.

Counted wherever an expression can sit: fence attribute mappings (``{id: x, when: ...}``, jq
``extract`` included), heading attribute mappings, and every ``{{ ... }}`` / ``{% ... %}`` /
``{# ... #}`` span in step bodies and the frontmatter. Prose (the text an operator reads) is not
counted; nor are the plain words of a body (``apply-config --insecure``).

    python bench/expressions.py            # the nine largest shipped runbooks, and the total
    python bench/expressions.py --all      # every shipped runbook
    python bench/expressions.py --json     # for scripts

Baseline before the language features (main at the start of issue 16): 33,935 characters over
the nine (57,355 over all 23), the largest fence mapping 1,765 (node-evacuate ``where``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parent.parent
NINE = (
    "cluster-create",
    "cluster-status",
    "cluster-teardown",
    "node-evacuate",
    "vm-clone",
    "vm-migrate",
    "vm-resize",
    "vm-restore",
    "talos-cluster-bootstrap",
)
STEP_KINDS = ("api", "ssh", "talosctl", "http", "local", "file", "runbook")
_TEMPLATE = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_HEADING_ATTRS = re.compile(r"\s(\{.*\})\s*$")
_MARKDOWN = MarkdownIt("commonmark").disable("inline")


@dataclass
class Measure:
    """One runbook's expression characters, and its longest attribute mapping (with its line)."""

    name: str
    attributes: int = 0
    headings: int = 0
    templates: int = 0
    longest: tuple[int, int] = (0, 0)  # (characters, line)
    or_true: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.attributes + self.headings + self.templates


def measure(path: Path) -> Measure:
    """Count ``path``'s expression characters."""
    text = path.read_text(encoding="utf-8")
    found = Measure(path.stem)
    body, offset = text, 0
    if text.startswith("---\n"):
        end = text.index("\n---", 4)
        front = text[: end + 4]
        found.templates += sum(len(m) for m in _TEMPLATE.findall(front))
        offset = front.count("\n")
        body = text[end + 4 :]
    for token in _MARKDOWN.parse(body):
        line = offset + (token.map[0] + 1 if token.map else 0)
        if token.type == "fence":
            word, _, rest = token.info.strip().partition(" ")
            if word.split("{")[0] not in STEP_KINDS:
                continue
            mapping = rest.strip() if rest else token.info[len(word.split("{")[0]) :].strip()
            found.attributes += len(mapping)
            if len(mapping) > found.longest[0]:
                found.longest = (len(mapping), line)
            found.templates += sum(len(m) for m in _TEMPLATE.findall(token.content))
            if re.search(r"or\s+true\b", mapping):
                found.or_true.append(line)
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.startswith("#") and (attrs := _HEADING_ATTRS.search(raw)):
            found.headings += len(attrs.group(1))
            if len(attrs.group(1)) > found.longest[0]:
                found.longest = (len(attrs.group(1)), number)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every shipped runbook, not only the nine largest")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    runbooks = REPO / "runbooks"
    paths = sorted(runbooks.glob("[!_]*.md")) if args.all else [runbooks / f"{name}.md" for name in NINE]
    found = [measure(path) for path in paths]
    if args.json:
        json.dump([{**vars(m), "total": m.total} for m in found], sys.stdout, indent=2)
        print()
        return 0
    print(f"{'runbook':28} {'attrs':>7} {'heads':>6} {'tmpl':>7} {'total':>7}  longest mapping")
    for m in found:
        print(
            f"{m.name:28} {m.attributes:7} {m.headings:6} {m.templates:7} {m.total:7}  "
            f"{m.longest[0]} (line {m.longest[1]}){'  or-true at ' + str(m.or_true) if m.or_true else ''}"
        )
    print(f"{'total':28} {'':7} {'':6} {'':7} {sum(m.total for m in found):7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
