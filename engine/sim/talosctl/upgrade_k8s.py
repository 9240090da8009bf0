"""Simulates ``talosctl upgrade-k8s``: the cluster moves to another Kubernetes version."""

from __future__ import annotations

import json

from .base import DEFAULT_KUBERNETES_VERSION, Call, Command, Fail, k8s_text, parse_k8s


def upgrade_k8s(call: Call) -> None:
    what = "upgrading Kubernetes"
    cluster_id, ip, _vm, record = call.single(what)
    cluster = call.world.clusters[cluster_id]
    if record["role"] != "controlplane":
        raise Fail(f"error {what}: upgrade-k8s must target a control plane node, {ip} is a worker")
    target = parse_k8s(call.args.get("to") or DEFAULT_KUBERNETES_VERSION)
    current = parse_k8s(call.args.get("from") or cluster.get("kubernetes_version") or DEFAULT_KUBERNETES_VERSION)
    if target is None or current is None:
        raise Fail(f"error {what}: invalid Kubernetes version {call.args.get('to') or call.args.get('from')!r}")
    _cps, _workers, problems = call.health_problems(cluster_id, [], [])
    if problems:
        raise Fail(f"error {what}: cluster is not healthy\nsimulation: not ready: " + "; ".join(problems))
    if target[:2] < current[:2] or (target[0] == current[0] and target[1] - current[1] > 1):
        raise Fail(
            f"error {what}: unsupported upgrade path {k8s_text(current)}->{k8s_text(target)} "
            f"(from {k8s_text(current)[1:]} to {k8s_text(target)[1:]})"
        )
    call.out(
        f"automatically detected the lowest Kubernetes version {k8s_text(current)[1:]}\n"
        f"discovered controlplane nodes [{' '.join(json.dumps(i) for i, r in call.world.members(cluster_id).items() if r.get('role') == 'controlplane')}]\n"
    )
    if target == current:
        call.out(f"> all components are already at version {k8s_text(target)[1:]}\n")
        return
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubelet"):
        call.out(f'updating "{component}" to version "{k8s_text(target)[1:]}"\n > "{ip}": starting update\n')
    if call.args.get("dry-run"):
        return
    cluster["kubernetes_version"] = k8s_text(target)


COMMANDS = {
    ("upgrade-k8s",): Command(
        upgrade_k8s,
        {
            "to": ("str", None),
            "from": ("str", None),
            "dry-run": ("bool", None),
            "endpoint": ("str", None),
            "upgrade-kubelet": ("bool", None),
            "pre-pull-images": ("bool", None),
        },
        0,
        0,
    ),
}
