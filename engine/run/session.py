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

    def with_secrets(self, secrets: SecretParams) -> Session:
        """This session with ``secrets`` resolved: their placeholders join the template context."""
        return dataclasses.replace(self, secrets=secrets, context={**self.context, **secrets.placeholders()})

    def hashes(self) -> dict[str, str]:
        """SHA-256 of the runbook, profile and config files: a review and a resume must match them."""
        files = {"runbook": self.runbook_path, "config": self.home.config_path}
        if self.profile is not None:
            files["profile"] = self.home.clusters_dir / f"{self.profile.name}.yaml"
        return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}


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
    runbook = parse_runbook_file(path, home.shown(path))
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
    return Session(home, config, runbook, path, profile, params, plan, context, facts)
