"""The simulated Talos Image Factory: the far end of ``http`` steps under ``--simulate``.

Only ``factory.talos.dev`` is simulated, with the parts of its HTTP frontend the runbooks use:

- ``POST /schematics``: the body is a YAML (or JSON) schematic; the answer is ``{"id": ...}``. The
  id is computed the way the real factory computes it, SHA-256 of the schematic marshalled by Go's
  yaml.v3 (4-space indents, fields in the Go struct's order), so the well-known ids come out right:
  ``customization: {}`` is ``376567988a...``, qemu-guest-agent alone is ``ce4c980550...``. Unknown
  fields are refused like the factory's strict decoder refuses them.
- ``GET /schematics/<id>``: a schematic posted before (or one of the well-known ones), as YAML.
- ``GET /versions``: the Talos versions on offer (a fixed list, newest last).
- ``GET /version/<v>/extensions/official``: the official extensions for a version.
- ``GET``/``HEAD /image/<schematic>/<version>/<asset>``: 200 with a ``Content-Length`` (the image
  itself is not sent); an unknown version or asset is a 404, as from the factory.

``factory_response`` is the model; ``SimHttpExecutor`` wraps it in the ``HttpExecutor`` contract
(same ``Result.data`` shape, same failure wording), and the simulated nodes' ``wget``/``curl`` use
``factory_response`` and ``image_sizes`` for downloads.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..executors.base import Change, Progress
from ..executors.preview import http_changes
from ..load.facts import Facts
from ..runbook.actions import HttpRequest, Result, StepFailed

FACTORY_HOST = "factory.talos.dev"
EXCERPT = 300

# Stable Talos releases the simulated factory offers, oldest first (as the factory lists them).
VERSIONS: tuple[str, ...] = (
    *(f"v1.7.{n}" for n in range(0, 8)),
    *(f"v1.8.{n}" for n in range(0, 5)),
    *(f"v1.9.{n}" for n in range(0, 7)),
    *(f"v1.10.{n}" for n in range(0, 7)),
)

OFFICIAL_EXTENSIONS: tuple[tuple[str, str, str], ...] = (
    # (name, version, description)
    ("siderolabs/amd-ucode", "20250109", "This system extension provides AMD microcode binaries."),
    ("siderolabs/drbd", "9.2.12-v1.9.5", "This system extension provides DRBD kernel module."),
    ("siderolabs/intel-ucode", "20250211", "This system extension provides Intel microcode binaries."),
    ("siderolabs/iscsi-tools", "v0.1.6", "This system extension provides iSCSI tools."),
    ("siderolabs/nfsd", "v1.9.5", "This system extension provides kernel module for NFS server."),
    ("siderolabs/qemu-guest-agent", "9.2.0", "This system extension provides the QEMU Guest Agent service."),
    ("siderolabs/util-linux-tools", "2.40.4", "This system extension provides util-linux tools."),
    ("siderolabs/zfs", "2.2.7-v1.9.5", "This system extension provides ZFS kernel module."),
)

# Schematics every factory knows (so a GET of them works without a POST first).
WELL_KNOWN_SCHEMATICS: dict[str, str] = {
    "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba": "customization: {}\n",
    "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515": (
        "customization:\n    systemExtensions:\n        officialExtensions:\n            - siderolabs/qemu-guest-agent\n"
    ),
}

_ASSET = re.compile(
    r"(?P<platform>nocloud|metal|openstack|vmware|aws|gcp|azure|digital-ocean|hcloud|oracle|scaleway|upcloud|vultr)"
    r"-(?P<arch>amd64|arm64)(?:-secureboot)?\.(?P<format>raw\.xz|raw\.zst|raw\.gz|iso|qcow2|ova|vhd\.xz|tar\.gz)\Z"
)
_SCHEMATIC_ID = re.compile(r"[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class FactoryReply:
    """One answer of the simulated factory (``body`` is text; image bodies are not simulated)."""

    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


class SchematicError(ValueError):
    """A schematic the factory's strict decoder would refuse; the message is the factory's kind of words."""


def schematic_id(body: str) -> tuple[str, str]:
    """(id, canonical YAML) of a schematic given as YAML or JSON text; SchematicError when invalid."""
    try:
        data = yaml.safe_load(body) if body.strip() else {}
    except yaml.YAMLError as exc:
        raise SchematicError(f"yaml: {_one_line(str(exc))}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SchematicError(
            f"yaml: unmarshal errors:\n  cannot unmarshal {_yaml_kind(data)} into Go value of type schematic.Schematic"
        )
    canonical = _marshal_schematic(data)
    return hashlib.sha256(canonical.encode()).hexdigest(), canonical


def image_sizes(schematic: str, version: str, asset: str) -> tuple[int, int | None]:
    """(download size, decompressed size or None) of a factory image, deterministic per URL."""
    jitter = int(hashlib.sha256(f"{schematic}/{version}/{asset}".encode()).hexdigest()[:6], 16) % 8_000_000
    raw = 1_306_525_696  # what a Talos disk image decompresses to (1246 MiB)
    if asset.endswith((".raw.xz", ".raw.zst", ".raw.gz", ".vhd.xz")):
        return 88_000_000 + jitter, raw
    if asset.endswith(".iso"):
        return 104_000_000 + jitter, None
    return 96_000_000 + jitter, None


def parse_image_url(url: str) -> tuple[str, str, str] | None:
    """(schematic, version, asset) when ``url`` is a factory image URL, else None (syntax only)."""
    parts = urlsplit(url)
    if parts.hostname != FACTORY_HOST:
        return None
    match = re.fullmatch(r"/image/([^/]+)/([^/]+)/([^/]+)", parts.path)
    return (match.group(1), match.group(2), match.group(3)) if match else None


def is_factory_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and parts.hostname == FACTORY_HOST


class Factory:
    """The simulated factory's state: schematics posted so far (id -> canonical YAML), JSON-able.

    Pass a dict (for instance part of the persisted simulation state) to keep schematics between
    runs; the real factory keeps them forever.
    """

    def __init__(self, schematics: dict[str, str] | None = None):
        self.schematics = schematics if schematics is not None else {}
        self._lock = threading.Lock()

    def respond(self, method: str, url: str, body: str | None = None) -> FactoryReply:
        """The factory's answer to one request; ``url`` must be a factory URL (see ``is_factory_url``)."""
        method = method.upper()
        path = urlsplit(url).path.rstrip("/") or "/"
        if path == "/schematics":
            if method != "POST":
                return _text(405, "Method Not Allowed", "method not allowed")
            try:
                ident, canonical = schematic_id(body or "")
            except SchematicError as exc:
                return _text(400, "Bad Request", f"invalid schematic: {exc}")
            with self._lock:
                self.schematics[ident] = canonical
            return _json(201, "Created", {"id": ident})
        if method not in ("GET", "HEAD"):
            return _text(405, "Method Not Allowed", "method not allowed")
        reply = self._get(path)
        if method == "HEAD":
            return FactoryReply(reply.status, reply.reason, reply.headers, "")
        return reply

    def _get(self, path: str) -> FactoryReply:
        if path == "/versions":
            return _json(200, "OK", list(VERSIONS))
        match = re.fullmatch(r"/schematics/([^/]+)", path)
        if match:
            ident = match.group(1)
            known = self.schematics.get(ident) or WELL_KNOWN_SCHEMATICS.get(ident)
            if known is None:
                return _text(404, "Not Found", "schematic not found")
            return FactoryReply(200, "OK", {"content-type": "application/yaml"}, known)
        match = re.fullmatch(r"/version/([^/]+)/extensions/official", path)
        if match:
            if match.group(1) not in VERSIONS:
                return _text(404, "Not Found", "version not found")
            return _json(
                200,
                "OK",
                [
                    {
                        "name": name,
                        "ref": f"ghcr.io/{name}:{version}",
                        "digest": "sha256:" + hashlib.sha256(name.encode()).hexdigest(),
                        "author": "Sidero Labs",
                        "description": description,
                    }
                    for name, version, description in OFFICIAL_EXTENSIONS
                ],
            )
        match = re.fullmatch(r"/image/([^/]+)/([^/]+)/([^/]+)", path)
        if match:
            schematic, version, asset = match.groups()
            if not _SCHEMATIC_ID.match(schematic):
                return _text(400, "Bad Request", f"invalid schematic ID {schematic!r}")
            if version not in VERSIONS:
                return _text(404, "Not Found", f"version {version} not found")
            if not _ASSET.match(asset):
                return _text(404, "Not Found", f"asset {asset!r} not found")
            size, _raw = image_sizes(schematic, version, asset)
            return FactoryReply(
                200,
                "OK",
                {
                    "content-type": "application/x-xz" if asset.endswith(".xz") else "application/octet-stream",
                    "content-length": str(size),
                    "content-disposition": f'attachment; filename="{asset}"',
                },
                f"[simulation: {size} bytes of {asset} not transferred]",
            )
        return _text(404, "Not Found", "404 page not found")


class SimHttpExecutor:
    """``HttpExecutor`` for ``--simulate``: answers for factory.talos.dev, refuses every other host.

    ``factory`` holds the posted schematics; give one over a persisted dict to keep them.
    """

    kind = "http"

    def __init__(self, factory: Factory | None = None):
        self.factory = factory if factory is not None else Factory()

    def close(self) -> None:
        pass

    def __enter__(self) -> SimHttpExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def missing(self, req: HttpRequest) -> list[str]:
        return []

    def preview(self, req: HttpRequest, facts: Facts) -> list[Change]:
        return http_changes(req, facts)

    def execute(self, req: HttpRequest, progress: Progress | None = None) -> Result:
        method = req.method.upper()
        parts = urlsplit(req.url)
        shown = f"{method} {parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        if progress is not None:
            progress(shown)
        if parts.scheme not in ("http", "https"):
            raise StepFailed(f"{shown}: not a usable http:// or https:// URL", sent=False)
        if parts.hostname != FACTORY_HOST:
            raise StepFailed(
                f"{shown}: simulation: only the Talos Image Factory is simulated for http steps "
                f"(https://{FACTORY_HOST}); {parts.hostname or 'this host'} does not exist in the simulation",
                sent=False,
            )
        reply = self.factory.respond(method, req.url, req.body)
        data: dict[str, Any] = {"status": reply.status, "headers": dict(reply.headers), "body": reply.body}
        if reply.body.lstrip()[:1] in ("{", "[") or "json" in reply.headers.get("content-type", ""):
            try:
                data["json"] = json.loads(reply.body)
            except json.JSONDecodeError:
                pass
        expected = req.expect or tuple(range(200, 300))
        if reply.status not in expected:
            wanted = "2xx" if not req.expect else ", ".join(map(str, req.expect))
            excerpt = " ".join(reply.body[:EXCERPT].split()) or "(empty body)"
            raise StepFailed(
                f"{shown} returned {reply.status} {reply.reason} (expected {wanted}): {excerpt}",
                retryable=reply.status in (429, 503),
                data=data,
            )
        return Result(data=data, summary=f"{shown}: {reply.status} (simulated)")


# ---------------------------------------------------------------- replies


def _json(status: int, reason: str, value: Any) -> FactoryReply:
    return FactoryReply(status, reason, {"content-type": "application/json"}, json.dumps(value, separators=(",", ":")))


def _text(status: int, reason: str, text: str) -> FactoryReply:
    return FactoryReply(status, reason, {"content-type": "text/plain; charset=utf-8"}, text + "\n")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _yaml_kind(value: Any) -> str:
    if isinstance(value, list):
        return "!!seq"
    if isinstance(value, str):
        return "!!str `" + value[:20] + "`"
    return "!!" + type(value).__name__


# ---------------------------------------------------------------- the schematic, as Go marshals it

# The Go structs of image-factory's pkg/schematic: field name -> kind, in declaration order.
_SCHEMATIC_FIELDS = {"overlay": "overlay", "customization": "customization"}
_OVERLAY_FIELDS = {"image": "str", "name": "str", "options": "any"}
_CUSTOMIZATION_FIELDS = {
    "extraKernelArgs": "strs",
    "meta": "meta",
    "systemExtensions": "extensions",
    "secureboot": "secureboot",
}


def _marshal_schematic(data: dict[str, Any]) -> str:
    _known(data, _SCHEMATIC_FIELDS, "schematic.Schematic")
    lines: list[str] = []
    overlay = data.get("overlay") or {}
    if not isinstance(overlay, dict):
        raise SchematicError("yaml: unmarshal errors:\n  cannot unmarshal into schematic.Overlay")
    _known(overlay, _OVERLAY_FIELDS, "schematic.Overlay")
    if overlay:  # omitempty: an overlay with every field zero is left out
        lines.append("overlay:")
        lines.append(f"    image: {_scalar(_string(overlay.get('image', ''), 'overlay.image'))}")
        lines.append(f"    name: {_scalar(_string(overlay.get('name', ''), 'overlay.name'))}")
        if overlay.get("options"):
            lines.append("    options:")
            lines += _any(overlay["options"], 8)
    custom = data.get("customization") or {}
    if not isinstance(custom, dict):
        raise SchematicError("yaml: unmarshal errors:\n  cannot unmarshal into schematic.Customization")
    _known(custom, _CUSTOMIZATION_FIELDS, "schematic.Customization")
    body: list[str] = []
    args = _strings(custom.get("extraKernelArgs") or [], "customization.extraKernelArgs")
    if args:
        body.append("    extraKernelArgs:")
        body += [f"        - {_scalar(arg)}" for arg in args]
    meta = custom.get("meta") or []
    if not isinstance(meta, list):
        raise SchematicError("yaml: unmarshal errors:\n  cannot unmarshal into []schematic.MetaValue")
    if meta:
        body.append("    meta:")
        for item in meta:
            if not isinstance(item, dict):
                raise SchematicError("yaml: unmarshal errors:\n  cannot unmarshal into schematic.MetaValue")
            _known(item, {"key": "int", "value": "str"}, "schematic.MetaValue")
            key = item.get("key", 0)
            if not isinstance(key, int) or isinstance(key, bool) or not 0 <= key <= 255:
                raise SchematicError(f"yaml: unmarshal errors:\n  cannot unmarshal {key!r} into uint8")
            body.append(f"        - key: {key}")
            body.append(f"          value: {_scalar(_string(item.get('value', ''), 'meta.value'))}")
    extensions = custom.get("systemExtensions") or {}
    if not isinstance(extensions, dict):
        raise SchematicError("yaml: unmarshal errors:\n  cannot unmarshal into schematic.SystemExtensions")
    _known(extensions, {"officialExtensions": "strs"}, "schematic.SystemExtensions")
    names = _strings(extensions.get("officialExtensions") or [], "systemExtensions.officialExtensions")
    if names:
        body.append("    systemExtensions:")
        body.append("        officialExtensions:")
        body += [f"            - {_scalar(name)}" for name in names]
    secure = custom.get("secureboot") or {}
    if not isinstance(secure, dict):
        raise SchematicError("yaml: unmarshal errors:\n  cannot unmarshal into schematic.SecureBootCustomization")
    _known(secure, {"includeWellKnownCertificates": "bool"}, "schematic.SecureBootCustomization")
    if secure.get("includeWellKnownCertificates"):
        body.append("    secureboot:")
        body.append("        includeWellKnownCertificates: true")
    if body:
        lines.append("customization:")
        lines += body
    else:
        lines.append("customization: {}")
    return "\n".join(lines) + "\n"


def _known(obj: dict[str, Any], fields: dict[str, str], go_type: str) -> None:
    for key in obj:
        if key not in fields:
            raise SchematicError(f"yaml: unmarshal errors:\n  field {key} not found in type {go_type}")


def _string(value: Any, where: str) -> str:
    if isinstance(value, (dict, list)):
        raise SchematicError(f"yaml: unmarshal errors:\n  cannot unmarshal {_yaml_kind(value)} into string ({where})")
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list):
        raise SchematicError(f"yaml: unmarshal errors:\n  cannot unmarshal {_yaml_kind(value)} into []string ({where})")
    return [_string(item, where) for item in value]


_AMBIGUOUS = re.compile(
    r"(?i:y|yes|n|no|true|false|on|off|null|~)\Z|[-+]?(\d[\d_]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?\Z|0x[0-9a-fA-F]+\Z|"
    r"0o[0-7]+\Z|[-+]?\.(?i:inf)\Z|\.(?i:nan)\Z|<<\Z"
)


def _scalar(text: str) -> str:
    """A string as yaml.v3 emits it: plain when it can be, double-quoted when it would read as another type."""
    if text == "":
        return '""'
    if _AMBIGUOUS.match(text) or "\n" in text or any(ord(c) < 32 for c in text):
        return json.dumps(text)
    plain = (
        text[0] not in "-?:,[]{}#&*!|>'\"%@`" or (text[0] in "-?:" and len(text) > 1 and text[1] not in " \t")
    ) and not (text[0] in " \t" or text[-1] in " \t:" or ": " in text or " #" in text)
    if plain:
        return text
    return "'" + text.replace("'", "''") + "'"


def _any(value: Any, indent: int) -> list[str]:
    """Lines of an arbitrary YAML value under a key, map keys sorted as Go sorts map keys."""
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key in sorted(value, key=str):
            item = value[key]
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{_scalar(str(key))}:")
                lines += _any(item, indent + 4)
            else:
                lines.append(f"{pad}{_scalar(str(key))}: {_inline(item)}")
        return lines
    if isinstance(value, list):
        lines = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                inner = _any(item, indent + 2)
                lines.append(f"{pad}- {inner[0].lstrip()}")
                lines += inner[1:]
            else:
                lines.append(f"{pad}- {_inline(item)}")
        return lines
    return [f"{pad}{_inline(value)}"]


def _inline(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _scalar(str(value))
