"""Which cluster answers: read at the edge, so a run (and a resume) can hold to one cluster.

Found on a real cluster: a run resumed after the cluster at the same address was replaced by
another re-cloned everything without a word (the config's hash does not cover who answered). A
run records the identity (``engine.load.facts.ClusterIdentity``) when it starts; a resume against
another refuses, and no ``--force`` overrides that.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..load.facts import ClusterIdentity
from ..runbook.actions import ApiRequest, StepFailed, quiet
from ..runbook.model import Runbook

_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def trust_of(config_data: Mapping[str, Any], base_dir: Path) -> str:
    """How the config makes this machine check the nodes' certificates, in words that change when
    the trusted party does: the CA's SHA-256 (of its DER form, so re-encoding the file changes
    nothing), the pinned fingerprints, or no check at all."""
    tls = config_data.get("tls") or {}
    nodes = (config_data.get("cluster") or {}).get("nodes") or []
    pins = sorted(
        {
            _fingerprint(str(value))
            for value in [tls.get("fingerprint"), *(n.get("fingerprint") for n in nodes)]
            if value
        }
    )
    if tls.get("insecure"):
        return "no certificate check (tls.insecure)"
    if pins:
        return "pinned fingerprint" + ("s " if len(pins) > 1 else " ") + ", ".join(pins)
    if tls.get("ca_file"):
        path = Path(str(tls["ca_file"])).expanduser()
        path = path if path.is_absolute() else base_dir / path
        try:
            first = _PEM_CERT.search(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            return f"CA file {tls['ca_file']} (unreadable)"
        if first is None:
            return f"CA file {tls['ca_file']} (no certificate in it)"
        der = ssl.PEM_cert_to_DER_cert(first.group(0))
        return f"CA sha256:{hashlib.sha256(der).hexdigest()[:16]}"
    return "no TLS settings"


def _fingerprint(value: str) -> str:
    hexdigits = re.sub(r"[^0-9A-Fa-f]", "", value).upper()
    return ":".join(hexdigits[i : i + 2] for i in range(0, len(hexdigits), 2))


def talks_to_cluster(runbook: Runbook, has_profile: bool) -> bool:
    """Whether a run has a cluster to belong to: it acts on a profile or sends API requests."""
    return has_profile or any(step.kind == "api" for step in runbook.steps)


def read_identity(execute: Any, trust: str) -> ClusterIdentity:
    """The identity of the cluster ``execute`` (a dispatcher's) reaches. A token that may not read
    ``/cluster/status`` leaves the name unknown: the trust still tells clusters apart."""
    try:
        answer = execute(ApiRequest("GET", "/cluster/status"), quiet)
    except StepFailed as failure:
        if "403" in failure.message:
            return ClusterIdentity("", trust)
        raise
    return ClusterIdentity.from_cluster_status(answer.data, trust)
