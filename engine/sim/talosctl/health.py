"""Simulates ``talosctl health``: says what keeps a cluster from being healthy."""

from __future__ import annotations

from .base import Call, Command, Fail


def health(call: Call) -> None:
    cluster_id, targets = call.connect("checking cluster health")
    cluster = call.world.clusters[cluster_id]
    cps, workers, problems = call.health_problems(
        cluster_id, list(call.args.get("control-plane-nodes") or []), list(call.args.get("worker-nodes") or [])
    )
    discovered = " ".join(f'"{ip}"' for ip in cps + workers)
    call.err(f"discovered nodes: [{discovered}]\n")
    if problems:
        cluster["healthy"] = False
        call.err("waiting for etcd to be healthy: ...\n")
        first = cps[0] if cps else (targets[0][0] if targets else "?")
        call.err(
            f'waiting for etcd to be healthy: 1 error occurred:\n\t* {first}: service "etcd" not in expected '
            'state "Running": current state [Preparing] Running pre state\n'
        )
        wait = call.args.get("wait-timeout") or "20m0s"
        raise Fail(
            f"healthcheck error: rpc error: code = DeadlineExceeded desc = context deadline exceeded "
            f"(after --wait-timeout {wait})\nsimulation: cluster {cluster['name']} is not healthy: "
            + "; ".join(problems)
        )
    for check in (
        "etcd to be healthy",
        "etcd members to be consistent across nodes",
        "etcd members to be control plane nodes",
        "apid to be ready",
        "all nodes memory sizes",
        "all nodes disk sizes",
        "no diagnostics",
        "kubelet to be healthy",
        "all nodes to finish boot sequence",
        "all k8s nodes to report",
        "all control plane static pods to be running",
        "all control plane components to be ready",
        "all k8s nodes to report ready",
        "kube-proxy to report ready",
        "coredns to report ready",
        "all k8s nodes to report schedulable",
    ):
        call.err(f"waiting for {check}: ...\nwaiting for {check}: OK\n")
    cluster["healthy"] = True


COMMANDS = {
    ("health",): Command(
        health,
        {
            "wait-timeout": ("str", None),
            "control-plane-nodes": ("list", None),
            "worker-nodes": ("list", None),
            "init-node": ("str", None),
            "server": ("bool", None),
            "k8s-endpoint": ("str", None),
            "run-e2e": ("bool", None),
        },
        0,
        0,
    ),
}
