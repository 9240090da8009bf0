"""Where a run on Temporal goes: the server's address, the namespace, the cluster's task queue.

From ``execution.temporal`` in cluster-config.yaml, or ``--temporal ADDRESS`` (which overrides the
address). Pure: no ``temporalio`` here, so the CLI reads it without the SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TemporalSettings:
    address: str
    namespace: str
    task_queue: str
    heartbeat_seconds: float = 30.0


def task_queue_of(config: dict[str, Any]) -> str:
    """One queue per cluster, so that a step never reaches a worker serving another cluster."""
    given = ((config.get("execution") or {}).get("temporal") or {}).get("task_queue")
    return str(given or f"runbook/{config['cluster']['name']}")


def settings(config: dict[str, Any], address: str | None) -> TemporalSettings | None:
    """The settings for this home, or None: the run is local (no ``--temporal``, no ``execution.temporal``)."""
    section = (config.get("execution") or {}).get("temporal")
    if address is None and section is None:
        return None
    section = section or {}
    return TemporalSettings(
        address=address or str(section["address"]),
        namespace=str(section.get("namespace") or "default"),
        task_queue=task_queue_of(config),
        heartbeat_seconds=float(section.get("heartbeat_seconds") or 30.0),
    )


def workflow_id(config: dict[str, Any], profile: str | None, runbook: str) -> str:
    """One run per profile at a time: the workflow id is the profile's (the runbook's without one)."""
    return f"runbook/{config['cluster']['name']}/{profile or 'runbook-' + runbook.lstrip('_')}"
