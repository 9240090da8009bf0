"""A markdown page as the runbook composer needs it: its title, and prose and code blocks in order.

markdown-it-py (the parser runbooks themselves are read with) finds the code blocks, so a fence
inside a list or a block quote is found exactly as a markdown viewer shows it. Prose is kept as
the author's own source lines. Code blocks are commands when their language is a shell's (or
none, and their first line reads like a command); other fences (yaml, json, output) stay prose,
with their info string reduced to a plain language word so that no prose fence can be mistaken
for a step when the runbook is parsed. A shell fence that lists API endpoints and their parameters
(``GET /nodes/{node}/qemu``) documents calls instead of making them: it stays prose too.

Many pages put commands in their paragraphs: a line of its own (``pvesh create ...``), a line after a
``$`` prompt, or inline code the sentence tells the reader to run (``run `qm start 100```). Those are
found here, each with a note saying so; inline code in a sentence that warns against it (``never
run `qm destroy 100```) or only mentions it is not a command, and a note says that too. Every block
carries the section it sits in (``sections.Outline``), so that ``pipeline`` runs only the procedure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from markdown_it import MarkdownIt

from ..runbook.model import STEP_KINDS
from .commands import COMMAND_WORDS, NODE_COMMANDS
from .sections import PREREQUISITES, PROCEDURE, VERIFICATION, Outline, Section, is_listing, is_login

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
# Shell prompts: ``$``, ``user@host:~#``, ``host$``, and the arrows zsh themes print (``❯``, ``➜``, ``λ``).
_PROMPT = re.compile(r"^(?:\$|[❯➜λ»]|[\w.-]+@[\w.-]+(?::[^\s#$]*)?[#$]|[\w.-]+[#$])\s")
_FENCE_LINE = re.compile(r"^(?P<lead>(?:\s*>)*\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKDOWN = MarkdownIt("commonmark")
# First words that make a line of prose, or inline code, a command without a prompt before it: words
# no English sentence starts with (``cat``, ``test``, ``set`` and the like need a ``$`` prompt).
PROSE_COMMANDS = NODE_COMMANDS | {"curl", "wget", "ssh", "scp", "rsync", "talosctl", "kubectl", "helm", "flux"}
PROSE_COMMANDS |= {"systemctl", "journalctl", "apt", "apt-get", "ansible-playbook", "virt-customize", "sudo"}
_RUN_WORDS = re.compile(r"\b(?:run|running|type|typing|execute|executing|enter|issue|use|using|with|invoke|do)\b")
_WARNING_WORDS = re.compile(
    r"\b(?:never|do not|don't|must not|mustn't|should not|shouldn't|avoid|instead of|rather than|careful)\b"
)
# A sentence giving examples ("for example, run `a`, or `b`"): what it shows is not a step of the procedure.
_EXAMPLE_WORDS = re.compile(r"\b(?:for example|for instance|e\.g\.|such as)\b")
_CLAUSE_END = re.compile(r"[.,;:!?](?=\s)|\n\n")
_SENTENCE_END = re.compile(r"[.;!?](?=\s)|\n\n")


@dataclass
class Code:
    """A block of commands, with the heading and section it sits under and the source line it starts on."""

    text: str
    language: str
    line: int
    heading: str | None
    dropped_output: int = 0  # lines of example output left out (after a prompt)
    section: Section | None = None
    source: str = ""  # the page's markdown for the block, kept as prose when the block is not run
    found: str = ""  # how it was found in a paragraph: "line", "prompt" or "inline" ("" for a code block)

    @property
    def kind(self) -> str:
        """The class of the section the block sits in (procedure when the page has no headings)."""
        return self.section.kind if self.section else PROCEDURE


@dataclass
class Prose:
    text: str


@dataclass
class Document:
    title: str | None
    blocks: list[Code | Prose] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was found where, and what was not taken (for the output)
    sections: list[Section] = field(default_factory=list)
    listings: list[str] = field(default_factory=list)  # every shell-like fence's text, listings included

    @property
    def code(self) -> list[Code]:
        return [b for b in self.blocks if isinstance(b, Code)]


def split_document(markdown: str, title: str | None = None) -> Document:
    """``markdown`` as prose and command blocks; ``title`` is used when the page has no ``# heading``."""
    markdown, front_title = _without_frontmatter(markdown)
    lines = markdown.splitlines()
    tokens = _MARKDOWN.parse(markdown)
    doc = Document(None)
    outline = Outline()
    heading: str | None = None
    rewrites: dict[int, str] = {}
    found: list[tuple[int, int, Code]] = []  # (first source line, line after it, block): lines the block replaces
    opened: set[int] = set()  # sections whose first paragraph was read
    for index, token in enumerate(tokens):
        if token.type == "heading_open" and token.map is not None:
            heading = tokens[index + 1].content.strip()
            outline.heading(heading, token.map[0] + 1, int(token.tag[1:]))
            if token.tag == "h1" and doc.title is None:
                doc.title = heading
            continue
        section = outline.current
        if token.type == "inline" and token.map is not None and index and tokens[index - 1].type == "paragraph_open":
            if section is not None and id(section) not in opened:
                opened.add(id(section))
                section.opening(token.content)
            if (section.kind if section else PROCEDURE) in _SCANNED:
                found += _paragraph_commands(token.content, token.map, heading, section, lines, doc.notes)
            continue
        if token.type not in ("fence", "code_block") or token.map is None:
            continue
        if section is not None:
            opened.add(id(section))  # a section's opening is its text before its first code
        language = token.info.strip().split(" ")[0].split("{")[0].lower() if token.type == "fence" else ""
        commands = _is_commands(token.content, language)
        if commands or language in SHELL_LANGUAGES:
            doc.listings.append(token.content)
        if commands and is_listing(token.content):
            doc.notes.append(
                f"line {token.map[0] + 1}: a code block of endpoint lines and parameters kept as prose: it documents "
                "calls, it does not make them"
            )
        if not commands or is_listing(token.content):
            if token.type == "fence":
                rewrites[token.map[0]] = _safe_info(language if not commands else "text")
            continue
        start, end = token.map
        text, dropped = _without_prompts(token.content)
        if text.strip():
            if token.type == "fence":
                rewrites[start] = _safe_info(language)  # used only if the block stays prose
            source = "\n".join(lines[start:end])
            found.append((start, end, Code(text, language, start + 1, heading, dropped, section, source)))
    cursor = 0
    for start, end, code in found:
        if start > cursor:
            doc.blocks.append(Prose(_prose(lines[cursor:start], cursor, rewrites)))
        code.source = _prose(code.source.splitlines(), start, rewrites)
        doc.blocks.append(code)
        cursor = max(cursor, end)
    if cursor < len(lines):
        doc.blocks.append(Prose(_prose(lines[cursor:], cursor, rewrites)))
    doc.blocks = [b for b in doc.blocks if not isinstance(b, Prose) or b.text]
    doc.sections = outline.sections
    doc.title = doc.title or front_title or title
    if doc.title and not re.search(r"^#\s", markdown, re.M):
        doc.blocks.insert(0, Prose(f"# {doc.title}\n"))
    return doc


def _paragraph_commands(
    content: str, span: list[int], heading: str | None, section: Section | None, lines: list[str], notes: list[str]
) -> list[tuple[int, int, Code]]:
    """Commands in a paragraph: whole lines (a prompt before them or not), then inline code it says to run.

    A whole line is cut out of the prose and replaced by its block; inline code stays in its sentence
    and its block comes after the paragraph.
    """
    first, after = span
    found = _line_commands(content.split("\n"), first, heading, section, lines, notes)
    cut = {line for start, end, _ in found for line in range(start, end)}
    found += _inline_commands(content, first, after, cut, heading, section, notes)
    return sorted(found, key=lambda item: item[0])


def _line_commands(
    rows: list[str], first: int, heading: str | None, section: Section | None, lines: list[str], notes: list[str]
) -> list[tuple[int, int, Code]]:
    """Lines of a paragraph that are commands: after a ``$`` prompt, or alone with a command's first word."""
    found: list[tuple[int, int, Code]] = []
    index = 0
    while index < len(rows):
        row = rows[index].strip()
        prompt = row.startswith("$ ")
        command = row[2:].strip() if prompt else row
        alone = len(rows) == 1 or (index > 0 and rows[index - 1].rstrip().endswith((":", "\\"))) or bool(found)
        if _line_is_command(command, prompt, alone) and is_login(command):
            notes.append(
                f"line {first + index + 1}: {_short(command)!r} not taken as a command: it opens a login session"
            )
        elif _line_is_command(command, prompt, alone):
            body, used = [command], 1
            while body[-1].endswith("\\") and index + used < len(rows):
                body.append(rows[index + used].strip())
                used += 1
            line = first + index + 1
            how = "a paragraph after a $ prompt" if prompt else "a paragraph"
            notes.append(f"line {line}: command found in {how}: {_short(' '.join(body))}")
            source = "\n".join(lines[first + index : first + index + used])
            code = Code(
                "\n".join(body) + "\n", "bash", line, heading, 0, section, source, "prompt" if prompt else "line"
            )
            found.append((first + index, first + index + used, code))
            index += used
            continue
        index += 1
    return found


def _inline_commands(
    content: str,
    first: int,
    after: int,
    cut: set[int],
    heading: str | None,
    section: Section | None,
    notes: list[str],
) -> list[tuple[int, int, Code]]:
    """Inline code a paragraph tells the reader to run; its block comes after the paragraph (line ``after``)."""
    found: list[tuple[int, int, Code]] = []
    for match in re.finditer(r"(?<!`)`([^`\n][^`]*?)`(?!`)", content):
        text = " ".join(match[1].split())
        words = text.removeprefix("$ ").split()
        if len(words) < 2 or words[0] not in PROSE_COMMANDS:
            continue
        line = first + content.count("\n", 0, match.start()) + 1
        if line - 1 in cut:
            continue
        sentence = content[_last(_SENTENCE_END, content, match.start()) : match.start()].lower()
        clause = content[_last(_CLAUSE_END, content, match.start()) : match.start()].lower()
        if is_login(text.removeprefix("$ ")):
            notes.append(f"line {line}: {_short(text)!r} not taken as a command: it opens a login session")
        elif _WARNING_WORDS.search(" ".join(sentence.split())):
            notes.append(
                f"line {line}: {_short(text)!r} in a paragraph not taken as a command: the text warns against running it"
            )
        elif (
            _EXAMPLE_WORDS.search(" ".join(sentence.split()))
            or re.search(r"`\s*,?\s*or\s*$", sentence)  # the second of "use `a` or `b`"
            or re.match(r"\s*,?\s*or\s+`", content[match.end() :])  # the first of them
        ):
            notes.append(
                f"line {line}: {_short(text)!r} in a paragraph not taken as a command: the text gives it as an example"
            )
        elif _RUN_WORDS.search(clause):
            notes.append(f"line {line}: command found in a paragraph: {_short(text)}")
            found.append(
                (after, after, Code(text.removeprefix("$ ") + "\n", "bash", line, heading, 0, section, "", "inline"))
            )
        else:
            notes.append(
                f"line {line}: {_short(text)!r} in a paragraph not taken as a command: the text mentions it without "
                "saying to run it"
            )
    return found


def _line_is_command(text: str, prompt: bool, alone: bool) -> bool:
    """A line of prose that is a command: after a ``$`` prompt, or alone on its line with a command's first word."""
    words = text.split()
    if not words or "`" in text:
        return False
    if prompt:
        return words[0] in COMMAND_WORDS or words[0] in PROSE_COMMANDS
    return alone and len(words) >= 2 and words[0] in PROSE_COMMANDS and not text.endswith((".", "?", "!", ","))


def _last(pattern: re.Pattern[str], text: str, end: int) -> int:
    """Where the sentence or clause that ``end`` is in starts (after the last boundary before it)."""
    start = 0
    for match in pattern.finditer(text, 0, end):
        start = match.end()
    return start


def _short(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 70 else line[:67] + "..."


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


_SCANNED = frozenset({PROCEDURE, PREREQUISITES, VERIFICATION})  # sections whose paragraphs are read for commands


def as_prose(code: Code) -> Prose | None:
    """A block that is not run, as the page wrote it (a fence that cannot be a step); None when its text stays in its paragraph."""
    return Prose(code.source) if code.source.strip() else None


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
