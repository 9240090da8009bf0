"""Everything a run needs, loaded and checked before the first step: the inputs of one invocation.

``prepare`` reads the home's config, the runbook, the profile (when the runbook requires one) and
the parameters, computes the plan, and builds the template context, reporting every problem with
its file and line before anything touches a cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..load import schemas
from ..load.config import ClusterConfig, load_config
from ..load.facts import Facts
from ..load.home import Home
from ..load.placement import Plan, PlanError
from ..load.problems import InputError, Problem, no_such
from ..load.profiles import Profile, load_profile
from ..runbook.calls import expand, gather, is_call
from ..runbook.context import parse_params, template_context
from ..runbook.model import Runbook
from ..runbook.parser import parse_runbook_file
from .secretparams import SecretParams


@dataclass(frozen=True)
class Session:
    """The checked inputs of one run; ``facts`` is what was read from the cluster (None: not read)."""

    home: Home
    config: ClusterConfig
    runbook: Runbook
    runbook_path: Path
    profile: Profile | None
    params: dict[str, Any]
    plan: Plan | None
    context: dict[str, Any]
    facts: Facts | None = None
    #: The secret parameters, resolved once per command (templates see ``*MASKED*`` placeholders).
    secrets: SecretParams = field(default_factory=SecretParams)
    #: The files of the runbooks its calls run, by name (``engine.runbook.calls``).
    called_paths: Mapping[str, Path] = field(default_factory=dict)

    def with_secrets(self, secrets: SecretParams) -> Session:
        """This session with ``secrets`` resolved: their placeholders join the template context."""
        return dataclasses.replace(self, secrets=secrets, context={**self.context, **secrets.placeholders()})

    def hashes(self) -> dict[str, str]:
        """SHA-256 of the runbook, profile and config files, and of each runbook its calls run
        (``called:NAME``): a review and a resume must match them."""
        files = {"runbook": self.runbook_path, "config": self.home.config_path}
        if self.profile is not None:
            files["profile"] = self.home.clusters_dir / f"{self.profile.name}.yaml"
        files.update({f"{CALLED}{name}": path for name, path in self.called_paths.items()})
        return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}

    def called_hashes(self) -> dict[str, str]:
        """The hashes of the called runbooks alone, by name."""
        return {k.removeprefix(CALLED): v for k, v in self.hashes().items() if k.startswith(CALLED)}


#: The prefix of a called runbook's key among a session's hashes.
CALLED = "called:"


def called_changed(then: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """The called runbooks whose content differs between a run's record and now (one called, or no
    longer called, counts as changed), as the operator reads them."""
    return [f"the called runbook {name}" for name in sorted(set(then) | set(now)) if then.get(name) != now.get(name)]


def with_calls(home: Home, runbook: Runbook) -> tuple[Runbook, dict[str, Path]]:
    """``runbook`` with its calls expanded (``engine.runbook.calls``), and the file of each runbook they
    run; the callees are read from the home's runbooks/ here, at the edge."""
    if not any(is_call(step) for step in runbook.steps):
        return runbook, {}
    paths: dict[str, Path] = {}

    def parse(name: str) -> Runbook | None:
        path = home.runbooks_dir / f"{name}.md"
        if not path.is_file():
            return None
        paths[name] = path
        return parse_runbook_file(path, home.shown(path))

    library = gather(runbook, parse)
    known = [p.stem for p in home.runbook_paths() if not p.stem.startswith("_")]
    expanded = expand(runbook, library, known)
    return expanded, {callee.name: paths[callee.name] for callee in expanded.called}


def runbook_path(home: Home, name: str) -> Path:
    """A runbook by name (``cluster-create``) or path (``runbooks/cluster-create.md``)."""
    as_path = Path(name)
    if as_path.suffix == ".md" and as_path.is_file():
        return as_path.resolve()
    path = home.runbooks_dir / f"{name}.md"
    if not path.is_file():
        known = [p.stem for p in home.runbook_paths() if not p.stem.startswith("_")]
        raise InputError(Problem(home.shown(path), None, None, no_such("runbook", name, known, "runbook list")))
    return path


def _section_fields(section: str) -> list[str]:
    """The fields of an optional config section, for the message saying it is missing."""
    properties = schemas.validator("cluster-config.schema.json").schema["properties"][section]
    return list(properties.get("required") or properties.get("properties") or [])


def prepare(
    home: Home,
    name: str,
    profile_name: str | None,
    given: Mapping[str, str],
    facts: Facts | None = None,
    *,
    placed: Mapping[str, str] | None = None,
) -> Session:
    """Load and check every input of a run; raises ``InputError`` with every problem found.

    ``facts`` (the cluster as read before planning) keep the VMIDs in use from being handed out,
    let a profile's existing VMs keep theirs and keep new VMs off offline nodes; without them the
    plan assumes an empty, healthy cluster. ``placed``: where a resumed run already put its VMs.
    """
    config = load_config(home)
    path = runbook_path(home, name)
    runbook, called = with_calls(home, parse_runbook_file(path, home.shown(path)))
    profile = None
    if runbook.needs_profile and profile_name is None:
        raise InputError(
            Problem(
                runbook.file,
                None,
                "requires",
                f"{runbook.name} acts on a cluster profile: add --profile NAME "
                f"(profiles: {', '.join(p.stem for p in home.profile_paths()) or 'none'})",
            )
        )
    missing = [section for section in runbook.requires if section != "profile" and section not in config.data]
    if missing:
        raise InputError(
            Problem(
                runbook.file,
                None,
                "requires",
                f"{runbook.name} needs the {' and '.join(missing)} section{'s' if len(missing) > 1 else ''} of "
                f"{home.shown(home.config_path)}, which has none: add "
                + "; ".join(f"{section}: ({schemas.field_list(_section_fields(section))})" for section in missing)
                + " (see docs/profiles.md)",
            )
        )
    if profile_name is not None:
        profile = load_profile(home, profile_name, config)
    params = parse_params(runbook, given)
    plan = None
    if profile is not None:
        try:
            plan = profile.plan(
                config,
                facts.vms if facts is not None else (),
                offline=facts.offline_nodes() if facts is not None else (),
                placed=placed,
            )
        except PlanError as exc:
            raise InputError(profile.doc.problem(exc.field, exc.message)) from None
    context = template_context(config, profile, plan, params, home.root)
    return Session(home, config, runbook, path, profile, params, plan, context, facts, called_paths=called)
