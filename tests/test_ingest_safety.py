"""Ingested steps are safe to review and to run: what each changes is said, reads are read-only,
unknown effects and destructive steps stay gated (after ``runbook trust`` too), and commands that
need a terminal never become steps (issue 18, item 4).

The end-to-end part runs the corpus page tests/ingest_corpus/decommission-vm.md against the
simulated cluster (fakepve over HTTPS on loopback): untrusted, it does not run for real; trusted,
a real run still stops at every destroy and power gate before it changes anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.ingest import effects
from engine.ingest.adapt import Adapter
from engine.ingest.classify import Classifier
from engine.ingest.page import Code
from engine.load.config import ClusterConfig
from engine.load.home import Home
from engine.load.yamlsource import read_yaml_file

REPO = Path(__file__).resolve().parents[1]
DECOMMISSION = REPO / "tests" / "ingest_corpus" / "decommission-vm.md"


def _adapted(src: str) -> list[tuple[str, dict[str, Any], str]]:
    """(kind, attributes, body) of each step ``src`` becomes on this repository's cluster."""
    doc = read_yaml_file(REPO / "cluster-config.yaml", "cluster-config.yaml")
    classifier = Classifier()
    adapter = Adapter(ClusterConfig(doc.data, doc).data, classifier)
    drafts = classifier.block(Code(src, "bash", 1, "Heading"))
    adapter.scan_templates(drafts)
    out = []
    for index, draft in enumerate(drafts):
        if draft.kind == "prose":
            out.append(("prose", {}, draft.warnings[0]))
            continue
        step = adapter.adapt(draft, f"s{index}")
        out.append((step.kind, step.attrs, step.body))
    return out


def _one(src: str) -> tuple[str, dict[str, Any], str]:
    steps = _adapted(src)
    assert len(steps) == 1, steps
    return steps[0]


# ------------------------------------------------------------------ qm and pct: calls of PVE's API


@pytest.mark.parametrize(
    ("src", "head", "params"),
    [
        (
            "qm create 200 --name web --memory 2048 --scsi0 local-zfs:32",
            "POST /nodes/{{ node }}/qemu",
            ['vmid: "{{ vmid }}"', "name: web", "memory: 2048", 'scsi0: "{{ defaults.storage }}:32"'],
        ),
        ("qm set 200 --onboot 1", "PUT /nodes/{{ node }}/qemu/{{ vmid }}/config", ["onboot: 1"]),
        ("qm start 200", "POST /nodes/{{ node }}/qemu/{{ vmid }}/status/start", []),
        ("qm shutdown 200 --timeout 60", "POST /nodes/{{ node }}/qemu/{{ vmid }}/status/shutdown", ["timeout: 60"]),
        ("qm destroy 200 --purge", "DELETE /nodes/{{ node }}/qemu/{{ vmid }}", ["purge: 1"]),
        ("qm clone 120 1300 --name b --full", "POST /nodes/{{ node }}/qemu/{{ template_vmid }}/clone", ["full: 1"]),
        ("qm template 120", "POST /nodes/{{ node }}/qemu/{{ template_vmid }}/template", []),
        ("qm resize 200 scsi0 +5G", "PUT /nodes/{{ node }}/qemu/{{ vmid }}/resize", ["disk: scsi0", 'size: "+5G"']),
        ("qm disk resize 200 scsi0 40G", "PUT /nodes/{{ node }}/qemu/{{ vmid }}/resize", ['size: "40G"']),
        ("qm migrate 200 pve3 --online", "POST /nodes/{{ node }}/qemu/{{ vmid }}/migrate", ["online: 1"]),
        ("qm snapshot 200 before --vmstate 0", "POST /nodes/{{ node }}/qemu/{{ vmid }}/snapshot", ["snapname: before"]),
        ("qm rollback 200 before", "POST /nodes/{{ node }}/qemu/{{ vmid }}/snapshot/before/rollback", []),
        ("qm delsnapshot 200 before", "DELETE /nodes/{{ node }}/qemu/{{ vmid }}/snapshot/before", []),
        (
            "pct create 300 local:vztmpl/debian-12.tar.zst --hostname ct",
            "POST /nodes/{{ node }}/lxc",
            ['vmid: "{{ vmid }}"', 'ostemplate: "local:vztmpl/debian-12.tar.zst"', "hostname: ct"],
        ),
        ("pct stop 300", "POST /nodes/{{ node }}/lxc/{{ vmid }}/status/stop", []),
        ("ssh root@pve2 'qm start 200'", "POST /nodes/{{ node }}/qemu/{{ vmid }}/status/start", []),
    ],
)
def test_qm_and_pct_become_the_api_call_they_make(src: str, head: str, params: list[str]) -> None:
    kind, attrs, body = _one(src)
    lines = body.splitlines()
    assert (kind, lines[0]) == ("api", head), body
    for line in params:
        assert line in lines, body
    destructive = any(w in src for w in ("destroy", "shutdown", "stop", "rollback", "delsnapshot"))
    assert attrs.get("destructive", False) is destructive


@pytest.mark.parametrize(
    ("src", "attribute"),
    [
        ("qm start $(cat vmid)", "review"),  # computed: kept whole, gated
        ("qm set 100 --delete net1 > /tmp/out", "review"),
        ("qm start", "review"),
        ("qm config 100 | grep net0", "changes"),  # a read piped into a read: changes nothing
    ],
)
def test_qm_that_is_not_one_api_call_stays_a_node_command(src: str, attribute: str) -> None:
    kind, attrs, _ = _one(src)
    assert kind == "ssh" and attrs[attribute] == ([] if attribute == "changes" else True), attrs


# ------------------------------------------------------------------ script steps say what they change


@pytest.mark.parametrize(
    ("src", "changes"),
    [
        (
            "qm importdisk 200 talos.raw local-lvm",
            {"action": "change", "resource": "vm", "id": "{{ vmid }}"},
        ),
        ("pveum user add ci@pve --comment 'CI'", {"action": "create", "resource": "user", "id": "ci@pve"}),
        (
            "talosctl apply-config --insecure --nodes <CP_IP> --file controlplane.yaml",
            {"action": "apply-config", "resource": "talos-node", "id": "{{ cp_ip }}"},
        ),
        ("talosctl bootstrap -n <CP_IP>", {"action": "bootstrap", "resource": "talos-node", "id": "{{ cp_ip }}"}),
        ("kubectl apply -f app.yaml", {"action": "apply", "resource": "kubernetes-objects", "id": "app.yaml"}),
        (
            "wget -O /var/lib/vz/template/iso/x.iso https://e/x.iso",
            {"action": "download", "resource": "file", "id": "{{ node }}:/var/lib/vz/template/iso/x.iso"},
        ),
        ("talosctl kubeconfig ./kc", {"action": "write", "resource": "file", "id": "./kc"}),
        ("echo hello > notes.txt", {"action": "write", "resource": "file", "id": "notes.txt"}),
    ],
)
def test_a_changing_script_step_declares_its_changes(src: str, changes: dict[str, str]) -> None:
    _, attrs, _ = _one(src)
    assert attrs["changes"] == changes
    assert "review" not in attrs and "readonly" not in attrs


@pytest.mark.parametrize(
    "src",
    ["talosctl reset --nodes 10.0.0.5 --graceful=false", "pveum user delete ci@pve", "kubectl delete -f app.yaml"],
)
def test_a_destructive_script_step_is_marked_so(src: str) -> None:
    _, attrs, _ = _one(src)
    assert attrs["destructive"] is True and attrs["changes"]


@pytest.mark.parametrize(
    "src",
    [
        "qm list",
        "qm config 200",
        "pct status 300",
        "talosctl get members --nodes 10.0.0.5",
        "talosctl health",
        "talosctl version",
        "kubectl get pods -A",
        "cat /etc/pve/storage.cfg",
        "ls -l /var/lib/vz/template/iso",
    ],
)
def test_reads_change_nothing_and_are_not_gated(src: str) -> None:
    """``changes: []``, not ``readonly``: a dry-run of a runbook nobody reviewed never runs the page's shell."""
    _, attrs, _ = _one(src)
    assert attrs["changes"] == [] and "review" not in attrs and "readonly" not in attrs


@pytest.mark.parametrize(
    "src",
    [
        "terraform apply",
        "kubectl exec web -- rm -rf /tmp/x",
        "talosctl apply-config --file cp.yaml",  # on the talosconfig's default nodes: not on the line
        "make deploy",
        "echo $(rm -rf /tmp/x)",  # a read around a command of its own
        "cat `ls /etc/pve`",
        "ls > $(mktemp)",
    ],
)
def test_an_unknown_effect_stays_gated(src: str) -> None:
    _, attrs, _ = _one(src)
    assert attrs.get("review") is True and "changes" not in attrs and "readonly" not in attrs


# ------------------------------------------------------------------ interactive commands are never steps


@pytest.mark.parametrize(
    ("src", "why"),
    [
        ("talosctl dashboard --nodes 10.0.0.5", "dashboard"),
        ("talosctl edit machineconfig -n 10.0.0.5", "editor"),
        ("kubectl edit configmap coredns -n kube-system", "editor"),
        ("kubectl exec -it web -- sh", "interactive session"),
        ("kubectl run -i -t --rm debug --image=busybox -- sh", "interactive session"),
        ("kubectl logs -f deploy/web", "follows"),
        ("ssh root@pve1", "login"),
        ("ssh -t root@pve1 htop", "monitor"),
        ("vi /etc/hosts", "editor"),
        ("sudo nano /etc/network/interfaces", "editor"),
        ("top", "monitor"),
        ("watch -n1 qm list", "repeats"),
        ("less /var/log/syslog", "pager"),
        ("journalctl -f -u pveproxy", "follows"),
        ("pct enter 300", "shell"),
        ("qm terminal 200", "console"),
    ],
)
def test_interactive_commands_stay_prose(src: str, why: str) -> None:
    kind, _, said = _one(src)
    assert kind == "prose" and "interactive" in said and why in said


def test_interactive_commands_are_kept_as_prose_and_said(
    cli: Callable[..., Any], make_home: Callable[..., Home], tmp_path: Path
) -> None:
    home = make_home()
    page = tmp_path / "page.md"
    page.write_text(
        "# Look around\n\n```bash\nqm start 120\ntalosctl dashboard -n 10.0.0.5\nkubectl edit cm x\n```\n",
        encoding="utf-8",
    )
    made = cli("--home", str(home.root), "ingest", str(page), "--name", "look", "--yes")
    assert made.exit_code == 0, made.output
    text = (home.runbooks_dir / "look.md").read_text(encoding="utf-8")
    fences = [line.split()[0] for line in text.splitlines() if line.startswith("```") and line != "```"]
    assert fences == ["```api", "```text", "```text"], fences  # one step; the two others quoted
    assert "talosctl dashboard -n 10.0.0.5" in text and "kubectl edit cm x" in text  # kept, as prose
    assert "is interactive" in made.stdout and "talosctl dashboard" in made.stdout


# ------------------------------------------------------------------ trust never lifts a destructive gate


def _run(cli: Callable[..., Any], home: Home, *args: str) -> Any:
    return cli("--home", str(home.root), *args, env={"HOME": str(home.root)})


def _vms(home: Home) -> dict[int, str]:
    state = json.loads((home.state_dir / "sim" / "state.json").read_text(encoding="utf-8"))
    return {int(vm["vmid"]): vm["status"] for vm in state["vms"]}


def test_trust_never_removes_the_destroy_gates(cli: Callable[..., Any], make_home: Callable[..., Home]) -> None:
    home = make_home()
    assert _run(cli, home, "run", "cluster-create", "--profile", "talos-staging", "--simulate", "--yes").exit_code == 0
    made = _run(cli, home, "ingest", str(DECOMMISSION), "--name", "decommission", "--yes")
    assert made.exit_code == 0, made.output
    before = _vms(home)
    assert before[1031] == "running"
    real = ("run", "decommission", "--simulate", "--param", "vmid=1031")

    untrusted = _run(cli, home, *real, "--yes")  # even with every gate approved
    assert untrusted.exit_code == 7 and "has not been reviewed" in untrusted.stderr
    assert _vms(home) == before

    assert _run(cli, home, "trust", "decommission", "--yes").exit_code == 0
    plan = json.loads(_run(cli, home, *real, "--dry-run", "--json").stdout)
    gated = {s["step"]: s["gated"] for s in plan["steps"]}
    assert gated == {
        "before_you_start": False,  # qm list: changes nothing
        "stop_the_guest": True,
        "stop_the_guest_2": True,
        "destroy_it": True,
        "the_second_vm_through_the_api": True,
    }
    stopped = _run(cli, home, *real, "--approve", "stop_the_guest")  # no terminal, not every gate approved
    assert stopped.exit_code == 4, stopped.output
    assert "nothing was changed" in stopped.stderr
    for step in ("stop_the_guest_2", "destroy_it", "the_second_vm_through_the_api"):
        assert f"--approve {step}" in stopped.stderr
    assert _vms(home) == before  # not even the approved shutdown ran


def test_an_unknown_effect_stays_gated_after_trust(
    cli: Callable[..., Any], make_home: Callable[..., Home], tmp_path: Path
) -> None:
    home = make_home()
    page = tmp_path / "deploy.md"
    page.write_text("# Deploy\n\n```bash\nmake deploy\n```\n\n```bash\nkubectl get nodes\n```\n", encoding="utf-8")
    assert _run(cli, home, "ingest", str(page), "--name", "deploy", "--yes").exit_code == 0
    assert _run(cli, home, "trust", "deploy", "--yes").exit_code == 0
    refused = _run(cli, home, "run", "deploy")
    assert refused.exit_code == 4 and "ingested command not yet reviewed" in refused.stderr


def test_the_effects_table_is_well_formed() -> None:
    """Every rule of engine/data/ingest-effects.yaml is a read, an interactive reason, or a change
    whose id template only uses the forms effects.py resolves."""
    for program, entry in effects.table().items():
        assert set(entry) <= {"value_options", "rules"}, program
        options = entry.get("value_options", [])
        assert options == "all" or all(o.startswith("-") for o in options), program
        for sub, rules in entry["rules"].items():
            for rule in rules if isinstance(rules, list) else [rules]:
                where = f"{program} {sub}"
                if rule == "read":
                    continue
                assert isinstance(rule, dict), where
                assert set(rule) <= {"with", "interactive", "action", "resource", "id", "destructive"}, where
                if "action" in rule:
                    assert re.fullmatch(r"[a-z][a-z-]*", rule["action"]) and rule["resource"], where
                    for template in rule["id"] if isinstance(rule["id"], list) else [rule["id"]]:
                        for token in re.findall(r"\{([^{}]*)\}", template):
                            for alternative in token.split("|"):
                                assert re.fullmatch(r"node|=.*|\d+|-[-\w]+(,-[-\w]+)*", alternative), where
