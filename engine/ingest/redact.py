"""Credentials out of ingested text, before anything else reads it.

Pages written for people carry tokens: ``Authorization: PVEAPIToken=user@pve!id=<uuid>`` headers,
``password=...`` form fields, ``curl -u user:pass``, token secrets printed in example output. The
whole fetched document is scrubbed here first, so no later stage (the proposed runbook, the list of
adaptations, warnings, error messages, the saved file) can show a value it never saw. The command
parser drops credential-bearing options again on its own (``classify``); this is the net under it.

Over-redaction is the accepted cost: a UUID in prose is replaced too, because PVE token secrets
are UUIDs and telling them apart from other UUIDs is guesswork.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MARK = "[redacted]"

# A shell value that may contain $(...) with spaces: runs of non-space, or whole substitutions.
_SUBST = r"\$\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)"
_VALUE = rf"(?:{_SUBST}|[^\s\"'\\])+"
_RULES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "private key",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S),
        f"{MARK} (private key)",
    ),
    (
        "Authorization header",
        re.compile(
            rf"(?i)(\bauthorization\s*[:=]\s*)(?:(?:bearer|basic|pveapitoken)\b[ =]?)?"
            rf"(?:\s*{_VALUE})?"
        ),
        rf"\g<1>{MARK}",
    ),
    ("API token", re.compile(rf"(?i)(\bPVEAPIToken\s*=\s*){_VALUE}"), rf"\g<1>{MARK}"),
    ("API token", re.compile(r"(?i)(\b[\w.-]+@[\w.-]+![\w.-]+\s*=\s*)[\w-]{8,}"), rf"\g<1>{MARK}"),
    (
        "cookie or CSRF token",
        re.compile(rf"(?i)(\b(?:PVEAuthCookie|CSRFPreventionToken|cookie)\s*[:=]\s*){_VALUE}"),
        rf"\g<1>{MARK}",
    ),
    ("bearer token", re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\g<1>{MARK}"),
    (
        "password or secret",
        re.compile(
            rf"(?i)(\b[\w-]*(?:password|passwd|passphrase|secret|token|api[_-]?key|apikey)\s*[=:]\s*)(?![=\s]|\[redacted\])"
            rf"(?:\"[^\"\n]*\"|'[^'\n]*'|{_VALUE})"
        ),
        rf"\g<1>{MARK}",
    ),
    (
        "password option",
        re.compile(
            r"(?i)(--(?:password|passwd|passphrase|secret|token)(?:[= ])\s*)(?!\[redacted\])(?:\"[^\"\n]*\"|'[^'\n]*'|[^\s\"']+)"
        ),
        rf"\g<1>{MARK}",
    ),
    (
        "user:password",
        re.compile(r"((?:^|\s)(?:-u|--user)\s+[\"']?[^\s:\"']+:)(?!\[redacted\])[^\s\"']+"),
        rf"\g<1>{MARK}",
    ),
    ("URL password", re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/:@\"']+:)[^\s/@\"']+(?=@)"), rf"\g<1>{MARK}"),
    ("UUID", re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), MARK),
    ("JSON web token", re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*"), MARK),
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
    for what, pattern, replacement in _RULES:
        text, found = pattern.subn(replacement, text)
        if found:
            counts[what] = counts.get(what, 0) + found
    return Redacted(text, counts)


def scrub(text: str) -> str:
    """Just the scrubbed text (for messages that might quote outside input)."""
    return redact(text).text


def safe_source(source: str) -> str:
    """A source URL fit to print and store: no password, no token-like query values."""
    text = re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@\s]*@", r"\1", source, flags=re.I)
    return re.sub(
        r"(?i)([?&][\w-]*(?:token|key|secret|password|passwd|auth|sig|signature)[\w-]*=)[^&#]*", rf"\g<1>{MARK}", text
    )
