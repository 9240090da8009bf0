"""Reading the source of an ingest: an http(s) URL or a local file, bounded in time and size.

Only http and https are fetched (``file:``, ``ftp:`` and the rest are refused by name); redirects
are followed up to a bound, each hop again http(s); the body is read in chunks and abandoned past
the size limit, whatever Content-Length claimed; a body that is not text (an image, an archive, a
PDF, bytes that are not UTF-8) is refused. Every failure is a ``FetchError`` whose message names
the source and says what went wrong, never a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from ..errors import RunbookError
from .commands import COMMAND_WORDS
from .redact import safe_source

TIMEOUT = 20.0  # seconds, for connecting and for each read
MAX_BYTES = 2 * 1024 * 1024
MAX_REDIRECTS = 5
_TEXT_TYPES = (
    "text/",
    "application/xhtml+xml",
    "application/xml",
    "application/markdown",
    "application/x-sh",
    "application/x-shellscript",
)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_COMMAND_AFTER_HASH = re.compile(rf"^# (?:{'|'.join(re.escape(w) for w in sorted(COMMAND_WORDS))})(?:\s|$)")


class FetchError(RunbookError):
    """The source could not be read as a text page; the message says why and what to do."""


@dataclass(frozen=True)
class Source:
    """A fetched page: where from (safe to print), its text, and its format."""

    location: str  # the URL (credentials stripped) or the file path
    text: str
    format: str  # markdown | html | text
    url: str | None = None  # final URL after redirects, for http sources


def read_source(
    source: str,
    *,
    timeout: float = TIMEOUT,
    max_bytes: int = MAX_BYTES,
    max_redirects: int = MAX_REDIRECTS,
    transport: httpx.BaseTransport | None = None,
) -> Source:
    """Fetch ``source`` (http(s) URL or local path) as text, or raise ``FetchError``."""
    scheme = _SCHEME.match(source)
    if scheme and len(scheme[1]) > 1:  # one letter is a Windows drive, not a scheme
        if scheme[1].lower() not in ("http", "https"):
            raise FetchError(
                f"{safe_source(source)}: only http:// and https:// URLs, or a local file path, can be "
                f"ingested (got a {scheme[1]}: URL)"
            )
        return _fetch_url(source, timeout, max_bytes, max_redirects, transport)
    return _read_file(Path(source).expanduser(), source, max_bytes)


def _read_file(path: Path, shown: str, max_bytes: int) -> Source:
    if not path.exists():
        raise FetchError(f"{shown}: no such file (give an http(s) URL or the path of a markdown, HTML or text file)")
    if not path.is_file():
        raise FetchError(f"{shown}: not a file")
    size = path.stat().st_size
    if size > max_bytes:
        raise FetchError(
            f"{shown}: the file is {size} bytes, over the limit of {max_bytes} bytes for a page to "
            "ingest; is it really a procedure page?"
        )
    data = path.read_bytes()
    text = _decode(data, None, shown)
    return Source(shown, text, _format(text, None, path.suffix.lower()))


def _fetch_url(
    url: str, timeout: float, max_bytes: int, max_redirects: int, transport: httpx.BaseTransport | None
) -> Source:
    shown = safe_source(url)
    if not urlsplit(url).hostname:
        raise FetchError(f"{shown}: the URL has no host")
    try:
        with httpx.Client(
            follow_redirects=True,
            max_redirects=max_redirects,
            timeout=timeout,
            transport=transport,
            headers={"Accept": "text/markdown, text/html, text/plain;q=0.9, */*;q=0.1", "User-Agent": "runbook-ingest"},
        ) as client:
            with client.stream("GET", url) as response:
                final = safe_source(str(response.url))
                if response.status_code >= 400:
                    raise FetchError(
                        f"{shown}: the server answered {response.status_code} {response.reason_phrase or ''}".rstrip()
                        + (f" (after redirects, at {final})" if final != shown else "")
                        + "; check the address"
                    )
                ctype = response.headers.get("content-type", "")
                if ctype and not ctype.lower().startswith(_TEXT_TYPES):
                    raise FetchError(
                        f"{shown}: not a text page (Content-Type: {ctype.split(';')[0]}); ingest "
                        "reads markdown, HTML or plain text"
                    )
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise FetchError(f"{shown}: the page is {declared} bytes, over the limit of {max_bytes} bytes")
                chunks, total = [], 0
                for chunk in response.iter_bytes():
                    total += len(chunk)
                    if total > max_bytes:
                        raise FetchError(f"{shown}: the page is over the limit of {max_bytes} bytes; stopped reading")
                    chunks.append(chunk)
                data = b"".join(chunks)
                charset = response.charset_encoding
    except FetchError:
        raise
    except httpx.TooManyRedirects:
        raise FetchError(f"{shown}: more than {max_redirects} redirects; stopped following them") from None
    except httpx.UnsupportedProtocol as exc:
        raise FetchError(f"{shown}: redirected to a URL that is not http(s) ({exc}); not followed") from None
    except httpx.TimeoutException:
        raise FetchError(f"{shown}: no answer within {timeout:g} seconds") from None
    except httpx.ConnectError as exc:
        raise FetchError(f"{shown}: cannot connect ({_reason(exc)})") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"{shown}: the request failed ({_reason(exc)})") from None
    text = _decode(data, charset, shown)
    path = urlsplit(str(response.url)).path
    return Source(shown, text, _format(text, ctype, Path(path).suffix.lower()), url=final)


def _reason(exc: Exception) -> str:
    return str(exc).strip() or type(exc).__name__


def _decode(data: bytes, charset: str | None, shown: str) -> str:
    if b"\x00" in data[:8192]:
        raise FetchError(f"{shown}: binary content, not a text page; ingest reads markdown, HTML or plain text")
    try:
        text = data.decode(charset or "utf-8")
    except (UnicodeDecodeError, LookupError):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise FetchError(
                f"{shown}: not text in UTF-8 (or the declared charset); ingest reads markdown, HTML or plain text"
            ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise FetchError(f"{shown}: the page is empty")
    return text


def _format(text: str, ctype: str | None, suffix: str) -> str:
    """markdown, html or text, from the Content-Type, then the file suffix, then the content."""
    kind = (ctype or "").split(";")[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml") or suffix in (".html", ".htm", ".xhtml"):
        return "html"
    if kind in ("text/markdown", "text/x-markdown", "application/markdown") or suffix in (".md", ".markdown"):
        return "markdown"
    head = text.lstrip()[:500].lower()
    if head.startswith(("<!doctype html", "<html")) or re.search(r"<(body|head|pre|div|p)\b", head):
        return "html"
    if re.search(r"^(```|~~~)", text, re.M):
        return "markdown"
    if suffix != ".txt" and any(not _COMMAND_AFTER_HASH.match(m[0]) for m in re.finditer(r"^#{1,6} .*", text, re.M)):
        return "markdown"  # a heading; "# qm list" is a command after a root prompt, not one
    return "text"
