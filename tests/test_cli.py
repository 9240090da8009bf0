"""The commands as a user runs them: output, JSON, exit codes, and finding the home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.home import HomeError, find_home
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


def test_list_names_a_broken_runbook_and_exits_1(cli, make_home) -> None:
    home = make_home({"runbooks/broken.md": "no frontmatter\n"})
    result = cli("--home", str(home.root), "list")
    assert result.exit_code == 1
    assert "error: runbooks/broken.md: 1 problem(s); run 'runbook validate runbooks/broken.md'" in result.stderr
    assert "_template" in result.stdout


def test_show_prints_steps_with_kind_id_title_and_line(cli) -> None:
    result = cli("--home", str(REPO), "show", "_template")
    assert result.exit_code == 0
    assert "1. [api] version  line 40" in result.stdout
    assert "title: Check the API is reachable" in result.stdout
    assert "| GET /version" in result.stdout


def test_show_json_has_the_parsed_steps(cli) -> None:
    data = json.loads(cli("--home", str(REPO), "show", "_template", "--json").stdout)
    assert [s["id"] for s in data["steps"]] == ["version", "where", "stop", "disks"]
    assert data["steps"][2]["attributes"]["destructive"] is True


def test_show_unknown_runbook_lists_the_known_ones(cli) -> None:
    result = cli("--home", str(REPO), "show", "nope")
    assert result.exit_code == 1
    assert "no runbook named 'nope'" in result.stderr


def test_validate_whole_repository_is_clean(cli) -> None:
    result = cli("--home", str(REPO), "validate")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: ")


def test_validate_reports_problems_of_several_files_in_one_run(cli, make_home) -> None:
    home = make_home({"runbooks/a.md": "---\nname: a\n---\n", "runbooks/b.md": "---\nname: x\ndescription: d\n---\n"})
    result = cli("--home", str(home.root), "validate")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "runbooks/a.md:2: description: missing: this field is required",
        "runbooks/b.md:2: name: name 'x' does not match the file name 'b.md'; rename one so they agree",
    ]
    assert "2 problem(s) in 2 file(s)" in result.stderr


def test_validate_paths_limits_the_report(cli, make_home) -> None:
    home = make_home({"runbooks/a.md": "---\nname: a\n---\n"})
    ok = cli("--home", str(home.root), "validate", str(home.runbooks_dir / "_template.md"))
    assert ok.exit_code == 0 and "ok: 1 files checked" in ok.stdout
    missing = cli("--home", str(home.root), "validate", "nowhere.md")
    assert missing.exit_code == 1 and "nowhere.md: no such file or folder" in missing.stdout


def test_validate_json(cli, make_home) -> None:
    home = make_home({"runbooks/a.md": "---\nname: a\n---\n"})
    data = json.loads(cli("--home", str(home.root), "validate", "--json").stdout)
    assert data["ok"] is False
    assert data["problems"] == [{"file": "runbooks/a.md", "line": 2, "field": "description",
                                 "message": "missing: this field is required"}]


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
        ["stg-cp01", "controlplane", "1031", "pve01", "10.20.0.31", "4", "8192", "MB", "100G",
         "talos;kubernetes;staging;controlplane"],
        ["stg-cp02", "controlplane", "1032", "pve02", "10.20.0.32", "4", "8192", "MB", "100G",
         "talos;kubernetes;staging;controlplane"],
        ["stg-cp03", "controlplane", "1033", "pve03", "10.20.0.33", "4", "8192", "MB", "100G",
         "talos;kubernetes;staging;controlplane"],
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
    assert "error: clusters/dev-generic.yaml:1: network: missing: this field is required" in broken.stderr


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
    with pytest.raises(HomeError, match="RUNBOOK_HOME points at .* which is not a runbook home: it has no "
                                        "cluster-config.yaml"):
        find_home(None, {"RUNBOOK_HOME": str(tmp_path)}, tmp_path)
    with pytest.raises(HomeError, match="--home points at .*nothere, which is not a folder"):
        find_home(str(tmp_path / "nothere"), {}, tmp_path)


def test_missing_home_is_a_clear_error_with_exit_3(tmp_path: Path) -> None:
    """Run the installed command from a folder that is no home, as a user would."""
    env = {k: v for k, v in os.environ.items() if k != "RUNBOOK_HOME"}
    runbook = Path(sys.executable).parent / "runbook"
    result = subprocess.run([str(runbook), "list"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 3
    assert result.stderr.startswith("error: no runbook home found: neither ")
    assert "Traceback" not in result.stderr


def test_help_lists_exit_codes(cli) -> None:
    assert "Exit codes: 0 ok; 1 problems found" in cli("--help").stdout
