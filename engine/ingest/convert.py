"""Any source format to markdown: HTML by markdownify, plain text by finding its command lines.

HTML keeps its prose (headings, paragraphs, lists, tables) and turns each ``<pre>`` into a fenced
block whose language comes from the usual class names (``language-bash``, ``lang-sh``,
``highlight-source-shell``). Page furniture (scripts, styles, navigation, the ``<title>``) is left
out; the title is returned apart. Plain text gets fences around runs of command lines.
"""

from __future__ import annotations

import re
from typing import Any

from markdownify import MarkdownConverter

from .commands import COMMAND_WORDS


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


def html_to_markdown(html: str) -> tuple[str | None, str]:
    """(the page title, its content as markdown)."""
    title_match = re.search(r"<title[^>]*>(.*?)</title>", html, re.I | re.S)
    title = re.sub(r"\s+", " ", title_match[1]).strip() if title_match else None
    text = _Converter(
        heading_style="ATX",
        bullets="-",
        code_language_callback=_language,
        escape_underscores=False,
        escape_asterisks=False,
    ).convert(html)
    from html import unescape

    return (unescape(title) if title else None), re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _is_command(line: str) -> bool:
    words = line.strip().removeprefix("$ ").split()
    if not words:
        return False
    first = words[0]
    if "=" in first and re.match(r"^[A-Za-z_]\w*=", first):  # VAR=value command
        return len(words) > 1 and words[1] in COMMAND_WORDS or bool(re.match(r"^[A-Z_][A-Z0-9_]*=\S*$", line.strip()))
    return first in COMMAND_WORDS or first in ("for", "while", "if")


def text_to_markdown(text: str) -> tuple[str | None, str]:
    """(a title: the first short line, if any; the text as markdown with its commands fenced)."""
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    title = None
    first = next((line.strip() for line in lines if line.strip()), "")
    if first and len(first) <= 100 and not _is_command(first):
        title = first
        index = lines.index(next(line for line in lines if line.strip())) + 1
        out.append(f"# {title}")
        out.append("")
    while index < len(lines):
        line = lines[index]
        if _is_command(line) or (line.startswith(("    ", "\t")) and line.strip() and _is_command(line.strip())):
            block, depth = [], 0
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
            out += ["", "```bash", *block, "```", ""]
            continue
        out.append(line)
        index += 1
    return title, re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"
