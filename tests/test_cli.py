"""The commands as a user runs them: output, JSON, exit codes, and finding the home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.load.home import HomeError, find_home
from engine.runbook.model import AREAS
from tests.conftest import REPO


def test_list_shows_every_runbook_with_parameters(cli) -> None:
    result = cli("--home", str(REPO), "list")
    assert result.exit_code == 0, result.output
    assert "_template" in result.stdout
    assert 'vmid*, mode="graceful"' in result.stdout


def test_list_json_is_machine_readable(cli) -> None:
    data = json.loads(cli("--home", str(REPO), "list", "--json").stdout)
    template = next(r for r in data["runbooks"] if r["name"] == "_template")
    assert template["requires"] == ["profile"]
    assert [p["name"] for p in template["parameters"]] == ["vmid", "mode"]
    assert data["invalid"] == []


def test_list_groups_runbooks_by_area_and_filters_one(cli) -> None:
    listed = json.loads(cli("--home", str(REPO), "list", "--json").output)["runbooks"]
    assert all(r["area"] != "other" for r in listed), "every shipped runbook says its area"
    order = [r["area"] for r in listed]
    assert order == sorted(order, key=list(AREAS).index), "grouped in the areas' order"
    talos = cli("--home", str(REPO), "list", "--area", "talos")
    rows = [line.split() for line in talos.output.splitlines()[1:] if line.strip() and not line.startswith("*")]
    assert rows[0][:2] == ["talos", "talos-cluster-bootstrap"] and all(r[0].startswith("talos-") for r in rows[1:])
    wrong = cli("--home", str(REPO), "list", "--area", "vms")
    assert wrong.exit_code == 2 and "'vms' is not one of" in wrong.output


def test_list_names_a_broken_runbook_and_exits_1(cli, make_home) -> None:
    home = make_home({"runbooks/broken.md": "no frontmatter\n"})
    result = cli("--home", str(home.root), "list")
    assert result.exit_code == 1
    assert "error: runbooks/broken.md: 1 problem(s); run 'runbook validate runbooks/broken.md'" in result.stderr
    assert "_template" in result.stdout


def test_show_prints_steps_with_kind_id_title_and_line(cli) -> None:
    result = cli("--home", str(REPO), "show", "_template")
    assert result.exit_code == 0
    assert "1. [api] version  line 54" in result.stdout
    assert "title: Check the API is reachable" in result.stdout
    assert "| GET /version" in result.stdout


def test_show_json_has_the_parsed_steps(cli) -> None:
    data = json.loads(cli("--home", str(REPO), "show", "_template", "--json").stdout)
    assert [s["id"] for s in data["steps"]] == ["version", "where", "before", "stop", "note"]
    stop = data["steps"][3]
    assert stop["attributes"]["destructive"] is True and stop["inherited"] == {"destructive": 79}  # its heading line


def test_show_unknown_runbook_lists_the_known_ones(cli) -> None:
    result = cli("--home", str(REPO), "show", "nope")
    assert result.exit_code == 1
    assert "no runbook named 'nope'" in result.stderr


def test_validate_whole_repository_is_clean(cli) -> None:
    result = cli("--home", str(REPO), "validate")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: ")


def test_validate_reports_problems_of_several_files_in_one_run(cli, make_home) -> None:
    home = make_home(
        {
            "runbooks/a.md": "---\nname: a\nformat: 2\n---\n",
            "runbooks/b.md": "---\nname: x\nformat: 2\ndescription: d\n---\n",
        }
    )
    result = cli("--home", str(home.root), "validate")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "runbooks/a.md:2: description: missing: this field is required",
        "runbooks/b.md:2: name: name 'x' does not match the file name 'b.md'; rename one so they agree",
    ]
    assert "2 problem(s) in 2 file(s)" in result.stderr


def test_validate_paths_limits_the_report(cli, make_home) -> None:
    home = make_home({"runbooks/a.md": "---\nname: a\nformat: 2\n---\n"})
    ok = cli("--home", str(home.root), "validate", str(home.runbooks_dir / "_template.md"))
    assert ok.exit_code == 0 and "ok: 1 files checked" in ok.stdout
    missing = cli("--home", str(home.root), "validate", "nowhere.md")
    assert missing.exit_code == 1 and "nowhere.md: no such file or folder" in missing.stdout


def test_validate_json(cli, make_home) -> None:
    home = make_home({"runbooks/a.md": "---\nname: a\nformat: 2\n---\n"})
    data = json.loads(cli("--home", str(home.root), "validate", "--json").stdout)
    assert data["ok"] is False
    assert data["problems"] == [
        {"file": "runbooks/a.md", "line": 2, "field": "description", "message": "missing: this field is required"}
    ]


def test_profiles_table_and_json(cli) -> None:
    table = cli("--home", str(REPO), "profiles")
    assert table.exit_code == 0
    assert any(line.split()[:4] == ["talos-staging", "talos", "3", "0"] for line in table.stdout.splitlines())
    data = json.loads(cli("--home", str(REPO), "profiles", "--json").stdout)
    assert {p["name"] for p in data["profiles"]} == {"talos-staging", "dev-generic"}


def test_profiles_show_prints_the_plan(cli) -> None:
    result = cli("--home", str(REPO), "profiles", "show", "talos-staging")
    assert result.exit_code == 0
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("stg-cp")]
    assert rows == [
        [
            "stg-cp01",
            "controlplane",
            "1031",
            "pve01",
            "10.20.0.31",
            "4",
            "8192",
            "MB",
            "100G",
            "talos;kubernetes;staging;controlplane",
        ],
        [
            "stg-cp02",
            "controlplane",
            "1032",
            "pve02",
            "10.20.0.32",
            "4",
            "8192",
            "MB",
            "100G",
            "talos;kubernetes;staging;controlplane",
        ],
        [
            "stg-cp03",
            "controlplane",
            "1033",
            "pve03",
            "10.20.0.33",
            "4",
            "8192",
            "MB",
            "100G",
            "talos;kubernetes;staging;controlplane",
        ],
    ]
    data = json.loads(cli("--home", str(REPO), "profiles", "show", "dev-generic", "--json").stdout)
    assert [vm["vmid"] for vm in data["plan"]["vms"]] == [1201, 1211, 1212, 1213]


def test_profiles_show_unknown_and_broken(cli, make_home) -> None:
    result = cli("--home", str(REPO), "profiles", "show", "prod")
    assert result.exit_code == 1
    assert "no profile named 'prod' (profiles: dev-generic, talos-staging)" in result.stderr
    home = make_home({"clusters/dev-generic.yaml": "name: dev-generic\n"})
    broken = cli("--home", str(home.root), "profiles", "show", "dev-generic")
    assert broken.exit_code == 1
    assert "error: clusters/dev-generic.yaml:1: nodes: missing: this field is required" in broken.stderr


def test_broken_config_stops_profile_commands_with_exit_3(cli, make_home) -> None:
    home = make_home({"cluster-config.yaml": "cluster: {name: lab, nodes: []}\n"})
    result = cli("--home", str(home.root), "profiles")
    assert result.exit_code == 3
    assert "cluster-config.yaml" in result.stderr


def test_home_resolution_order(tmp_path: Path, make_home) -> None:
    home = make_home()
    inner = home.root / "runbooks"
    assert find_home(None, {}, inner).root == home.root, "found from a subfolder"
    assert find_home(None, {"RUNBOOK_HOME": str(home.root)}, tmp_path).root == home.root
    with pytest.raises(
        HomeError, match="RUNBOOK_HOME points at .* which is not a runbook home: it has no cluster-config.yaml"
    ):
        find_home(None, {"RUNBOOK_HOME": str(tmp_path)}, tmp_path)
    with pytest.raises(HomeError, match="--home points at .*nothere, which is not a folder"):
        find_home(str(tmp_path / "nothere"), {}, tmp_path)


def test_without_a_home_the_example_serves_reads_and_simulation_but_never_a_real_cluster(tmp_path: Path) -> None:
    """Run the installed command from a folder that is no home, as a user would."""
    env = {k: v for k, v in os.environ.items() if k != "RUNBOOK_HOME"}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    runbook = Path(sys.executable).parent / "runbook"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(runbook), *args], cwd=tmp_path, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )

    listed = run("list")
    assert listed.returncode == 0 and "cluster-create" in listed.stdout
    assert listed.stderr.startswith("note: no runbook home here (no --home, no $RUNBOOK_HOME, no cluster-config.yaml")
    for args, doing in (
        (("run", "cluster-status", "--profile", "talos-staging"), "a run against a real cluster"),
        (("run", "cluster-status", "--profile", "talos-staging", "--dry-run"), "a run against a real cluster"),
        (("ingest", "page.md"), "ingest (it writes into runbooks/)"),
        (("trust", "cluster-create"), "trust (it records a review in the home)"),
    ):
        refused = run(*args)
        assert refused.returncode == 3, (args, refused.stderr)
        assert f"error: {doing} needs your own runbook home, not the example: pass --home DIR" in refused.stderr
        assert "Traceback" not in refused.stderr
    offline = run("run", "cluster-status", "--profile", "talos-staging", "--dry-run", "--offline")
    assert offline.returncode == 0, offline.stderr
    assert not (tmp_path / "state" / "runbook" / "example" / "runs").exists()
    with pytest.raises(HomeError, match="no runbook home found: neither .* nor any folder above it"):
        find_home(None, {}, tmp_path, fallback=False)


def test_global_options_work_after_the_subcommand_too(cli, make_home) -> None:
    home = make_home()
    before = cli("--home", str(home.root), "list", "--json")
    after = cli("list", "--json", "--home", str(home.root))
    assert before.exit_code == after.exit_code == 0 and before.stdout == after.stdout
    nested = cli("profiles", "show", "talos-staging", "--home", str(home.root))
    assert nested.exit_code == 0 and "stg-cp01" in nested.stdout
    missing = cli("runs", "show", "nope", "--home", str(home.root / "nothere"))
    assert missing.exit_code == 3 and "nothere, which is not a folder" in missing.stderr


def test_a_misspelt_runbook_or_profile_gets_a_suggestion_not_a_list(cli) -> None:
    result = cli("--home", str(REPO), "show", "cluster-creat")
    assert result.exit_code == 1
    # the closest first (cluster-health comes next, close enough to be offered too)
    assert "no runbook named 'cluster-creat'; did you mean 'cluster-create'" in result.stderr
    assert "vm-resize" not in result.stderr
    far = cli("--home", str(REPO), "show", "zzz")
    assert (
        f"no runbook named 'zzz' ('runbook list' shows the {len(list((REPO / 'runbooks').glob('[!_]*.md')))} "
        "there are)" in far.stderr
    )
    profile = cli("--home", str(REPO), "run", "cluster-status", "--profile", "talos-stagin", "--dry-run", "--offline")
    assert profile.exit_code == 1
    assert "no profile named 'talos-stagin'; did you mean 'talos-staging'?" in profile.stderr


def test_list_in_a_pipe_keeps_each_runbook_on_one_line_within_the_width(cli) -> None:
    result = cli("--home", str(REPO), "list", env={"COLUMNS": "80"})
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    names = {p.stem for p in (REPO / "runbooks").glob("*.md")}
    areas = set(AREAS)
    rows = [line for line in lines if set(line.split()[:2]) & names]
    shown = [next(word for word in row.split()[:2] if word not in areas) for row in rows]
    assert sorted(shown) == sorted(names), "one row per runbook, its name never cut"
    assert any(row.rstrip().endswith("…") for row in rows), "long descriptions are cut, with an ellipsis"


def test_completion_prints_a_script_for_each_shell_and_completes_names(tmp_path: Path) -> None:
    runbook = Path(sys.executable).parent / "runbook"
    for shell, marker in (
        ("bash", "complete -o nosort -F _runbook_completion runbook"),
        ("zsh", "#compdef runbook"),
        ("fish", "complete --no-files --command runbook"),
    ):
        script = subprocess.run([str(runbook), "completion", shell], capture_output=True, text=True)
        assert script.returncode == 0 and marker in script.stdout, (shell, script.stdout[:200])
    env = {**os.environ, "_RUNBOOK_COMPLETE": "bash_complete", "COMP_WORDS": "runbook run cluster-c", "COMP_CWORD": "2"}
    env.pop("RUNBOOK_HOME", None)
    names = subprocess.run([str(runbook), "--home", str(REPO)], env=env, capture_output=True, text=True).stdout
    assert names.split() == ["plain,cluster-create"]
    env.update(COMP_WORDS=f"runbook --home {REPO} run cluster-create --profile talos", COMP_CWORD="6")
    profiles = subprocess.run([str(runbook)], env=env, capture_output=True, text=True, cwd=tmp_path).stdout
    assert profiles.split() == ["plain,talos-staging"]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("engine.load.home:HomeError", 3),
        ("engine.run.runlock:LockHeld", 6),
        ("engine.run.journal:JournalError", 1),
        ("engine.load.problems:InputError", 1),
        ("engine.sim.state:SimStateError", 1),
        ("engine.ingest.fetch:FetchError", 1),
        ("engine.ingest.pipeline:IngestError", 1),
        ("engine.ingest.trust:TrustError", 1),
        ("engine.runbook.actions:StepFailed", 5),
        ("engine.run.credentials:CredentialError", 5),
        ("engine.executors.api:ApiSetupError", 5),
    ],
)
def test_each_error_says_its_exit_code(error: str, code: int) -> None:
    import importlib

    from engine.errors import RunbookError

    module, name = error.split(":")
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, RunbookError) and cls.exit_code == code


def test_an_error_no_command_catches_ends_as_its_lines_and_exit_code(cli, monkeypatch, tmp_path: Path) -> None:
    """The command group catches ``RunbookError`` for every command: no traceback, the error's own code."""
    from engine.load.problems import InputError, Problem
    from engine.run import journal

    (tmp_path / "cluster-config.yaml").write_text("{}\n")

    def damaged(_state_dir: Path) -> list[Any]:
        raise InputError([Problem("a.yaml", 1, None, "first"), Problem("b.yaml", None, "f", "second")])

    monkeypatch.setattr(journal, "list_runs", damaged)
    result = cli("--home", str(tmp_path), "runs")
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == "error: a.yaml:1: first\nerror: b.yaml: f: second\n"
