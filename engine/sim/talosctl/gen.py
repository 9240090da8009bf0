"""Simulates ``talosctl gen secrets|config``: secrets bundles, machine configs and a talosconfig."""

from __future__ import annotations

import base64
import json
import secrets as random_secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .base import DEFAULT_KUBERNETES_VERSION, Call, Command, Fail, fake_pem, host_of, k8s_text, parse_k8s, write_file
from .configdocs import apply_patches, dig


def secrets(call: Call) -> None:
    output = call.args.get("output-file") or "secrets.yaml"
    text = yaml.safe_dump(_new_secrets(), sort_keys=False, indent=4)
    if output == "-":
        call.out(text)
        return
    target = call.path(output)
    if target.exists() and not call.args.get("force"):
        raise Fail(f"file {json.dumps(output)} already exists, use --force to overwrite")
    write_file(target, text, 0o600)


def config(call: Call) -> None:
    name, endpoint = call.args.positional
    _validate_endpoint(endpoint)
    types = list(call.args.get("output-types") or ["controlplane", "worker", "talosconfig"])
    for kind in types:
        if kind not in ("controlplane", "worker", "talosconfig"):
            raise Fail(f"1 error occurred:\n\t* invalid output type: {json.dumps(kind)}")
    if call.args.get("version", "v1alpha1") != "v1alpha1":
        raise Fail(f'unknown config version: "{call.args.get("version")}"')
    secrets_file = call.args.get("with-secrets")
    if secrets_file:
        bundle = _load_secrets(call.path(secrets_file), secrets_file)
    else:
        bundle = _new_secrets()
    kube = parse_k8s(call.args.get("kubernetes-version") or DEFAULT_KUBERNETES_VERSION)
    if kube is None:
        raise Fail(
            f"failed to generate config bundle: invalid Kubernetes version {call.args.get('kubernetes-version')!r}"
        )
    options = {
        "kubernetes_version": k8s_text(kube),
        "install_disk": call.args.get("install-disk") or "/dev/sda",
        "install_image": call.args.get("install-image") or f"ghcr.io/siderolabs/installer:{call.x.version}",
        "sans": list(call.args.get("additional-sans") or []),
        "dns_domain": call.args.get("dns-domain") or "cluster.local",
        "discovery": call.args.get("with-cluster-discovery", True),
        "kubespan": bool(call.args.get("with-kubespan")),
    }
    common = call.args.get("config-patch") or []
    outputs: dict[str, str] = {}
    for kind in ("controlplane", "worker"):
        if kind not in types:
            continue
        docs: list[Any] = [_machine_config(kind, name, endpoint, bundle, options)]
        patches = common + (
            call.args.get("config-patch-control-plane" if kind == "controlplane" else "config-patch-worker") or []
        )
        docs = apply_patches(docs, patches, call)
        outputs[kind] = yaml.safe_dump_all(docs, sort_keys=False, indent=4)
    if "talosconfig" in types:
        outputs["talosconfig"] = yaml.safe_dump(
            _talosconfig(name, [host_of(endpoint)], bundle), sort_keys=False, indent=4
        )
    output = call.args.get("output") or call.args.get("output-dir")
    if output == "-":
        if len(types) > 1:
            raise Fail("can't use multiple output types with stdout")
        call.out(next(iter(outputs.values())))
        return
    single_file = output and len(types) == 1 and not call.args.get("output-dir")
    base = call.path(output) if output else call.cwd
    call.err("generating PKI and tokens\n")
    for kind, text in outputs.items():
        target = base if single_file else base / (kind + ".yaml" if kind != "talosconfig" else kind)
        if target.exists() and not call.args.get("force"):
            raise Fail(f"file {json.dumps(str(target))} already exists, use --force to overwrite")
        write_file(target, text, 0o600 if kind == "talosconfig" else 0o644)
        call.err(f"Created {target}\n")


def _token() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return (
        "".join(random_secrets.choice(alphabet) for _ in range(6))
        + "."
        + "".join(random_secrets.choice(alphabet) for _ in range(16))
    )


def _pair() -> dict[str, str]:
    return {"crt": fake_pem("CERTIFICATE"), "key": fake_pem("EC PRIVATE KEY")}


def _new_secrets() -> dict[str, Any]:
    """A secrets bundle shaped like ``talosctl gen secrets`` writes it."""
    return {
        "cluster": {
            "id": base64.b64encode(random_secrets.token_bytes(32)).decode(),
            "secret": base64.b64encode(random_secrets.token_bytes(32)).decode(),
        },
        "secrets": {
            "bootstraptoken": _token(),
            "secretboxencryptionsecret": base64.b64encode(random_secrets.token_bytes(32)).decode(),
        },
        "trustdinfo": {"token": _token()},
        "certs": {
            "etcd": _pair(),
            "k8s": _pair(),
            "k8saggregator": _pair(),
            "k8sserviceaccount": {"key": fake_pem("RSA PRIVATE KEY")},
            "os": {"crt": fake_pem("CERTIFICATE"), "key": fake_pem("ED25519 PRIVATE KEY")},
        },
    }


_SECRET_PATHS = (
    "cluster.id",
    "cluster.secret",
    "secrets.bootstraptoken",
    "secrets.secretboxencryptionsecret",
    "trustdinfo.token",
    "certs.etcd.crt",
    "certs.etcd.key",
    "certs.k8s.crt",
    "certs.k8s.key",
    "certs.k8saggregator.crt",
    "certs.k8saggregator.key",
    "certs.k8sserviceaccount.key",
    "certs.os.crt",
    "certs.os.key",
)


def _load_secrets(path: Path, shown: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Fail(f"failed to load secrets bundle: open {shown}: no such file or directory") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise Fail(f"failed to load secrets bundle: {' '.join(str(exc).split())}") from None
    missing = [p for p in _SECRET_PATHS if not dig(data, p)]
    if missing:
        raise Fail(
            f"failed to validate secrets bundle: {shown} is not a Talos secrets bundle (missing "
            f"{', '.join(missing[:4])}{'...' if len(missing) > 4 else ''})"
        )
    return data


def _validate_endpoint(endpoint: str) -> None:
    parts = urlsplit(endpoint if "://" in endpoint else "//" + endpoint)
    host = parts.hostname or endpoint
    fixed = f"https://{host}:{parts.port or 6443}"
    if "://" not in endpoint:
        if parts.port is None:
            raise Fail(f'no scheme and port specified for the cluster endpoint URL\ntry: "{fixed}"')
        raise Fail(f'no scheme specified for the cluster endpoint URL\ntry: "{fixed}"')
    if parts.scheme != "https":
        raise Fail(f'the control plane endpoint URL should have scheme https://\ntry: "{fixed}"')
    if not parts.hostname:
        raise Fail("error validating the cluster endpoint URL: missing host")


def _machine_config(kind: str, name: str, endpoint: str, bundle: dict[str, Any], o: dict[str, Any]) -> dict[str, Any]:
    """A v1alpha1 machine config for ``kind`` (controlplane or worker), shaped like ``talosctl gen config``'s."""
    kube = o["kubernetes_version"]
    certs = bundle["certs"]
    control = kind == "controlplane"
    features: dict[str, Any] = {
        "rbac": True,
        "stableHostname": True,
        "apidCheckExtKeyUsage": True,
        "diskQuotaSupport": True,
        "kubePrism": {"enabled": True, "port": 7445},
        "hostDNS": {"enabled": True, "forwardKubeDNSToHost": True},
    }
    machine: dict[str, Any] = {
        "type": kind,
        "token": bundle["trustdinfo"]["token"],
        "ca": {"crt": certs["os"]["crt"], "key": certs["os"]["key"] if control else ""},
        "certSANs": list(o["sans"]),
        "kubelet": {
            "image": f"ghcr.io/siderolabs/kubelet:{kube}",
            "defaultRuntimeSeccompProfileEnabled": True,
            "disableManifestsDirectory": True,
        },
        "network": {},
        "install": {"disk": o["install_disk"], "image": o["install_image"], "wipe": False},
        "features": features,
    }
    if control:
        machine["nodeLabels"] = {"node.kubernetes.io/exclude-from-external-load-balancers": ""}
    if o["kubespan"]:
        machine["network"] = {"kubespan": {"enabled": True}}
    cluster: dict[str, Any] = {
        "id": bundle["cluster"]["id"],
        "secret": bundle["cluster"]["secret"],
        "controlPlane": {"endpoint": endpoint},
        "clusterName": name,
        "network": {"dnsDomain": o["dns_domain"], "podSubnets": ["10.244.0.0/16"], "serviceSubnets": ["10.96.0.0/12"]},
        "token": bundle["secrets"]["bootstraptoken"],
        "ca": {"crt": certs["k8s"]["crt"], "key": certs["k8s"]["key"] if control else ""},
        "discovery": {"enabled": bool(o["discovery"]), "registries": {"kubernetes": {"disabled": True}, "service": {}}},
    }
    if control:
        cluster.update(
            {
                "secretboxEncryptionSecret": bundle["secrets"]["secretboxencryptionsecret"],
                "aggregatorCA": certs["k8saggregator"],
                "serviceAccount": {"key": certs["k8sserviceaccount"]["key"]},
                "apiServer": {
                    "image": f"registry.k8s.io/kube-apiserver:{kube}",
                    "certSANs": [host_of(endpoint), *o["sans"]],
                    "disablePodSecurityPolicy": True,
                },
                "controllerManager": {"image": f"registry.k8s.io/kube-controller-manager:{kube}"},
                "proxy": {"image": f"registry.k8s.io/kube-proxy:{kube}"},
                "scheduler": {"image": f"registry.k8s.io/kube-scheduler:{kube}"},
                "etcd": {"ca": certs["etcd"]},
                "extraManifests": [],
                "inlineManifests": [],
            }
        )
    return {"version": "v1alpha1", "debug": False, "persist": True, "machine": machine, "cluster": cluster}


def _talosconfig(name: str, endpoints: list[str], bundle: dict[str, Any]) -> dict[str, Any]:
    return {
        "context": name,
        "contexts": {
            name: {
                "endpoints": endpoints,
                "ca": bundle["certs"]["os"]["crt"],
                "crt": fake_pem("CERTIFICATE"),
                "key": fake_pem("ED25519 PRIVATE KEY"),
            }
        },
    }


COMMANDS = {
    ("gen", "secrets"): Command(
        secrets, {"output-file": ("str", "o"), "talos-version": ("str", None), "force": ("bool", "f")}, 0, 0
    ),
    ("gen", "config"): Command(
        config,
        {
            "install-disk": ("str", None),
            "install-image": ("str", None),
            "additional-sans": ("list", None),
            "dns-domain": ("str", None),
            "version": ("str", None),
            "talos-version": ("str", None),
            "kubernetes-version": ("str", None),
            "config-patch": ("array", None),
            "config-patch-control-plane": ("array", None),
            "config-patch-worker": ("array", None),
            "registry-mirror": ("list", None),
            "with-examples": ("bool", None),
            "with-docs": ("bool", None),
            "with-cluster-discovery": ("bool", None),
            "with-kubespan": ("bool", None),
            "with-secrets": ("str", None),
            "output-types": ("list", "t"),
            "output": ("str", "o"),
            "output-dir": ("str", None),
            "force": ("bool", "f"),
        },
        2,
        2,
    ),
}
