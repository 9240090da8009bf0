"""What templates see: the cluster config, the profile and its plan, the parameters, step outputs.

Never a secret: the API token and other credentials are resolved by executors at the moment of
use and are not part of any context, so no template can print them into a command or a plan.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..load.config import ClusterConfig
from ..load.patterns import PatternTooSlow, short
from ..load.placement import Plan
from ..load.problems import InputError, Problem
from ..load.profiles import Profile
from .facts_view import ClusterView, Current, PlanView, ProfileView
from .model import Runbook
from .parser import parameter_value_errors

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_params(runbook: Runbook, given: Mapping[str, str]) -> dict[str, Any]:
    """Typed, checked parameter values from ``--param k=v`` strings plus the runbook's defaults.

    Every problem (unknown name, bad value, missing required parameter) is reported at once.
    """
    specs = {p.name: p for p in runbook.parameters}
    problems: list[Problem] = []
    values: dict[str, Any] = {}
    for name, raw in given.items():
        param = specs.get(name)
        if param is None:
            known = ", ".join(specs) or "none"
            problems.append(
                Problem("--param", None, name, f"{runbook.name} has no parameter '{name}' (parameters: {known})")
            )
            continue
        if param.secret:
            problems.append(
                Problem(
                    "--param",
                    None,
                    name,
                    f"'{name}' is a secret parameter, and a value on the command line stays in shell history and "
                    f"the process list: give it with --secret {name}=env:VAR or --secret {name}=pass:PATH "
                    "(or leave it out to be asked for it, without echo, on a terminal)",
                )
            )
            continue
        try:
            value = typed_value(param.type, raw, (param.spec.get("items") or {}).get("type"))
        except ValueError as exc:
            problems.append(Problem("--param", None, name, f"{exc} (given: {raw!r})"))
            continue
        try:
            errors = parameter_value_errors(param.spec, value)
        except PatternTooSlow as slow:  # the runbook's fault, not the value's: point at its frontmatter
            what = (
                f"the value {short(raw)} given with --param {name}"
                if slow.text == value
                else f"{short(slow.text)}, an item of the value given with --param {name}"
            )
            problems.append(slow.problem(runbook.file, param.line, name, param.spec, what))
            continue
        if errors:
            problems.extend(Problem("--param", None, name, message) for message in errors)
            continue
        values[name] = value
    for param in runbook.parameters:
        if param.name in values or param.name in given or param.secret:
            continue  # a secret parameter is resolved apart (engine.run.secretparams), never parsed from text
        if param.required:
            problems.append(
                Problem(
                    "--param",
                    None,
                    param.name,
                    f"required parameter missing: add --param {param.name}=VALUE ({param.description})",
                )
            )
        else:
            values[param.name] = param.default
    if problems:
        raise InputError(problems)
    return values


def typed_value(kind: str, raw: str, items: Any = None) -> Any:
    """A ``--param`` text (or a rendered call parameter) as a value of the parameter's type.

    A list written with commas (``1211,1212``) has its items typed by ``items`` (the spec's
    ``items.type``), so a list of VMIDs is a list of integers, as ``[1211, 1212]`` would be."""
    text = raw.strip()
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError("must be a whole number") from None
    if kind == "number":
        try:
            return float(text)
        except ValueError:
            raise ValueError("must be a number") from None
    if kind == "boolean":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("must be true or false")
    if kind == "array":
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"is not a JSON list ({exc.msg})") from None
            if not isinstance(value, list):
                raise ValueError("must be a list")
            return value
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if items in ("integer", "number", "boolean"):
            try:
                return [typed_value(items, part) for part in parts]
            except ValueError as exc:
                raise ValueError(f"each item {exc}") from None
        return parts
    return raw


def template_context(
    config: ClusterConfig,
    profile: Profile | None,
    plan: Plan | None,
    params: Mapping[str, Any],
    home_root: Path | None = None,
) -> dict[str, Any]:
    """The names every template of a run can use (``steps`` is added by the runner, and so are the
    live facts: ``cluster``, ``profile.members``, ``plan.template``; see ``with_facts``).

    ``talos_config_dir`` is the profile's ``talos.config_dir`` made absolute (``~`` expanded,
    relative to the home), because talosctl runs there and finds its TALOSCONFIG there.
    """
    data = config.data
    context: dict[str, Any] = {
        "config": data,
        "nodes": data["cluster"]["nodes"],
        "node_names": [n["name"] for n in data["cluster"]["nodes"]],
        "defaults": data["defaults"],
        "vmid_ranges": data["vmid_ranges"],
        "credentials": {k: v for k, v in data["credentials"].items() if k in ("ssh_user", "pass_path", "token_env")},
        "tags": data.get("tags", {}),
        "cloudinit": data.get("cloudinit", {}),
        "ansible": data.get("ansible", {}),
        "params": dict(params),
        **params,
    }
    if profile is not None:
        context["profile"] = profile.data
        context["talos"] = profile.data.get("talos")
        if context["talos"]:
            config_dir = Path(str(context["talos"]["config_dir"])).expanduser()
            if not config_dir.is_absolute() and home_root is not None:
                config_dir = home_root / config_dir
            context["talos_config_dir"] = str(config_dir)
        context["flux"] = profile.data.get("flux")
    if plan is not None:
        vms = [{**vm.as_dict(), "mac": vm.mac, "disk_bytes": vm.disk_bytes} for vm in plan.vms]
        context["plan"] = {
            "profile": plan.profile,
            "vms": vms,
            "controlplanes": [vm for vm in vms if vm["role"] == "controlplane"],
            "workers": [vm for vm in vms if vm["role"] == "worker"],
            "new_vms": [vm for vm in vms if not vm["existing"]],
            "vmids": [vm["vmid"] for vm in vms],
        }
    return context


def with_facts(context: Mapping[str, Any], current: Current) -> dict[str, Any]:
    """``context`` with the live facts: ``cluster`` (its VMs, nodes, storages, ``next_vmid``, name),
    ``profile.members`` and ``plan.template``, each answered from ``current()`` when a template reads
    it (None: not read, so Unknown). The profile's template and planned VMIDs are never handed out
    by ``cluster.next_vmid``."""
    out = dict(context)
    plan = context.get("plan")
    reserved = [int(v) for v in plan.get("vmids", ())] if isinstance(plan, Mapping) else []
    config = context.get("config") if isinstance(context.get("config"), Mapping) else {}
    out["cluster"] = ClusterView(current, (config or {}).get("vmid_ranges") or {}, reserved)
    profile = context.get("profile")
    if isinstance(profile, Mapping):
        out["profile"] = ProfileView(profile, current)
        if isinstance(plan, Mapping):
            out["plan"] = PlanView(plan, profile.get("template"), current)
    return out
