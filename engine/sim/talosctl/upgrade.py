"""Simulates ``talosctl upgrade``: a node moves to another Talos installer image."""

from __future__ import annotations

from ..http import VERSIONS
from .base import Call, Command, Fail, NotSimulated, image_version


def upgrade(call: Call) -> None:
    what = "performing upgrade"
    image = call.args.get("image") or f"ghcr.io/siderolabs/installer:{call.x.version}"
    cluster_id, ip, _vm, record = call.single(what)
    version = image_version(image)
    if version is None:
        raise Fail(
            f"error {what}: rpc error: code = Unknown desc = failed to pull installer image {image!r}: "
            "no version tag (expected ...:vX.Y.Z)"
        )
    if version not in VERSIONS:
        raise Fail(
            f"error {what}: rpc error: code = Unknown desc = failed to pull installer image {image!r}: "
            f"{image}: not found"
        )
    _cps, _workers, problems = call.health_problems(cluster_id, [], [])
    if problems and not call.args.get("force"):
        raise Fail(
            f"error {what}: rpc error: code = FailedPrecondition desc = etcd quorum check failed: cluster "
            f"is not healthy\nsimulation: upgrade only a healthy cluster (talosctl health); not ready: "
            + "; ".join(problems)
        )
    if call.args.get("stage"):
        raise NotSimulated("simulation: talosctl upgrade --stage is not simulated")
    record.setdefault("upgrades", []).append(
        {
            "from": record["talos_version"],
            "to": version,
            "image": image,
            "preserve": bool(call.args.get("preserve")),
        }
    )
    record["talos_version"] = version
    record["install_image"] = image
    call.out(f"watching nodes: [{ip}]\n    * {ip}: post check passed\n")


COMMANDS = {
    ("upgrade",): Command(
        upgrade,
        {
            "image": ("str", "i"),
            "preserve": ("bool", "p"),
            "stage": ("bool", "s"),
            "wait": ("bool", None),
            "debug": ("bool", None),
            "force": ("bool", "f"),
            "reboot-mode": ("str", "m"),
            "timeout": ("str", None),
            "insecure": ("bool", None),
        },
        0,
        0,
    ),
}
