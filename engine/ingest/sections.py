"""What each section of a page is for, from its heading's words and a few signals in its code.

A how-to page is more than its procedure: it has prerequisites to check, a verification at the end,
and often troubleshooting, a quick reference (a list of commands), an FAQ or a reference part. Only
the procedure is meant to run in sequence; restarting a VM from a troubleshooting section or a
quick reference's whole command list run one after another is what an operator would never do. So
every heading is given a class here, a sub-heading inherits its parent's class unless its own words
say otherwise, and ``pipeline`` turns only procedure blocks (and the read-only checks of
prerequisites and verification) into steps; every other block stays prose with its code.

A page as a whole is a *reference* (an API cheat sheet, a list of endpoints) rather than a
procedure when its code is mostly endpoint lines (``GET /nodes/{node}/qemu``) and parameter lists;
such a page is said to be one and proposes its read-only examples at most.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PROCEDURE = "procedure"
PREREQUISITES = "prerequisites"
VERIFICATION = "verification"
TROUBLESHOOTING = "troubleshooting"
REFERENCE = "reference"
QUICK_REFERENCE = "quick reference"
FAQ = "FAQ"

# Why a class's blocks are not run in sequence: said in ingest's output for each section kept as prose.
WHY_PROSE = {
    TROUBLESHOOTING: "troubleshooting is not run in sequence, only when something went wrong",
    QUICK_REFERENCE: "a quick reference lists commands to pick from, not to run one after another",
    FAQ: "an FAQ answers questions; its commands are examples, not a procedure",
    REFERENCE: "a reference describes calls and options; it is not a procedure",
}
# Sections whose commands become steps only when they only read (checks before and after the procedure).
CHECKS = frozenset({PREREQUISITES, VERIFICATION})

# Heading words per class, tried in this order (the first match wins): "Troubleshooting the upgrade"
# is troubleshooting, "Upgrade reference" is a reference.
_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        TROUBLESHOOTING,
        re.compile(
            r"troubleshoot|debugging|\bif (?:something|it|things) (?:goes|go|went|fails?)\b|"
            r"\b(?:common|known) (?:problems|issues|errors|pitfalls)\b|\bgotchas\b|\bwhen things go wrong\b|"
            r"\brecover(?:y|ing)? from\b"
        ),
    ),
    (
        QUICK_REFERENCE,
        re.compile(
            r"quick[ -]?ref|cheat ?sheet|\btl;?dr\b|\bat a glance\b|\bone[- ]liners?\b|"
            r"\b(?:useful|handy|common|other|more) commands\b|\bcommands? (?:summary|overview|list)\b|"
            r"\bsummary of (?:the )?commands\b"
        ),
    ),
    (FAQ, re.compile(r"\bfaqs?\b|frequently asked|\bq ?& ?a\b|\bquestions\b")),
    (
        REFERENCE,
        re.compile(
            r"\breference\b|\bapi endpoints?\b|\bendpoints\b|^(?:parameters|options|arguments|flags)$|"
            r"\bappendix\b|\bglossary\b|\bfurther reading\b|\bsee also\b"
        ),
    ),
    (
        PREREQUISITES,
        re.compile(
            r"prerequisites?|\brequirements\b|\bbefore (?:you|we) (?:start|begin)\b|\bwhat you(?:'ll)? need\b|"
            r"\bassumptions\b"
        ),
    ),
    (
        VERIFICATION,
        re.compile(
            r"\bverif(?:y|ying|ication)\b|\bcheck(?:ing)? (?:that|the result|it works)\b|\btest(?:ing)? it\b|"
            r"\bvalidat(?:e|ion)\b|\bconfirm(?:ing)?\b|\bdid it work\b|\bsanity check\b"
        ),
    ),
)
# A line of a code block that documents an API call instead of making one: "GET /nodes/{node}/qemu".
ENDPOINT_LINE = re.compile(r"^\s*(?:GET|POST|PUT|DELETE|PATCH)\s+/\S*\s*$")
PARAMETER_LINE = re.compile(
    r"^\s*(?:Parameters|Returns|Arguments|Options|Permissions)\s*:|^\s+[\w-]+ \((?:string|integer|boolean|number|enum)"
)


# A section whose heading says nothing of its class but whose text opens on something gone wrong.
TROUBLE_OPENING = re.compile(
    r"^(?:if|when) (?:you (?:see|get)|[^.]{0,60}\b(?:fails?|failed|does ?n[o']t|did ?n[o']t|won't|cannot|can't|hangs?|"
    r"is stuck|errors?)\b)",
    re.I,
)


def heading_class(text: str, parent: str | None) -> tuple[str, bool]:
    """(the class of a section headed ``text`` under a section of class ``parent``, whether its own words said so)."""
    words = " ".join(text.lower().split())
    for kind, pattern in _WORDS:
        if pattern.search(words):
            return kind, True
    if parent and parent != PROCEDURE:
        return parent, False
    return PROCEDURE, False


@dataclass
class Section:
    """A heading of the page: where, what it says, and the class its blocks are treated as."""

    title: str
    line: int
    level: int
    kind: str
    by_words: bool  # its own heading words gave the class (else inherited or the default)
    named: Section | None = None  # the section whose heading words gave the class (itself, or an ancestor)
    signal: str = ""  # the content signal that gave the class, when its heading did not

    def opening(self, paragraph: str) -> None:
        """Read the section's first paragraph: an unclassed one that opens on a failure is troubleshooting."""
        if self.kind == PROCEDURE and not self.by_words and TROUBLE_OPENING.match(paragraph.strip()):
            self.kind, self.signal, self.named = TROUBLESHOOTING, "its text opens on something gone wrong", self


class Outline:
    """The sections of a page as its headings come, each with its class (sub-headings inherit)."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self._stack: list[Section] = []

    def heading(self, title: str, line: int, level: int) -> Section:
        while self._stack and self._stack[-1].level >= level:
            self._stack.pop()
        parent = self._stack[-1].kind if self._stack else None
        kind, by_words = heading_class(title, parent)
        section = Section(title, line, level, kind, by_words)
        section.named = section if by_words or not self._stack else self._stack[-1].named
        self._stack.append(section)
        self.sections.append(section)
        return section

    @property
    def current(self) -> Section | None:
        return self._stack[-1] if self._stack else None


def is_listing(text: str) -> bool:
    """A code block that documents calls (endpoint lines, parameter lists) rather than running them."""
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return False
    documented = sum(1 for line in lines if ENDPOINT_LINE.match(line) or PARAMETER_LINE.match(line))
    return bool(ENDPOINT_LINE.match(lines[0])) or documented * 2 >= len(lines)


@dataclass(frozen=True)
class PageKind:
    """Whether a page is a reference, with the counts that say so."""

    reference: bool
    endpoints: int
    parameters: int
    commands: int

    def said(self) -> str:
        return (
            f"the page is a reference, not a procedure: its code blocks hold {self.endpoints} endpoint lines and "
            f"{self.parameters} parameter lines against {self.commands} command lines"
        )


def page_kind(code_texts: list[str]) -> PageKind:
    """A reference page: many endpoint lines or parameter lists, outnumbering the commands to run."""
    endpoints = parameters = commands = 0
    for text in code_texts:
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if ENDPOINT_LINE.match(line):
                endpoints += 1
            elif PARAMETER_LINE.match(line):
                parameters += 1
            elif not line.startswith((" ", "\t")):
                commands += 1
    documented = endpoints + parameters
    return PageKind(endpoints >= 5 and documented > commands, endpoints, parameters, commands)


def is_login(command: str) -> bool:
    """``ssh [options] host`` with no command: an interactive session, never a step."""
    words = command.split()
    return bool(words) and words[0] == "ssh" and not _after_ssh(words[1:])


def _after_ssh(words: list[str]) -> list[str]:
    """The remote command of ``ssh [options] host command``, quotes taken off."""
    index = 0
    while index < len(words) and words[index].startswith("-"):
        index += 2 if len(words[index]) == 2 else 1
    rest = " ".join(words[index + 1 :]).strip("'\"")
    return rest.split()
