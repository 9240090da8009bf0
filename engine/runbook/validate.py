"""``runbook validate``: check a whole home (or chosen files) and collect every problem in one pass."""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..load.config import ClusterConfig, config_problems, config_warnings
from ..load.home import Home
from ..load.problems import InputError, Problem
from ..load.profiles import Profile, load_profiles
from ..load.yamlsource import read_yaml_file
from ..run.runner import Runner
from .context import template_context
from .effects import effect_warnings
from .model import Runbook
from .parser import parse_runbook_file
from .render import syntax_problems
from .unknown import Unknown


@dataclass
class Report:
    """What was checked and what was wrong with it."""

    problems: list[Problem] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    #: What is not wrong but makes a review less than exact (a step of unknown effect); never fails validate.
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "problems": [p.as_dict() for p in self.problems],
            "warnings": [p.as_dict() for p in self.warnings],
        }


def validate_home(home: Home, paths: list[Path] | None = None) -> Report:
    """Check the config, every profile and every runbook; with ``paths``, report only on those files.

    The config and all profiles are always loaded, because a profile's rules depend on the config
    and on every other profile; only the problems of the files asked about are reported.
    """
    report = Report()
    config, config_report = _config(home)
    loaded, profiles_problems = load_profiles(home, config)
    wanted = _wanted(home, paths, report)
    if _selected(home.config_path, wanted):
        report.checked.append(home.shown(home.config_path))
        report.problems += config_report
        report.warnings += config_warnings(config, home) if config is not None else []
    elif config is None:
        report.problems.append(
            Problem(
                home.shown(home.config_path),
                None,
                None,
                "the cluster config has problems, so profiles cannot be fully checked; run 'runbook validate' on it",
            )
        )
    for path in home.profile_paths():
        if _selected(path, wanted):
            report.checked.append(home.shown(path))
            report.problems += [p for p in profiles_problems if p.file == home.shown(path)]
    profiles = loaded if config is not None else []
    paths_to_check = _runbook_paths(home, wanted)
    report.checked += [home.shown(path) for path in paths_to_check]
    for problems in _each_runbook(home, config, profiles, paths_to_check):
        report.problems += [p for p in problems if not isinstance(p, _Warning)]
        report.warnings += [p for p in problems if isinstance(p, _Warning)]
    # A called runbook's problems are found again through each caller: each is reported once.
    report.problems = sorted(set(report.problems), key=lambda p: (p.file, p.line or 0, p.field or "", p.message))
    report.warnings = sorted(set(report.warnings), key=lambda p: (p.file, p.line or 0, p.field or "", p.message))
    return report


#: Runbooks per worker process below which checking them in one process is quicker (a worker costs
#: a fork and a few milliseconds; a runbook about five).
RUNBOOKS_PER_WORKER = 24
_SHARED: tuple[Home, ClusterConfig | None, list[Profile]] | None = None  # what forked workers inherit


def _each_runbook(
    home: Home, config: ClusterConfig | None, profiles: list[Profile], paths: list[Path]
) -> list[list[Problem]]:
    """The problems of each runbook, in the order given. A home of many runbooks is checked by
    several processes (one per CPU, forked, so they inherit the loaded config, profiles and
    compiled schemas): each runbook is independent of the others, and compiling its templates is
    CPU work the GIL would serialise in threads."""
    workers = min(os.cpu_count() or 1, len(paths) // RUNBOOKS_PER_WORKER)
    # Forking is safe only without other threads (one might hold a lock the child then waits on).
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return [runbook_problems(home, config, profiles, path) for path in paths]
    global _SHARED
    _SHARED = (home, config, profiles)
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_shared_runbook_problems, paths, chunksize=max(1, len(paths) // (workers * 4))))
    finally:
        _SHARED = None


def _shared_runbook_problems(path: Path) -> list[Problem]:
    assert _SHARED is not None
    return runbook_problems(*_SHARED, path)


def runbook_problems(home: Home, config: ClusterConfig | None, profiles: list[Profile], path: Path) -> list[Problem]:
    """Everything wrong with one runbook: its parse, its templates' syntax, and (with a usable config)
    every step rendered against each profile."""
    from ..run.session import with_calls

    try:
        runbook, _ = with_calls(home, parse_runbook_file(path, home.shown(path)))
    except InputError as exc:
        return exc.problems
    warnings: list[Problem] = [_Warning(p.file, p.line, p.field, p.message) for p in effect_warnings(runbook)]
    syntax = [p for step in runbook.steps for p in syntax_problems(step, step.file or runbook.file)]
    if syntax or config is None:
        return syntax + warnings
    if any(section != "profile" and section not in config.data for section in runbook.requires):
        # It reads a config section this home does not use (``requires``): it cannot render here,
        # and is not wrong for it; running it says which section to add.
        return warnings
    return render_problems(runbook, config, profiles, home) + warnings


class _Warning(Problem):
    """A problem that is only a warning; travels with the problems of a runbook (also from a worker
    process, which pickles it) and is sorted out in ``validate_home``."""


def render_problems(runbook: Runbook, config: ClusterConfig, profiles: list[Profile], home: Home) -> list[Problem]:
    """Render every step whose values are known without a cluster and check it (its kind's schema and
    the Proxmox API schema), once per profile when the runbook needs one.

    Required parameters stand for values given at run time; a problem that appears with only some
    profiles names them.
    """
    targets: list[Profile | None] = list(profiles) if runbook.needs_profile else [None]
    found: dict[Problem, list[str]] = {}
    for profile in targets:
        params: dict[str, Any] = {
            p.name: (Unknown(f"--{'secret' if p.secret else 'param'} {p.name}") if p.required else p.default)
            for p in runbook.parameters
        }
        plan = profile.plan(config) if profile is not None else None
        context = template_context(config, profile, plan, params, home.root)
        collected: list[Problem] = []
        Runner(runbook, context, executor=None, dry_run=True, approver=_Never(), collect=collected).run()
        for problem in collected:
            found.setdefault(problem, []).append(profile.name if profile else "")
    out = []
    for problem, names in found.items():
        if runbook.needs_profile and len(names) < len(targets):
            problem = Problem(
                problem.file, problem.line, problem.field, f"{problem.message} (with profile {', '.join(names)})"
            )
        out.append(problem)
    return out


class _Never:
    who = None

    def approve(self, entry: object) -> bool:
        return False


def _config(home: Home) -> tuple[ClusterConfig | None, list[Problem]]:
    try:
        doc = read_yaml_file(home.config_path, home.shown(home.config_path))
    except InputError as exc:
        return None, exc.problems
    problems = config_problems(doc)
    return (None if problems else ClusterConfig(doc.data, doc)), problems


def _wanted(home: Home, paths: list[Path] | None, report: Report) -> set[Path] | None:
    """Resolved files to report on (a folder stands for the home's files inside it), or None for all."""
    if not paths:
        return None
    known = {p.resolve() for p in (home.config_path, *home.profile_paths(), *home.runbook_paths())}
    wanted: set[Path] = set()
    for given in paths:
        path = given.resolve()
        if path.is_dir():
            wanted |= {p for p in known if path == p or path in p.parents}
        elif not path.exists():
            report.problems.append(Problem(str(given), None, None, "no such file or folder"))
        elif path in known or path.suffix == ".md":
            wanted.add(path)
        else:
            report.problems.append(
                Problem(
                    str(given),
                    None,
                    None,
                    f"not a runbook (.md), a profile in {home.shown(home.clusters_dir)}/ "
                    f"or the {home.shown(home.config_path)} of the home {home.root}",
                )
            )
    return wanted


def _selected(path: Path, wanted: set[Path] | None) -> bool:
    return wanted is None or path.resolve() in wanted


def _runbook_paths(home: Home, wanted: set[Path] | None) -> list[Path]:
    """Runbooks of the home, plus any markdown file named explicitly (a runbook being written elsewhere)."""
    found = [p for p in home.runbook_paths() if _selected(p, wanted)]
    if wanted:
        inside = {p.resolve() for p in home.runbook_paths()}
        found += sorted(p for p in wanted if p.suffix == ".md" and p not in inside)
    return found
