"""Simulates ``talosctl images default|cache-create``."""

from __future__ import annotations

import hashlib
import json

from .base import DEFAULT_KUBERNETES_VERSION, Call, Command, Fail, NotSimulated


def default(call: Call) -> None:
    call.out("".join(image + "\n" for image in _default_images(call.x.version, DEFAULT_KUBERNETES_VERSION)))


def cache_create(call: Call) -> None:
    path = call.args.get("image-cache-path")
    if not path:
        raise Fail('Error: required flag(s) "image-cache-path" not set')
    images = list(call.args.get("images") or [])
    if not images:
        raise Fail('Error: required flag(s) "images" not set')
    if "-" in images:
        raise NotSimulated(
            "simulation: talosctl images cache-create --images=- reads standard input, which "
            "talosctl steps do not have; list the images with --images"
        )
    target = call.path(path)
    if target.exists() and not call.args.get("force"):
        raise Fail(f"error creating image cache: output path {path!r} already exists, use --force to overwrite")
    layout = call.args.get("layout") or "oci"
    if layout not in ("oci", "flat"):
        raise Fail(f"error creating image cache: unknown layout {layout!r}")
    target.mkdir(parents=True, exist_ok=True)
    (target / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    manifests = []
    for image in images:
        call.err(f'fetching image "{image}"\n')
        digest = hashlib.sha256(image.encode()).hexdigest()
        manifests.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": f"sha256:{digest}",
                "size": 1024,
                "annotations": {"org.opencontainers.image.ref.name": image},
            }
        )
        (target / "blobs" / "sha256" / digest).write_text(
            json.dumps({"schemaVersion": 2, "simulated": True, "image": image}) + "\n", encoding="utf-8"
        )
    (target / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}\n', encoding="utf-8")
    (target / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": manifests}, indent=2) + "\n", encoding="utf-8"
    )


def _default_images(talos: str, kube: str) -> list[str]:
    return [
        "ghcr.io/siderolabs/flannel:v0.26.4",
        "registry.k8s.io/coredns/coredns:v1.12.0",
        "gcr.io/etcd-development/etcd:v3.5.18",
        f"registry.k8s.io/kube-apiserver:{kube}",
        f"registry.k8s.io/kube-controller-manager:{kube}",
        f"registry.k8s.io/kube-scheduler:{kube}",
        f"registry.k8s.io/kube-proxy:{kube}",
        f"ghcr.io/siderolabs/kubelet:{kube}",
        f"ghcr.io/siderolabs/installer:{talos}",
        "registry.k8s.io/pause:3.10",
    ]


COMMANDS = {
    ("images", "default"): Command(default, {}, 0, 0),
    ("images", "cache-create"): Command(
        cache_create,
        {
            "image-cache-path": ("str", None),
            "images": ("list", None),
            "layout": ("str", None),
            "platform": ("list", None),
            "force": ("bool", None),
            "insecure": ("bool", None),
            "image-layer-cache-path": ("str", None),
        },
        0,
        0,
    ),
}
