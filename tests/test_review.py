"""Reviews as change sets (issue #14, items 1 and 2): the table of PVE calls, what a review shows in
text, JSON and HTML, and ``validate``'s warnings about steps of unknown effect.

The proof that a review tells the truth about a run is ``test_review_proof.py``; here are its
parts: the table against PVE's own API schema, golden texts of two reviews on the simulated
cluster, and the teardown's page in headless Chromium.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.executors.base import FieldChange
from engine.executors.changeset import fold, summary_line
from engine.executors.preview import api_changes
from engine.load.facts import Facts, Planned
from engine.load.home import Home
from engine.load.pveschema import changing_paths, methods_of
from engine.load.pvetable import table
from engine.runbook.actions import ApiRequest
from tests.conftest import REPO
from tests.test_html_report import chromium as chromium  # noqa: F401 - the fixture, shared
from tests.test_html_report import load

GOLDEN = Path(__file__).parent / "golden"
#: Areas of the PVE API a review must know every changing call of.
COVERED = re.compile(
    r"^/nodes/\{node\}/(qemu|lxc)(/|$)|^/access/|^/pools|^/nodes/\{node\}/vzdump$|^/cluster/backup"
    r"|^/nodes/\{node\}/storage/\{storage\}/(content|upload|download-url|prunebackups|oci-registry-pull)|^/storage"
)
CONFIG = {
    "name": "stg-cp01",
    "cores": 4,
    "memory": 8192,
    "scsi0": "local-lvm:vm-1031-disk-0,size=100G",
    "efidisk0": "local-lvm:vm-1031-disk-1,efitype=4m,size=528K",
    "ide2": "local:iso/talos.iso,media=cdrom",
}
FACTS = Facts.from_cluster_resources(
    [{"type": "qemu", "vmid": 1031, "name": "stg-cp01", "node": "pve01", "status": "running"}]
).with_reads(
    {
        "/nodes/pve01/qemu/1031/config": CONFIG,
        "/nodes/pve01/qemu/1031/status/current": {"status": "running"},
        "/nodes/pve01/qemu/1031/snapshot": [{"name": "pre-upgrade"}, {"name": "current"}],
    }
)


# ---------------------------------------------------------------- the table


def test_every_path_of_the_table_is_a_path_of_the_pve_api_with_that_method() -> None:
    for rule in table().rules:
        assert rule.methods <= methods_of(rule.template), f"{sorted(rule.methods)} {rule.template}"


def test_the_table_knows_every_changing_call_for_guests_disks_snapshots_backups_storage_access_and_pools() -> None:
    known = {(m, r.template) for r in table().rules for m in r.methods}
    missing = [
        f"{method} {path}"
        for path, methods in sorted(changing_paths().items())
        if COVERED.search(path)
        for method in sorted(methods)
        if (method, path) not in known
    ]
    assert missing == []


def test_a_config_change_shows_each_field_before_and_after_and_what_stays_pending() -> None:
    request = ApiRequest(
        "PUT", "/nodes/pve01/qemu/1031/config", {"cores": 8, "memory": 8192, "tags": "a", "digest": "x"}
    )
    (change,) = api_changes(request, FACTS)
    assert change.name == "vm 1031 stg-cp01 (pve01, running)"
    # memory is already 8192: no field; tags apply at once; cores wait for a restart (no CPU hotplug).
    assert change.fields == (FieldChange("cores", 4, 8, True), FieldChange("tags", None, "a", False))


def test_a_call_that_sets_only_what_is_already_so_changes_nothing() -> None:
    assert api_changes(ApiRequest("PUT", "/nodes/pve01/qemu/1031/config", {"cores": 4, "memory": "8192"}), FACTS) == []
    assert (
        api_changes(ApiRequest("PUT", "/nodes/pve01/qemu/1031/resize", {"disk": "scsi0", "size": "100G"}), FACTS) == []
    )


def test_cpu_hotplug_makes_cores_apply_at_once() -> None:
    facts = FACTS.with_reads({"/nodes/pve01/qemu/1031/config": {**CONFIG, "hotplug": "disk,network,cpu"}})
    (change,) = api_changes(ApiRequest("PUT", "/nodes/pve01/qemu/1031/config", {"cores": 8}), facts)
    assert change.fields == (FieldChange("cores", 4, 8, False),)


def test_a_destroy_says_what_is_lost_and_a_cdrom_is_no_disk() -> None:
    (change,) = api_changes(ApiRequest("DELETE", "/nodes/pve01/qemu/1031", {"purge": 1}), FACTS)
    assert (change.action, change.resource, change.id) == ("destroy", "vm", "1031")
    assert [(lost.kind, lost.name, lost.detail) for lost in change.lost] == [
        ("disk", "efidisk0", "528K on local-lvm"),
        ("disk", "scsi0", "100G on local-lvm"),
        ("snapshot", "pre-upgrade", ""),
    ]


def test_a_resize_shows_the_disk_size_before_and_after() -> None:
    request = ApiRequest("PUT", "/nodes/pve01/qemu/1031/resize", {"disk": "scsi0", "size": "120G"})
    (change,) = api_changes(request, FACTS)
    assert (change.action, change.resource, change.id) == ("change", "disk", "1031/scsi0")
    assert change.fields == (FieldChange("size", "100G", "120G"),)


def test_variants_of_one_call_acl_delete_and_restore() -> None:
    grant = ApiRequest("PUT", "/access/acl", {"path": "/", "roles": "PVEAuditor", "users": "ops@pve"})
    revoke = ApiRequest("PUT", "/access/acl", {"path": "/", "roles": "PVEAuditor", "users": "ops@pve", "delete": 1})
    assert api_changes(grant, FACTS)[0].action == "create" and api_changes(revoke, FACTS)[0].action == "destroy"
    restore = ApiRequest("POST", "/nodes/pve03/qemu", {"vmid": 1600, "archive": "local:backup/x.vma.zst"})
    (made,) = api_changes(restore, FACTS)
    assert (made.action, made.id, made.detail) == ("create", "1600", "restored from local:backup/x.vma.zst")


def test_a_vm_made_earlier_in_the_plan_has_no_values_before_and_its_changes_fold_into_its_create() -> None:
    facts = Facts().with_planned([Planned("vm", "1500", "create", "vm 1500 web01 (pve02, new)", "stopped")])
    (config,) = api_changes(ApiRequest("PUT", "/nodes/pve02/qemu/1500/config", {"cores": 2}), facts)
    assert config.fields == (FieldChange("cores", None, 2),) and config.name == "vm 1500 web01 (pve02, new)"
    (start,) = api_changes(ApiRequest("POST", "/nodes/pve02/qemu/1500/status/start"), facts)
    assert start.fields == (FieldChange("status", "stopped", "running"),)
    (clone,) = api_changes(ApiRequest("POST", "/nodes/pve01/qemu/102/clone", {"newid": 1500, "name": "web01"}), Facts())
    folded = fold([clone, config, start])
    assert [c.action for c in folded] == ["create", "start"]
    assert [f.name for f in folded[0].fields] == ["name", "cores"]
    assert summary_line(folded) == "Plan: 1 to create, 0 to change, 0 to destroy; 1 to start."


def test_the_summary_counts_only_certain_changes_and_action_words_after_the_semicolon() -> None:
    (destroy,) = api_changes(ApiRequest("DELETE", "/nodes/pve01/qemu/1031"), FACTS)
    (stop,) = api_changes(ApiRequest("POST", "/nodes/pve01/qemu/1031/status/stop"), FACTS)
    assert summary_line([stop, destroy]) == "Plan: 0 to create, 0 to change, 1 to destroy; 1 to stop."
    assert summary_line([]) == "Plan: 0 to create, 0 to change, 0 to destroy."


# ---------------------------------------------------------------- validate's warnings


def test_validate_warns_where_a_review_would_show_an_unknown_effect(cli, make_home) -> None:
    home = make_home(
        {
            "runbooks/odd.md": "---\nname: odd\nformat: 2\ndescription: t\n---\n# T\n\n"
            '```api {id: weird}\nPOST /nodes/pve01/execute\ncommands: "[]"\n```\n\n'
            "```local {id: script}\ntouch /tmp/x\n```\n\n"
            "```local {id: said, changes: {action: write, resource: file, id: /tmp/x}}\ntouch /tmp/x\n```\n"
        }
    )
    odd = str(home.root / "runbooks" / "odd.md")
    result = cli("--home", str(home.root), "validate", odd)
    assert result.exit_code == 0, result.output  # a warning, not a problem
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert warnings[0].startswith(
        "warning: runbooks/odd.md:8: step weird: POST /nodes/pve01/execute is not in the table"
    )
    assert warnings[1].startswith("warning: runbooks/odd.md:13: step script: a local step that may change something")
    report = json.loads(cli("--home", str(home.root), "validate", odd, "--json").stdout)
    assert report["ok"] is True and [w["field"] for w in report["warnings"]] == ["step weird", "step script"]


def test_no_shipped_runbook_has_a_step_of_unknown_effect(cli) -> None:
    result = cli("--home", str(REPO), "validate", str(REPO / "runbooks"), "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["warnings"] == [], report["warnings"]
    assert len(report["checked"]) > 20


# ---------------------------------------------------------------- golden reviews on the simulated cluster


@pytest.fixture
def staged(cli: Callable[..., Any], make_home: Callable[..., Home]) -> Home:
    """A home whose simulated cluster has the talos-staging cluster (cluster-create ran)."""
    home = make_home()
    made = cli("--home", str(home.root), "run", "cluster-create", "--profile", "talos-staging", "--simulate", "--yes")
    assert made.exit_code == 0, made.stderr
    return home


def _review(cli: Callable[..., Any], home: Home, *args: str) -> str:
    result = cli("--home", str(home.root), "run", *args, "--simulate", "--dry-run")
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _golden(name: str, text: str) -> None:
    """``text`` equals tests/golden/NAME (UPDATE_GOLDEN=1 writes it instead)."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def _changes_part(text: str) -> str:
    """The review from its change set to its summary line (the rest holds hashes and the home's path)."""
    return text[text.index("\nChanges") + 1 :]


def test_golden_vm_resize_review_shows_each_field_before_and_after(cli, staged: Home) -> None:
    args = ("vm-resize", "--param", "vmid=1031", "--param", "cores=8", "--param", "memory=16384")
    text = _review(cli, staged, *args, "--param", "disk_size=120G")
    _golden("vm-resize-review.txt", _changes_part(text))


def test_golden_cluster_teardown_review_destroys_the_vms_with_their_disks(cli, staged: Home) -> None:
    text = _review(cli, staged, "cluster-teardown", "--profile", "talos-staging")
    _golden("cluster-teardown-review.txt", _changes_part(text))


def test_text_json_and_html_show_the_same_change_set(cli, staged: Home, tmp_path: Path) -> None:
    page = tmp_path / "teardown.html"
    base = ("run", "cluster-teardown", "--profile", "talos-staging", "--simulate", "--dry-run")
    text = cli("--home", str(staged.root), *base).stdout
    data = json.loads(cli("--home", str(staged.root), *base, "--json", "--html", str(page)).stdout)
    assert data["change_summary"] == text.rstrip().splitlines()[-1]
    assert data["change_counts"]["destroy"] == 3 and data["change_counts"]["shutdown"] == 3
    assert [c["id"] for c in data["changes"] if c["action"] == "destroy"] == ["1031", "1032", "1033"]
    html = page.read_text(encoding="utf-8")
    assert data["change_summary"] in html.replace("&#39;", "'")


def test_the_teardown_page_in_a_browser_shows_its_vms_under_will_be_destroyed(
    cli, staged: Home, chromium, tmp_path: Path
) -> None:
    page = tmp_path / "teardown.html"
    result = cli(
        "--home",
        str(staged.root),
        "run",
        "cluster-teardown",
        "--profile",
        "talos-staging",
        "--simulate",
        "--dry-run",
        "--html",
        str(page),
    )
    assert result.exit_code == 0, result.stderr
    dom = load(chromium, page, "talos-staging-teardown-plan")
    text = dom.text
    assert text(dom.find("change-summary")).startswith("Plan: 0 to create, 0 to change, 3 to destroy; 3 to shutdown.")
    destroyed = text(dom.find("changes-destroy"))
    assert destroyed.startswith("will be destroyed")
    for vmid, name, node in (
        ("1031", "stg-cp01", "pve01"),
        ("1032", "stg-cp02", "pve02"),
        ("1033", "stg-cp03", "pve03"),
    ):
        assert f"- vm {vmid} {name} ({node}, stopped)" in destroyed
        card = text(dom.find(f"node-{node}"))
        assert "Will be destroyed" in card and name in card and "loses disks: scsi0 100G on local-lvm" in card
        assert "Already on the cluster" not in card and "adds nothing; frees 4 cores, 8 GiB" in card
    assert destroyed.count("loses disks: scsi0 100G on local-lvm") == 3


def test_the_run_page_of_a_teardown_shows_its_vms_destroyed_not_new(cli, staged: Home, tmp_path: Path) -> None:
    ran = cli(
        "--home",
        str(staged.root),
        "run",
        "cluster-teardown",
        "--profile",
        "talos-staging",
        "--simulate",
        "--yes",
        "--json",
    )
    assert ran.exit_code == 0, ran.stderr
    run_id = json.loads(ran.stdout.splitlines()[-1])["run_id"]
    page = tmp_path / "run.html"
    assert cli("--home", str(staged.root), "runs", "show", run_id, "--html", str(page)).exit_code == 0
    text = " ".join(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")).split())
    for name in ("stg-cp01", "stg-cp02", "stg-cp03"):
        assert f"Destroyed by this run {name}" in text
    assert "adds 4 cores" not in text and text.count("adds nothing; frees 4 cores, 8 GiB") == 3
