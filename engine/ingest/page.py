"""A markdown page as the runbook composer needs it: its title, and prose and code blocks in order.

markdown-it-py (the parser runbooks themselves are read with) finds the code blocks, so a fence
inside a list or a block quote is found exactly as a markdown viewer shows it. Prose is kept as
the author's own source lines. Code blocks are commands when their language is a shell's (or
none, and their first line reads like a command); other fences (yaml, json, output) stay prose,
with their info string reduced to a plain language word so that no prose fence can be mistaken
for a step when the runbook is parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from markdown_it import MarkdownIt

from ..runbook.model import STEP_KINDS
from .commands import COMMAND_WORDS

SHELL_LANGUAGES = frozenset(
    {
        "bash",
        "sh",
        "shell",
        "zsh",
        "console",
        "shell-session",
        "shellsession",
        "terminal",
        "ssh",
        "local",
        "talosctl",
        "pvesh",
    }
)
_MAYBE_SHELL = frozenset({"", "text", "plaintext", "plain", "none", "code"})
_PROMPT = re.compile(r"^(?:\$|[\w.-]+@[\w.-]+(?::[^\s#$]*)?[#$]|[\w.-]+[#$])\s")
_FENCE_LINE = re.compile(r"^(?P<lead>(?:\s*>)*\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKDOWN = MarkdownIt("commonmark")


@dataclass
class Code:
    """A block of commands, with the heading it sits under and the source line it starts on."""

    text: str
    language: str
    line: int
    heading: str | None
    dropped_output: int = 0  # lines of example output left out (after a prompt)


@dataclass
class Prose:
    text: str


@dataclass
class Document:
    title: str | None
    blocks: list[Code | Prose] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def code(self) -> list[Code]:
        return [b for b in self.blocks if isinstance(b, Code)]


def split_document(markdown: str, title: str | None = None) -> Document:
    """``markdown`` as prose and command blocks; ``title`` is used when the page has no ``# heading``."""
    markdown, front_title = _without_frontmatter(markdown)
    lines = markdown.splitlines()
    tokens = _MARKDOWN.parse(markdown)
    doc = Document(None)
    heading: str | None = None
    cursor = 0
    rewrites: dict[int, str] = {}
    for index, token in enumerate(tokens):
        if token.type == "heading_open":
            heading = tokens[index + 1].content.strip()
            if token.tag == "h1" and doc.title is None:
                doc.title = heading
            continue
        if token.type not in ("fence", "code_block") or token.map is None:
            continue
        language = token.info.strip().split(" ")[0].split("{")[0].lower() if token.type == "fence" else ""
        if not _is_commands(token.content, language):
            if token.type == "fence":
                rewrites[token.map[0]] = _safe_info(language)
            continue
        start, end = token.map
        if start > cursor:
            doc.blocks.append(Prose(_prose(lines[cursor:start], cursor, rewrites)))
        text, dropped = _without_prompts(token.content)
        if text.strip():
            doc.blocks.append(Code(text, language, start + 1, heading, dropped))
        cursor = end
    if cursor < len(lines):
        doc.blocks.append(Prose(_prose(lines[cursor:], cursor, rewrites)))
    doc.title = doc.title or front_title or title
    if doc.title and not re.search(r"^#\s", markdown, re.M):
        doc.blocks.insert(0, Prose(f"# {doc.title}\n"))
    return doc


def _without_frontmatter(markdown: str) -> tuple[str, str | None]:
    """The page without a leading YAML frontmatter block (its title or name is kept)."""
    text = (
        re.sub(r"^\s*(<!--.*?-->\s*)*", "", markdown, count=1, flags=re.S)
        if markdown.lstrip().startswith("<!--")
        else markdown
    )
    match = re.match(r"^---[ \t]*\n(.*?)\n---[ \t]*(\n|$)", text, re.S)
    if not match:
        return markdown, None
    title = re.search(r"^(?:title|name):\s*['\"]?(.+?)['\"]?\s*$", match[1], re.M)
    return text[match.end() :], (title[1] if title else None)


def _is_commands(content: str, language: str) -> bool:
    if language in SHELL_LANGUAGES:
        return True
    if language not in _MAYBE_SHELL:
        return False
    for line in content.splitlines():
        stripped = _PROMPT.sub("", line.strip(), count=1)
        if not stripped or stripped.startswith("#"):
            continue
        words = stripped.split()
        first = words[0]
        if re.match(r"^[A-Za-z_]\w*=", first):
            return len(words) == 1 or words[1] in COMMAND_WORDS
        return first in COMMAND_WORDS or first in ("for", "while", "if")
    return False


def _without_prompts(content: str) -> tuple[str, int]:
    """Commands of a console transcript: prompts stripped, output lines left out (counted)."""
    lines = content.splitlines()
    if not any(_PROMPT.match(line) for line in lines):
        return content, 0
    kept, dropped, continuing = [], 0, False
    for line in lines:
        if _PROMPT.match(line):
            kept.append(_PROMPT.sub("", line, count=1))
            continuing = line.rstrip().endswith("\\")
        elif continuing:
            kept.append(line)
            continuing = line.rstrip().endswith("\\")
        elif line.strip():
            dropped += 1
    return "\n".join(kept) + "\n", dropped


def _safe_info(language: str) -> str:
    """A prose fence's info string that the runbook parser reads as prose: one plain word."""
    word = re.sub(r"[^a-z0-9_+.-]", "", language)
    return word if word and word not in STEP_KINDS else "text"


def _prose(lines: list[str], first: int, rewrites: dict[int, str]) -> str:
    out = []
    for offset, line in enumerate(lines):
        number = first + offset
        if number in rewrites:
            match = _FENCE_LINE.match(line)
            if match:
                line = f"{match['lead']}{match['fence']}{rewrites[number]}"
        out.append(line)
    return "\n".join(out).strip("\n") + "\n" if any(line.strip() for line in out) else ""
