"""First contact with a cluster for ``runbook init --from https://NODE:8006``.

Nothing is sent with the token before the node's certificate is checked: with ``--ca-file`` the CA
verifies it (host name included), with ``--fingerprint`` it is pinned, and with neither the
certificate's fingerprint is fetched (no token involved) and shown for the operator to compare with
``pvenode cert info`` on the node before anything else happens. The reading itself uses an ordinary
``Dispatcher`` over a provisional config of that one node, so the API executor, its TLS checks and
the token's masking are the engine's own.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import exitcodes
from ..errors import RunbookError
from ..executors.api import DEFAULT_PORT, colon_fingerprint

_FINGERPRINT = re.compile(r"(?:[0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}|[0-9A-Fa-f]{64}")


class ContactError(RunbookError):
    """The --from address, CA file or fingerprint cannot be used; nothing was sent to the cluster."""

    exit_code = exitcodes.USAGE


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


def parse_endpoint(url: str) -> Endpoint:
    """``https://NODE[:PORT]`` (a bare host is taken as https); anything else is refused with why."""
    text = url.strip()
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ContactError(
            f"--from {url}: {exc}; give the node's API address, e.g. https://pve01.example.net:8006"
        ) from None
    if parts.scheme != "https" or not parts.hostname or parts.path.strip("/") or parts.query:
        raise ContactError(
            f"--from {url} is not a node's API address; give https://NODE:8006 (the PVE API is only served over HTTPS)"
        )
    return Endpoint(parts.hostname, port)


def normal_fingerprint(value: str) -> str:
    """A SHA-256 fingerprint in PVE's colon form; refused when it is not 32 bytes of hex."""
    text = value.strip().removeprefix("SHA256:").removeprefix("sha256:").strip()
    if not _FINGERPRINT.fullmatch(text):
        raise ContactError(
            f"--fingerprint {value} is not a SHA-256 fingerprint (32 hex bytes, e.g. AB:CD:...); on the node: "
            "openssl x509 -noout -fingerprint -sha256 -in /etc/pve/local/pve-ssl.pem"
        )
    digits = text.replace(":", "").upper()
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2))


def ca_file(value: Path) -> str:
    path = value.expanduser().resolve()
    if not path.is_file():
        raise ContactError(
            f"--ca-file {value} does not exist. Copy the cluster CA from a node: scp root@NODE:/etc/pve/pve-root-ca.pem {value}"
        )
    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as exc:
        raise ContactError(
            f"--ca-file {value} is not a PEM certificate ({exc.reason or exc}); it should be a copy of "
            "/etc/pve/pve-root-ca.pem from a node"
        ) from None
    return str(path)


def presented_fingerprint(endpoint: Endpoint, timeout: float = 10.0) -> str:
    """The fingerprint of the certificate the node presents, fetched without sending anything else."""
    try:
        pem = ssl.get_server_certificate((endpoint.host, endpoint.port), timeout=timeout)
    except OSError as exc:
        raise ContactError(f"cannot reach {endpoint.url} to read its certificate: {exc}") from None
    return colon_fingerprint(ssl.PEM_cert_to_DER_cert(pem))


def provisional_config(endpoint: Endpoint, credentials: dict[str, Any], tls: dict[str, Any]) -> dict[str, Any]:
    """A config of the one node init talks to, enough for the engine's ``Dispatcher`` to read it."""
    return {
        "cluster": {"name": "init", "nodes": [{"name": endpoint.host, "host": endpoint.host, "port": endpoint.port}]},
        "credentials": credentials,
        "tls": tls,
    }
