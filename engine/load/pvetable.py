"""The one table of Proxmox VE API calls to resource changes (``engine/data/pve-changes.yaml``).

A review says what a call does to which resource from data, not from code per runbook: this
module loads the table, matches a method and a path to its rule, and says what a live dry-run
must read first to show the values before (the guest's config, its status, its snapshots). It
reads nothing itself; ``engine.executors.preview`` turns a matched rule and the facts into changes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import yaml

from ..resources import data

TABLE_FILE = "pve-changes.yaml"
#: What ``{guest}`` in a rule's path stands for, and the resource it names.
GUESTS = {"qemu": "vm", "lxc": "container"}
_VAR = re.compile(r"\{([A-Za-z_-]+)(\?)?\}")  # {name}; {name?} is left out when the call has no such value


@dataclass(frozen=True)
class Variant:
    """The same call doing something else for some values (``PUT /access/acl`` with ``delete: 1``)."""

    param: str | None = None
    equals: Any = None
    path_contains: str | None = None
    action: str | None = None
    resource: str | None = None
    detail: str | None = None

    def matches(self, path: str, params: Mapping[str, Any]) -> bool:
        if self.path_contains is not None and self.path_contains not in unquote(path):
            return False
        if self.param is not None:
            if self.param not in params:
                return False
            if self.equals is not None and str(params[self.param]) != str(self.equals):
                return False
        return True


@dataclass(frozen=True)
class Rule:
    """One row of the table, for one concrete path (``{guest}`` already expanded)."""

    template: str
    methods: frozenset[str]
    action: str
    resource: str = ""
    id: str = ""
    fields: tuple[str, ...] | None = ()  # None: every parameter but the ignored ones
    ignore: frozenset[str] = frozenset()
    before: str | None = None
    reads: tuple[str, ...] = ()
    pending: str | None = None
    status: str | None = None  # the guest's status after the call
    moves_to: str | None = None  # the node the guest is on after the call (a template over the values)
    lost: tuple[str, ...] = ()
    variants: tuple[Variant, ...] = ()
    guest: str | None = None  # qemu | lxc, when the path names a guest

    @property
    def pattern(self) -> re.Pattern[str]:
        return _compiled(self.template)


@dataclass(frozen=True)
class Hotplug:
    """Which fields a running QEMU VM takes at once; the others stay pending until it restarts."""

    immediate: frozenset[str]
    default: tuple[str, ...]
    categories: tuple[tuple[str, str], ...]  # (category, regex of the fields it covers)

    def pending(self, field: str, hotplug_option: str | None) -> bool:
        """True when a running VM keeps ``field`` pending, given its ``hotplug`` option (None: PVE's default)."""
        if field in self.immediate:
            return False
        if hotplug_option in (None, "", "1"):
            enabled = self.default  # PVE's default, which "1" also stands for
        elif hotplug_option == "0":
            enabled = ()
        else:
            enabled = tuple(part.strip() for part in hotplug_option.split(","))
        return not any(name in enabled and re.match(regex, field) for name, regex in self.categories)


@dataclass(frozen=True)
class Match:
    rule: Rule
    path_params: dict[str, str]


@dataclass(frozen=True)
class Table:
    rules: tuple[Rule, ...]
    reads: tuple[tuple[str, str], ...]  # (name, path template with {guest})
    ignore: frozenset[str]
    hotplug: Hotplug

    def match(self, method: str, path: str) -> Match | None:
        """The rule for ``method path`` (the most literal path wins), or None when the table does not know it."""
        method = method.upper()
        for rule in self.rules:
            if method in rule.methods:
                found = rule.pattern.fullmatch(path)
                if found:
                    # A volid written %2F in its path segment is named as PVE names it (local:backup/...).
                    return Match(rule, {name: unquote(value) for name, value in found.groupdict().items()})
        return None

    def read_paths(self, found: Match) -> dict[str, str]:
        """The GETs a live dry-run makes before this call (name -> path), for its values before."""
        if not found.rule.guest or "vmid" not in found.path_params:
            return {}
        values = {**found.path_params, "guest": found.rule.guest}
        templates = dict(self.reads)
        return {name: fill(templates[name], values) for name in found.rule.reads if name in templates}


def fill(template: str, values: Mapping[str, Any], missing: str = "?") -> str:
    """``template`` with each ``{name}`` replaced by its value (``missing`` when there is none; nothing
    for an optional ``{name?}``, as in an ACL's id, which names users, groups or tokens)."""
    return _VAR.sub(lambda m: str(values[m[1]]) if m[1] in values else "" if m[2] else missing, template)


@lru_cache(maxsize=64)
def _compiled(template: str) -> re.Pattern[str]:
    parts = []
    for segment in template.strip("/").split("/"):
        var = _VAR.fullmatch(segment)
        parts.append(f"(?P<{var[1].replace('-', '_')}>[^/]+)" if var else re.escape(segment))
    return re.compile("/" + "/".join(parts))


@lru_cache(maxsize=1)
def table() -> Table:
    """The shipped table, loaded once."""
    return parse_table(yaml.safe_load((data() / TABLE_FILE).read_text(encoding="utf-8")))


def parse_table(doc: Mapping[str, Any]) -> Table:
    """The table in a loaded document; a rule without ``path``, ``methods`` or ``action`` is a bug of ours."""
    rules: list[Rule] = []
    for raw in doc["rules"]:
        guests = GUESTS if "{guest}" in raw["path"] else {None: None}
        for guest, resource in guests.items():
            template = raw["path"].replace("{guest}", guest) if guest else raw["path"]
            if guest is None and re.search(r"/(qemu|lxc)/\{vmid\}", template):
                guest = "qemu" if "/qemu/" in template else "lxc"
                resource = GUESTS[guest]
            kind = raw.get("resource", "")
            fields = raw.get("fields", ())
            rules.append(
                Rule(
                    template=template,
                    methods=frozenset(m.upper() for m in raw["methods"]),
                    action=raw["action"],
                    resource=resource if kind == "guest" else kind,
                    id=str(raw.get("id", "")),
                    fields=None if fields == "all" else tuple(fields),
                    ignore=frozenset(raw.get("ignore", ())),
                    before=raw.get("before"),
                    reads=tuple(raw.get("reads", ())),
                    pending=raw.get("pending"),
                    status=raw.get("status"),
                    moves_to=raw.get("moves_to"),
                    lost=tuple(raw.get("lost", ())),
                    variants=tuple(Variant(**v) for v in raw.get("variants", ())),
                    guest=guest,
                )
            )
    # The most literal path first: /qemu/{vmid}/status/start before /qemu/{vmid}/{anything}.
    rules.sort(key=lambda r: -sum(1 for s in r.template.split("/") if s and not _VAR.fullmatch(s)))
    hot = doc["hotplug"]
    return Table(
        rules=tuple(rules),
        reads=tuple((str(k), str(v)) for k, v in doc["reads"].items()),
        ignore=frozenset(doc.get("ignore", ())),
        hotplug=Hotplug(
            frozenset(hot["immediate"]),
            tuple(hot["default"]),
            tuple((str(k), str(v)) for k, v in hot["categories"].items()),
        ),
    )
