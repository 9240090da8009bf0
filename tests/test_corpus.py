"""The corpus of broken inputs: every file under tests/corpus/ and the exact problems it must produce.

Three kinds of case, one test per file found (adding a file adds a test):

* ``corpus/runbooks/NAME.md``: parsed with ``parse_runbook_file(path, 'runbooks/NAME.md')``; the
  expected lines are ``InputError.problems`` in order.
* ``corpus/clusters/NAME.yaml``: added as ``clusters/NAME.yaml`` to a home built from the repository's
  cluster-config.yaml and clusters/ (talos-staging, dev-generic); the expected lines are what
  ``validate_home(home, [that file])`` reports.
* ``corpus/config/NAME.yaml``: placed as the home's ``cluster-config.yaml``; the expected lines are
  the problems ``validate_home(home)`` reports for cluster-config.yaml.

``NAME.expected`` beside each input holds one ``str(Problem)`` per line. After changing a message
on purpose, regenerate with ``RUNBOOK_UPDATE_CORPUS=1 pytest tests/test_corpus.py`` and read the
diff of the .expected files before committing: they are the operator-facing wording.
"""

from __future__ import annotations

import difflib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.load.home import Home
from engine.load.problems import InputError, Problem
from engine.runbook.parser import parse_runbook_file
from engine.runbook.validate import validate_home

CORPUS = Path(__file__).resolve().parent / "corpus"
UPDATE = os.environ.get("RUNBOOK_UPDATE_CORPUS") == "1"

KINDS = {"runbooks": ".md", "clusters": ".yaml", "config": ".yaml"}

# Cases whose problems may carry neither a line nor a field, each with the engine defect that causes
# it. Strict xfail: the test fails as soon as the engine is fixed, so the entry must then go. Empty:
# every corpus problem is located.
UNLOCATED: dict[str, str] = {}


def _inputs(kind: str) -> list[Path]:
    return sorted((CORPUS / kind).glob(f"*{KINDS[kind]}"))


def _cases() -> list[pytest.param]:
    return [pytest.param(kind, path, id=f"{kind}/{path.stem}") for kind in KINDS for path in _inputs(kind)]


def _expected_path(path: Path) -> Path:
    return path.with_suffix(".expected")


def _shown(kind: str, path: Path) -> str:
    return {"runbooks": f"runbooks/{path.name}", "clusters": f"clusters/{path.name}", "config": "cluster-config.yaml"}[
        kind
    ]


def _problems(kind: str, path: Path, make_home: Callable[..., Home]) -> list[Problem]:
    """The problems the engine reports for one corpus file, in the order it reports them."""
    if kind == "runbooks":
        try:
            parse_runbook_file(path, _shown(kind, path))
        except InputError as exc:
            return list(exc.problems)
        return []
    home = make_home(runbooks=False)
    if kind == "clusters":
        target = home.clusters_dir / path.name
        shutil.copyfile(path, target)
        return list(validate_home(home, [target]).problems)
    shutil.copyfile(path, home.config_path)
    return [p for p in validate_home(home).problems if p.file == "cluster-config.yaml"]


def _diff(expected: list[str], actual: list[str], expected_file: Path) -> str:
    rel = expected_file.relative_to(CORPUS.parent.parent)
    lines = difflib.unified_diff(
        expected, actual, fromfile=f"{rel} (expected)", tofile="engine output (actual)", lineterm=""
    )
    return "\n".join(lines) + (
        "\n\nIf the new wording is intended, run RUNBOOK_UPDATE_CORPUS=1 pytest "
        "tests/test_corpus.py and review the .expected diff."
    )


@pytest.mark.parametrize(("kind", "path"), _cases())
def test_corpus_case(kind: str, path: Path, make_home: Callable[..., Home]) -> None:
    """The file produces exactly its expected problem lines, in order, and never a traceback."""
    actual = [str(p) for p in _problems(kind, path, make_home)]
    expected_file = _expected_path(path)
    if UPDATE:
        expected_file.write_text("".join(f"{line}\n" for line in actual), encoding="utf-8")
    assert expected_file.is_file(), f"{path.name} has no {expected_file.name}; write the lines it must produce"
    expected = expected_file.read_text(encoding="utf-8").splitlines()
    assert expected, f"{expected_file.name} is empty: every corpus file must produce at least one problem"
    if actual != expected:
        pytest.fail(_diff(expected, actual, expected_file), pytrace=False)


@pytest.mark.parametrize(("kind", "path"), _cases())
def test_corpus_problems_are_located(
    kind: str, path: Path, make_home: Callable[..., Home], request: pytest.FixtureRequest
) -> None:
    """Every problem names the file it is about and at least a line or a field in it."""
    case = f"{kind}/{path.stem}"
    if case in UNLOCATED:
        request.applymarker(pytest.mark.xfail(reason=UNLOCATED[case], strict=True))
    shown = _shown(kind, path)
    problems = _problems(kind, path, make_home)
    assert problems, f"{case} produced no problem"
    unlocated = [
        str(p)
        for p in problems
        if p.file != shown or not str(p).startswith(f"{shown}:") or (p.line is None and not p.field)
    ]
    assert not unlocated, f"problems without the file {shown} and a line or field:\n" + "\n".join(unlocated)


def test_every_expected_file_has_its_input() -> None:
    """No orphaned .expected file (a renamed or deleted case would otherwise go unnoticed)."""
    orphans = [
        str(e.relative_to(CORPUS))
        for kind, suffix in KINDS.items()
        for e in sorted((CORPUS / kind).glob("*.expected"))
        if not e.with_suffix(suffix).is_file()
    ]
    assert not orphans, f".expected files without an input file: {orphans}"


def test_corpus_is_not_empty() -> None:
    for kind in KINDS:
        assert _inputs(kind), f"no corpus cases found in {CORPUS / kind}"


# Cross-profile conflicts must be reported on the file being validated whatever its name: a new
# profile that sorts before talos-staging must not validate clean on its own.
@pytest.mark.parametrize(
    "path", [p for p in _inputs("clusters") if p.stem.startswith("uses-staging-")], ids=lambda p: p.stem
)
def test_cross_profile_conflict_found_whatever_the_file_name(path: Path, make_home: Callable[..., Home]) -> None:
    home = make_home(runbooks=False)
    renamed = f"a-{path.stem}"
    target = home.clusters_dir / f"{renamed}.yaml"
    target.write_text(
        path.read_text(encoding="utf-8").replace(f"name: {path.stem}\n", f"name: {renamed}\n"), encoding="utf-8"
    )
    expected = [
        line.replace(f"clusters/{path.name}", f"clusters/{renamed}.yaml")
        for line in _expected_path(path).read_text(encoding="utf-8").splitlines()
    ]
    assert [str(p) for p in validate_home(home, [target]).problems] == expected


@pytest.mark.parametrize(
    "path", [p for p in _inputs("clusters") if p.stem.startswith("uses-staging-")], ids=lambda p: p.stem
)
def test_cross_profile_conflict_is_reported_on_both_files(path: Path, make_home: Callable[..., Home]) -> None:
    """The existing profile is told too, naming the new one: either file may be the one to change."""
    home = make_home(runbooks=False)
    shutil.copyfile(path, home.clusters_dir / path.name)
    staging = [str(p) for p in validate_home(home, [home.clusters_dir / "talos-staging.yaml"]).problems]
    assert staging, "talos-staging.yaml is not told about the clash"
    assert all(line.startswith("clusters/talos-staging.yaml:") for line in staging), staging
    assert all(f"profile '{path.stem}' (clusters/{path.name})" in line for line in staging), staging


def test_cli_validate_reports_every_problem(make_home: Callable[..., Home], cli: Callable[..., object]) -> None:
    """``runbook validate`` on a home with one broken file of each kind exits 1 and prints every line."""
    home = make_home(runbooks=False)
    runbook = CORPUS / "runbooks" / "several-problems.md"
    profile = CORPUS / "clusters" / "count-mismatch.yaml"
    config = CORPUS / "config" / "duplicate-node-name.yaml"
    shutil.copyfile(runbook, home.runbooks_dir / runbook.name)
    shutil.copyfile(profile, home.clusters_dir / profile.name)
    shutil.copyfile(config, home.config_path)
    result = cli("--home", str(home.root), "validate")
    printed = result.stdout.splitlines()
    assert result.exit_code == 1, result.output
    expected = [
        line
        for source in (runbook, profile, config)
        for line in _expected_path(source).read_text(encoding="utf-8").splitlines()
    ]
    missing = [line for line in expected if line not in printed]
    assert not missing, (
        "not printed by 'runbook validate':\n" + "\n".join(missing) + "\n\nstdout was:\n" + result.stdout
    )
    assert "3 file(s)" in result.stderr, result.stderr


def test_every_schema_pattern_has_operator_wording() -> None:
    """A regex is not a message: every ``pattern`` in schemas/ comes with an ``x-message`` saying the form in words."""
    import json
    import re

    from engine.resources import schema_dir

    def walk(node: object, where: str, names: bool = False) -> list[str]:
        """``names``: ``node`` maps field names to schemas (``properties``), so its keys are not keywords."""
        found = []
        if isinstance(node, dict):
            message = node.get("x-message")
            if (
                not names
                and isinstance(node.get("pattern"), str)
                and not (isinstance(message, (str, list)) or (isinstance(message, dict) and "pattern" in message))
            ):
                found.append(where)
            wordings = (
                [] if names or message is None else list(message.values()) if isinstance(message, dict) else [message]
            )
            texts = [w for w in wordings if isinstance(w, str)] + [
                case["message"] for w in wordings if isinstance(w, list) for case in w
            ]
            for placeholder in re.findall(r"\{([a-z_]+)\}", " ".join(texts)):
                if placeholder not in ("got", "length", "limit", "name", "unit"):
                    found.append(f"{where}: unknown placeholder {{{placeholder}}}")
            for key, value in node.items():
                if names or not key.startswith("x-"):
                    found += walk(value, f"{where}/{key}", names=not names and key in ("properties", "$defs"))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                found += walk(value, f"{where}/{index}")
        return found

    missing = [
        problem
        for path in sorted(schema_dir().rglob("*.schema.json"))
        for problem in walk(json.loads(path.read_text(encoding="utf-8")), path.name)
    ]
    assert not missing, "patterns without an x-message:\n" + "\n".join(missing)


def test_a_config_without_pass_path_is_valid_when_the_token_comes_from_a_variable(
    make_home: Callable[..., Home],
) -> None:
    """Automation that always exports the token need not name a pass entry (the run says what to do
    when the variable is unset: tests/test_credentials.py)."""
    config = (CORPUS.parent.parent / "cluster-config.yaml").read_text(encoding="utf-8")
    without = "\n".join(line for line in config.splitlines() if "pass_path:" not in line) + "\n"
    assert without != config
    home = make_home({"cluster-config.yaml": without}, runbooks=False)
    assert validate_home(home).problems == []


def test_a_generic_profile_needs_no_kubernetes_networks(
    make_home: Callable[..., Home], cli: Callable[..., Any]
) -> None:
    """Found on a real cluster: generic profiles had to carry pod and service CIDRs they never use."""
    profile = (CORPUS.parent.parent / "clusters" / "dev-generic.yaml").read_text(encoding="utf-8")
    without = "\n".join(line for line in profile.splitlines() if "network:" not in line and "_cidr:" not in line)
    home = make_home({"clusters/dev-generic.yaml": without + "\n"}, runbooks=False)
    assert validate_home(home).problems == []
    shown = cli("profiles", "show", "dev-generic", "--home", str(home.root))
    assert shown.exit_code == 0 and "network:" not in shown.output, shown.output


def test_a_ca_file_that_is_not_there_is_a_warning_naming_its_line(make_home: Callable[..., Home]) -> None:
    """Not an error (a home used with --simulate needs no CA), but every real run would stop on it."""
    config = (CORPUS.parent.parent / "cluster-config.yaml").read_text(encoding="utf-8")
    home = make_home({"cluster-config.yaml": config.replace("~/.config/runbook/lab-pve-root-ca.pem", "ca/lab.pem")})
    report = validate_home(home)
    assert report.ok
    [warning] = [w for w in report.warnings if w.file == "cluster-config.yaml"]
    assert (
        warning.field == "tls.ca_file"
        and warning.line == config.splitlines().index("  ca_file: ~/.config/runbook/lab-pve-root-ca.pem") + 1
    )
    assert "ca/lab.pem does not exist here: a run against the cluster stops before its first request" in warning.message
    (home.root / "ca").mkdir()
    (home.root / "ca" / "lab.pem").write_text("(the CA)")
    assert not [w for w in validate_home(home).warnings if w.file == "cluster-config.yaml"]
