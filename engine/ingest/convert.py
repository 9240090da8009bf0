"""Any source format to markdown: HTML by markdownify, plain text by finding its command lines.

HTML is first cut down to the page's main content: trafilatura (a maintained main-content extractor)
reads the page, and the smallest element of the page holding what it read is kept, so navigation,
sidebars, headers, footers and reader comments never reach the steps; inside it, elements whose
class or id says they are furniture (comments, sidebar, share buttons...) go too. trafilatura's own
output is not used: it turns one-line ``<pre>`` blocks into inline code and drops their language.
markdownify then keeps the prose (headings, paragraphs, lists, tables) and turns each ``<pre>`` into
a fenced block whose language comes from the usual class names (``language-bash``, ``lang-sh``,
``highlight-source-shell``); the title is returned apart.

Plain text gets fences around runs of command lines. A line after a root prompt (``# qm list``) or
a user prompt (``$ ...``) is a command, never a markdown heading; the lines after it up to the next
blank line are its output, kept in the console fence that ``page`` drops output from.

Each converter returns notes for ingest's output: what was left out, what was read how.
"""

from __future__ import annotations

import re
from typing import Any

import trafilatura
from bs4 import BeautifulSoup, Tag
from markdownify import MarkdownConverter

from .commands import COMMAND_WORDS

# Class or id words of page furniture inside a page's main element (whole names or their -/_ parts).
_FURNITURE = frozenset(
    {
        "comment", "comments", "sidebar", "widget", "widgets", "navbar", "navigation", "menu", "breadcrumb",
        "breadcrumbs", "share", "sharing", "social", "related", "newsletter", "subscribe", "cookie", "cookies",
        "banner", "advert", "advertisement", "ads", "disqus", "respond", "masthead", "footer", "pagination",
    }
)  # fmt: skip
_ALWAYS_OUT = ("script", "style", "noscript", "template", "nav", "aside", "footer", "form", "iframe", "svg", "button")
_CANDIDATES = ("article", "main", "section", "div", "body")
# A console prompt in plain text: "# cmd" (root), "$ cmd", "root@pve01:~# cmd", "pve01$ cmd".
_TEXT_PROMPT = re.compile(r"^\s*(?:[\w.-]+@[\w.-]+(?::[^\s#$]*)?|[\w.-]+)?([#$])\s+(\S.*)$")


class _Converter(MarkdownConverter):  # type: ignore[misc]
    def _nothing(self, el: Any, text: str, parent_tags: Any) -> str:
        return ""

    convert_title = convert_nav = convert_footer = convert_aside = convert_noscript = convert_button = _nothing
    convert_form = convert_svg = convert_iframe = _nothing


def _language(el: Any) -> str:
    classes = list(el.get("class") or [])
    code = el.find("code")
    if code is not None:
        classes += list(code.get("class") or [])
    for name in classes:
        match = re.match(r"^(?:language|lang|highlight-source|highlight)-(\w+)$", name)
        if match:
            return match[1]
        if name in ("bash", "sh", "shell", "console", "yaml", "json"):
            return name
    return ""


def html_to_markdown(html: str) -> tuple[str | None, str, list[str]]:
    """(the page title, its main content as markdown, what was left out)."""
    title_match = re.search(r"<title[^>]*>(.*?)</title>", html, re.I | re.S)
    title = re.sub(r"\s+", " ", title_match[1]).strip() if title_match else None
    soup = BeautifulSoup(html, "html.parser")
    blocks = len(soup.find_all("pre"))
    main, how = _main_content(soup)
    for element in main.find_all(_is_furniture):
        if not element.decomposed:
            element.decompose()
    kept = len(main.find_all("pre"))
    notes = [f"HTML: took the page's main content, {how}"]
    if kept < blocks:
        notes.append(
            f"HTML: left out navigation, sidebars, header, footer and reader comments, with {blocks - kept} code "
            "block(s) in them: they are not part of the procedure"
        )
    text = _Converter(
        heading_style="ATX",
        bullets="-",
        code_language_callback=_language,
        escape_underscores=False,
        escape_asterisks=False,
    ).convert_soup(main)
    from html import unescape

    return (unescape(title) if title else None), re.sub(r"\n{3,}", "\n\n", text).strip() + "\n", notes


def _main_content(soup: BeautifulSoup) -> tuple[Tag, str]:
    """The smallest element holding what trafilatura reads as the page's main text (else <main>, <article>, <body>)."""
    for element in soup.find_all(_ALWAYS_OUT):
        if not element.decomposed:
            element.decompose()
    for element in soup.find_all(_is_furniture):  # what the markup names furniture, unless it holds the content
        if not element.decomposed and element.find(["main", "article", "h1"]) is None:
            element.decompose()
    read = trafilatura.extract(str(soup), include_comments=False, include_tables=True, favor_recall=True) or ""
    lines = [_letters(line) for line in read.splitlines() if len(line.strip()) >= 12]
    least = len(_letters(read)) * 9 // 10  # as much text as trafilatura read, give or take what it left out
    best: Tag | None = None
    best_size = 0
    if lines:
        for element in soup.find_all(_CANDIDATES):
            text = _letters(element.get_text())
            if len(text) < least or (best is not None and len(text) > best_size):  # ties: the innermost
                continue
            if sum(line in text for line in lines) * 10 >= len(lines) * 9:
                best, best_size = element, len(text)
    if best is not None:
        # Inside an <article> or <main>, the whole of it: trafilatura may read less than the author wrote
        # (it drops repeated paragraphs), and the page's own markup says where its content is.
        semantic = best if best.name in ("article", "main") else best.find_parent(["article", "main"])
        return semantic or best, f"{_describe(semantic or best)} (as trafilatura reads it)"
    fallback = soup.find("main") or soup.find("article") or soup.find(attrs={"role": "main"}) or soup.body or soup
    return fallback, f"{_describe(fallback)} (trafilatura found no main text)"


def _letters(text: str) -> str:
    """Text reduced to its letters and digits: trafilatura and the page differ in spaces and list marks."""
    return re.sub(r"\W+", "", text)


def _is_furniture(element: Tag) -> bool:
    if element.name in ("nav", "aside", "footer"):
        return True
    names = [*(element.get("class") or []), element.get("id") or ""]
    return any(name.lower() in _FURNITURE or _FURNITURE & set(re.split(r"[-_]", name.lower())) for name in names)


def _describe(element: Tag) -> str:
    if not isinstance(element, Tag) or element.name == "[document]":
        return "the whole page"
    marks = "".join(
        f' {key}="{" ".join(value) if isinstance(value, list) else value}"'
        for key, value in element.attrs.items()
        if key in ("id", "class")
    )
    return f"<{element.name}{marks}>"


def _is_command(line: str) -> bool:
    words = line.strip().removeprefix("$ ").split()
    if not words:
        return False
    first = words[0]
    if "=" in first and re.match(r"^[A-Za-z_]\w*=", first):  # VAR=value command
        return len(words) > 1 and words[1] in COMMAND_WORDS or bool(re.match(r"^[A-Z_][A-Z0-9_]*=\S*$", line.strip()))
    return first in COMMAND_WORDS or first in ("for", "while", "if")


def _prompted(line: str) -> tuple[str, str] | None:
    """(the prompt character, the command) of a line after a console prompt whose first word is a command."""
    match = _TEXT_PROMPT.match(line)
    if not match or not match[2].split() or match[2].split()[0] not in COMMAND_WORDS | {"for", "while", "if"}:
        return None
    return match[1], match[2]


def text_to_markdown(text: str) -> tuple[str | None, str, list[str]]:
    """(a title: the first short line, if any; the text as markdown with its commands fenced; notes)."""
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    title = None
    root_prompts: list[str] = []
    first = next((line.strip() for line in lines if line.strip()), "")
    if first and len(first) <= 100 and not _is_command(first) and not _prompted(first):
        title = first
        index = lines.index(next(line for line in lines if line.strip())) + 1
        if index < len(lines) and re.fullmatch(r"\s*(=+|-+)\s*", lines[index]):
            index += 1  # the title's underline
        out += [f"# {title}", ""]
    while index < len(lines):
        line = lines[index]
        if _prompted(line):
            index, block = _transcript(lines, index, root_prompts)
            out += ["", "```console", *block, "```", ""]
            continue
        if _is_command(line) or (line.startswith(("    ", "\t")) and line.strip() and _is_command(line.strip())):
            index, block = _command_lines(lines, index)
            out += ["", "```bash", *block, "```", ""]
            continue
        out.append(line)
        index += 1
    notes = []
    if root_prompts:
        more = f" (and {len(root_prompts) - 1} more like it)" if len(root_prompts) > 1 else ""
        notes.append(f"'{root_prompts[0]}' is a command after a root prompt, not a heading{more}")
    return title, re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n", notes


def _transcript(lines: list[str], index: int, root_prompts: list[str]) -> tuple[int, list[str]]:
    """A console transcript from ``index``: prompted commands (as ``$ cmd``) and their output, to a blank line."""
    block: list[str] = []
    continuing = False
    while index < len(lines) and lines[index].strip():
        line = lines[index]
        prompted = None if continuing else _prompted(line)
        if prompted:
            if prompted[0] == "#":
                root_prompts.append(f"# {' '.join(prompted[1].split())}")
            block.append(f"$ {prompted[1]}")
        elif not continuing and not line.startswith((" ", "\t")) and _is_command(line):
            block.append(f"$ {line.strip()}")  # a command the author wrote without its prompt
        else:
            block.append(line.rstrip())
        continuing = (bool(prompted) or continuing) and line.rstrip().endswith("\\")
        index += 1
    return index, block


def _command_lines(lines: list[str], index: int) -> tuple[int, list[str]]:
    """A run of command lines without prompts from ``index`` (continuations and loops kept whole)."""
    block: list[str] = []
    depth = 0
    while index < len(lines):
        current = lines[index]
        stripped = current.strip()
        if not stripped and depth == 0 and not (block and block[-1].rstrip().endswith("\\")):
            break
        if (
            block
            and depth == 0
            and not block[-1].rstrip().endswith(("\\", "|", "&&"))
            and not _is_command(current)
            and not stripped.startswith(("|", "&&"))
        ):
            break
        depth += len(re.findall(r"\b(do|then)\b", stripped)) - len(re.findall(r"\b(done|fi)\b", stripped))
        line_text = current.strip() if not block else current.rstrip()
        block.append(line_text[2:] if line_text.startswith("$ ") else line_text)
        index += 1
    return index, block
