"""Ingest adapts a page's values as an operator would (issue 18, item 2).

Distinct example VMIDs and addresses stay distinct, values named after a VMID follow it, blanks
are required parameters, a ``cd`` holds for the blocks after it, a Talos procedure reads the
profile's plan, and loops of curl calls become ``foreach`` over ``api`` steps. Each test builds the
proposal from a small page and reads the runbook it would write, parsed as the engine parses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from engine.ingest.fetch import Source
from engine.ingest.pipeline import Proposal, propose
from engine.load.config import load_config
from engine.load.home import Home
from engine.load.pveschema import check_request
from engine.runbook.parser import parse_runbook


@pytest.fixture
def ingest(make_home: Callable[..., Home]) -> Callable[[str], Proposal]:
    home = make_home(runbooks=False)
    config = load_config(home)

    def run(page: str) -> Proposal:
        return propose(home, config, Source("page.md", page, "markdown"), "page")

    return run


def _steps(proposal: Proposal) -> dict[str, Any]:
    runbook = parse_runbook(proposal.text, "runbooks/page.md", expected_name="page", require_format=True)
    return {step.id: step for step in runbook.steps}


def _params(proposal: Proposal) -> dict[str, Any]:
    runbook = parse_runbook(proposal.text, "runbooks/page.md", expected_name="page", require_format=True)
    return {p.name: p for p in runbook.parameters}


def test_a_variable_set_again_in_a_later_block_is_a_second_parameter(ingest: Callable[[str], Proposal]) -> None:
    page = "# VMs\n\n" + "".join(
        f"```bash\nVMID={vmid}\npvesh create /nodes/pve1/qemu/$VMID/status/start\n```\n\n" for vmid in (120, 121)
    )
    proposal = ingest(page)
    bodies = [step.body for step in _steps(proposal).values()]
    assert bodies == [
        "POST /nodes/{{ node }}/qemu/{{ vmid }}/status/start\n",
        "POST /nodes/{{ node }}/qemu/{{ vmid_2 }}/status/start\n",
    ]
    params = _params(proposal)
    assert (params["vmid"].default, params["vmid_2"].default) == (1120, 1121)


def test_volumes_folders_and_image_paths_follow_their_vmid(ingest: Callable[[str], Proposal]) -> None:
    page = (
        "# Disks\n\n```bash\n"
        "pvesh create /nodes/pve1/qemu --vmid 120 --scsi0 local-lvm:0,import-from=/var/lib/vz/images/120/a.raw\n"
        "pvesh set /nodes/pve1/qemu/120/config --scsi1 local:120/vm-120-disk-1.raw --name talos-120\n"
        "```\n"
    )
    proposal = ingest(page)
    text = proposal.text
    assert "import-from=/var/lib/vz/images/{{ vmid }}/a.raw" in text
    assert "{{ defaults.storage }}:{{ vmid }}/vm-{{ vmid }}-disk-1.raw" in text
    assert 'name: "talos-{{ vmid }}"' in text
    assert "120" not in text.split("---", 2)[2].replace("1120", "")  # no VMID of the page is left in a step
    assert any("named after VMID 120" in change for change in proposal.changes)


def test_a_number_not_a_vmid_of_the_page_is_left_alone(ingest: Callable[[str], Proposal]) -> None:
    proposal = ingest("# x\n\n```bash\npvesh set /nodes/pve1/qemu/120/config --name web-300\n```\n")
    assert "name: web-300" in proposal.text


def test_addresses_become_parameters_and_a_blank_one_is_required(ingest: Callable[[str], Proposal]) -> None:
    page = (
        "# Net\n\n```bash\n"
        "pvesh set /nodes/pve1/qemu/120/config --ipconfig0 ip=192.168.11.120/24,gw=192.168.11.1\n"
        'pvesh set /nodes/pve1/qemu/120/config --description "endpoint 192.168.11.xxx"\n'
        "pvesh set /nodes/pve1/qemu/120/config --nameserver x.x.x.x\n"
        "```\n"
    )
    proposal = ingest(page)
    params = _params(proposal)
    assert params["ip"].default == "192.168.11.120" and params["gateway"].default == "192.168.11.1"
    assert params["address"].required and params["address_2"].required
    assert "192.168.11.xxx" in params["address"].description
    assert 'ipconfig0: "ip={{ ip }}/24,gw={{ gateway }}"' in proposal.text
    assert "placeholder address 192.168.11.xxx -> parameter address (string, required)" in proposal.changes


def test_a_value_left_out_as_dots_is_a_required_parameter(ingest: Callable[[str], Proposal]) -> None:
    proposal = ingest("# x\n\n```bash\npvesh set /nodes/pve1/qemu/120/config --description ...\n```\n")
    assert _params(proposal)["value"].required
    assert 'description: "{{ value }}"' in proposal.text


def test_blanks_set_in_variables_are_required_too(ingest: Callable[[str], Proposal]) -> None:
    page = (
        "# x\n\n```bash\nIP=10.0.0.xxx\nNAME=...\n"
        "pvesh set /nodes/pve1/qemu/120/config --ipconfig0 ip=$IP/24 --description $NAME\n```\n"
    )
    proposal = ingest(page)
    params = _params(proposal)
    assert params["ip"].required and params["name"].required
    assert 'ipconfig0: "ip={{ ip }}/24"' in proposal.text  # a step, not refused for the blank's format


def test_a_value_built_around_a_run_time_value_is_judged_at_run_time() -> None:
    path, bad = "/nodes/pve01/qemu/1120/config", {"ipconfig0": "ip=nonsense/24"}
    assert check_request("PUT", path, {"ipconfig0": "ip=unknown/24"}, unknown="unknown") == []
    assert check_request("PUT", path, bad, unknown="unknown") and check_request("PUT", path, bad)


def test_a_loop_over_vmids_the_page_made_parameters_runs_over_them(ingest: Callable[[str], Proposal]) -> None:
    page = (
        "# x\n\n```bash\npvesh create /nodes/pve1/qemu --vmid 120\npvesh create /nodes/pve1/qemu --vmid 121\n```\n\n"
        "```bash\nfor id in 120 121; do pvesh create /nodes/pve1/qemu/$id/status/start; done\n```\n"
    )
    steps = _steps(ingest(page))
    loop = [s for s in steps.values() if s.attrs.get("foreach")]
    assert [s.attrs["foreach"] for s in loop] == ["[vmid, vmid_2]"]


def test_curl_loops_become_foreach_over_api_steps_with_the_clusters_tls(ingest: Callable[[str], Proposal]) -> None:
    page = (
        "# x\n\n```bash\nexport PVE=https://pve1.lan:8006/api2/json\n"
        'export AUTH="Authorization: PVEAPIToken=root@pam!x=aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"\n```\n\n'
        '```bash\nfor id in 120 121; do curl -k -X POST -H "$AUTH" "$PVE/nodes/pve1/qemu/$id/status/start"; done\n```\n\n'
        '```bash\nRESPONSE=$(curl -sk -H "$AUTH" "$PVE/nodes/pve1/qemu/120/status/current")\n```\n\n'
        "```bash\necho $RESPONSE | jq -r '.data.status'\n```\n"
    )
    proposal = ingest(page)
    steps = _steps(proposal)
    assert [s.kind for s in steps.values()] == ["api", "api"]
    start, response = steps.values()
    assert start.attrs["foreach"] == "ids" and start.body == "POST /nodes/{{ node }}/qemu/{{ id }}/status/start\n"
    assert response.attrs["extract"] == ".status" and response.attrs["show"] is True
    assert "RESPONSE" not in proposal.text and "curl" not in proposal.text.split("---", 2)[2]
    assert any("TLS is verified as cluster-config.yaml's tls says" in c for c in proposal.changes)


def test_a_cd_holds_for_the_local_steps_after_it(ingest: Callable[[str], Proposal]) -> None:
    page = "# x\n\n```bash\nmkdir -p ~/work && cd ~/work\n```\n\n```bash\nmake build\n```\n"
    proposal = ingest(page)
    steps = list(_steps(proposal).values())
    assert [s.body.splitlines()[-2:] if len(s.body.splitlines()) > 1 else s.body.splitlines() for s in steps] == [
        ["mkdir -p ~/work"],
        ["cd ~/work", "make build"],
    ]
    assert any("'cd ~/work'" in c for c in proposal.changes)


def test_a_block_that_starts_with_cd_runs_the_rest_there(ingest: Callable[[str], Proposal]) -> None:
    page = "# x\n\n```bash\ncd ~/work\nmake build\n```\n\n```bash\nmake install\n```\n"
    steps = list(_steps(ingest(page)).values())
    assert [s.body.splitlines()[-2:] for s in steps] == [["cd ~/work", "make build"], ["cd ~/work", "make install"]]


def test_a_cd_before_node_commands_stays_with_them(ingest: Callable[[str], Proposal]) -> None:
    steps = list(
        _steps(ingest("# x\n\n```bash\ncd /var/lib/vz/images\nqm importdisk 120 a.raw local-lvm\n```\n")).values()
    )
    assert len(steps) == 1 and steps[0].kind == "ssh" and "cd /var/lib/vz/images\nqm importdisk" in steps[0].body


TALOS = """# Talos

```bash
mkdir -p ~/talos && cd ~/talos
```

```bash
talosctl gen config homelab https://<ENDPOINT>:6443
talosctl apply-config --insecure -n <CP_IP> --file controlplane.yaml
talosctl apply-config --insecure -n 192.168.1.60 --file worker.yaml
talosctl bootstrap -n <CP_IP>
```

```bash
nc -zv <CP_IP> 50000
```
"""


def test_a_talos_procedure_reads_the_profiles_plan(ingest: Callable[[str], Proposal]) -> None:
    proposal = ingest(TALOS)
    runbook = parse_runbook(proposal.text, "runbooks/page.md", expected_name="page", require_format=True)
    assert runbook.requires == ("profile",) and not runbook.parameters
    steps = {s.id: s for s in runbook.steps}
    bodies = [s.body.strip().splitlines()[-1] for s in steps.values()]
    assert bodies == [
        "mkdir -p {{ talos_config_dir }}",
        "talosctl gen config {{ profile.name }} https://{{ profile.network.api_endpoint | default(talos.vip.ip) }}:6443",
        "talosctl apply-config --insecure -n {{ vm.ip }} --file controlplane.yaml",
        "talosctl apply-config --insecure -n {{ vm.ip }} --file worker.yaml",
        "talosctl bootstrap -n {{ plan.controlplanes[0].ip }}",
        "nc -zv {{ plan.controlplanes[0].ip }} 50000",
    ]
    loops = [(s.attrs.get("foreach"), s.attrs.get("as")) for s in steps.values()]
    assert loops[2:4] == [("plan.controlplanes", "vm"), ("plan.workers", "vm")]
    assert all(s.attrs.get("when") == "profile.type == 'talos'" for s in steps.values())


def test_a_page_without_talos_needs_no_profile(ingest: Callable[[str], Proposal]) -> None:
    proposal = ingest("# x\n\n```bash\ntalosctl -n 10.0.0.5 version\n```\n")
    assert "requires" not in proposal.text.split("---", 2)[1]
