"""Gates are met before a run's first change: listed up front, and without a terminal a run with a
gate nobody approved refuses before it changes anything, so no run is ever left half-applied."""

from __future__ import annotations

import json
from typing import Any

from engine import exitcodes
from engine.load.home import Home
from engine.run.journal import list_runs
from engine.run.runner import PlanEntry
from engine.run.upfront import Gate, gates_ahead
from engine.runbook.parser import parse_runbook

TWO_GATES = """---
name: two-gates
format: 2
description: Change a VM's cores, then its memory and its description, each behind a gate.
parameters:
  vmid:
    type: integer
    description: VMID of the VM.
---

# Two gates after a change

## Read the VM

```api {id: current}
GET /nodes/pve01/qemu/{{ vmid }}/config
```

## Cores

```api {id: cores}
PUT /nodes/pve01/qemu/{{ vmid }}/config
cores: "6"
```

## Memory

```api {id: memory, confirm: true}
PUT /nodes/pve01/qemu/{{ vmid }}/config
memory: "4096"
```

## Description

```api {id: describe, destructive: true}
PUT /nodes/pve01/qemu/{{ vmid }}/config
description: "resized by two-gates"
```
"""


def vm(home: Home, vmid: int) -> dict[str, Any]:
    """The simulated VM as its state file holds it: config and the changes pending a restart."""
    state = json.loads((home.root / ".runbook" / "sim" / "state.json").read_text())
    return next(v for v in state["vms"] if v["vmid"] == vmid)


def created(cli: Any, make_home: Any) -> Home:
    home = make_home({"runbooks/two-gates.md": TWO_GATES})
    result = cli("--home", str(home.root), "run", "cluster-create", "--profile", "talos-staging", "--simulate", "--yes")
    assert result.exit_code == 0, result.output
    return home


def test_a_piped_run_with_two_gates_stops_before_any_change(cli, make_home) -> None:
    home = created(cli, make_home)
    before = vm(home, 1031)
    runs_before = len(list_runs(home.state_dir))
    result = cli("--home", str(home.root), "run", "two-gates", "--param", "vmid=1031", "--simulate")
    assert result.exit_code == exitcodes.GATE, result.output
    assert "This run will meet these gates:\n  gate: memory: marked confirm\n  gate: describe: marked destructive" in (
        result.stderr
    )
    assert "nothing was changed" in result.stderr
    assert "--approve memory --approve describe" in result.stderr
    assert vm(home, 1031) == before, "a change was applied although the run stopped at a gate"
    assert len(list_runs(home.state_dir)) == runs_before, "a run was recorded although none started"


def test_one_approval_missing_still_stops_before_any_change(cli, make_home) -> None:
    home = created(cli, make_home)
    before = vm(home, 1031)
    result = cli(
        "--home", str(home.root), "run", "two-gates", "--param", "vmid=1031", "--simulate", "--approve", "memory"
    )
    assert result.exit_code == exitcodes.GATE, result.output
    assert "gate: memory: marked confirm (approved: --approve)" in result.stderr
    assert "--approve describe" in result.stderr and "--approve memory " not in result.stderr
    assert vm(home, 1031) == before


def test_approving_both_gates_runs_every_step(cli, make_home) -> None:
    home = created(cli, make_home)
    args = ("--home", str(home.root), "run", "two-gates", "--param", "vmid=1031", "--simulate")
    result = cli(*args, "--approve", "memory", "--approve", "describe", "--json")
    assert result.exit_code == 0, result.output
    final = json.loads(result.stdout.splitlines()[-1])
    assert [s["status"] for s in final["steps"]] == ["succeeded"] * 4
    after = vm(home, 1031)
    assert after["pending"] == {"cores": "6", "memory": "4096"}
    assert after["config"]["description"] == "resized by two-gates"
    journal = (home.state_dir / "runs" / final["run_id"] / "journal.jsonl").read_text()
    approvals = [json.loads(line) for line in journal.splitlines() if '"gate_approved"' in line]
    assert [(a["step"], a["by"].endswith("via --approve")) for a in approvals] == [("memory", True), ("describe", True)]


def test_vm_resize_in_a_pipe_leaves_cores_and_memory_alone_without_grow_approved(cli, make_home) -> None:
    """The issue's case: cores and memory were applied, then the run stopped at the grow gate."""
    home = created(cli, make_home)
    before = vm(home, 1031)
    args = ["--home", str(home.root), "run", "vm-resize", "--simulate"]
    args += ["--param", "vmid=1031", "--param", "cores=8", "--param", "memory=16384", "--param", "disk_size=120G"]
    stopped = cli(*args)
    assert stopped.exit_code == exitcodes.GATE, stopped.output
    assert vm(home, 1031) == before
    done = cli(*args, "--approve", "grow")
    assert done.exit_code == 0, done.output
    assert vm(home, 1031)["pending"] == {"cores": "8", "memory": "16384"}


def entry(step: str, status: str, reasons: list[str] | None = None, item: str | None = None) -> PlanEntry:
    made = PlanEntry(step, "api", None, 1, item_key=item, status=status)
    made.gate_reasons = list(reasons or [])
    made.gated = bool(reasons)
    return made


def test_gates_whose_need_is_known_only_at_run_time_are_listed_as_may() -> None:
    runbook = parse_runbook(
        """---
name: later
format: 2
description: A delete whose path only a step's output gives.
---

# Later

```api {id: find}
GET /cluster/resources
```

```api {id: remove, foreach: steps.find}
DELETE /nodes/{{ item.node }}/qemu/{{ item.vmid }}
```

```api {id: tag, foreach: steps.find}
PUT /nodes/{{ item.node }}/qemu/{{ item.vmid }}/config
tags: "x"
```

```api {id: stop, confirm: true}
POST /nodes/pve01/qemu/1/status/start
```
""",
        "runbooks/later.md",
    )
    entries = [
        entry("find", "would_run"),
        entry("remove", "unknown"),
        entry("tag", "unknown"),
        entry("stop", "would_run", ["marked confirm"]),
    ]
    assert gates_ahead(entries, runbook) == [
        Gate("stop", (), ("marked confirm",)),
        Gate("remove", (), ("DELETE /nodes/{{ item.node }}/qemu/{{ item.vmid }}",), certain=False),
    ]


def test_a_gated_loop_is_one_gate_with_its_items() -> None:
    runbook = parse_runbook(
        """---
name: loop
format: 2
description: A gated loop.
---

# Loop

```api {id: stop, foreach: "[1, 2]"}
POST /nodes/pve01/qemu/{{ item }}/status/stop
```
""",
        "runbooks/loop.md",
    )
    entries = [entry("stop", "would_run", ["stops or restarts a VM"], item=key) for key in ("1", "2")]
    gates = gates_ahead(entries, runbook)
    assert gates == [Gate("stop", ("1", "2"), ("stops or restarts a VM",))]
    assert gates[0].describe() == "stop (2 items: 1, 2): stops or restarts a VM"
