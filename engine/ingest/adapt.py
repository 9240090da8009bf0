"""A page's values to this cluster's conventions, every change listed with its reason.

- Placeholders (``<NODE_HOST>``, ``<VMID>``, ``YOUR_STORAGE``) and shell variables the page never
  sets (``$VMID``) become context values when cluster-config.yaml holds the answer
  (``<CLUSTER_DOMAIN>`` -> ``config.cluster.domain``, ``<STORAGE>`` -> ``defaults.storage``) and runbook
  parameters otherwise. A variable the page sets to a literal (``VMID=9000``) becomes a parameter
  with that default.
- Literal conventions become the config's: disk storage, bridges, BIOS, CPU type, SCSI controller
  and machine type read from ``defaults``.
- Literal VMIDs become integer parameters whose default lies inside ``vmid_ranges`` (templates
  for a VMID the page makes a template of, or clones from; VMs otherwise).
- Node and host names become a node parameter restricted to the cluster's nodes, defaulting to
  the cluster node the foreign name was mapped to (in order of appearance).
- ``for`` loops over VMIDs or nodes become ``foreach`` over a list parameter (or the VMIDs' own
  parameters) or ``node_names``.
- Values named after a VMID (volumes, image folders, ``talos-120``) follow its parameter; the page's
  addresses become parameters, blank ones (``192.168.11.xxx``, ``...``) required ones.
- A page's ``cd DIR`` holds for the local steps after it; a Talos procedure's words the profile's
  plan gives (``talosplan``) arrive as ``Draft.mapped``.

Output is text for the composer: step bodies with ``{{ ... }}`` where values were adapted and
with the page's own ``{{``/``{%`` protected by ``{% raw %}``. In shell bodies a template is left
bare inside a word (``vm-{{ vmid }}-disk-0``): the engine shell-quotes the value, and the shell
joins the pieces back into one word.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

import jq

from ..runbook.model import RESERVED_NAMES
from ..shell.parse import Simple, Word
from . import effects
from .classify import CLOSE, OPEN, Classifier, Draft, shown
from .redact import MARK

_TOKEN = re.compile(
    rf"({OPEN}[^{CLOSE}]+{CLOSE}|\$\{{[A-Za-z_]\w*\}}|\$[A-Za-z_]\w*|\bYOUR_[A-Z0-9_]+\b|{re.escape(MARK)})"
)
#: Names of values that are credentials: a parameter for one is secret (read at run time, masked).
_CREDENTIAL = re.compile(r"(?i)(?:^|[\W_])(?:password|passwd|passphrase|secret|token|ticket|csrf|api_?key|pass|pw)$")
#: A new API token: PVE shows its secret once, in the answer, which ``to_pass`` stores in pass.
_NEW_TOKEN = re.compile(r"^POST /access/users/(?P<user>[^/\s]+)/token/(?P<token>[^/\s]+)$", re.M)
_SHELL_VARS = frozenset(
    {
        "HOME",
        "PATH",
        "USER",
        "PWD",
        "OLDPWD",
        "SHELL",
        "TMPDIR",
        "RANDOM",
        "HOSTNAME",
        "IFS",
        "UID",
        "EUID",
        "LANG",
        "TERM",
        "SECONDS",
        "LINENO",
        "BASH_SOURCE",
        "PPID",
    }
)
_CONTEXT = {
    "PASS_PATH": ("credentials.pass_path", "credentials.pass_path"),
    "SSH_USER": ("credentials.ssh_user", "credentials.ssh_user"),
    "CLUSTER_DOMAIN": ("config.cluster.domain", "cluster.domain"),
    "DOMAIN": ("config.cluster.domain", "cluster.domain"),
    "CLUSTER_NAME": ("config.cluster.name", "cluster.name"),
    "STORAGE": ("defaults.storage", "defaults.storage"),
    "STORAGE_NAME": ("defaults.storage", "defaults.storage"),
    "DISK_STORAGE": ("defaults.storage", "defaults.storage"),
    "VM_STORAGE": ("defaults.storage", "defaults.storage"),
    "TARGET_STORAGE": ("defaults.storage", "defaults.storage"),
    "STORAGE_POOL": ("defaults.storage", "defaults.storage"),
    "BRIDGE": ("defaults.network_bridge", "defaults.network_bridge"),
    "NETWORK_BRIDGE": ("defaults.network_bridge", "defaults.network_bridge"),
    "BIOS": ("defaults.bios", "defaults.bios"),
    "CPU_TYPE": ("defaults.cpu", "defaults.cpu"),
    "SCSIHW": ("defaults.scsi_controller", "defaults.scsi_controller"),
    "SCSI_CONTROLLER": ("defaults.scsi_controller", "defaults.scsi_controller"),
    "MACHINE": ("defaults.machine", "defaults.machine"),
    "MACHINE_TYPE": ("defaults.machine", "defaults.machine"),
    "CI_USER": ("cloudinit.default_user", "cloudinit.default_user"),
    "CLOUDINIT_USER": ("cloudinit.default_user", "cloudinit.default_user"),
    "SSH_KEYS_FILE": ("cloudinit.ssh_keys_file", "cloudinit.ssh_keys_file"),
    "FLEET_INFRA_PATH": ("ansible.fleet_infra_path", "ansible.fleet_infra_path"),
    "INVENTORY": ("ansible.inventory", "ansible.inventory"),
    "PLAYBOOKS_DIR": ("ansible.playbooks_dir", "ansible.playbooks_dir"),
}
_HOST_NAMES = frozenset({"NODE_HOST", "HOST", "PVE_HOST", "PROXMOX_HOST"})
_NODE_NAMES = {
    "NODE": "node",
    "NODE_HOST": "node",
    "NODE_NAME": "node",
    "HOST": "node",
    "PVE_NODE": "node",
    "PVE_HOST": "node",
    "PROXMOX_HOST": "node",
    "PROXMOX_NODE": "node",
    "SOURCE_NODE": "node",
    "NODENAME": "node",
    "PVE": "node",
    "SERVER": "node",
    "TARGET_NODE": "target_node",
    "TARGET": "target_node",
    "DEST_NODE": "target_node",
    "TEMPLATE_NODE": "template_node",
}
_VMID = re.compile(r"^(?:(NEW|TEMPLATE|TEMPLATE_VM|TARGET|SOURCE|CLONE|BASE)_?)?(?:VM_?ID|VMID|ID)(\d*)$")
_INTEGER_NAME = re.compile(
    r"(^|_)(CORES|SOCKETS|MEMORY|MEM|MEM_MB|PORT|COUNT|\w*_MB|\w*_GB|SIZE_GB|VLAN|TAG_ID|"
    r"VCPUS|NUM\w*)$"
)
#: Names an ingested parameter or loop variable may not take: those templates already see, and
#: the words of Jinja's own syntax and globals, which would make the composed template misread.
_RESERVED = RESERVED_NAMES | {
    "raw",
    "quote",
    "range",
    "loop",
    "true",
    "false",
    "none",
    "in",
    "not",
    "and",
    "or",
    "is",
    "if",
    "else",
}
_DISK_KEY = re.compile(r"^(scsi|virtio|sata|ide|efidisk|tpmstate|rootfs|mp|unused)\d*$")
_DISK_VALUE = re.compile(r"^(?P<store>[A-Za-z][\w.-]*):(?P<rest>(\d+(\.\d+)?|0,|vm-|base-|cloudinit|subvol-).*)$")
_TEMPLATE_ROLES = {"bios": "defaults.bios", "scsihw": "defaults.scsi_controller", "machine": "defaults.machine"}
_QM_NO_VMID = frozenset({"list", "help", "mtunnel", "nbdstop", "importovf", "cleanup"})
#: Where a value is derived from a VMID: volume names, ``STORE:VMID/`` volume folders, image folders.
_DERIVED = re.compile(
    r"\b(?:vm|base|subvol)-(?P<volume>\d+)-(?:disk|cloudinit|state)"
    r"|(?:^|(?<=:))(?P<folder>\d+)(?=/(?:vm|base|subvol)-)"
    r"|/images/(?P<images>\d+)(?=/|$)"
    r"|(?<=[A-Za-z]-)(?P<name>\d{3,})(?![\w.])"
)
#: A value left out on the page (``name=...``, a lone ``...``): a blank to fill in.
_ELLIPSIS = re.compile(r"(?<![\w.])(?:\.\.\.|…)(?![\w.])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1?\d?\d)"
_ADDRESS = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w.])")
#: An address written as a blank to fill in: ``192.168.11.xxx``, ``x.x.x.x``.
_BLANK_ADDRESS = re.compile(r"(?<![\w.])(?:(?:\d{1,3}|[xX]{1,3})\.){3}(?:\d{1,3}|[xX]{1,3})(?![\w.])")
_ADDRESS_KEYS = {"ip": "ip", "gw": "gateway", "gateway": "gateway", "ip6": "ip", "dns": "nameserver"}
_NOT_ADDRESSES = re.compile(r"^(0\.0\.0\.0|127\.|255\.)")


@dataclass(frozen=True)
class Tmpl:
    """A Jinja expression to place where a value of the page was."""

    expr: str


Chunk = str | Tmpl


@dataclass
class Scope:
    """What a value is read in: its step's kind, loop variable, and the variables its body sets."""

    kind: str
    loop_var: str | None = None
    loop_as: str | None = None
    defined: frozenset[str] = frozenset()
    problems: list[str] = field(default_factory=list)
    page_vars: dict[str, str] = field(default_factory=dict)  # NAME=literal in force where the command stood
    mapped: dict[str, str] = field(default_factory=dict)  # a word of the page -> its expression here
    hint: str | None = None  # what the value being adapted is for (an option or key), to name a secret
    step: str = ""  # the step's id


@dataclass
class Adapted:
    """A step ready to be written."""

    kind: str
    attrs: dict[str, Any]
    body: str
    draft: Draft


def jinja_text(text: str) -> str:
    """Literal text made safe inside a Jinja template: the page's own ``{{``, ``{%``, ``{#`` stay literal."""
    if re.search(r"\{[{%#]|[}%#]\}", text):
        return "{% raw %}" + text.replace("{% endraw %}", "{% endraw %}{{ '{% endraw %}' }}{% raw %}") + "{% endraw %}"
    return text


def serialize(chunks: list[Chunk]) -> str:
    return "".join(f"{{{{ {c.expr} }}}}" if isinstance(c, Tmpl) else jinja_text(c) for c in chunks)


class Adapter:
    """Adapts the drafts of one page to one cluster config; collects parameters and changes."""

    def __init__(self, config: dict[str, Any], classifier: Classifier):
        self.config = config
        self.classifier = classifier
        self.nodes = [str(n["name"]) for n in config["cluster"]["nodes"]]
        self.hosts = {str(n["host"]): str(n["name"]) for n in config["cluster"]["nodes"]}
        self.params: dict[str, dict[str, Any]] = {}
        self.identities: dict[tuple[str, str], str] = {}
        self.changes: list[str] = []
        self.warnings: list[str] = []
        self.node_map: dict[str, str] = {}
        self.template_vmids: set[int] = set()
        self.page_vmids: set[int] = set()  # VMIDs the page acts on: values derived from them follow them
        self.requires: list[str] = []  # the runbook's requires (profile, for a Talos procedure)
        self.step_ids: dict[str, str] = {}  # captured shell variable -> step id

    # ---------------------------------------------------------------- bookkeeping

    def change(self, text: str) -> None:
        if text not in self.changes:
            self.changes.append(text)

    def _param(self, identity: tuple[str, str], name: str, spec: dict[str, Any], why: str) -> str:
        if identity in self.identities:
            return self.identities[identity]
        name = _param_name(name)
        base, number = name, 2
        while name in self.params:
            name, number = f"{base}_{number}", number + 1
        self.params[name] = spec
        self.identities[identity] = name
        default = f", default {json.dumps(spec['default'])}" if "default" in spec else ", required"
        if spec.get("secret"):
            self.change(
                f"{why} -> secret parameter {name} (required: give it with --secret {name}=env:VAR or "
                f"--secret {name}=pass:PATH; masked in every output)"
            )
        else:
            self.change(f"{why} -> parameter {name} ({spec['type']}{default})")
        return name

    def _range(self, kind: str) -> tuple[int, int]:
        span = self.config["vmid_ranges"][kind]
        return int(span["min"]), int(span["max"])

    # ---------------------------------------------------------------- values

    def vmid(self, value: int, role: str, raw: str) -> Tmpl:
        template = value in self.template_vmids or role == "template_vmid"
        kind = "templates" if template else "vms"
        low, high = self._range(kind)
        default = value if low <= value <= high else low + value % (high - low + 1)
        moved = "" if default == value else f", moved into vmid_ranges.{kind} {low}-{high}"
        base = "template_vmid" if template else ("new_vmid" if role == "newid" else "vmid")
        spec = {
            "type": "integer",
            "description": f"VMID of the {'template' if template else 'VM'} "
            f"(vmid_ranges.{kind}: {low}-{high}); the source used {value}.",
            "minimum": low,
            "maximum": high,
            "default": default,
        }
        return Tmpl(self._param(("vmid", str(value)), base, spec, f"VMID {raw}{moved}"))

    def node(self, value: str, role: str = "node") -> Tmpl:
        """A literal node or host name of the page as a node parameter defaulting to a cluster node."""
        name = self.hosts.get(value) or (value if value in self.nodes else None)
        short = value if re.fullmatch(r"[\d.]+|[0-9a-fA-F:]+", value) else value.split(".")[0]
        name = name or (short if short in self.nodes else None)
        if name is None:
            if short not in self.node_map:
                used = set(self.node_map.values())
                free = [n for n in self.nodes if n not in used] or self.nodes
                number = re.search(r"(\d+)$", short)
                same = [
                    n
                    for n in free
                    if number and re.search(r"(\d+)$", n) and int(re.search(r"(\d+)$", n)[1]) == int(number[1])
                ]  # pve3 -> pve03
                self.node_map[short] = (same or free)[0]
                self.change(f"host/node '{value}' of the source is this cluster's node {self.node_map[short]}")
            name = self.node_map[short]
        base = "target_node" if role == "target_node" else "node"
        identity = ("node-literal", name)  # one cluster node, one parameter, whatever role it is seen in first
        if (
            identity not in self.identities
            and ("node", base) in self.identities
            and self.params[self.identities[("node", base)]].get("default") == name
        ):
            self.identities[identity] = self.identities[("node", base)]
        spec = {
            "type": "string",
            "description": "The cluster node to act on.",
            "enum": list(self.nodes),
            "default": name,
        }
        param = self._param(identity, base, spec, f"node '{value}'")
        self.identities.setdefault(("node", base), param)
        return Tmpl(param)

    def placeholder(self, raw_name: str, scope: Scope, shown_as: str) -> Tmpl:
        norm = re.sub(r"[^A-Z0-9]+", "_", raw_name.upper()).strip("_")
        norm = norm.removeprefix("YOUR_") or norm
        if scope.kind == "talosctl" and (norm in _NODE_NAMES or norm.endswith("_IP") or norm == "IP"):
            base = "talos_node" if norm in _NODE_NAMES else norm.lower()
            spec = {"type": "string", "description": f"Talos node address (the source wrote {shown_as})."}
            return Tmpl(self._param(("talos", base), base, spec, f"placeholder {shown_as}"))
        if norm in _CONTEXT:
            expr, where = _CONTEXT[norm]
            self.change(f"placeholder {shown_as} -> {{{{ {expr} }}}} from cluster-config.yaml ({where})")
            return Tmpl(expr)
        if norm in _NODE_NAMES:
            base = _NODE_NAMES[norm]
            default = self.nodes[1] if base == "target_node" and len(self.nodes) > 1 else self.nodes[0]
            spec = {
                "type": "string",
                "description": "The cluster node to act on."
                if base == "node"
                else f"The cluster node ({base.replace('_', ' ')}).",
                "enum": list(self.nodes),
                "default": default,
            }
            param = self._param(("node", base), base, spec, f"placeholder {shown_as}")
            if norm in _HOST_NAMES and scope.kind in ("ssh", "local"):
                self.change(f"placeholder {shown_as} in a command -> the host of node {param} (cluster.nodes[].host)")
                return Tmpl(f"(nodes | selectattr('name', 'equalto', {param}) | first).host")
            return Tmpl(param)
        vmid = _VMID.match(norm)
        if vmid:
            template = (vmid[1] or "").startswith(("TEMPLATE", "BASE", "SOURCE", "CLONE"))
            kind = "templates" if template else "vms"
            low, high = self._range(kind)
            base = ("template_vmid" if template else "new_vmid" if vmid[1] in ("NEW", "TARGET") else "vmid") + (
                vmid[2] or ""
            )
            spec = {
                "type": "integer",
                "description": f"VMID of the {'template' if template else 'VM'} (vmid_ranges.{kind}: {low}-{high}).",
                "minimum": low,
                "maximum": high,
            }
            return Tmpl(self._param(("placeholder", norm), base, spec, f"placeholder {shown_as}"))
        if _CREDENTIAL.search(norm) or (scope.hint and _CREDENTIAL.search(scope.hint)):
            return self.secret(norm.lower(), f"placeholder {shown_as}")
        kind = "integer" if _INTEGER_NAME.search(norm) else "string"
        spec = {"type": kind, "description": f"Value for {shown_as} in the source."}
        return Tmpl(self._param(("placeholder", norm), norm.lower(), spec, f"placeholder {shown_as}"))

    def secret(self, hint: str | None, what: str, scope: Scope | None = None) -> Tmpl:
        """A credential the page held (removed by ``redact``) or named: a required secret parameter.

        Never a literal, never a default: the value is read at run time from ``--secret NAME=SOURCE``
        (or asked without echo) and masked in every plan, journal and output. A value removed from
        the page is one parameter per step (two removed passwords may differ: each is asked for);
        one the page names (``$CI_PASSWORD``) is one parameter wherever it is used.
        """
        base = _param_name(re.sub(r"^-+", "", hint or "secret"))
        identity = ("secret", f"{base} {scope.step}" if scope is not None else base)
        spec = {
            "type": "string",
            "secret": True,
            "description": f"The {base.replace('_', ' ')} the source page needs here ({what}); given at run time, "
            "never written down.",
        }
        return Tmpl(self._param(identity, base, spec, what))

    def variable(self, name: str, scope: Scope, raw: str) -> Chunk:
        """``$name`` of the page: a loop variable, a step output, a parameter, or a shell variable kept."""
        if name == scope.loop_var and scope.loop_as:
            return Tmpl(scope.loop_as)
        if f"${name}" in scope.mapped:
            return Tmpl(scope.mapped[f"${name}"])
        if name in scope.defined or name in _SHELL_VARS or not re.match(r"[A-Za-z_]", name):
            if scope.kind in ("api", "attr"):
                scope.problems.append(f"uses the shell variable ${name}, which an api step cannot see")
            return _Raw(raw)
        if name in self.step_ids:
            self.change(f"${name} (set from an API call on the page) -> steps.{self.step_ids[name]}")
            return Tmpl(f"steps.{self.step_ids[name]}")
        if name in scope.page_vars:
            return self._page_value(name, scope.page_vars[name], scope)
        return self.placeholder(name, scope, raw)

    def _page_value(self, name: str, value: str, scope: Scope) -> Tmpl:
        norm = re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_")
        if scope.hint and _CREDENTIAL.search(scope.hint):  # set on the page, but given as a password here
            return self.secret(norm.lower(), f"${name}, set on the page, given as {scope.hint}")
        shown_as = f"${name} (set to {shown(value)!r} on the page)"
        if OPEN in value or value.startswith("YOUR_"):
            inner = value.strip(OPEN + CLOSE)
            return self.placeholder(inner, scope, f"{shown_as}")
        if norm in _CONTEXT:
            expr = _CONTEXT[norm][0]
            self.change(f"{shown_as} -> {{{{ {expr} }}}} from cluster-config.yaml")
            return Tmpl(expr)
        if norm in _NODE_NAMES:
            return self.node(value, _NODE_NAMES[norm])
        if _VMID.match(norm) and value.isdigit():
            # $VMID set on the page, <VMID> and the literal itself are one parameter.
            chunk = self.vmid(int(value), "template_vmid" if norm.startswith("TEMPLATE") else "vmid", shown_as)
            self.identities.setdefault(("placeholder", norm), chunk.expr)
            return chunk
        if _ADDRESS.fullmatch(value) or _BLANK_ADDRESS.fullmatch(value):
            return self.address(value, name.lower())
        if _ELLIPSIS.fullmatch(value):
            return self.blank(name)
        kind = "integer" if re.fullmatch(r"-?\d+", value) else "string"
        spec: dict[str, Any] = {
            "type": kind,
            "description": f"Set to {shown(value)!r} on the source page.",
            "default": int(value) if kind == "integer" else shown(value),
        }
        # VAR=a in one block and VAR=b in the next are two values, so two parameters.
        return Tmpl(self._param(("var", name, value), name.lower(), spec, shown_as))

    def blank(self, key: str) -> Tmpl:
        """A value the page left out as ``...``: required, since the page gives none."""
        spec = {"type": "string", "description": f"The value the source left out as '...' ({key})."}
        return Tmpl(self._param(("blank", key), key.lower(), spec, f"'...' left for {key} on the page"))

    def address(self, value: str, base: str) -> Tmpl:
        """An address of the page: its own network's, so a parameter; a blank one (``192.168.11.xxx``)
        is required, with no default, since no value of the page is right here."""
        blank = not _ADDRESS.fullmatch(value)
        spec: dict[str, Any] = {"type": "string"}
        if blank:
            spec["description"] = f"An address of your network: the source left it blank as {value}."
            why = f"placeholder address {value}"
        else:
            spec["description"] = f"An address; the source used {value}, on its own network."
            spec["default"] = value
            why = f"address {value} of the source"
        return Tmpl(self._param(("address", value), base, spec, why))

    # ---------------------------------------------------------------- text and roles

    def text(self, value: str, scope: Scope, role: str | None = None) -> list[Chunk]:
        """A value of the page (placeholders and ``$vars`` as written) as chunks, adapted by its role."""
        chunks = self.role(value, role) if role else [value]
        out: list[Chunk] = []
        for chunk in chunks:
            if isinstance(chunk, Tmpl):
                out.append(chunk)
                continue
            mapped = _split_mapped(chunk, scope.mapped)
            if len(mapped) > 1:
                plain = replace(scope, mapped={})
                for piece in mapped:
                    out += [piece] if isinstance(piece, Tmpl) else self.text(piece, plain) if piece else []
                continue
            for index, piece in enumerate(_TOKEN.split(chunk)):
                if not piece:
                    continue
                if index % 2 == 0:
                    out += self._values(piece, scope)
                elif piece == MARK:
                    before = "".join(c for c in out[-1:] if isinstance(c, str))
                    if re.search(r"(?i)authorization:\s*$", before):
                        out.append(piece)  # a header: api_token_env hands the command the engine's token
                    else:
                        out.append(
                            self.secret(_hint(before) or scope.hint, "a credential removed from the page", scope)
                        )
                elif piece.startswith(OPEN):
                    out.append(self.placeholder(piece[1:-1], scope, shown(piece)))
                elif piece.startswith("$"):
                    out.append(self.variable(piece.strip("${}"), scope, piece))
                else:
                    out.append(self.placeholder(piece, scope, piece))
        return _merge(out)

    def _values(self, text: str, scope: Scope) -> list[Chunk]:
        """Values inside literal text: words the plan gives (``scope.mapped``), values derived from a
        VMID of the page (``vm-120-disk-0``, ``local:120/``, ``/images/120/``), addresses."""
        out: list[Chunk] = []
        last, derived = 0, []
        for match in _value_matches(text):
            value = match.group()
            if match.re is _DERIVED:
                number = int(next(g for g in match.groups() if g))
                if number not in self.page_vmids:
                    continue
                chunk = self.vmid(number, "vmid", str(number))
                start, end = match.span(next(k for k, g in match.groupdict().items() if g))
                derived.append(text[start:end])
            elif match.re is _ELLIPSIS:
                key = re.search(r"(\w+)=$", text[: match.start()])
                chunk = self.blank(key[1] if key else "value")
                start, end = match.span()
            elif _NOT_ADDRESSES.match(value) or scope.kind == "attr":
                continue
            else:
                key = re.search(r"(\w+)=$", text[: match.start()])
                chunk = self.address(value, _ADDRESS_KEYS.get(key[1].lower(), "address") if key else "address")
                start, end = match.span()
            out += [text[last:start], chunk]
            last = end
        out = _merge(out + [text[last:]])
        if derived:
            made = shown("".join(f"{{{{ {c.expr} }}}}" if isinstance(c, Tmpl) else c for c in out))
            made = made if len(made) <= 90 else made[:87] + "..."
            self.change(f"'{made}': named after VMID {', '.join(dict.fromkeys(derived))} on the page, so it follows it")
        return out

    def role(self, value: str, role: str) -> list[Chunk]:
        """Literal conventions inside one value: ``local-zfs:32`` -> ``{{ defaults.storage }}:32``."""
        literal = not _TOKEN.search(value)
        if role in ("vmid", "newid", "template_vmid"):
            return [self.vmid(int(value), role, value)] if literal and value.isdigit() else [value]
        if role in ("node", "target_node"):
            return [self.node(value, role)] if literal and re.fullmatch(r"[\w.-]+", value) else [value]
        if role == "storage" and literal and re.fullmatch(r"[A-Za-z][\w.-]*", value):
            return [self._default("storage", "storage", value)]
        if role == "disk":
            match = _DISK_VALUE.match(value)
            if match and not _TOKEN.search(match["store"]) and match["store"] != "none":
                return [self._default("storage", "storage", match["store"]), ":", match["rest"]]
            return [value]
        if role == "net":
            match = re.search(r"(?<![\w-])bridge=([\w.-]+)", value)
            if match and not _TOKEN.search(match[1]):
                return [
                    value[: match.start(1)],
                    self._default("network_bridge", "bridge", match[1]),
                    value[match.end(1) :],
                ]
            return [value]
        if role == "cpu" and literal:
            head, sep, rest = value.partition(",")
            return [self._default("cpu", "CPU type", head), sep + rest] if re.fullmatch(r"[\w.-]+", head) else [value]
        if role in _TEMPLATE_ROLES and literal and re.fullmatch(r"[\w.-]+", value):
            key = _TEMPLATE_ROLES[role].split(".")[1]
            return [
                self._default(
                    key, {"bios": "BIOS", "scsihw": "SCSI controller", "machine": "machine type"}[role], value
                )
            ]
        return [value]

    def _default(self, key: str, what: str, value: str) -> Tmpl:
        configured = self.config["defaults"].get(key)
        same = " (the same value)" if str(configured) == value else f" ({configured})"
        self.change(
            f"{what} '{value}' -> {{{{ defaults.{key} }}}}{same}: the cluster's default from cluster-config.yaml"
        )
        if key == "bios" and str(configured) == "ovmf" and value != "ovmf":
            self.warnings.append(
                "the BIOS became ovmf (the cluster's default): an OVMF VM needs an efidisk0; check "
                "the steps that create the VM"
            )
        return Tmpl(f"defaults.{key}")

    # ---------------------------------------------------------------- steps

    def scan_templates(self, drafts: list[Draft]) -> None:
        """VMIDs the page makes templates of or clones from: their parameters take the templates range."""
        for draft in drafts:
            self.page_vmids |= _draft_vmids(draft)
            if draft.kind == "api":
                match = re.search(r"/(?:qemu|lxc)/(\d+)/(?:template|clone)$", draft.path)
                if match:
                    self.template_vmids.add(int(match[1]))
            for command in draft.commands:
                words = [w.literal or "" for w in command.words]
                if (
                    len(words) > 2
                    and words[0] in ("qm", "pct")
                    and words[1] in ("template", "clone")
                    and words[2].isdigit()
                ):
                    self.template_vmids.add(int(words[2]))

    def adapt(self, draft: Draft, step_id: str) -> Adapted:
        scope = Scope(
            draft.kind,
            defined=frozenset(draft.defined),
            page_vars=draft.page_vars,
            mapped=draft.mapped,
            step=step_id,
        )
        attrs: dict[str, Any] = {"id": step_id}
        if draft.loop_expr is not None:
            attrs["foreach"], attrs["as"] = draft.loop_expr, draft.loop_var
        elif draft.loop_var is not None and draft.loop_items is not None:
            self._loop(draft, scope, attrs)
        if draft.kind == "api":
            body = self._api_body(draft, scope, attrs)
        else:
            body = self._shell_body(draft, scope)
            if draft.kind == "local" and draft.workdir:
                body = self._in_workdir(draft, scope, body)
            if draft.kind == "ssh":
                attrs["node"] = self._node_attr(draft, scope)
            if draft.kind == "local" and "Authorization: [redacted]" in body:
                env = str(draft.attrs.get("api_token_env") or "PVE_API_TOKEN")
                body = body.replace("Authorization: [redacted]", f"Authorization: PVEAPIToken=${{{env}}}")
                attrs["api_token_env"] = env
                self.change(
                    f"step {step_id}: its curl reads the API token from ${env} (api_token_env: the engine "
                    "puts the token there at run time, never on the command line or in the runbook)"
                )
        for key, value in draft.attrs.items():
            attrs.setdefault(key, value)
        if draft.kind in ("ssh", "local", "talosctl") and not attrs.get("review"):
            attrs["changes"] = self._changes(draft, scope, str(attrs.get("node", "")))
        if draft.kind in ("talosctl",) and draft.extract:
            self._extract(draft, scope, attrs)
        if scope.problems:
            raise Unadaptable("; ".join(dict.fromkeys(scope.problems)))
        return Adapted(draft.kind, attrs, body, draft)

    def _changes(self, draft: Draft, scope: Scope, node: str) -> dict[str, Any] | list[dict[str, Any]]:
        """The step's ``changes:`` (engine/ingest/effects.py; ``[]`` when it only reads), its ids in this
        cluster's values: the VMID parameter of ``qm importdisk 200``, the node of a file on a node."""
        roles: dict[int, str] = {}
        for command in draft.commands:
            roles.update(_shell_roles(command))
        entries = []
        for effect in draft.effects:
            ids = ["".join(self._id_piece(p, roles, scope, node) for p in pieces) for pieces in effect.ids]
            entries.append(
                {"action": effect.action, "resource": effect.resource, "id": ids[0] if len(ids) == 1 else ids}
            )
        return entries[0] if len(entries) == 1 else entries

    def _id_piece(self, piece: object, roles: dict[int, str], scope: Scope, node: str) -> str:
        if piece is effects.NODE:
            return f"{node}:" if node else ""
        if isinstance(piece, Word):
            role = roles.get(piece.start)
            if piece.literal is None:
                return serialize(self._word(piece, role, scope))
            return serialize(self.text(piece.literal, scope, role if role and not role.startswith("opt:") else None))
        if isinstance(piece, effects.Value):
            return serialize(self.text(piece.text, scope))
        return jinja_text(str(piece))

    def _in_workdir(self, draft: Draft, scope: Scope, body: str) -> str:
        """A command after the page's ``cd DIR`` runs in DIR, as on the page: each step is its own shell."""
        folder = serialize(self.text(draft.workdir or "", scope))
        self.change(f"the page's 'cd {draft.workdir}' holds for the commands after it: their steps start with cd")
        lines = body.splitlines(keepends=True)
        head = len(list(itertools.takewhile(lambda line: line.startswith("# "), lines)))  # the review notes
        return "".join(lines[:head]) + f"cd {folder}\n" + "".join(lines[head:])

    def _loop(self, draft: Draft, scope: Scope, attrs: dict[str, Any]) -> None:
        var = draft.loop_var or "item"
        name = var.lower() if re.fullmatch(r"[a-z_][a-z0-9_]*", var.lower()) else "item"
        if name in _RESERVED and name != "item":
            name = f"{name}_item"
        scope.loop_var, scope.loop_as = var, name
        items = draft.loop_items or []
        hosts = all(
            i in self.nodes
            or i in self.hosts
            or i.split(".")[0] in self.nodes
            or re.fullmatch(r"[a-z][\w-]*\d+(\.[\w.-]+)?", i)
            for i in items
        )
        shown_items = " ".join(shown(i) for i in items)
        if re.search(r"node|host|server|pve", var, re.I) and hosts and items:
            attrs["foreach"] = "node_names"
            self.change(f"the loop over {shown_items} runs over the cluster's nodes (foreach: node_names)")
        elif items and all(i.isdigit() and ("vmid", i) in self.identities for i in items):
            names = [self.identities[("vmid", i)] for i in items]
            attrs["foreach"] = "[" + ", ".join(names) + "]"
            self.change(f"the loop over {shown_items} runs over the VMIDs' parameters ({', '.join(names)})")
        elif items and all(i.isdigit() for i in items):
            low, high = self._range("vms")
            values = [int(i) if low <= int(i) <= high else low + int(i) % (high - low + 1) for i in items]
            spec = {
                "type": "array",
                "description": f"VMIDs to loop over (vmid_ranges.vms: {low}-{high}); the source used {shown_items}.",
                "default": values,
            }
            attrs["foreach"] = self._param(
                ("loop", var + shown_items), f"{name}s", spec, f"the loop list {shown_items}"
            )
        else:
            placeholders = [i for i in items if i.startswith(OPEN) or i.startswith("$")]
            spec = {"type": "array", "description": f"Items to loop over; the source used {shown_items}."}
            if not placeholders:
                spec["default"] = [shown(i) for i in items]
            attrs["foreach"] = self._param(
                ("loop", var + shown_items), f"{name}s", spec, f"the loop list {shown_items}"
            )
        attrs["as"] = name
        self.change(f"'for {var} in ...; do ...; done' -> foreach with as: {name}")

    def _api_body(self, draft: Draft, scope: Scope, attrs: dict[str, Any]) -> str:
        scope.kind = "api"
        segments = draft.path.split("/")
        chunks: list[Chunk] = []
        for index, segment in enumerate(segments):
            before = segments[index - 1] if index else ""
            role = "node" if before == "nodes" else "vmid" if before in ("qemu", "lxc") else None
            if index:
                chunks.append("/")
            chunks += self.text(segment, scope, role)
        path = serialize(_merge(chunks))
        lines = [f"# {jinja_text(c)}" for c in draft.comment]
        lines.append(f"{draft.method} {path}")
        seen: dict[str, int] = {}
        params: list[tuple[str, str]] = []
        for key, value in draft.params:
            if not key:
                continue
            scope.hint = key
            if _CREDENTIAL.search(key) and not _TOKEN.fullmatch(value):
                value = MARK  # a credential is never copied, even one redact missed: a secret parameter
            if "$(" in value or "`" in value:
                spec = {"type": "string", "description": f"Value of {key}; the source computed it with a command."}
                name = self._param(
                    ("computed", key), key.replace("-", "_"), spec, f"{key}=<computed by a command on the page>"
                )
                rendered = f"{{{{ {name} }}}}"
            else:
                rendered = serialize(self.text(value, scope, _api_role(draft, key, value)))
            if key in seen:
                self.warnings.append(f"step {attrs['id']}: {key} is given twice on the page; the last value is kept")
                params[seen[key]] = (key, rendered)
                continue
            seen[key] = len(params)
            params.append((key, rendered))
        for key, rendered in params:
            shown_key = key if re.fullmatch(r"[A-Za-z][\w-]*", key) else json.dumps(key)
            lines.append(f"{shown_key}: {_yaml_scalar(rendered)}")
        scope.hint = None
        if draft.extract:
            self._extract(draft, scope, attrs)
        self._new_token(lines, attrs)
        return "\n".join(lines) + "\n"

    def _new_token(self, lines: list[str], attrs: dict[str, Any]) -> None:
        """A call that creates an API token stores the answer's secret in pass, shown nowhere."""
        match = next(filter(None, map(_NEW_TOKEN.match, lines)), None)
        if match is None:
            return
        path = f"proxmox/{{{{ config.cluster.name }}}}/tokens/{match['user']}/{match['token']}"
        attrs["to_pass"] = {"path": path, "lines": ["full-tokenid", "value"], "secret": ["value"]}
        here = path.replace("{{ config.cluster.name }}", str(self.config["cluster"]["name"]))
        self.change(
            f"step {attrs['id']}: PVE answers with the new token's secret once; to_pass stores it in the pass "
            f"entry {here} (line 1 the token id, line 2 the secret) and masks it in every output"
        )

    def _extract(self, draft: Draft, scope: Scope, attrs: dict[str, Any]) -> None:
        """The page's jq filter as the step's extract: shell variables and placeholders become jq
        variables of the runbook's parameters (extract receives them as $name)."""
        word = draft.extract
        assert word is not None
        inner = replace(scope, kind="attr", problems=[])
        pieces: list[str] = []
        for part in word.parts:
            if part.kind == "lit":
                pieces.append(self._jq_placeholders(part.text, inner))
            elif part.kind == "var":
                value = self.variable(part.text, inner, part.raw)
                if not (isinstance(value, Tmpl) and value.expr in self.params):
                    self.warnings.append(
                        f"step {attrs['id']}: the jq filter uses {part.raw}, which only the loop or "
                        "the shell knows; the extract was left out"
                    )
                    return
                pieces.append(f"${value.expr}")
            else:
                self.warnings.append(
                    f"step {attrs['id']}: the jq filter computes part of itself with {part.raw}; "
                    "the extract was left out"
                )
                return
        expression = "".join(pieces)
        if draft.extract_wraps_data:
            if not re.search(r"(?<![\w\])?\"])\.data\b", expression):
                self.warnings.append(
                    f"step {attrs['id']}: the jq filter does not read .data; the step's result is "
                    "what PVE returns inside data, so check the extract"
                )
            expression = re.sub(r"(?<![\w\])?\"])\.data(?=\.)", "", expression)
            expression = re.sub(r"(?<![\w\])?\"])\.data(?!\w)", ".", expression)
            expression = re.sub(r"^\s*\.\s*\|\s*", "", expression) or "."
            self.change(
                f"step {attrs['id']}: '| jq' became extract; .data was dropped from the filter, because the "
                "api step's result is already PVE's data"
            )
        for arg, value_word in draft.extract_args:
            resolved = self.text(value_word.text, inner)
            if len(resolved) == 1 and isinstance(resolved[0], Tmpl) and resolved[0].expr in self.params:
                expression = re.sub(rf"\${re.escape(arg)}\b", f"${resolved[0].expr}", expression)
            elif all(type(c) is str for c in resolved):
                expression = re.sub(rf"\${re.escape(arg)}\b", json.dumps("".join(map(str, resolved))), expression)
            else:
                self.warnings.append(
                    f"step {attrs['id']}: jq --arg {arg} needs a value known only in the loop or the "
                    "shell; the extract was left out"
                )
                return
        try:
            jq.compile(expression, args={name: None for name in self.params})
        except ValueError as exc:
            self.warnings.append(
                f"step {attrs['id']}: the jq filter was left out, it does not compile as an extract "
                f"({str(exc).splitlines()[0]})"
            )
            return
        attrs["extract"] = expression

    def _jq_placeholders(self, text: str, scope: Scope) -> str:
        """``<NAME>`` inside a jq filter -> the parameter as a jq variable (``\\($name)`` inside a string)."""
        out, in_string, index = [], False, 0
        while index < len(text):
            char = text[index]
            if char == "\\" and in_string:
                out.append(text[index : index + 2])
                index += 2
                continue
            if char == '"':
                in_string = not in_string
            if char == OPEN:
                end = text.find(CLOSE, index)
                if end > 0:
                    name = text[index + 1 : end]
                    value = self.placeholder(name, scope, f"<{name}>")
                    jq_value = (
                        f"${value.expr}"
                        if value.expr in self.params
                        else json.dumps(str(_lookup(self.config, value.expr)))
                    )
                    out.append(f"\\({jq_value})" if in_string else jq_value)
                    index = end + 1
                    continue
            out.append(char)
            index += 1
        return "".join(out)

    def _node_attr(self, draft: Draft, scope: Scope) -> str:
        host = draft.host
        if (
            draft.user
            and draft.user != str(self.config["credentials"]["ssh_user"])
            and OPEN not in draft.user
            and "$" not in draft.user
        ):
            self.change(f"ssh as '{draft.user}' -> as credentials.ssh_user ({self.config['credentials']['ssh_user']})")
        if host is None:
            spec = {
                "type": "string",
                "description": "The cluster node to act on.",
                "enum": list(self.nodes),
                "default": self.nodes[0],
            }
            name = self._param(("node", "node"), "node", spec, "commands that run on a Proxmox VE node")
            self.identities.setdefault(("node", "node"), name)
            return f"{{{{ {name} }}}}"
        first = re.split(r"\.(?![^{]*\})", host, maxsplit=1)[0] if _TOKEN.match(host) else host
        head = _TOKEN.match(first)
        if head and head.end() == len(first):
            chunks = self.text(first, replace(scope, kind="attr", defined=frozenset(), problems=[]))
        else:
            chunks = [self.node(shown(host))]
        if len(chunks) == 1 and isinstance(chunks[0], Tmpl):
            return f"{{{{ {chunks[0].expr} }}}}"
        raise Unadaptable(f"the ssh host {shown(host)} is not a node name or placeholder")

    def _shell_body(self, draft: Draft, scope: Scope) -> str:
        source, (start, end) = draft.source, draft.span
        roles, hints = {}, {}
        for command in draft.commands:
            roles.update(_shell_roles(command))
            hints.update(_secret_hints(command))
        words = sorted(
            {
                id(w): w for c in draft.commands for w in (*c.assigns, *c.words, *[t for _, t in c.redirects if t])
            }.values(),
            key=lambda w: w.start,
        )
        chunks: list[Chunk] = []
        cursor = start
        cuts = sorted(draft.cuts)
        for word in words:
            if word.start < cursor or word.end > end or any(a <= word.start < b for a, b in cuts):
                continue
            chunks += self._between(source, cursor, word.start, cuts, scope)
            scope.hint = hints.get(word.start)
            chunks += self._word(word, roles.get(word.start), scope)
            cursor = word.end
        chunks += self._between(source, cursor, end, cuts, scope)
        text = serialize(_merge(chunks)).rstrip()
        head = [f"# {jinja_text(c)}" for c in draft.comment]
        return "\n".join(head + [text]) + "\n"

    def _between(self, source: str, start: int, end: int, cuts: list[tuple[int, int]], scope: Scope) -> list[Chunk]:
        text = "".join(source[i] for i in range(start, end) if not any(a <= i < b for a, b in cuts))
        return self.requote(text, scope)

    def requote(self, text: str, scope: Scope) -> list[Chunk]:
        """Shell text the word parser did not split (between words, inside ``$(...)``) with each
        ``<NAME>`` placeholder replaced by its template, the surrounding quotes closed around it
        (``"https://<HOST>:8006"`` -> ``"https://"{{ ... }}":8006"``), so the quoted value joins the
        word as the shell reads it. Comments only get the page's ``<NAME>`` back."""
        if OPEN not in text:
            return [text]
        out: list[Chunk] = []
        stack = [""]  # quote state per $( level: "", "'" or '"'
        buffer: list[str] = []
        index = 0
        while index < len(text):
            char, quote = text[index], stack[-1]
            if quote == "" and char == "#" and (index == 0 or text[index - 1] in " \t\n;("):
                end = text.find("\n", index)
                end = len(text) if end < 0 else end
                buffer.append(shown(text[index:end]))
                index = end
                continue
            if char == "\\" and quote != "'":
                buffer.append(text[index : index + 2])
                index += 2
                continue
            if char == OPEN and (end := text.find(CLOSE, index)) > 0:
                name = text[index + 1 : end]
                chunk = self.placeholder(name, scope, f"<{name}>")
                if quote:
                    buffer.append(quote)
                out += ["".join(buffer), chunk]
                buffer = [quote] if quote else []
                index = end + 1
                continue
            if quote == "'" and char == "'":
                stack[-1] = ""
            elif quote == '"' and char == '"':
                stack[-1] = ""
            elif quote == "" and char in "'\"":
                stack[-1] = char
            elif quote != "'" and text.startswith("$(", index):
                stack.append("")
                buffer.append("$(")
                index += 2
                continue
            elif quote == "" and char == ")" and len(stack) > 1:
                stack.pop()
            buffer.append(char)
            index += 1
        out.append("".join(buffer))
        return _merge([c for c in out if c != ""])

    def _word(self, word: Word, role: str | None, scope: Scope) -> list[Chunk]:
        """One shell word, adapted; unchanged words keep the page's own spelling."""
        literal = word.literal
        role_chunks: list[Chunk] | None = None
        if role and literal is not None:
            if role.startswith("opt:"):
                option, sep, value = literal.partition("=")
                role_chunks = [option + sep, *self.role(value, role[4:])] if sep else None
            else:
                role_chunks = self.role(literal, role)
        pieces: list[tuple[Chunk, str]] = []  # (chunk, the quote it stood in)
        if role_chunks is not None and any(isinstance(c, Tmpl) for c in role_chunks):
            quote = word.parts[0].quote if word.parts else ""
            for chunk in role_chunks:
                if isinstance(chunk, Tmpl):
                    pieces.append((chunk, ""))
                else:
                    pieces += [(c, quote if isinstance(c, str) else "") for c in self.text(chunk, scope)]
        else:
            for part in word.parts:
                if part.kind == "lit":
                    pieces += [(c, part.quote if isinstance(c, str) else "") for c in self.text(part.text, scope)]
                elif part.kind == "var":
                    chunk = self.variable(part.text, scope, part.raw)
                    pieces.append((chunk, part.quote) if isinstance(chunk, str) else (chunk, ""))
                else:
                    inner = self.requote(part.raw, scope)
                    pieces += [
                        (c if isinstance(c, Tmpl) else _Raw(c), part.quote if not isinstance(c, Tmpl) else "")
                        for c in inner
                    ]
        if not any(isinstance(c, Tmpl) for c, _ in pieces):
            return [word.raw]
        out: list[Chunk] = []
        for chunk, quote in pieces:
            if isinstance(chunk, Tmpl):
                out.append(chunk)
            elif isinstance(chunk, _Raw):
                out.append(f'"{chunk}"' if quote == '"' else str(chunk))
            else:
                out.append(_sh_quote(chunk, quote))
        return out


def _value_matches(text: str) -> list[re.Match[str]]:
    """Derived VMIDs, addresses and blank addresses in ``text``, in order, none overlapping."""
    found = sorted(
        [*_DERIVED.finditer(text), *_ADDRESS.finditer(text), *_BLANK_ADDRESS.finditer(text), *_ELLIPSIS.finditer(text)],
        key=lambda m: (m.start(), m.re is not _DERIVED, m.re is _ADDRESS),
    )
    out: list[re.Match[str]] = []
    for match in found:
        if not out or match.start() >= out[-1].end():
            out.append(match)
    return out


def _split_mapped(text: str, mapped: dict[str, str]) -> list[Chunk]:
    """``text`` with each whole word the plan gives (``scope.mapped``) as its expression."""
    if not mapped:
        return [text]
    keys = "|".join(re.escape(k) for k in sorted(mapped, key=len, reverse=True))
    pieces = re.split(rf"(?<![\w.-])({keys})(?![\w-]|\.\w)", text)
    return [Tmpl(mapped[p]) if i % 2 else p for i, p in enumerate(pieces)]


def _draft_vmids(draft: Draft) -> set[int]:
    """The VMIDs a draft acts on, as the page wrote them (its API path and vmid, or qm/pct's VMID)."""
    found = {int(m) for m in re.findall(r"/(?:qemu|lxc)/(\d+)(?:/|$)", draft.path)}
    found |= {int(v) for k, v in draft.params if k in ("vmid", "newid") and v.isdigit()}
    for command in draft.commands:
        for offset, role in _shell_roles(command).items():
            word = next((w for w in command.words if w.start == offset), None)
            if role in ("vmid", "newid") and word is not None and (word.literal or "").isdigit():
                found.add(int(word.literal or 0))
    if draft.loop_items and re.search(r"(?i)id", draft.loop_var or ""):
        found |= {int(i) for i in draft.loop_items if i.isdigit()}
    return found


def _hint(before: str) -> str | None:
    """The name a removed value had in the text just before it (``--password ``, ``password=``), if any."""
    match = re.search(r"([A-Za-z][\w-]*)\s*[=:]?\s*[\"']?$", before)
    return match[1] if match and _CREDENTIAL.search(match[1]) else None


def _secret_hints(command: Simple) -> dict[int, str]:
    """For each word holding a removed value, the option before it (``--password [redacted]``)."""
    hints = {}
    for previous, word in zip(command.words, command.words[1:], strict=False):
        if MARK in word.text and previous.text.startswith("-"):
            hints[word.start] = previous.text
    return hints


def _lookup(config: dict[str, Any], expr: str) -> Any:
    value: Any = config
    for key in expr.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


class Unadaptable(Exception):
    """A draft that cannot be written as its kind of step (the reason is the message)."""


class _Raw(str):
    """A shell expansion kept as the page wrote it."""


def _yaml_scalar(text: str) -> str:
    """A parameter value as YAML that reads back as the same text (integers stay integers)."""
    if re.fullmatch(r"-?[0-9]+", text) or (
        re.fullmatch(r"[A-Za-z][\w.-]*", text)
        and text.lower() not in ("true", "false", "yes", "no", "on", "off", "null", "y", "n")
    ):
        return text
    return json.dumps(text)


def _sh_quote(text: str, quote: str) -> str:
    if not text:
        return ""
    if re.fullmatch(r"[\w@%+=:,./-]+", text):
        return text
    if quote == '"':
        return '"' + re.sub(r'(["\\$`])', r"\\\1", text) + '"'
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _merge(chunks: list[Chunk]) -> list[Chunk]:
    out: list[Chunk] = []
    for chunk in chunks:
        if type(chunk) is str and out and type(out[-1]) is str:
            out[-1] = out[-1] + chunk
        elif chunk != "":
            out.append(chunk)
    return out


def _param_name(name: str) -> str:
    name = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "value"
    if name[0].isdigit():
        name = f"p_{name}"
    if name in _RESERVED:
        name = f"{name}_value"
    return name


def _api_role(draft: Draft, key: str, value: str) -> str | None:
    path = draft.path
    if key in ("vmid",) and value.isdigit():
        return "vmid"
    if key == "newid":
        return "newid"
    if key in ("target", "node", "target-node"):
        return "target_node" if key != "node" else "node"
    if key in ("storage", "targetstorage", "target-storage") and re.search(
        r"/(clone|qemu|lxc|move_disk|move-disk|"
        r"move_volume|migrate)$",
        path,
    ):
        return "storage"
    if _DISK_KEY.match(key):
        return "disk"
    if re.fullmatch(r"net\d+", key):
        return "net"
    if key in ("bios", "scsihw", "machine", "cpu"):
        return key
    return None


_OPTION_ROLES = {
    "--storage": "storage",
    "--bios": "bios",
    "--cpu": "cpu",
    "--scsihw": "scsihw",
    "--machine": "machine",
    "--target": "target_node",
    "--node": "node",
    "--rootfs": "disk",
}


def _shell_roles(command: Simple) -> dict[int, str]:
    """Which words of a node command carry a convention (keyed by the word's offset)."""
    words = command.words
    literal = [w.literal or "" for w in words]
    roles: dict[int, str] = {}
    if not literal or literal[0] not in ("qm", "pct", "vzdump", "qmrestore"):
        return roles
    tool = literal[0]
    if tool in ("qm", "pct") and len(words) > 2 and literal[1] not in _QM_NO_VMID:
        roles[words[2].start] = "vmid"
        if literal[1] == "clone" and len(words) > 3:
            roles[words[3].start] = "newid"
        if literal[1] == "importdisk" and len(words) > 4:
            roles[words[4].start] = "storage"
        if literal[1] == "migrate" and len(words) > 3:
            roles[words[3].start] = "target_node"
    if tool in ("qm",) and literal[1:3] == ["disk", "import"] and len(words) > 5:
        roles[words[3].start] = "vmid"
        roles[words[5].start] = "storage"
        roles.pop(words[2].start, None)
    if tool == "vzdump" and len(words) > 1:
        roles[words[1].start] = "vmid"
    if tool == "qmrestore" and len(words) > 2:
        roles[words[2].start] = "vmid"
    for index, text in enumerate(literal):
        if tool == "vzdump" and text.startswith("--storage"):
            continue  # backup storage, not the VM disk storage
        option, sep, _ = text.partition("=")
        role = _OPTION_ROLES.get(option) or (
            "disk"
            if re.fullmatch(r"--(scsi|virtio|sata|ide|efidisk|tpmstate|mp)\d+", option)
            else "net"
            if re.fullmatch(r"--net\d+", option)
            else None
        )
        if role is None:
            continue
        if sep:
            roles[words[index].start] = f"opt:{role}"
        elif index + 1 < len(words):
            roles[words[index + 1].start] = role
    return roles
