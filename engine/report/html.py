"""The plan, or a finished run, as one self-contained HTML page for a reviewer.

The page is built in two stages, each testable alone:

1. a *view model*: plain data (dicts, lists, strings, numbers) made from the same plan data the
   terminal and ``--json`` outputs use (``planview.plan_json``), or, for a finished run, from its
   journal put into the same shape. The runbook's prose is rendered here with markdown-it-py, and
   each step's block is placed where its fence stood (fences are matched to steps by line).
2. the page: ``templates/plan.html.j2`` rendered by a Jinja environment with autoescape on, since
   runbook text is untrusted. Only the rendered prose is inserted as HTML, and markdown-it renders
   it with raw HTML and images turned off, so a runbook can neither inject markup nor make the page
   load anything. The page has no script and no external asset: it opens from a mail attachment.

The view model is walked by the journal's check before rendering: a ``Secret`` anywhere in it is
an error, never a page.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markdown_it import MarkdownIt

from .. import __version__
from ..executors.base import Change, Lost
from ..executors.changeset import fold
from ..executors.preview import preview_action
from ..load.facts import Facts
from ..load.home import Home
from ..run.journal import LoadedRun, StepKey, _check_value, current_who
from ..run.runner import PlanEntry, display
from ..run.session import Session
from ..runbook.actions import ApiRequest, HttpRequest, ShellCommand, TalosctlCommand
from ..runbook.model import Runbook
from .changes import SECTIONS, headline, lost_text, section, shown_fields, symbol, value_text
from .plantext import _STATUS, plan_json

#: What each status means to a reader: in a plan, the terminal plan's own words; in a run, the journal's.
PLAN_LABELS = {**_STATUS, "not_reached": "not planned (planning stopped before it)"}
RUN_LABELS = {
    "succeeded": "succeeded",
    "skipped": "skipped",
    "failed": "FAILED",
    "in_doubt": "started, outcome unknown (the run was interrupted)",
    "stopped_at_gate": "stopped at its gate: not approved, nothing of it ran",
    "not_reached": "not reached",
}
#: Where a status sits on the page: the CSS class of its badge.
STATUS_TONE = {
    "would_run": "run",
    "succeeded": "ok",
    "skipped": "skip",
    "unknown": "unknown",
    "failed": "bad",
    "in_doubt": "bad",
    "stopped_at_gate": "gate",
    "not_reached": "skip",
}
_SKIP_REASONS = {"when_false": "when is false", "check_true": "check is true: already in place"}
_ACTIONS = {
    "ApiRequest": ApiRequest,
    "ShellCommand": ShellCommand,
    "TalosctlCommand": TalosctlCommand,
    "HttpRequest": HttpRequest,
}
_STEP_MARK = "\x00step:{}\x00"  # markdown-it turns NUL in its input into U+FFFD, so no runbook can forge it


# ---------------------------------------------------------------- view model: dry-run


def plan_view(
    session: Session,
    entries: list[PlanEntry],
    *,
    offline: bool,
    who: str | None = None,
    now: datetime | None = None,
    outcome: tuple[str, str] | None = None,
    changes: Sequence[Change] = (),
) -> dict[str, Any]:
    """The view model of a dry-run plan, from the very data ``plan --json`` prints.

    ``outcome`` is (status, message) when planning stopped early (a read-only step failed).
    ``changes`` is the plan's change set, shown grouped like ``terraform plan`` and on the cluster picture.
    """
    data = _checked(plan_json(session, entries, offline=offline, changes=changes))
    when = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
    hashes = [{"name": name, "sha256": digest, "note": ""} for name, digest in data["hashes"].items()]
    view = _common(data["runbook"], session.runbook, [entry.as_dict() for entry in entries], PLAN_LABELS)
    view.update(
        {
            "kind": "plan",
            "heading": f"Dry-run plan of {data['runbook']}",
            "file": data["file"],
            "profile": data["profile"],
            "cluster": data["cluster"],
            "parameters": _parameters(data["parameters"]),
            "offline": data["offline"],
            "who": who or current_who(),
            "when": when,
            "when_text": _time_text(when),
            "generated": _time_text(when),
            "hashes": hashes,
            "mode_note": (
                "nothing is changed and nothing is contacted (--offline)"
                if offline
                else "nothing is changed; read-only steps queried the cluster to make this plan"
            ),
            "summary": _summary_view(data["counts"], PLAN_LABELS),
            "changes": _changes_view(changes, entries),
            "change_summary": data["change_summary"],
            "nodes": _nodes(session.config.data, data["plan"], data["changes"]),
            "plan_note": "" if offline or data["plan"] is None else "planned against the VMs on the cluster now",
            "legend": ["new VM, created by this run", "already on the cluster, kept as it is", "will be destroyed"],
            "run": None,
            "outcome": {"status": outcome[0], "message": outcome[1]} if outcome else None,
        }
    )
    return _checked(view)


# ---------------------------------------------------------------- view model: finished run


def run_view(home: Home, loaded: LoadedRun, *, now: datetime | None = None) -> dict[str, Any]:
    """The view model of a recorded run: its inputs, and each step's outcome, duration and error.

    The runbook is read again from the home to place the steps in its prose; when the file changed
    since the run (its hash differs from the recorded one) the page says so. The cluster picture is
    the profile's plan computed now, offline.
    """
    from ..load.config import load_config
    from ..load.problems import InputError
    from ..load.profiles import load_profile
    from ..run.session import with_calls
    from ..runbook.parser import parse_runbook_file

    meta, state = loaded.meta, loaded.state
    notes = list(loaded.warnings)
    runbook, runbook_now = None, None
    path = _runbook_file(home, meta.runbook_file, meta.runbook)
    if path is None:
        notes.append(f"the runbook file {meta.runbook_file} is gone, so the steps are listed without its prose")
    else:
        runbook_now = _sha256(path)
        try:
            runbook, _ = with_calls(home, parse_runbook_file(path, home.shown(path)))
        except InputError as exc:
            notes.append(
                f"the runbook {home.shown(path)} no longer parses ({len(exc.problems)} problem(s)), so the "
                "steps are listed without its prose"
            )
        if runbook_now != meta.runbook_sha256:
            notes.append(
                f"the runbook {home.shown(path)} changed since this run started: the prose and the places "
                "of the steps below are from the file as it is now, not the one that ran"
            )
    config, cluster, plan, profile_now = None, None, None, None
    try:
        config = load_config(home)
        cluster = config.data["cluster"]["name"]
    except InputError:
        notes.append("the cluster config cannot be read now, so the cluster is not shown")
    if config is not None and meta.profile:
        try:
            profile = load_profile(home, meta.profile, config)
            profile_now = _sha256(home.clusters_dir / f"{meta.profile}.yaml")
            plan = profile.plan(config).as_dict()
        except Exception as exc:  # a profile that no longer loads or plans: the run record still shows
            notes.append(f"the profile {meta.profile} cannot be planned now ({exc}), so its VMs are not shown")
    config_now = _sha256(home.config_path) if home.config_path.is_file() else None
    hashes = [
        _hash_row("runbook", meta.runbook_sha256, runbook_now),
        _hash_row("config", meta.cluster_config_sha256, config_now),
    ]
    if meta.profile:
        hashes.insert(1, _hash_row("profile", meta.profile_sha256, profile_now))

    steps = run_steps(loaded, runbook)
    view = _common(meta.runbook, runbook, steps, RUN_LABELS)
    failed = [s for s in steps if s["status"] == "failed"]
    resumed = [
        {"who": r.get("who", "?"), "when": _time_text(r.get("ts", "?"))}
        for r in loaded.records
        if r["type"] == "run_resumed"
    ]
    view.update(
        {
            "kind": "run",
            "heading": f"Run {meta.run_id}",
            "file": meta.runbook_file,
            "profile": meta.profile,
            "cluster": cluster,
            "parameters": _parameters(meta.parameters or {}),
            "offline": False,
            "who": meta.who,
            "when": meta.started_at,
            "when_text": _time_text(meta.started_at),
            "hashes": hashes,
            "generated": _time_text((now or datetime.now(UTC)).isoformat(timespec="seconds")),
            "mode_note": f"mode {meta.mode}, engine {meta.engine_version}",
            "summary": _summary_view(_run_summary(steps), RUN_LABELS),
            "nodes": _nodes(config.data, plan, _run_changes(steps)) if config is not None else None,
            "plan_note": "computed from the profile as it is now, without the cluster's state" if plan else "",
            "legend": ["a VM of the profile's plan", "a VM already on the cluster", "destroyed"],
            "changes": None,
            "change_summary": None,
            "run": {
                "id": meta.run_id,
                "status": state.status,
                "status_label": _run_status(state.status),
                "finished": _time_text(state.finished) if state.finished else None,
                "resumed": resumed,
                "gate": str(state.gate) if state.gate else None,
                "failed": [{"anchor": _anchor(s["step_id"]), "which": _which(s), "error": s["error"]} for s in failed],
            },
            "outcome": None,
        }
    )
    view["notes"] = notes + view["notes"]
    return _checked(view)


def run_steps(loaded: LoadedRun, runbook: Runbook | None) -> list[dict[str, Any]]:
    """Each step of a run as a plan entry dict (``PlanEntry.as_dict`` shape), in runbook order.

    Steps the run never reached are listed as ``not_reached``, so the page shows the whole runbook.
    """
    state = loaded.state
    gates: dict[StepKey, dict[str, Any]] = {}
    for record in loaded.records:
        if record["type"] in ("gate_waiting", "gate_approved"):
            gate = gates.setdefault(StepKey(record["step"], record["item"]), {"approved_by": None})
            if record["type"] == "gate_approved":
                gate["approved_by"] = record.get("by")
    by_step: dict[str, list[StepKey]] = {}
    for key in [*state.steps, *gates]:
        if key not in by_step.setdefault(key.step, []):
            by_step[key.step].append(key)
    known = {s.id: s for s in runbook.steps} if runbook else {}
    order = list(known) + [step for step in by_step if step not in known]
    out = []
    for step_id in order:
        source = known.get(step_id)
        kind = source.kind if source else "?"
        title = source.title if source else None
        line = source.line if source else 0
        if step_id not in by_step:
            out.append(_entry_dict(step_id, kind, title, line, None, "not_reached"))
            continue
        for key in by_step[step_id]:
            step = state.steps.get(key)
            gate = gates.get(key)
            status = (
                "stopped_at_gate" if state.gate == key else _RUN_STATUS.get(step.status if step else "", "not_reached")
            )
            action = step.action if step else None
            entry = _entry_dict(step_id, kind, title, line, key.item, status)
            entry.update(
                {
                    "action": action,
                    "display": _display(action),
                    "reason": _SKIP_REASONS.get(step.reason or "", step.reason or "") if step else "",
                    "error": step.error if step else None,
                    "duration": step.duration if step else None,
                    "gated": gate is not None,
                    "gate_reasons": (
                        [f"approved by {gate['approved_by']}"]
                        if gate and gate["approved_by"]
                        else ["waiting for approval"]
                        if gate
                        else []
                    ),
                    "attempts": step.attempts if step else 0,
                }
            )
            out.append(entry)
    return out


_RUN_STATUS = {"finished": "succeeded", "skipped": "skipped", "failed": "failed", "in_doubt": "in_doubt"}


def _entry_dict(step_id: str, kind: str, title: str | None, line: int, item: str | None, status: str) -> dict[str, Any]:
    return PlanEntry(step_id, kind, title, line, item_key=item, status=status).as_dict()


def _run_changes(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the run's succeeded steps changed, told from their recorded actions as a review tells it
    (without values before): so the page shows the VMs a teardown destroyed as destroyed, not new."""
    made = []
    for step in steps:
        fields = dict(step.get("action") or {})
        cls = _ACTIONS.get(str(fields.pop("type", "")))
        if step["status"] != "succeeded" or cls is None:
            continue
        try:
            action = cls(**fields)
        except TypeError:  # a record from another engine version: nothing to tell
            continue
        made += preview_action(action, Facts(offline=True))
    return [change.as_dict() for change in fold(made)]


def _run_summary(steps: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {"steps": len(steps), "gated": sum(1 for s in steps if s["gated"])}
    for step in steps:
        counts[step["status"]] = counts.get(step["status"], 0) + 1
    return counts


def _run_status(status: str) -> str:
    return {
        "succeeded": "succeeded",
        "failed": "FAILED",
        "stopped_at_gate": "stopped at a gate",
        "unfinished": "unfinished: still running, or interrupted (resume it)",
    }.get(status, status)


def _display(action: dict[str, Any] | None) -> str:
    """The recorded action as the plan shows it (``runner.display``), or "" when it cannot be rebuilt."""
    if not action:
        return ""
    fields = dict(action)
    cls = _ACTIONS.get(str(fields.pop("type", "")))
    try:
        return display(cls(**fields)) if cls else ""
    except TypeError:  # a record from another engine version: show nothing rather than guess
        return ""


def _time_text(iso: str) -> str:
    """``2026-11-28 14:22:33 UTC`` for a reader (the ISO form stays in the page's ``datetime`` attributes)."""
    try:
        when = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return str(iso)
    if when.tzinfo is None:
        return f"{when:%Y-%m-%d %H:%M:%S}"
    if when.utcoffset():
        return f"{when:%Y-%m-%d %H:%M:%S} UTC{when:%z}"
    return f"{when:%Y-%m-%d %H:%M:%S} UTC"


def _runbook_file(home: Home, shown: str, name: str) -> Path | None:
    for candidate in (home.root / shown, home.runbooks_dir / f"{name}.md"):
        if candidate.is_file():
            return candidate
    return None


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _hash_row(name: str, then: str | None, now: str | None) -> dict[str, Any]:
    if now is None:
        note = "the file is gone now"
    elif then != now:
        note = f"CHANGED since the run: now {now}"
    else:
        note = "unchanged since the run"
    return {"name": name, "sha256": then or "-", "note": note}


# ---------------------------------------------------------------- parts shared by both views


def _common(
    name: str, runbook: Runbook | None, steps: list[dict[str, Any]], labels: Mapping[str, str]
) -> dict[str, Any]:
    """Title, description, prose with each step's block in place, and the step blocks themselves."""
    blocks = _step_blocks(runbook, steps, labels)
    title, prose, placed = _prose(runbook, blocks) if runbook else (None, [], set())
    unplaced = [block for block in blocks if block["id"] not in placed]
    return {
        "title": title or name,
        "name": name,
        "description": runbook.description if runbook else "",
        "prose": prose,
        "unplaced": unplaced,
        "index": [
            {
                "anchor": b["anchor"],
                "id": b["id"],
                "kind": b["kind"],
                "title": b["title"],
                "tone": b["tone"],
                "label": next(e["label"] for e in b["entries"] if e["tone"] == b["tone"]),
                "gated": b["gated"],
            }
            for b in blocks
        ],
        "notes": [],
        "version": __version__,
    }


def _step_blocks(
    runbook: Runbook | None, steps: list[dict[str, Any]], labels: Mapping[str, str]
) -> list[dict[str, Any]]:
    """One block per step (its entries: one, or one per loop item), in runbook order then plan order."""
    sources = {s.id: s for s in runbook.steps} if runbook else {}
    blocks: dict[str, dict[str, Any]] = {}
    for step_id, source in sources.items():
        blocks[step_id] = _block(step_id, source.kind, source.title, source.line, source.attrs, source.body)
        # A step that came through a call sits in the prose where the call's fence stands.
        blocks[step_id]["at"] = source.call.chain()[0].step.line if source.call is not None else source.line
    for entry in steps:
        block = blocks.get(entry["step_id"])
        if block is None:
            block = blocks[entry["step_id"]] = _block(
                entry["step_id"], entry["kind"], entry["title"], entry["line"], {}, ""
            )
        block["entries"].append(_entry_view(entry, labels))
    for block in blocks.values():
        block["gated"] = any(e["gated"] for e in block["entries"])
        if not block["entries"]:
            block["entries"].append(
                _entry_view(
                    PlanEntry(
                        block["id"], block["kind"], block["title"], block["line"], status="not_reached"
                    ).as_dict(),
                    labels,
                )
            )
        block["tone"] = min((e["tone"] for e in block["entries"]), key=_TONE_ORDER.index)
    return list(blocks.values())


#: Which entry colours a step's block: the one a reviewer must see first.
_TONE_ORDER = ["bad", "gate", "unknown", "run", "ok", "skip"]


def _block(
    step_id: str, kind: str, title: str | None, line: int, attrs: Mapping[str, Any], body: str
) -> dict[str, Any]:
    guards = [
        {"name": name, "value": _text(attrs[name])} for name in ("foreach", "when", "check", "until") if name in attrs
    ]
    flags = [name for name in ("destructive", "confirm", "readonly") if attrs.get(name)]
    return {
        "id": step_id,
        "anchor": _anchor(step_id),
        "kind": kind,
        "title": title,
        "line": line,
        "guards": guards,
        "flags": flags,
        "source": body,
        "entries": [],
        "gated": False,
    }


def _entry_view(entry: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    status = str(entry["status"])
    duration = entry.get("duration")
    return {
        "item": entry.get("item_key"),
        "status": status,
        "label": labels.get(status, status),
        "tone": STATUS_TONE.get(status, "unknown"),
        "reason": entry.get("reason") or "",
        "display": entry.get("display") or "",
        "gated": bool(entry.get("gated")),
        "gate_reasons": [str(r) for r in entry.get("gate_reasons") or []],
        "error": entry.get("error"),
        "duration": f"{duration:.1f} s" if isinstance(duration, (int, float)) else None,
    }


def _anchor(step_id: str) -> str:
    return "step-" + _slug(step_id)


def _slug(text: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in text)


def _which(entry: Mapping[str, Any]) -> str:
    return f"{entry['step_id']}[{entry['item_key']}]" if entry.get("item_key") else str(entry["step_id"])


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _parameters(params: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"name": str(name), "value": _text(value)} for name, value in params.items()]


def _summary_view(counts: Mapping[str, int], labels: Mapping[str, str]) -> dict[str, Any]:
    parts = [
        (counts.get(status, 0), labels.get(status, status), STATUS_TONE.get(status, "unknown"))
        for status in (
            "would_run",
            "succeeded",
            "unknown",
            "skipped",
            "failed",
            "in_doubt",
            "stopped_at_gate",
            "not_reached",
        )
    ]
    return {
        "steps": counts.get("steps", 0),
        "gated": counts.get("gated", 0),
        "parts": [{"count": n, "label": label, "tone": tone} for n, label, tone in parts if n],
    }


def _nodes(
    config: Mapping[str, Any], plan: Mapping[str, Any] | None, changes: Sequence[Mapping[str, Any]] = ()
) -> list[dict[str, Any]] | None:
    """The cluster's nodes side by side, each with the plan's VMs on it: new ones, existing ones kept,
    and existing ones the change set destroys (with what they lose), each apart."""
    if not plan:
        return None
    destroyed = {str(c["id"]): c for c in changes if c["resource"] == "vm" and c["action"] == "destroy"}
    nodes = []
    vms = list(plan.get("vms") or [])
    names = [str(n["name"]) for n in config["cluster"]["nodes"]]
    declared = {str(n["name"]): n for n in config["cluster"]["nodes"]}
    for name in names + sorted({str(vm["node"]) for vm in vms} - set(names)):
        mine = [_vm_view(vm, destroyed.get(str(vm["vmid"]))) for vm in vms if vm["node"] == name]
        node = declared.get(name, {})
        cores = sum(vm["cores"] for vm in mine if not vm["existing"] and not vm["destroyed"])
        memory = sum(vm["memory"] for vm in mine if not vm["existing"] and not vm["destroyed"])
        freed = [vm for vm in mine if vm["destroyed"]]
        adds = f"adds {cores} cores, {_mib(memory)}" if cores or memory else "adds nothing"
        if freed:
            adds += f"; frees {sum(vm['cores'] for vm in freed)} cores, {_mib(sum(vm['memory'] for vm in freed))}"
        nodes.append(
            {
                "name": name,
                "anchor": "node-" + _slug(name),
                "known": name in declared,
                "host": str(node.get("host", "")),
                "capacity": _capacity(node.get("cores"), node.get("memory")),
                "adds": adds,
                "new": [vm for vm in mine if not vm["existing"] and not vm["destroyed"]],
                "existing": [vm for vm in mine if vm["existing"] and not vm["destroyed"]],
                "destroyed": freed,
            }
        )
    return nodes


def _vm_view(vm: Mapping[str, Any], destroy: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {
        "destroyed": destroy is not None,
        "loses": lost_text(Lost(**lost) for lost in destroy["lost"]) if destroy else "",
        "name": str(vm["name"]),
        "vmid": int(vm["vmid"]),
        "role": str(vm["role"]),
        "cores": int(vm["cores"]),
        "memory": int(vm["memory"]),
        "memory_text": _mib(int(vm["memory"])),
        "disk": str(vm.get("disk", "")),
        "ip": vm.get("ip") or "dhcp",
        "existing": bool(vm.get("existing")),
    }


def _changes_view(changes: Sequence[Change], entries: Sequence[PlanEntry]) -> list[dict[str, Any]]:
    """The change set grouped as Terraform words it: will be created, changed, destroyed, acted on."""
    gated = {(e.step_id, e.item_key) for e in entries if e.gated}
    groups: dict[str, list[dict[str, Any]]] = {}
    for change in changes:
        groups.setdefault("possible" if change.when else section(change.action), []).append(
            {
                "symbol": symbol(change.action),
                "headline": headline(change),
                "action": change.action,
                "fields": [
                    {**f, "before_text": value_text(f["before"]), "after_text": value_text(f["after"])}
                    for f in shown_fields(change)
                ],
                "create": change.action == "create",
                "loses": lost_text(change.lost),
                "detail": change.detail,
                "when": change.when,
                "step": change.step,
                "item": change.item,
                "anchor": _anchor(change.step),
                "gated": (change.step, change.item) in gated,
            }
        )
    return [{"key": key, "title": SECTIONS[key], "changes": groups[key]} for key in SECTIONS if key in groups]


def _capacity(cores: Any, memory: Any) -> str:
    parts = [f"{cores} cores" if cores is not None else "", _mib(int(memory)) if memory is not None else ""]
    return ", ".join(p for p in parts if p) or "capacity not declared"


def _mib(memory: int) -> str:
    return f"{memory // 1024} GiB" if memory and memory % 1024 == 0 else f"{memory} MiB"


# ---------------------------------------------------------------- prose


def _markdown() -> MarkdownIt:
    """CommonMark as the parser reads it, but with raw HTML shown as text and no images (no network)."""
    return MarkdownIt("commonmark", {"html": False}).disable("image")


def _prose(runbook: Runbook, blocks: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]], set[str]]:
    """The runbook's title (its first level-1 heading), and its prose as segments: HTML text, or a step.

    A fence becomes a step block when its first line is a step's line, exactly as the parser
    numbered it, so every step sits where its fence stood, inside lists and quotes too. Headings
    move down one level: the page's own ``h1`` is the title.
    """
    md = _markdown()
    tokens = md.parse(runbook.markdown)
    title = None
    first = next((i for i, t in enumerate(tokens) if t.type != "hr"), None)
    if first is not None and tokens[first].type == "heading_open" and tokens[first].tag == "h1":
        inline = tokens[first + 1]
        title = (
            "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline")).strip()
            or inline.content.strip()
            or None
        )
        del tokens[first : first + 3]
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1]) + 1, 6)}"
    by_line: dict[int, list[int]] = {}
    for index, block in enumerate(blocks):
        by_line.setdefault(block.get("at", block["line"]), []).append(index)
    placed: set[str] = set()

    def fence(renderer: Any, toks: Any, idx: int, options: Any, env: Any) -> str:
        token = toks[idx]
        line = runbook.body_first_line + (token.map[0] if token.map else -1)
        here = [index for index in by_line.get(line, ()) if blocks[index]["id"] not in placed]
        if not here:
            return renderer.fence(toks, idx, options, env)
        placed.update(blocks[index]["id"] for index in here)
        return "".join(_STEP_MARK.format(index) for index in here)

    md.add_render_rule("fence", fence)
    html = md.renderer.render(tokens, md.options, {})
    segments: list[dict[str, Any]] = []
    for number, part in enumerate(html.split("\x00")):
        if number % 2 == 0:
            if part.strip():
                segments.append({"html": part, "step": None})
        else:
            segments.append({"html": None, "step": blocks[int(part.split(":", 1)[1])]})
    return title, segments, placed


# ---------------------------------------------------------------- the page


def _checked(view: dict[str, Any]) -> dict[str, Any]:
    """The journal's walk over everything that is written out: plain data only, and never a Secret."""
    _check_value(view, "html report")
    return view


def environment() -> Environment:
    """Jinja for the page: autoescape on for everything (runbook text is untrusted), strict about names."""
    return Environment(
        loader=PackageLoader("engine", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(view: Mapping[str, Any]) -> str:
    """The page for a view model (``plan_view`` or ``run_view``)."""
    return environment().get_template("plan.html.j2").render(v=view)


def write_html(path: Path, view: Mapping[str, Any]) -> Path:
    """Render and write the page; the file is replaced whole or not at all."""
    html = render_html(view)
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(html, encoding="utf-8")
    temp.replace(path)
    return path
