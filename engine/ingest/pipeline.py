"""``runbook ingest`` as one library call: a source in, a checked runbook proposal out.

The proposal is checked exactly as ``runbook validate`` checks a runbook in the home (parsing,
template syntax, every step rendered against its kind's schema and the Proxmox API schema). A step
the check refuses (a call PVE's schema does not know, a value it rejects) is not dropped silently:
it is left in the runbook as prose, quoted, with the reason, and listed as a warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

from .. import __version__
from ..errors import RunbookError
from ..load.config import ClusterConfig
from ..load.home import Home
from ..load.problems import InputError, Problem
from ..load.profiles import load_profiles
from ..runbook.parser import parse_runbook
from ..runbook.render import syntax_problems
from ..runbook.validate import render_problems
from .adapt import Adapted, Adapter, Unadaptable
from .classify import Classifier, Draft
from .compose import Demoted, compose, demoted, frontmatter, step_fence
from .convert import html_to_markdown, text_to_markdown
from .fetch import Source
from .page import Code, Document, Prose, as_prose, split_document
from .redact import redact, scrub
from .sections import CHECKS, PROCEDURE, WHY_PROSE, PageKind, page_kind
from .talosplan import plan_talos

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
MAX_REFERENCE_STEPS = 3  # a reference page proposes at most this many read-only steps


class IngestError(RunbookError):
    """The source cannot become a runbook; the message says why."""


@dataclass
class Proposal:
    """A runbook ready to be shown and written, with every change and warning."""

    name: str
    path: Path
    text: str
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    steps: int = 0
    review_steps: list[str] = field(default_factory=list)


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise IngestError(f"--name {name!r}: a runbook name is lower-case words joined by '-', like vm-stop")


def propose(
    home: Home, config: ClusterConfig, source: Source, name: str | None = None, today: date | None = None
) -> Proposal:
    """The runbook ``source`` becomes in this home, or ``IngestError`` saying why it cannot."""
    if source.format == "html":
        title, markdown, notes = html_to_markdown(source.text)
    elif source.format == "text":
        title, markdown, notes = text_to_markdown(source.text)
    else:
        title, markdown, notes = None, source.text, []
    cleaned = redact(markdown)
    title = scrub(title) if title else None
    doc = split_document(cleaned.text, title)
    name = name or _name_from(doc.title, source.location)
    check_name(name)
    kind = page_kind(doc.listings)
    if not doc.code and kind.reference:
        raise IngestError(f"{source.location}: {kind.said()}, and none of its examples is a read to propose")
    if not doc.code:
        raise IngestError(
            f"{source.location}: no commands found (no shell code blocks: ```bash, <pre>, or lines "
            "starting with curl, pvesh, ssh, qm, talosctl, ...); nothing to make a runbook of"
        )
    changes: list[str] = list(notes)
    if cleaned.counts:
        changes.append(
            f"removed credentials from the page ({cleaned.summary()}); they are never copied: the "
            "engine fetches the API token itself when a step runs, and a value a step needs is a secret "
            "parameter, given at run time"
        )
    changes += doc.notes
    classifier = Classifier()
    planned, said = _plan(doc, classifier, kind)
    changes += said
    drafts = [d for item in planned if isinstance(item, tuple) for d in item[1] if d.kind != "prose"]
    if not drafts and kind.reference:
        raise IngestError(f"{source.location}: {kind.said()}, and none of its examples is a read to propose")
    if not drafts:
        kept = "".join(f"; {line}" for line in said)  # its commands may all sit in sections that do not run
        raise IngestError(f"{source.location}: its code blocks hold no command that can become a step{kept}")
    changes += [f"line {s.line}: {s.what}" for s in classifier.skipped]
    talos = plan_talos([item[1] for item in planned if isinstance(item, tuple)])
    changes += talos
    drafts = [d for item in planned if isinstance(item, tuple) for d in item[1]]
    adapter = Adapter(config.data, classifier)
    adapter.requires = ["profile"] if talos else []
    adapter.scan_templates(drafts)
    ids = _ids(planned)
    for draft in drafts:
        if draft.register_var:
            adapter.step_ids[draft.register_var] = ids[id(draft)]
    refused: dict[int, str] = {}
    for _attempt in range(len(drafts) + 1):
        text, steps, warnings, body_changes = _render(adapter, planned, ids, refused, source, name, doc.title, today)
        problems = _problems(home, config, text, name)
        if not problems:
            break
        failing = _failing(text, name, problems, steps)
        if failing is None:
            raise IngestError(
                "the runbook made from this page does not pass validation (a defect of ingest):\n"
                + "\n".join(str(p) for p in problems)
            )
        refused.update(failing)
    else:  # pragma: no cover - each round refuses at least one step
        raise IngestError("could not make a runbook that passes validation")
    review = [s.attrs["id"] for s in steps if s.attrs.get("review")]
    return Proposal(
        name,
        home.runbooks_dir / f"{name}.md",
        text,
        changes + adapter.changes + body_changes,
        warnings + adapter.warnings,
        len(steps),
        review,
    )


def _plan(
    doc: Document, classifier: Classifier, kind: PageKind
) -> tuple[list[Prose | tuple[Code, list[Draft]]], list[str]]:
    """Which blocks become steps (with their drafts) and which stay prose, with what was decided and why.

    Procedure blocks become steps; prerequisites and verification blocks too when all they do is
    read (a check); every other section stays prose, its code kept as a fence that cannot be a step.
    On a reference page only the first few read-only examples become steps.
    """
    planned: list[Prose | tuple[Code, list[Draft]]] = []
    said: list[str] = [kind.said()] if kind.reference else []
    told: set[int] = set()
    proposed = 0
    for block in doc.blocks:
        if isinstance(block, Prose):
            planned.append(block)
            continue
        section = block.section
        if kind.reference:  # the examples stay as the page shows them; its first reads are proposed after them
            reads = [d for d in classifier.block(block) if d.kind != "none" and only_reads(d)]
            reads = reads[: MAX_REFERENCE_STEPS - proposed]
            proposed += len(reads)
            planned += [p for p in (as_prose(block),) if p is not None] + ([(block, reads)] if reads else [])
            continue
        if block.kind == PROCEDURE and _introduced_as_example(planned, block):
            said.append(
                f"line {block.line}: the block after 'For example ...' kept as prose: it shows an instance of "
                "what the page does, not a step of its own"
            )
        elif block.kind == PROCEDURE:
            planned.append((block, _drafts(block, classifier, said)))
            continue
        elif block.kind in CHECKS:
            drafts = _drafts(block, classifier, said)
            if all(only_reads(d) for d in drafts):
                planned.append((block, drafts))
                continue
            said.append(
                f"line {block.line}: a command in section '{section.title if section else ''}' that changes "
                f"something kept as prose: a {block.kind} section runs only checks that read"
            )
        elif section is not None and id(section.named) not in told:
            named = section.named or section
            told.add(id(named))
            signal = f" ({named.signal})" if named.signal else ""
            said.append(f"section '{named.title}' (line {named.line}) kept as prose{signal}: {WHY_PROSE[section.kind]}")
        prose = as_prose(block)
        if prose is not None:
            planned.append(prose)
    if kind.reference:
        said.append(
            f"only its read-only examples became steps ({proposed}, at most {MAX_REFERENCE_STEPS}); its endpoint "
            "lists, parameters and changing examples stay prose"
        )
    return planned, said


_EXAMPLE_LEAD = re.compile(r"^(?:for example|for instance|e\.g\.|example:)", re.I)


def _introduced_as_example(planned: list[Prose | tuple[Code, list[Draft]]], block: Code) -> bool:
    """A fence right after a paragraph that opens with "For example" (and leads into it with a colon):
    an instance of the page's procedure (often its generic block again with values), not a step."""
    if block.found or not planned or not isinstance(planned[-1], Prose):
        return False
    paragraphs = [p.strip() for p in planned[-1].text.split("\n\n") if p.strip()]
    return bool(paragraphs) and bool(_EXAMPLE_LEAD.match(paragraphs[-1])) and paragraphs[-1].endswith(":")


def _drafts(block: Code, classifier: Classifier, said: list[str]) -> list[Draft]:
    if block.dropped_output:
        said.append(
            f"line {block.line}: {block.dropped_output} line(s) of example output after the prompts were left out"
        )
    return [d for d in classifier.block(block) if d.kind != "none"]


def only_reads(draft: Draft) -> bool:
    """A draft that changes nothing: an API GET, or a script the effects table reads as reads only
    (classify settled it: no ``changes`` and no ``review``), or an interactive command kept as prose."""
    if draft.kind == "api":
        return draft.method == "GET"
    if draft.kind == "prose":
        return True
    return bool(draft.commands) and not draft.effects and not draft.attrs.get("review")


def _render(
    adapter: Adapter,
    planned: list[Prose | tuple[Code, list[Draft]]],
    ids: dict[int, str],
    refused: dict[int, str],
    source: Source,
    name: str,
    title: str | None,
    today: date | None,
) -> tuple[str, list[Adapted], list[str], list[str]]:
    adapter.params.clear()
    adapter.identities.clear()
    adapter.changes.clear()
    adapter.warnings.clear()
    adapter.node_map.clear()
    parts: list[str] = []
    steps: list[Adapted] = []
    warnings: list[str] = []
    changes: list[str] = []
    for item in planned:
        if isinstance(item, Prose):
            parts.append(item.text)
            continue
        _, drafts = item
        for draft in drafts:
            if draft.kind == "prose":  # interactive: the page's command stays, quoted, with why
                parts.append(demoted(Demoted(draft.line, draft.warnings[0], draft.original)))
                changes.append(f"line {draft.line}: not made a step: {draft.warnings[0]}")
                continue
            step_id = ids[id(draft)]
            reason = refused.get(id(draft))
            if reason is None:
                try:
                    adapted = adapter.adapt(draft, step_id)
                except Unadaptable as exc:
                    reason = str(exc)
            if reason is not None:
                parts.append(demoted(Demoted(draft.line, reason, draft.original or draft.excerpt)))
                warnings.append(f"line {draft.line}: not made a step, left in the runbook as quoted prose: {reason}")
                continue
            if draft.warnings and draft.kind != "api":
                adapted.body = "".join(f"# review: {w}\n" for w in draft.warnings) + adapted.body
            parts.append(step_fence(adapted))
            steps.append(adapted)
            changes += [f"step {step_id}: {note}" for note in draft.notes]
            warnings += [f"step {step_id} (line {draft.line}): {w}" for w in draft.warnings]
            if adapted.attrs.get("review") and not draft.warnings:
                warnings.append(
                    f"step {step_id} (line {draft.line}): what '{draft.excerpt}' changes is unknown; "
                    "marked review: true (gated on every run) until you have read it"
                )
    origin = {
        "source": source.location,
        "fetched": (today or date.today()).isoformat(),
        "ingested_by": f"runbook {__version__} ingest",
    }
    description = _description(title, source.location)
    head = frontmatter(name, description, dict(adapter.params), origin, adapter.requires)
    return compose(head, parts), steps, warnings, changes


def _problems(home: Home, config: ClusterConfig, text: str, name: str) -> list[Problem]:
    file = f"runbooks/{name}.md"
    try:
        runbook = parse_runbook(text, file, expected_name=name, require_format=True)
    except InputError as exc:
        return list(exc.problems)
    syntax = [p for step in runbook.steps for p in syntax_problems(step, file)]
    if syntax:
        return syntax
    profiles = load_profiles(home, config)[0]
    return render_problems(runbook, config, profiles, home)


def _failing(text: str, name: str, problems: list[Problem], steps: list[Adapted]) -> dict[int, str] | None:
    """The drafts whose steps the problems are about (with the reason), or None if one is about no step."""
    try:
        runbook = parse_runbook(text, f"runbooks/{name}.md", expected_name=name, require_format=True)
    except InputError:
        return None
    starts = sorted((step.line, step.id) for step in runbook.steps)
    by_id = {s.attrs["id"]: s for s in steps}
    failing: dict[int, str] = {}
    for problem in problems:
        owner = None
        for line, step_id in starts:
            if problem.line is not None and line <= problem.line:
                owner = step_id
        if owner is None or owner not in by_id:
            return None
        message = problem.message.removeprefix("Proxmox API: ")
        failing.setdefault(id(by_id[owner].draft), f"the check every runbook passes refused it ({message})")
    return failing


def _ids(planned: list[Prose | tuple[Code, list[Draft]]]) -> dict[int, str]:
    """A stable, unique id for every draft: from its variable, comment, heading or command."""
    ids: dict[int, str] = {}
    used: set[str] = set()
    for item in planned:
        if isinstance(item, Prose):
            continue
        code, drafts = item
        for draft in drafts:
            if draft.kind == "prose":
                continue
            if draft.register_var:
                base = _slug(draft.register_var)
            elif draft.comment:
                base = _slug(draft.comment[0])
            elif len(drafts) == 1 and code.heading:
                base = _slug(code.heading)
            else:
                base = _slug(draft.hint or draft.kind)
            base = base or draft.kind
            step_id, number = base, 2
            while step_id in used:
                step_id, number = f"{base}_{number}", number + 1
            used.add(step_id)
            ids[id(draft)] = step_id
    return ids


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    slug = "_".join(slug.split("_")[:6])[:48].rstrip("_")
    if slug and slug[0].isdigit():
        slug = f"step_{slug}"
    return slug


def _name_from(title: str | None, location: str) -> str:
    base = title or Path(urlsplit(location).path).stem or urlsplit(location).hostname or "ingested"
    slug = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")
    slug = "-".join(slug.split("-")[:6]) or "ingested"
    return slug if slug[0].isalnum() else f"ingested-{slug}"


def _description(title: str | None, location: str) -> str:
    where = urlsplit(location).hostname or Path(location).name
    text = f"{title} (ingested from {where})" if title else f"Ingested from {where}"
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:157] + "..."


def write(proposal: Proposal, force: bool) -> Path:
    """Write the proposal to runbooks/NAME.md; never over an existing file without ``force``."""
    path = proposal.path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "w" if force else "x", encoding="utf-8") as handle:
            handle.write(proposal.text)
    except FileExistsError:
        raise IngestError(
            f"{path.name} already exists in {path.parent}; use --force to overwrite it, or --name "
            "to choose another name"
        ) from None
    return path
