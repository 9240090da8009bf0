"""Saved plans: the file's seal, and the checks that refuse a plan whose inputs or cluster moved."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import exitcodes
from engine.load.home import Home
from engine.load.schemas import validator
from engine.run.savedplan import (
    SEAL,
    PlanFileError,
    PlanRefused,
    inputs_moved,
    moved,
    planned_against,
    seal,
    unseal,
)


def test_a_sealed_plan_unseals_and_any_edit_breaks_the_seal() -> None:
    plan = seal({"runbook": "vm-resize", "changes": [{"action": "change", "id": "1031"}]})
    assert list(plan)[:2] == ["kind", "format"] and SEAL in plan
    text = json.dumps(plan, indent=2)
    assert unseal(text, "plan.json") == plan
    edited = text.replace('"1031"', '"1032"')
    with pytest.raises(PlanRefused) as refused:
        unseal(edited, "plan.json")
    assert refused.value.exit_code == exitcodes.REFUSED
    assert "plan.json was changed after it was written" in str(refused.value)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "plan.json: not a saved plan (line 1"),
        ('{"kind": "other"}', 'no "kind": "runbook-plan"'),
        ('{"kind": "runbook-plan", "format": 7}', "a saved plan of format 7"),
    ],
)
def test_what_is_not_a_plan_says_so(text: str, says: str) -> None:
    with pytest.raises(PlanFileError) as error:
        unseal(text, "plan.json")
    assert says in str(error.value) and error.value.exit_code == exitcodes.PROBLEMS


def test_what_the_review_read_is_compared_by_what_matters() -> None:
    then = planned_against(
        [
            ("/nodes/pve01/qemu/1031/config", {"digest": "aaa", "cores": 4}),
            ("/nodes/pve01/qemu/1031/status/current", {"status": "running", "uptime": 10}),
            ("/nodes/pve01/qemu/1031/snapshot", [{"name": "current"}, {"name": "pre"}]),
            ("/nodes/pve02/qemu/1040/config", None),
        ]
    )
    same = planned_against(
        [
            ("/nodes/pve01/qemu/1031/config", {"digest": "aaa", "cores": 4}),
            ("/nodes/pve01/qemu/1031/status/current", {"status": "running", "uptime": 99}),  # uptime moves
            ("/nodes/pve01/qemu/1031/snapshot", [{"name": "pre"}, {"name": "current"}]),
            ("/nodes/pve02/qemu/1040/config", None),
        ]
    )
    assert moved(then, same) == []
    now = planned_against(
        [
            ("/nodes/pve01/qemu/1031/config", {"digest": "bbb", "cores": 8}),
            ("/nodes/pve01/qemu/1031/status/current", {"status": "stopped"}),
            ("/nodes/pve02/qemu/1040/config", {"digest": "ccc"}),
        ]
    )
    assert moved(then, now) == [
        "/nodes/pve01/qemu/1031/config: digest 'aaa' -> 'bbb'",
        "/nodes/pve01/qemu/1031/status/current: status 'running' -> 'stopped'",
        "/nodes/pve01/qemu/1031/snapshot is gone",
        "/nodes/pve02/qemu/1040/config exists now; it did not when the plan was made",
    ]


def test_inputs_that_moved_are_named() -> None:
    then = {"runbook": "a", "profile": None, "config": "c"}
    assert inputs_moved(then, dict(then)) == []
    assert inputs_moved(then, {"runbook": "a2", "profile": None, "config": "c2"}) == [
        "cluster-config.yaml",
        "the runbook",
    ]


# ---------------------------------------------------------------- saving and applying, on the simulated cluster

RESIZE = ("vm-resize", "--simulate", "--param", "vmid=1031", "--param", "cores=8", "--param", "memory=16384")
ECHO_STATUS = """\
---
name: echo-status
format: 2
description: Says the VM's status somewhere (tests only).
---

## Read it

```api {id: status}
GET /nodes/pve01/qemu/1031/status/current
```

## Write it

```local {id: note, changes: {action: write, resource: file, id: /dev/null}}
echo "stg-cp01 is {{ steps.status.status }}" > /dev/null
```
"""


@pytest.fixture
def staged(cli: Callable[..., Any], make_home: Callable[..., Home]) -> Home:
    home = make_home({"runbooks/echo-status.md": ECHO_STATUS})
    made = cli("--home", str(home.root), "run", "cluster-create", "--profile", "talos-staging", "--simulate", "--yes")
    assert made.exit_code == 0, made.output
    return home


def _config(cli: Callable[..., Any], home: Home) -> dict[str, Any]:
    """VM 1031 as the simulated cluster keeps it: its config and the values pending a restart."""
    state = json.loads((home.state_dir / "sim" / "state.json").read_text())
    vm = next(vm for vm in state["vms"] if vm["vmid"] == 1031)
    return {"config": vm["config"], "pending": vm["pending"], "status": vm["status"]}


def test_a_saved_plan_is_applied_as_reviewed_and_only_with_its_gates_approved(
    cli: Callable[..., Any], staged: Home, tmp_path: Path
) -> None:
    home = ("--home", str(staged.root))
    plan = tmp_path / "resize.json"
    saved = cli(*home, "run", *RESIZE, "--param", "disk_size=120G", "--dry-run", "--out", str(plan))
    assert saved.exit_code == 0 and f"plan saved to {plan}" in saved.stderr, saved.output
    document = json.loads(plan.read_text())
    errors = [e.message for e in validator("plan.schema.json").iter_errors(document)]
    assert errors == [], errors  # a saved plan is a plan document, with its own keys described in the schema
    assert [g["step"] for g in document["gates"]] == ["grow"]
    assert any(path.endswith("/qemu/1031/config") for path in document["planned_against"])
    assert document["identity"]["trust"] == "the simulated cluster's own CA"
    before = _config(cli, staged)

    refused = cli(*home, "apply", str(plan))  # no terminal: the plan's gates need --yes
    assert refused.exit_code == exitcodes.GATE and "this plan has gates (grow); nothing was changed" in refused.stderr
    assert _config(cli, staged) == before

    applied = cli(*home, "apply", str(plan), "--yes")
    assert applied.exit_code == 0, applied.output
    assert "changed: cpu_memory, grow" in applied.stderr and "succeeded" in applied.stdout + applied.stderr
    after = _config(cli, staged)
    assert after["pending"]["cores"] == "8" and after["config"]["scsi0"].endswith("size=120G"), after


def test_a_plan_is_refused_when_its_vm_moved_its_inputs_changed_or_its_file_was_edited(
    cli: Callable[..., Any], staged: Home, tmp_path: Path
) -> None:
    home = ("--home", str(staged.root))
    plan = tmp_path / "resize.json"
    assert cli(*home, "run", *RESIZE, "--dry-run", "--out", str(plan)).exit_code == 0
    edited = tmp_path / "edited.json"
    edited.write_text(plan.read_text().replace('"cores": 8', '"cores": 12'))
    tampered = cli(*home, "apply", str(edited), "--yes")
    assert tampered.exit_code == exitcodes.REFUSED and "was changed after it was written" in tampered.stderr

    runbook = staged.root / "runbooks" / "vm-resize.md"
    runbook.write_text(runbook.read_text() + "\n<!-- edited after the review -->\n")
    changed = cli(*home, "apply", str(plan), "--yes")
    assert changed.exit_code == exitcodes.REFUSED and "the runbook changed since the plan was made" in changed.stderr

    assert cli(*home, "run", *RESIZE, "--dry-run", "--out", str(plan)).exit_code == 0
    # Meanwhile someone grows its disk (a change PVE applies at once, so the config's digest moves).
    other = cli(*home, "run", *RESIZE[:-4], "--param", "disk_size=110G", "--yes")
    assert other.exit_code == 0, other.output
    before = _config(cli, staged)
    moved = cli(*home, "apply", str(plan), "--yes")
    assert moved.exit_code == exitcodes.REFUSED, moved.output
    assert "the cluster moved since the plan was made" in moved.stderr and "/qemu/1031/config: digest" in moved.stderr
    assert _config(cli, staged) == before, "nothing was changed"


def test_a_step_that_would_send_other_than_the_plan_stops_before_sending(
    cli: Callable[..., Any], staged: Home, tmp_path: Path
) -> None:
    """What a step sends can depend on a read the plan did not check against (here, the VM's status):
    the step is compared with the plan itself, and stops before it is sent."""
    home = ("--home", str(staged.root))
    plan = tmp_path / "note.json"
    assert cli(*home, "run", "echo-status", "--simulate", "--dry-run", "--out", str(plan)).exit_code == 0
    stopped = cli(*home, "run", "vm-power", "--simulate", "--param", "vmid=1031", "--param", "action=stop", "--yes")
    assert stopped.exit_code == 0, stopped.output
    diverged = cli(*home, "apply", str(plan), "--yes")
    assert diverged.exit_code == exitcodes.REFUSED, diverged.output
    assert (
        "step 'note' is not what the plan reviewed" in diverged.stderr and "nothing of it was sent" in diverged.stderr
    )
