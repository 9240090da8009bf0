"""Credentials out of ingested text, before anything else reads it.

Pages written for people carry tokens: ``Authorization: PVEAPIToken=user@pve!id=<uuid>`` headers,
``password=...`` form fields, ``curl -u user:pass``, login answers with their ``ticket`` and
``CSRFPreventionToken``, token secrets printed in example output. The whole fetched document is
scrubbed here first, so no later stage (the proposed runbook, the list of adaptations, warnings,
error messages, the saved file) can show a value it never saw. The command parser drops
credential-bearing options again on its own (``classify``); this is the net under it.

Two layers: this project's rules, which know Proxmox's forms (tickets, CSRF tokens, token ids,
``--password`` options, values named like credentials in JSON, YAML, headers, URLs and prose), and
then detect-secrets, a maintained detector, for what they do not know (vendors' token formats,
high-entropy quoted strings, credentials in code assignments).

A value is replaced, never the text around it, so the page stays the markdown it was: a value
inside prose stops before markdown's own punctuation (``**Password:** hunter2`` keeps its bold),
and a word that only follows a credential-like label in a sentence (``**Creating an API Token:**
tickets expire``) is left alone unless it looks like a secret (digits or symbols in it).

Over-redaction is the accepted cost: a UUID in prose is replaced too, because PVE token secrets
are UUIDs and telling them apart from other UUIDs is guesswork.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass

from detect_secrets.core.scan import _process_line_based_plugins
from detect_secrets.settings import default_settings

MARK = "[redacted]"

_KEYWORDS = r"password|passwd|passphrase|secret|token|ticket|csrf|api[_-]?key|apikey"
# A shell value that may contain $(...) with spaces: runs of non-space, or whole substitutions.
_SUBST = r"\$\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)"
_VALUE = rf"(?:{_SUBST}|[^\s\"'\\`])+"
# In prose a value ends before markdown's closing punctuation (emphasis, code spans, links).
# A command substitution or a value already marked inside it is taken whole.
_PROSE_PART = rf"(?:{_SUBST}|\[redacted\]|[^\s\"'\\`*_()\[\]<>|])+"
_PROSE_VALUE = rf"{_PROSE_PART}(?:[*_]{_PROSE_PART})*"
_NOT_MARKED = r"(?!\[redacted\])"
# A reference to a variable ($PASSWORD, ${TOKEN}) holds no secret: adapt turns it into a secret parameter.
_KEPT = r"(?!\[redacted\]|\$\{?[A-Za-z_]\w*\}?(?![\w\[]))"
_FENCE = re.compile(r"^\s{0,3}(?:>\s*)*(`{3,}|~{3,})")

Rule = tuple[str, re.Pattern[str], str | Callable[[re.Match[str]], str]]

# Whole-text rules: forms that span lines, or are unmistakable wherever they stand.
_BLOCK_RULES: tuple[Rule, ...] = (
    (
        "private key",
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
            re.S,
        ),
        f"{MARK} (private key)",
    ),
    (
        "ticket",  # PVE:root@pam:6752A1F0::sig, also URL-encoded in a cookie
        re.compile(
            r"\b(?:PVE|PMG|PBS)(?::|%3A)[^\s:%@\"']+(?:@|%40)[\w.-]+(?::|%3A)[0-9A-Fa-f]{8}(?:::|%3A%3A)"
            r"[A-Za-z0-9+/=%]+"
        ),
        MARK,
    ),
    ("private key", re.compile(r"\bLS0tLS1CRUdJTi[A-Za-z0-9+/]{8,}={0,2}"), lambda m: _pem_key(m[0])),
    ("CSRF token", re.compile(r"\b[0-9A-F]{8}:[A-Za-z0-9+/]{20,}={0,2}(?![\w+/])"), MARK),
    ("JSON web token", re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*"), MARK),
    ("UUID", re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), MARK),
)


def _line_rules(value: str) -> tuple[Rule, ...]:
    """Labelled values whose label says what they are; ``value`` is how far a value runs (code or prose)."""
    return (
        (
            "Authorization header",
            re.compile(
                rf"(?i)(\bauthorization\s*[:=]\s*)(?:(?:bearer|basic|pveapitoken)\b[ =]?\s*)?"
                rf"{_NOT_MARKED}(?![*_]){value}"
            ),
            rf"\g<1>{MARK}",
        ),
        ("API token", re.compile(rf"(?i)(\bPVEAPIToken\s*=\s*){_NOT_MARKED}{value}"), rf"\g<1>{MARK}"),
        ("API token", re.compile(r"(?i)(\b[\w.-]+@[\w.-]+![\w.-]+\s*=\s*)[\w-]{8,}"), rf"\g<1>{MARK}"),
        (
            "cookie or CSRF token",
            re.compile(
                rf"(?i)(\b(?:P[VMB][EMS]AuthCookie|CSRFPreventionToken|cookie)\s*[:=]\s*){_NOT_MARKED}(?![*_]){value}"
            ),
            rf"\g<1>{MARK}",
        ),
        ("bearer token", re.compile(r"(?i)(\bbearer\s+)(?!\[redacted\])[A-Za-z0-9._~+/=-]{8,}"), rf"\g<1>{MARK}"),
        (
            "password or secret",  # "ticket": "...", 'password': '...' (JSON, Python, YAML with quotes)
            re.compile(rf"(?i)([\"'][\w-]*(?:{_KEYWORDS})[\"']\s*[:=]\s*[\"']){_NOT_MARKED}[^\"'\n]+(?=[\"'])"),
            rf"\g<1>{MARK}",
        ),
        (
            "password option",
            re.compile(
                rf"(?i)(--(?:password|passwd|passphrase|secret|token)(?:[= ])\s*)(?:([\"']){_KEPT}[^\"'\n]+(?=\2)|{_KEPT}[^\s\"']+)"
            ),
            lambda m: m[1] + (m[2] or "") + MARK,
        ),
        (
            "user:password",
            re.compile(r"((?:^|\s)(?:-u|--user)\s+[\"']?[^\s:\"']+:)(?!\[redacted\])[^\s\"']+"),
            rf"\g<1>{MARK}",
        ),
        (
            "URL password",
            re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/:@\"'\[\]]+:)(?!\[redacted\])[^\s/@\"']+(?=@)"),
            rf"\g<1>{MARK}",
        ),
    )


_CODE_RULES = _line_rules(_VALUE)
_PROSE_RULES = _line_rules(_PROSE_VALUE)

# A value in quotes keeps its quotes (the replacement is ``prefix + quote + MARK``, the closing one stays).
_QUOTED = rf"([\"']){_KEPT}[^\"'\n]+(?=\2)"
_ASSIGNED_CODE = re.compile(rf"(?i)(\b[\w-]*(?:{_KEYWORDS})\s*=\s*)(?:{_QUOTED}|{_KEPT}(?![\"']){_VALUE})")
# ``[redacted](...)`` would read as a link: a command substitution in prose is left (it holds no secret).
_ASSIGNED_PROSE = re.compile(rf"(?i)(\b[\w-]*(?:{_KEYWORDS})\s*=\s*)(?:{_QUOTED}|{_KEPT}(?!\$\(){_PROSE_VALUE})")
_LABELLED_CODE = re.compile(rf"(?i)(\b[\w-]*(?:{_KEYWORDS}):\s*)(?:{_QUOTED}|{_KEPT}(?![\"']){_VALUE})")
_LABELLED_PROSE = re.compile(
    rf"(?i)(\b[\w-]*(?:{_KEYWORDS})(?:\*\*|__|\*|_)?:(?:\*\*|__|\*|_)?\s*(?:`)?){_NOT_MARKED}({_PROSE_VALUE})"
)


@dataclass(frozen=True)
class Redacted:
    """Scrubbed text and how many values of each kind were taken out (never the values)."""

    text: str
    counts: dict[str, int]

    def summary(self) -> str:
        return ", ".join(f"{n} {what}{'s' if n > 1 else ''}" for what, n in sorted(self.counts.items()))


def redact(text: str) -> Redacted:
    """``text`` with every credential-looking value replaced by ``[redacted]``."""
    counts: dict[str, int] = {}

    def apply(rules: tuple[Rule, ...], value: str) -> str:
        for what, pattern, replacement in rules:
            value, found = pattern.subn(replacement, value)
            if found:
                counts[what] = counts.get(what, 0) + found
        return value

    text = apply(_BLOCK_RULES, text)
    lines = text.split("\n")
    fence: str | None = None
    for index, line in enumerate(lines):
        opening = _FENCE.match(line)
        line = apply(_CODE_RULES if fence is not None else _PROSE_RULES, line)
        line = _labelled(line, code=fence is not None, counts=counts)
        lines[index] = line
        if opening and (fence is None or opening[1].startswith(fence)):
            fence = None if fence is not None else opening[1][0] * 3
    text = _detected("\n".join(lines), counts)
    return Redacted(text, counts)


def _labelled(line: str, *, code: bool, counts: dict[str, int]) -> str:
    """``password=VALUE`` anywhere; ``secret: VALUE`` in code, or in prose when VALUE looks like a secret."""

    def replace(match: re.Match[str]) -> str:
        counts["password or secret"] = counts.get("password or secret", 0) + 1
        return match[1] + (match[2] or "") + MARK

    def prose(match: re.Match[str]) -> str:
        if not _looks_secret(match[2]):
            return match[0]
        counts["password or secret"] = counts.get("password or secret", 0) + 1
        return match[1] + MARK

    if code:
        return _LABELLED_CODE.sub(replace, _ASSIGNED_CODE.sub(replace, line))
    return _LABELLED_PROSE.sub(prose, _ASSIGNED_PROSE.sub(replace, line))


def _pem_key(encoded: str) -> str:
    """A base64-encoded PEM block (Talos and Kubernetes configs): a private key goes, a certificate stays."""
    head = base64.b64decode(encoded[:64] + "=" * (-len(encoded[:64]) % 4), validate=False)
    return f"{MARK} (private key)" if b"PRIVATE KEY" in head else encoded


def _looks_secret(value: str) -> bool:
    """A word of a sentence is no secret; a value with digits or symbols in it may be one."""
    return len(value) >= 6 and bool(re.search(r"[0-9!@#$%^&+=/~]", value)) and not value.startswith(("http", "/"))


# detect-secrets reports some finds by a prefix only (``ghp`` of a GitHub token): the value
# replaced runs on over the characters a token is made of.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9+/=._~-]*")
_SKIPPED_TYPES = frozenset({"Private Key"})  # blocks are replaced whole by the rule above
_DIGEST = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # sha1/sha256 checksums and image schematic ids are public


def _detected(text: str, counts: dict[str, int]) -> str:
    """What detect-secrets finds in ``text`` after the rules, replaced where it stands."""
    lines = text.split("\n")
    with default_settings() as settings:
        settings.disable_plugins("IPPublicDetector")  # an address is no secret, and adapt must see it
        found = list(_process_line_based_plugins(list(enumerate(lines, start=1)), "page.md"))
    for secret in found:
        value = secret.secret_value or ""
        if secret.type in _SKIPPED_TYPES or not value or _DIGEST.fullmatch(value):
            continue
        index = secret.line_number - 1
        line, start = lines[index], lines[index].find(value)
        while start >= 0:
            end = _TOKEN_CHARS.match(line, start + len(value)).end()  # type: ignore[union-attr]
            if end - start < 8 or MARK in line[start:end]:  # a word, or a prefix with nothing after it
                start = line.find(value, end)
                continue
            line = line[:start] + MARK + line[end:]
            counts["detected secret"] = counts.get("detected secret", 0) + 1
            start = line.find(value, start + len(MARK))
        lines[index] = line
    return "\n".join(lines)


def scrub(text: str) -> str:
    """Just the scrubbed text (for messages that might quote outside input)."""
    return redact(text).text


def safe_source(source: str) -> str:
    """A source URL fit to print and store: no password, no token-like query values."""
    text = re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@\s]*@", r"\1", source, flags=re.I)
    return re.sub(
        r"(?i)([?&][\w-]*(?:token|key|secret|password|passwd|auth|sig|signature)[\w-]*=)[^&#]*", rf"\g<1>{MARK}", text
    )
