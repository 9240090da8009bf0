"""Run ``HttpRequest`` actions against services other than Proxmox VE (the Talos Image Factory).

Failures are sorted by what an operator must do next: the service is not reachable (nothing was
sent, safe to retry), TLS does not verify (a trust problem, retrying will not help), no answer in
time (the request may have been processed), or an unexpected status (the body says why). The body
is read in a bounded way, so a step pointed at an ISO by mistake cannot fill memory or stall.
"""

from __future__ import annotations

import json
import ssl
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from ..load.facts import Facts
from ..runbook.actions import HttpRequest, Result, StepFailed
from .base import Change, Progress
from .preview import http_changes

BODY_LIMIT = 1024 * 1024  # bytes kept of a response body; past this it is cut and not parsed as JSON
EXCERPT = 300  # characters of the body quoted in a failure message
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class HttpExecutor:
    """Sends ``HttpRequest``s with httpx; one connection pool for the executor's lifetime.

    ``timeout`` is the default for requests without their own. ``verify`` is httpx's: True for the
    system trust store, or an ``ssl.SSLContext`` holding a specific CA.
    """

    kind = "http"

    def __init__(self, timeout: float = 30, verify: bool | ssl.SSLContext = True):
        self.timeout = timeout
        self._client = httpx.Client(verify=verify, follow_redirects=True)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def missing(self, req: HttpRequest) -> list[str]:
        """Nothing: requests go from this process."""
        return []

    def preview(self, req: HttpRequest, facts: Facts) -> list[Change]:
        return http_changes(req, facts)

    def execute(self, req: HttpRequest, progress: Progress | None = None) -> Result:
        """Send ``req``; Result.data is ``{status, headers, body}`` plus ``json`` when the body is JSON.

        ``timeout`` bounds the whole exchange, not just each read: a server trickling bytes must
        not hold the run beyond it.
        """
        timeout = req.timeout if req.timeout is not None else self.timeout
        if not timeout > 0:
            raise StepFailed(f"timeout must be a positive number of seconds, not {timeout!r}", sent=False)
        method = req.method.upper()
        shown = f"{method} {_without_secrets(req.url)}"
        if progress is not None:
            progress(shown)
        headers = dict(req.headers)
        content = req.body.encode() if req.body is not None else None
        if req.body is not None and not any(k.lower() == "content-type" for k in headers) and _is_json(req.body):
            headers["Content-Type"] = "application/json"
        deadline = time.monotonic() + timeout
        try:
            with self._client.stream(
                method, req.url, headers=headers, content=content, timeout=httpx.Timeout(timeout)
            ) as response:
                raw, complete = _read_bounded(response, deadline)
        except httpx.ConnectTimeout:
            raise StepFailed(
                f"{shown}: no connection within {timeout:g} s. Is the service up and reachable from "
                "here (network, firewall, proxy)?",
                retryable=True,
                sent=False,
            ) from None
        except httpx.ConnectError as exc:
            raise _connect_failure(shown, exc) from None
        except (httpx.TimeoutException, _Deadline):
            raise StepFailed(
                f"{shown}: no complete response within {timeout:g} s; the service may still have acted "
                "on the request. Raise the step's `timeout` if the service is just slow.",
                retryable=method in IDEMPOTENT,
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise StepFailed(f"{shown}: not a usable http:// or https:// URL ({exc})", sent=False) from None
        except httpx.HTTPError as exc:
            raise StepFailed(f"{shown}: {type(exc).__name__}: {exc}", retryable=method in IDEMPOTENT) from None

        encoding = response.encoding or "utf-8"
        body = raw.decode(encoding, errors="replace")
        data: dict[str, Any] = {
            "status": response.status_code,
            "headers": {k: ", ".join(response.headers.get_list(k)) for k in response.headers.keys()},
            "body": body if complete else body + f"\n[runbook: body cut at {BODY_LIMIT} bytes]",
        }
        if complete and ("json" in response.headers.get("content-type", "").lower() or body.lstrip()[:1] in ("{", "[")):
            try:
                data["json"] = json.loads(body)
            except json.JSONDecodeError:
                pass  # not JSON after all: body stays available as text
        expected = req.expect or tuple(range(200, 300))
        if response.status_code not in expected:
            wanted = "2xx" if not req.expect else ", ".join(map(str, req.expect))
            excerpt = " ".join(body[:EXCERPT].split()) or "(empty body)"
            raise StepFailed(
                f"{shown} returned {response.status_code} {response.reason_phrase} (expected {wanted}): {excerpt}",
                retryable=response.status_code in (429, 503)
                or (response.status_code in (502, 504) and method in IDEMPOTENT),
                data=data,
            )
        return Result(data=data, summary=f"{shown}: {response.status_code}")


class _Deadline(Exception):
    """The whole exchange took longer than the request's timeout."""


def _read_bounded(response: httpx.Response, deadline: float) -> tuple[bytes, bool]:
    """Up to BODY_LIMIT bytes of the body and whether that is all of it, within ``deadline``."""
    raw = bytearray()
    for chunk in response.iter_bytes():
        raw += chunk
        if len(raw) > BODY_LIMIT:
            return bytes(raw[:BODY_LIMIT]), False
        if time.monotonic() > deadline:
            raise _Deadline
    return bytes(raw), True


def _connect_failure(shown: str, exc: httpx.ConnectError) -> StepFailed:
    """A TLS failure (trust problem, not retryable) or an unreachable service (retryable); never sent."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return StepFailed(
            f"{shown}: the server's TLS certificate does not verify ({cause.verify_message}). "
            "Check the URL's host name, the system trust store, or the CA the step should trust; "
            "a proxy that intercepts TLS needs its CA trusted too.",
            sent=False,
        )
    if cause is not None:
        return StepFailed(
            f"{shown}: TLS handshake failed ({cause.reason or cause}). Is it an https:// URL to a "
            "plain-HTTP port, or a server with an old TLS setup?",
            sent=False,
        )
    return StepFailed(
        f"{shown}: could not connect ({exc}). Is the service up, the URL right, and the host "
        "reachable from here (DNS, firewall, proxy)?",
        retryable=True,
        sent=False,
    )


def _is_json(text: str) -> bool:
    """True for a JSON object or array; bare scalars ("yes", 42) are more likely plain text."""
    if text.lstrip()[:1] not in ("{", "["):
        return False
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _without_secrets(url: str) -> str:
    """The URL without user info and query string, which are where credentials hide in URLs."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
