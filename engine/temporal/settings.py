"""Where a run on Temporal goes: the server's address, the namespace, the cluster's task queue, TLS.

From ``execution.temporal`` in cluster-config.yaml, or ``--temporal ADDRESS`` (which overrides the
address). Pure: no ``temporalio`` here, so the CLI reads it without the SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Tls:
    """TLS to the frontend (files resolved against the home); ``cert_file`` and ``key_file``: mutual TLS."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    client_ca_file: Path | None = None  # the CA of the operators' client certificates (approvals); default ca_file


@dataclass(frozen=True)
class TemporalSettings:
    address: str
    namespace: str
    task_queue: str
    heartbeat_seconds: float = 30.0
    tls: Tls | None = None


def task_queue_of(config: dict[str, Any]) -> str:
    """One queue per cluster, so that a step never reaches a worker serving another cluster."""
    given = ((config.get("execution") or {}).get("temporal") or {}).get("task_queue")
    return str(given or f"runbook/{config['cluster']['name']}")


def settings(config: dict[str, Any], address: str | None, home: Path) -> TemporalSettings | None:
    """The settings for this home, or None: the run is local (no ``--temporal``, no ``execution.temporal``)."""
    section = (config.get("execution") or {}).get("temporal")
    if address is None and section is None:
        return None
    section = section or {}
    tls = section.get("tls")
    return TemporalSettings(
        address=address or str(section["address"]),
        namespace=str(section.get("namespace") or "default"),
        task_queue=task_queue_of(config),
        heartbeat_seconds=float(section.get("heartbeat_seconds") or 30.0),
        tls=None if tls is None else _tls(tls, home),
    )


def _tls(section: dict[str, Any], home: Path) -> Tls:
    def path(key: str) -> Path | None:
        given = section.get(key)
        return None if given is None else home / Path(str(given)).expanduser()

    ca = path("ca_file")
    return Tls(ca, path("cert_file"), path("key_file"), section.get("server_name"), path("client_ca_file") or ca)


#: How long a gate waits for a decision by default (``gates.approval_timeout``): a day.
APPROVAL_TIMEOUT = 24 * 3600.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def approval_timeout(config: dict[str, Any]) -> float:
    """``gates.approval_timeout`` (``90s``, ``30m``, ``24h``, ``7d``; the schema checks the form) in seconds."""
    given = (config.get("gates") or {}).get("approval_timeout")
    if given is None:
        return APPROVAL_TIMEOUT
    text = str(given)
    return float(int(text[:-1]) * _UNITS[text[-1]])


def four_eyes(config: dict[str, Any]) -> bool:
    """``gates.four_eyes``: a gate is approved by someone other than who started the run, both authenticated."""
    return bool((config.get("gates") or {}).get("four_eyes"))


def workflow_id(config: dict[str, Any], profile: str | None, runbook: str) -> str:
    """One run per profile at a time: the workflow id is the profile's (the runbook's without one)."""
    return f"runbook/{config['cluster']['name']}/{profile or 'runbook-' + runbook.lstrip('_')}"
