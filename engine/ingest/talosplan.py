"""A Talos procedure on the page, tied to the profile's plan: what the page's addresses are here.

A page that generates, applies or bootstraps Talos machine configs builds a cluster, and on this
cluster a profile describes it (``clusters/NAME.yaml``: its control planes, workers, addresses,
endpoint and config folder). So the runbook ``requires: [profile]`` and reads them from there:

- ``apply-config --file controlplane.yaml`` (or ``worker.yaml``) lines for the page's nodes become
  one step with ``foreach: plan.controlplanes`` (or ``plan.workers``), sent to ``vm.ip``;
- the page's addresses of those nodes elsewhere (``bootstrap -n``, ``config endpoint``,
  ``kubeconfig -n``) become the planned node at the same position (``plan.controlplanes[0].ip``);
- ``gen config NAME https://ADDRESS:6443`` takes the profile's name and API endpoint;
- the folder the page ``cd``s into is the profile's config folder (``talos_config_dir``), which
  is where talosctl steps run: relative paths such as ``controlplane.yaml`` keep working.

A page that creates its own VMs (``qm create``, a clone) and builds Talos on them is not tied: the
profile's plan describes the profile's VMs, and the page meant its own, so their addresses stay
the runbook's parameters.

Pure: it rewrites drafts in place and returns what it changed, for ingest's list of adaptations.
"""

from __future__ import annotations

import re

from .classify import Draft, shown

_BUILDS = ("gen config", "apply-config", "bootstrap")
#: A node of the page: an address, a placeholder (``<CP_IP>``, protected as ``⟨CP_IP⟩``) or ``$CP_IP``.
_NODE = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}|⟨\w+⟩|\$\{?\w+\}?)$")
_CREATES = re.compile(r"^/nodes/[^/]+/(?:qemu|lxc)(?:/[^/]+/clone)?/?$")
ENDPOINT = "profile.network.api_endpoint | default(talos.vip.ip)"
ONLY_TALOS = "profile.type == 'talos'"


def _sub(draft: Draft) -> str:
    return draft.hint.removeprefix("talosctl ").strip()


def builds_talos(drafts: list[Draft]) -> bool:
    """Whether the page generates, applies or bootstraps Talos machine configs."""
    return any(d.kind == "talosctl" and _sub(d).startswith(_BUILDS) for d in drafts)


def creates_vms(drafts: list[Draft]) -> bool:
    """Whether the page creates or clones VMs (``qm create``, ``pvesh create /nodes/N/qemu``, a clone)."""
    return any(d.kind == "api" and d.method == "POST" and _CREATES.search(d.path) for d in drafts)


def _option(draft: Draft, *names: str) -> str | None:
    words = [w.text for c in draft.commands for w in c.words]
    for index, word in enumerate(words):
        for name in names:
            if word == name and index + 1 < len(words):
                return words[index + 1]
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


def _group(draft: Draft) -> str | None:
    """``controlplanes`` or ``workers`` for an apply-config of that machine config, else None."""
    if _sub(draft) != "apply-config":
        return None
    file = (_option(draft, "--file", "-f") or "").rsplit("/", 1)[-1]
    return "controlplanes" if "controlplane" in file else "workers" if "worker" in file else None


def plan_talos(blocks: list[list[Draft]]) -> list[str]:
    """Tie a Talos procedure's drafts to the profile's plan (blocks' draft lists are edited in
    place: the page's per-node apply-config lines become one looped draft). Returns the changes."""
    drafts = [d for block in blocks for d in block]
    if not builds_talos(drafts):
        return []
    if creates_vms(drafts):
        return [
            "the page builds Talos on VMs it creates itself: its node addresses stay this runbook's parameters "
            "(a profile's plan describes its own VMs, which this page did not mean)"
        ]
    changes = ["the page builds a Talos cluster: the runbook requires: [profile] and reads the profile's plan"]
    planned: dict[str, list[str]] = {"controlplanes": [], "workers": []}
    for block in blocks:
        kept: list[Draft] = []
        for draft in block:
            group = _group(draft)
            node = _option(draft, "-n", "--nodes") if group else None
            if group is None or node is None or not _NODE.match(node):
                kept.append(draft)
                continue
            if node.startswith("$"):
                node = "$" + node.strip("${}")  # the name adapt looks $NAME and ${NAME} up by
            planned[group].append(node)
            looped = next((d for d in kept if d.loop_expr == f"plan.{group}"), None)
            if looped is None:
                draft.loop_expr, draft.loop_var = f"plan.{group}", "vm"
                kept.append(draft)
                looped = draft
            looped.mapped[node] = "vm.ip"
        block[:] = kept
    for group, addresses in planned.items():
        if addresses:
            changes.append(
                f"apply-config to {shown(', '.join(addresses))} -> one step for each of the profile's planned "
                f"{group[:-1].replace('controlplane', 'control plane')}s (foreach: plan.{group}, to vm.ip)"
            )
    folders = sorted({d.workdir for d in drafts if d.workdir})
    for folder in folders:
        changes.append(
            f"the page's working folder {folder} -> the profile's talos.config_dir, where talosctl steps run"
        )
    for draft in drafts:
        draft.mapped.update({folder: "talos_config_dir" for folder in folders})
        for group, addresses in planned.items():
            for index, address in enumerate(addresses):
                draft.mapped.setdefault(address, f"plan.{group}[{index}].ip")
        words = [w.text for c in draft.commands for w in c.words]
        if draft.kind == "talosctl" or draft.workdir or any(k in w for k in draft.mapped for w in words):
            draft.attrs.setdefault("when", ONLY_TALOS)  # it reads the plan, which a Talos profile has
        if draft.kind == "talosctl" and _sub(draft) == "gen config":
            _gen_config(draft, changes)
    if planned["controlplanes"]:
        first = shown(planned["controlplanes"][0])
        changes.append(f"the page's first control plane {first} -> {{{{ plan.controlplanes[0].ip }}}} elsewhere")
    return changes


def _gen_config(draft: Draft, changes: list[str]) -> None:
    """``gen config NAME https://ADDRESS:PORT``: the profile's name and API endpoint."""
    words = [w.literal or "" for c in draft.commands for w in c.words]
    positional = [w for w in words[3:] if not w.startswith("-")][:2]
    if positional:
        draft.mapped[positional[0]] = "profile.name"
        changes.append(f"talosctl gen config's cluster name '{positional[0]}' -> {{{{ profile.name }}}}")
    if len(positional) > 1:
        match = re.match(r"^https?://([^/:]+)", positional[1])
        if match:
            draft.mapped[match[1]] = ENDPOINT
            changes.append(
                f"talosctl gen config's endpoint {match[1]} -> the profile's network.api_endpoint (its VIP otherwise)"
            )
