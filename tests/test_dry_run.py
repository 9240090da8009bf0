"""Dry-run plans: every step rendered, gates shown, unknowns visible, nothing contacted offline."""

from __future__ import annotations

import json

from engine.report.jsonformat import STEP_STATUSES
from tests.conftest import REPO

ZERO_COUNTS = dict.fromkeys(STEP_STATUSES, 0)


def test_offline_dry_run_of_the_template_plans_every_step(cli) -> None:
    result = cli(
        "--home",
        str(REPO),
        "run",
        "_template",
        "--profile",
        "talos-staging",
        "--param",
        "vmid=1031",
        "--dry-run",
        "--offline",
        "--json",
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["offline"] is True and plan["profile"] == "talos-staging"
    assert set(plan["hashes"]) == {"runbook", "config", "profile", "called:snapshot-create"}
    steps = {s["step"]: s for s in plan["steps"]}
    assert steps["version"]["status"] == "would_run" and steps["version"]["reason"] == "read-only"
    stop = steps["stop"]
    assert stop["status"] == "unknown" and "cluster.vms[1031].status" in stop["reason"]
    assert stop["gated"] and "marked destructive" in stop["gate_reasons"], "destructive comes from its heading"
    assert stop["display"] == "POST /nodes/(known after run: steps.where.node)/qemu/1031/status/shutdown"
    assert steps["before.snapshot"]["display"].endswith("snapname=before-stop vmstate=0"), "the call's step"
    assert steps["note"]["action"]["path"].endswith("/talos-staging-vm-1031-stopped.yaml")
    # snapshot-create finds its VM in the facts (unknown offline) and refuses an old snapshot in a step of its own
    assert plan["counts"] == {**ZERO_COUNTS, "steps": 10, "gated": 1, "would_run": 2, "unknown": 7, "skipped": 1}


def test_dry_run_text_says_nothing_changes_and_marks_gates(cli) -> None:
    result = cli(
        "--home",
        str(REPO),
        "run",
        "_template",
        "--profile",
        "talos-staging",
        "--param",
        "vmid=1031",
        "--param",
        "mode=force",
        "--dry-run",
        "--offline",
    )
    assert result.exit_code == 0
    assert result.stdout.startswith("DRY RUN of _template on profile talos-staging (cluster lab): nothing is changed")
    assert "GATED: marked destructive; stops or restarts a VM" in result.stdout
    assert "/qemu/1031/status/stop" in result.stdout


def test_bad_parameters_are_all_reported(cli) -> None:
    result = cli(
        "--home",
        str(REPO),
        "run",
        "_template",
        "--profile",
        "talos-staging",
        "--param",
        "vmid=abc",
        "--param",
        "mode=gentle",
        "--param",
        "colour=red",
        "--dry-run",
        "--offline",
    )
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: --param: vmid: must be a whole number (given: 'abc')",
        "error: --param: mode: must be one of: graceful, force (got 'gentle')",
        "error: --param: colour: _template has no parameter 'colour' (parameters: vmid, mode)",
    ]


def test_missing_required_parameter_and_profile(cli) -> None:
    result = cli("--home", str(REPO), "run", "_template", "--profile", "talos-staging", "--dry-run", "--offline")
    assert result.exit_code == 1
    assert "required parameter missing: add --param vmid=VALUE (VMID of the VM to act on.)" in result.stderr
    no_profile = cli("--home", str(REPO), "run", "_template", "--param", "vmid=1031", "--dry-run", "--offline")
    assert "acts on a cluster profile: add --profile NAME" in no_profile.stderr


def test_a_pve_schema_violation_fails_the_plan_with_pve_wording(cli, make_home) -> None:
    home = make_home(
        {
            "runbooks/bad-api.md": "---\nname: bad-api\nformat: 2\ndescription: d\n---\n\n"
            '```api {id: cfg}\nPUT /nodes/pve01/qemu/1031/config\nnet0: "virtio,bridge=vmbr0,tag=5000"\n'
            "colour: red\n```\n"
        }
    )
    result = cli("--home", str(home.root), "run", "bad-api", "--dry-run", "--offline")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: runbooks/bad-api.md:9: step cfg: Proxmox API: net0: invalid format - format error; "
        "net0.tag: value must have a maximum value of 4094",
        "error: runbooks/bad-api.md:10: step cfg: Proxmox API: colour: property is not defined in schema and the "
        "schema does not allow additional properties",
    ]
