"""What a run shows the operator, read as an operator reads it: the CLI in a pipe (plain lines on
stderr) against the embedded simulated cluster.

The results a runbook is run for are printed once (tables, ``key: value`` lines), long chatter is
folded while the journal keeps it whole, loop items are named by their name, and every run ends
with a summary of what it did.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.load.home import Home
from engine.run.journal import load_run
from engine.run.runner import PlanEntry, Runner
from engine.runbook.parser import parse_runbook

STAGING = {"stg-cp01": (1031, "pve01"), "stg-cp02": (1032, "pve02"), "stg-cp03": (1033, "pve03")}


class Operator:
    """Runs the CLI in a home, as an operator piping its output to a file would."""

    def __init__(self, cli: Callable[..., Any], home: Home, user_home: Path):
        self.cli, self.home, self.user_home = cli, home, user_home

    def run(self, name: str, *params: str, profile: str | None = "talos-staging") -> Any:
        args = ["--home", str(self.home.root), "run", name, "--simulate", "--yes"]
        args += ["--profile", profile] if profile else []
        for param in params:
            args += ["--param", param]
        result = self.cli(*args, env={"HOME": str(self.user_home)})
        assert result.exit_code == 0, result.stdout + result.stderr
        return result

    def run_id(self, result: Any) -> str:
        found = re.search(r"^run (\S+) succeeded$", result.stdout, re.M)
        assert found, result.stdout
        return found[1]


@pytest.fixture
def operator(cli: Callable[..., Any], make_home: Callable[..., Home], tmp_path: Path) -> Operator:
    (tmp_path / "user").mkdir()
    return Operator(cli, make_home(), tmp_path / "user")


def lines(result: Any) -> list[str]:
    """stderr's lines, with every duration written as 0.0 s (0.0s): how long a step took on a loaded
    machine is not what these tests are about."""
    text = re.sub(r"(\[(?:ok|failed)\] \S+) \d+\.\ds:", r"\1 0.0s:", result.stderr)
    return re.sub(r"done in \d+(?:\.\d+)? s", "done in 0 s", text).splitlines()


def test_status_of_an_empty_cluster_says_every_missing_vm(operator: Operator) -> None:
    shown = lines(operator.run("cluster-status"))
    missing = [line.strip() for line in shown if line.strip().startswith("missing: ")]
    assert missing == [
        f"missing: {name} (controlplane, VMID {vmid}, planned on {node})" for name, (vmid, node) in STAGING.items()
    ]
    assert "   [ok] missing[stg-cp02] 0.0s: local script done in 0 s" in shown
    table = shown.index("   [ok] vms 0.0s: local script done in 0 s")
    assert shown[table + 1] == "      (none)"
    assert shown[-2:] == [
        "summary: ran 4 (4 only read), skipped 4, failed 0",
        "changed: nothing (every step that ran only read)",
    ]


def test_status_shows_one_table_of_the_profiles_vms_and_talos_health(operator: Operator) -> None:
    created = operator.run("cluster-create")
    summary = lines(created)[-2:]
    assert summary[0].startswith("summary: ran ") and ", failed 0" in summary[0]
    assert summary[1].startswith("changed: clone (stg-cp01, stg-cp02, stg-cp03), migrate (stg-cp02, stg-cp03), ")
    assert "talos.bootstrap" in summary[1] and "ssh_keys" not in summary[1]

    shown = lines(operator.run("cluster-status"))
    at = shown.index("   [ok] vms 0.0s: local script done in 0 s")
    assert shown[at + 1].split() == ["NAME", "VMID", "NODE", "STATUS", "UPTIME", "CORES", "MEMORY"]
    assert [row.split() for row in shown[at + 2 : at + 5]] == [
        [name, str(vmid), node, "running", "-", "4", "8", "GiB"] for name, (vmid, node) in STAGING.items()
    ]
    assert not shown[at + 5].startswith("      "), "one table, one row per VM"
    health = shown.index("   [ok] talos_health 0.0s: talosctl health --wait-timeout: done (simulated)")
    assert shown[health + 1 : health + 3] == ["      health:        healthy", "      checks_passed: 16"]
    # A shown command prints its output once: not streamed as notes and then again.
    assert sum("stg-cp01   Ready" in line for line in shown) == 1
    assert not [line for line in shown if line.startswith("   ... kubernetes_nodes")]


def test_a_dry_run_shows_what_its_read_only_steps_found(operator: Operator, cli: Callable[..., Any]) -> None:
    operator.run("cluster-create")
    dry = cli(
        "--home",
        str(operator.home.root),
        "run",
        "cluster-status",
        "--profile",
        "talos-staging",
        "--simulate",
        "--dry-run",
    )
    assert dry.exit_code == 0, dry.output
    rows = [line.split() for line in dry.stdout.splitlines() if line.startswith("      stg-cp0")]
    assert [row[:4] for row in rows[:3]] == [[n, str(v), node, "running"] for n, (v, node) in STAGING.items()]


def test_talos_upgrade_folds_its_health_chatter_and_the_journal_keeps_it(operator: Operator) -> None:
    operator.run("cluster-create")
    result = operator.run("talos-upgrade", "talos_version=v1.9.6", "kubernetes_version=v1.32.4")
    shown = lines(result)
    notes = [line for line in shown if line.startswith("   ... ")]
    # 340 lines, 303 of them chatter, before folding; each step now keeps 2 lines and its last 3.
    assert len(shown) < 130 and len(notes) < 80, len(shown)
    health = [line for line in notes if line.startswith("   ... rolling_upgrade[stg-cp02 health]: ")]
    assert health == [
        '   ... rolling_upgrade[stg-cp02 health]: discovered nodes: ["10.20.0.31" "10.20.0.32" "10.20.0.33"]',
        "   ... rolling_upgrade[stg-cp02 health]: waiting for etcd to be healthy: ...",
        "   ... rolling_upgrade[stg-cp02 health]: (28 more lines; the journal keeps the whole output)",
        "   ... rolling_upgrade[stg-cp02 health]: waiting for coredns to report ready: OK",
        "   ... rolling_upgrade[stg-cp02 health]: waiting for all k8s nodes to report schedulable: ...",
        "   ... rolling_upgrade[stg-cp02 health]: waiting for all k8s nodes to report schedulable: OK",
    ]
    labels = [m[1] for m in (re.match(r"-> rolling_upgrade\[(.+)\] ", line) for line in shown) if m]
    assert labels == [f"stg-cp0{n} {what}" for n in (1, 2, 3) for what in ("upgrade", "health")]
    versions = shown.index("   [ok] versions_after 0.0s: talosctl version --nodes: done (simulated)")
    assert [row.split() for row in shown[versions + 1 : versions + 5]] == [
        ["NODE", "TALOS"],
        *[[f"10.20.0.3{n}", "v1.9.6"] for n in (1, 2, 3)],
    ]

    run = load_run(operator.home.state_dir, operator.run_id(result))
    # Checkpoints keep their keys (a resume of a journal written before finds its items); only labels changed.
    rolling = {key.item: step for key, step in run.state.steps.items() if key.step == "rolling_upgrade"}
    assert sorted(rolling) == ["0", "1", "2", "3", "4", "5"]
    stderr = rolling["3"].outputs["stderr"]
    assert stderr.count("waiting for ") == 32 and "waiting for kube-proxy to report ready: OK" in stderr
    assert {key.item for key in run.state.steps if key.step == "talos_versions"} == {f"name={n}" for n in STAGING}


def test_snapshots_storages_and_the_backup_archive_are_shown(operator: Operator) -> None:
    operator.run("cluster-create")
    operator.run("snapshot-create", "vmid=1031", "snapname=before_upgrade", profile=None)
    shown = lines(operator.run("snapshot-list", "vmid=1031", profile=None))
    at = next(i for i, line in enumerate(shown) if line.startswith("   [ok] snapshots "))
    assert shown[at + 1 : at + 4] == [
        "      vmid:           1031",
        "      count:          1",
        "      current_parent: before_upgrade",
    ]
    assert shown[at + 4] == "      snapshots:"
    assert shown[at + 5].split() == ["NAME", "DESCRIPTION", "TAKEN", "VMSTATE", "PARENT"]
    assert shown[at + 6].split()[0] == "before_upgrade" and shown[at + 6].split()[-2:] == ["no", "-"]

    shown = lines(operator.run("storage-overview", profile=None))
    at = next(i for i, line in enumerate(shown) if line.startswith("   [ok] usage "))
    header = shown[at + 1].split()
    assert header[:4] == ["NODE", "STORAGE", "TYPE", "STATUS"]
    rows = {tuple(line.split()[:2]) for line in shown[at + 2 : at + 11]}
    assert {("pve01", "local-lvm"), ("pve02", "local"), ("pve03", "local-lvm")} <= rows

    backup = operator.run("vm-backup", "vmid=1032", profile=None)
    shown = lines(backup)
    volid = next(line for line in shown if line.startswith("      volid:"))
    archive = volid.split()[-1]
    assert re.fullmatch(r"local:backup/vzdump-qemu-1032-\d{4}_\d\d_\d\d-\d\d_\d\d_\d\d\.vma\.zst", archive)
    run = load_run(operator.home.state_dir, operator.run_id(backup))
    assert [s.outputs["volid"] for k, s in run.state.steps.items() if k.step == "archive"] == [archive]
    assert lines(backup)[-1] == "changed: backup"


# -- loop item labels, below the CLI -----------------------------------------------------------------

LABELLED = """---
name: labelled
format: 2
description: Loop items and their labels.
---

# Labelled

```local {{id: each, foreach: {items}, as: it{label}}}
echo {{{{ loop_index }}}}
```
"""


def run_labels(items: str, label: str = "", things: Any = None) -> list[tuple[str | None, str | None, str]]:
    runbook = parse_runbook(LABELLED.format(items=items, label=label), "runbooks/labelled.md")
    entries: list[PlanEntry] = []
    runner = Runner(runbook, {"things": things}, executor=None, dry_run=True, approver=None)  # type: ignore[arg-type]
    runner.on_event = lambda event, entry: entries.append(entry) if event == "step" else None
    runner.run()
    return [(e.item_key, e.item_label, e.label) for e in entries]


def test_items_are_labelled_by_name_hostname_node_or_vmid_and_keep_their_keys() -> None:
    things = [{"name": "web1", "vmid": 1}, {"hostname": "h2"}, {"node": "pve3"}, {"vmid": 4}, [5]]
    assert run_labels("things", things=things) == [
        ("name=web1", "web1", "each[web1]"),
        ("#1", "h2", "each[h2]"),
        ("node=pve3", "pve3", "each[pve3]"),
        ("vmid=4", "4", "each[4]"),
        ("#4", "#4", "each[#4]"),
    ]


def test_a_label_expression_names_items_the_list_cannot() -> None:
    assert run_labels("range(4) | list", ", label: \"['a', 'b'][it // 2] ~ (' up' if it is even else ' check')\"") == [
        ("0", "a up", "each[a up]"),
        ("1", "a check", "each[a check]"),
        ("2", "b up", "each[b up]"),
        ("3", "b check", "each[b check]"),
    ]


def test_a_label_that_cannot_be_evaluated_is_a_located_problem(cli: Callable[..., Any], make_home) -> None:
    body = (
        '```local {id: a, label: "x"}\necho a\n```\n\n'
        '```local {id: b, foreach: "[1, 2]", label: "item.nosuch +"}\necho b\n```\n\n'
        '```local {id: c, foreach: "[1, 2]", label: "nothing_here.x"}\necho c\n```\n'
    )
    head = "---\nname: labels\nformat: 2\ndescription: Labels that do not work.\n---\n\n# Labels\n\n"
    home = make_home({"runbooks/labels.md": head + body})
    first = cli("--home", str(home.root), "validate", str(home.root / "runbooks" / "labels.md"))
    assert first.exit_code == 1
    assert "runbooks/labels.md:9: attributes.label: label needs foreach, which is not given" in first.stdout
    home.root.joinpath("runbooks/labels.md").write_text(head + body.split("\n\n", 1)[1], encoding="utf-8")
    second = cli("--home", str(home.root), "validate", str(home.root / "runbooks" / "labels.md"))
    assert second.exit_code == 1
    assert "runbooks/labels.md:9: attributes.label: template error: unexpected 'end of template'" in second.stdout
    assert "runbooks/labels.md:13: attributes.label: template error: 'nothing_here' is undefined" in second.stdout
