"""Machine config documents as talosctl reads them: loading, validating, patching."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import yaml

from .base import DEFAULT_KUBERNETES_VERSION, Call, Fail, NotSimulated, k8s_text, parse_k8s


def load_config_docs(text: str, shown: str) -> list[Any]:
    try:
        docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise Fail(f"failed to parse machine configuration {shown!r}: yaml: {' '.join(str(exc).split())}") from None
    if not docs:
        raise Fail(f"failed to parse machine configuration {shown!r}: the file is empty")
    return docs


def v1alpha1_doc(docs: list[Any]) -> dict[str, Any]:
    for doc in docs:
        if isinstance(doc, dict) and ("machine" in doc or doc.get("version") == "v1alpha1"):
            return doc
    raise Fail(
        "error applying new configuration: rpc error: code = InvalidArgument desc = configuration validation "
        "failed: 1 error occurred:\n\t* the file is not a Talos machine config (no v1alpha1 document with "
        "machine and cluster sections)"
    )


def validate_machine_config(config: dict[str, Any]) -> list[str]:
    problems = []
    machine = config.get("machine")
    cluster = config.get("cluster")
    if not isinstance(machine, dict):
        return ["machine instructions are required"]
    if machine.get("type") not in ("controlplane", "worker"):
        problems.append(f"unknown machine type {machine.get('type')!r} (expected controlplane or worker)")
    if not isinstance(cluster, dict):
        return problems + ["cluster instructions are required"]
    if not dig(cluster, "controlPlane.endpoint"):
        problems.append("cluster.controlPlane.endpoint is required")
    if not cluster.get("id") or not cluster.get("secret"):
        problems.append("cluster.id and cluster.secret are required (generate the config from a secrets bundle)")
    if not dig(machine, "ca.crt"):
        problems.append("machine.ca.crt is required")
    if not machine.get("token"):
        problems.append("machine.token is required")
    return problems


def config_cluster_id(config: dict[str, Any]) -> str:
    return hashlib.sha256(f"{config['cluster']['id']}/{config['cluster']['secret']}".encode()).hexdigest()[:16]


def config_kubernetes_version(config: dict[str, Any]) -> str:
    for image in (dig(config, "cluster.apiServer.image"), dig(config, "machine.kubelet.image")):
        if isinstance(image, str) and ":" in image:
            version = parse_k8s(image.rsplit(":", 1)[1])
            if version is not None:
                return k8s_text(version)
    return DEFAULT_KUBERNETES_VERSION


def config_vips(config: dict[str, Any]) -> list[str]:
    vips = []
    for interface in dig(config, "machine.network.interfaces") or []:
        if isinstance(interface, dict):
            ip = dig(interface, "vip.ip")
            if ip:
                vips.append(str(ip))
            for vlan in interface.get("vlans") or []:
                if isinstance(vlan, dict) and dig(vlan, "vip.ip"):
                    vips.append(str(dig(vlan, "vip.ip")))
    return vips


def config_addresses(config: dict[str, Any]) -> list[str]:
    addresses = []
    for interface in dig(config, "machine.network.interfaces") or []:
        if isinstance(interface, dict):
            addresses += [str(a) for a in interface.get("addresses") or []]
    return addresses


def apply_patches(docs: list[Any], patches: list[str], call: Call) -> list[Any]:
    """Apply ``--config-patch`` values (``@file`` or inline YAML/JSON): strategic merge or JSON 6902."""
    docs = copy.deepcopy(docs)
    for patch in patches:
        if patch.startswith("@"):
            name = patch[1:]
            try:
                text = call.path(name).read_text(encoding="utf-8")
            except OSError:
                raise Fail(f"error parsing config JSON patch: open {name}: no such file or directory") from None
        elif patch.startswith(("http://", "https://")):
            raise NotSimulated("simulation: config patches from URLs are not simulated")
        else:
            text = patch
        try:
            parts = [p for p in yaml.safe_load_all(text) if p is not None]
        except yaml.YAMLError as exc:
            raise Fail(f"error parsing config JSON patch: {' '.join(str(exc).split())}") from None
        for part in parts:
            if isinstance(part, list):
                base = _v1alpha1_index(docs)
                docs[base] = _json6902(docs[base], part)
            elif isinstance(part, dict) and "apiVersion" in part and "kind" in part:
                same = [
                    i
                    for i, d in enumerate(docs)
                    if isinstance(d, dict) and d.get("kind") == part["kind"] and d.get("name") == part.get("name")
                ]
                if same:
                    docs[same[0]] = _merge(docs[same[0]], part)
                else:
                    docs.append(part)
            elif isinstance(part, dict):
                base = _v1alpha1_index(docs)
                docs[base] = _merge(docs[base], part)
            else:
                raise Fail(
                    "error parsing config JSON patch: a patch must be a mapping (strategic merge) or a list "
                    "of operations (JSON 6902)"
                )
    return docs


def _v1alpha1_index(docs: list[Any]) -> int:
    for index, doc in enumerate(docs):
        if isinstance(doc, dict) and ("machine" in doc or doc.get("version") == "v1alpha1"):
            return index
    docs.insert(0, {"version": "v1alpha1"})
    return 0


def _merge(base: Any, patch: Any) -> Any:
    """Talos' strategic merge, simplified: mappings merge deeply, lists append, ``$patch: delete`` removes."""
    if isinstance(base, dict) and isinstance(patch, dict):
        result = dict(base)
        for key, value in patch.items():
            if isinstance(value, dict) and value.get("$patch") == "delete":
                result.pop(key, None)
            elif key in result:
                result[key] = _merge(result[key], value)
            else:
                result[key] = value
        return result
    if isinstance(base, list) and isinstance(patch, list):
        return base + [item for item in patch if item not in base]
    return patch


def _json6902(doc: Any, operations: list[Any]) -> Any:
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise Fail("error parsing config JSON patch: each operation needs op and path")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in str(op["path"]).split("/")[1:]]
        if not parts:
            raise Fail(f"error applying JSON patch: unsupported path {op['path']!r}")
        parent = doc
        for part in parts[:-1]:
            if isinstance(parent, list):
                parent = parent[int(part)]
            else:
                if part not in parent and op["op"] == "add":
                    parent[part] = {}
                if part not in parent:
                    raise Fail(f"error applying JSON patch: path {op['path']!r} does not exist")
                parent = parent[part]
        last = parts[-1]
        kind = op["op"]
        if kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op.get("value"))
                elif kind == "add":
                    parent.insert(int(last), op.get("value"))
                else:
                    parent[int(last)] = op.get("value")
            else:
                if kind == "replace" and last not in parent:
                    raise Fail(
                        f"error applying JSON patch: replace operation does not apply: doc is missing key: {op['path']}"
                    )
                parent[last] = op.get("value")
        elif kind == "remove":
            try:
                if isinstance(parent, list):
                    del parent[int(last)]
                else:
                    del parent[last]
            except (KeyError, IndexError, ValueError):
                raise Fail(
                    f"error applying JSON patch: remove operation does not apply: doc is missing path: {op['path']}"
                ) from None
        else:
            raise NotSimulated(f"simulation: JSON patch operation {kind!r} is not simulated (add, replace, remove)")
    return doc


def dig(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data
