"""The facts templates see (``cluster``, ``profile.members``, ``plan.template``, ``vm.mac``,
``bytes``, ``tagged``): read from fakepve over verified HTTPS, refreshed after a changing step,
Unknown offline and for what an earlier step of the plan changes, and located errors for bad uses."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import jq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.load.facts import ExistingVm, Facts, Figures, Planned, members
from engine.load.placement import compute_plan
from engine.runbook.facts_view import ClusterView, FactMissing, ProfileView, tagged, to_bytes
from engine.runbook.parser import parse_runbook
from engine.runbook.render import reads_facts
from engine.runbook.unknown import Unknown, UnknownValue, describe
from tests.support.cluster import LiveCluster

RANGES = {"templates": {"min": 100, "max": 199}, "vms": {"min": 1000, "max": 1999}}


def _book(cluster: LiveCluster, name: str, body: str) -> None:
    text = f"---\nname: {name}\ndescription: facts probe\nformat: 2\nrequires: [profile]\n---\n\n# Probe\n\n"
    (cluster.home / "runbooks" / f"{name}.md").write_text(text + textwrap.dedent(body))


def _plan(cluster: LiveCluster, name: str, *more: str) -> dict[str, Any]:
    result = cluster.run("run", name, "--profile", "talos-staging", "--dry-run", "--json", *more)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _step(planned: dict[str, Any], step: str) -> dict[str, Any]:
    return next(s for s in planned["steps"] if s["step"] == step)


PROBE = """\
    ```local {id: probe, readonly: true, json: true}
    printf '%s\\n' {{ {
      'template_name': cluster.vms[101].name,
      'by_name': cluster.vms['debian-12'].vmid,
      'by_string': cluster.vms['101'].template,
      'has_101': 101 in cluster.vms,
      'absent': cluster.vms.get(99999),
      'tags': cluster.vms[101].tags,
      'disk': cluster.vms[101].disk_bytes,
      'memory': cluster.vms[101].memory_bytes,
      'type': cluster.vms[101].type,
      'nodes': cluster.nodes | map(attribute='name') | list,
      'pve01_online': cluster.nodes['pve01'].online,
      'storages': cluster.storages | map(attribute='name') | unique | list,
      'next_vm': cluster.next_vmid('vms'),
      'next_template': cluster.next_vmid([100, 199]),
      'name': cluster.name,
      'members': profile.members | length,
      'template': plan.template,
      'mac': plan.vms[0].mac,
      'disk_bytes': plan.vms[0].disk_bytes,
      'bytes': bytes('100G'),
      'tagged': cluster.vms | tagged(['template', 'talos']) | map(attribute='vmid') | list,
    } | tojson }}
    ```
"""


def test_each_fact_is_read_from_the_cluster_over_https(cluster: LiveCluster) -> None:
    _book(cluster, "facts-probe", PROBE)
    seen = _step(_plan(cluster, "facts-probe"), "probe")["output"]["json"]
    assert seen["template_name"] == "talos-v1.9.5" and seen["by_name"] == 102 and seen["by_string"] is True
    assert seen["has_101"] is True and seen["absent"] is None
    assert seen["tags"] == ["template", "talos"] and seen["type"] == "qemu"
    assert seen["disk"] == 4 * 1024**3 and seen["memory"] == 2048 * 1024**2
    assert seen["nodes"] == ["pve01", "pve02", "pve03"] and seen["pve01_online"] is True
    assert "local-lvm" in seen["storages"]
    # 1031-1033 are the staging plan's own VMIDs: never handed out, though not on the cluster yet
    assert seen["next_vm"] == 1000 and seen["next_template"] == 100
    assert seen["name"]  # the PVE cluster's name, from /cluster/status
    assert seen["members"] == 0
    assert seen["template"] == {"vmid": 101, "node": "pve01", "exists": True}
    assert seen["mac"] == "02:70:76:00:04:07"  # VMID 1031 = 0x000407
    assert seen["disk_bytes"] == to_bytes(_staging_disk(cluster)) and seen["bytes"] == 100 * 1024**3
    assert seen["tagged"] == [101, 102]


def _staging_disk(cluster: LiveCluster) -> str:
    import yaml

    profile = yaml.safe_load((cluster.home / "clusters" / "talos-staging.yaml").read_text())
    return str(profile["nodes"]["controlplane"]["disk"])


CLONE_THEN_READ = """\
    ```api {id: clone}
    POST /nodes/pve01/qemu/101/clone
    newid: 1500
    name: probe-clone
    ```

    ```local {id: after, readonly: true, json: true}
    printf '%s\\n' {{ {'there': 1500 in cluster.vms, 'name': cluster.vms[1500].name} | tojson }}
    ```
"""


def test_a_step_after_a_clone_sees_the_clone(cluster: LiveCluster) -> None:
    _book(cluster, "facts-refresh", CLONE_THEN_READ)
    result = cluster.run("run", "facts-refresh", "--profile", "talos-staging", "--json", "--yes")
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout.splitlines()[-1])["run_id"]
    shown = json.loads(cluster.run("runs", "show", run_id, "--json").stdout)
    after = next(s for s in shown["steps"] if s["step"] == "after")
    assert after["output"]["json"] == {"there": True, "name": "probe-clone"}


def test_a_dry_run_shows_a_fact_an_earlier_step_changes_as_unknown_naming_it(cluster: LiveCluster) -> None:
    _book(cluster, "facts-refresh", CLONE_THEN_READ)
    after = _step(_plan(cluster, "facts-refresh"), "after")
    assert after["status"] == "unknown"
    assert "cluster.vms (step clone changes which VMs there are)" in after["reason"], after


def test_offline_the_facts_are_known_after_run(cluster: LiveCluster) -> None:
    _book(cluster, "facts-probe", PROBE)
    probe = _step(_plan(cluster, "facts-probe", "--offline"), "probe")
    assert probe["status"] == "unknown"
    assert probe["reason"] == "what it sends depends on cluster.vms, known only after run", probe


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("cluster.vms[99999].name", "no VM 99999 in cluster.vms (101 talos-v1.9.5, 102 debian-12)"),
        ("cluster.next_vmid('nope')", "no range 'nope' in vmid_ranges of the cluster config (ranges: templates, vms)"),
        ("cluster.nodes['pve09']", 'no node "pve09" in cluster.nodes (pve01, pve02, pve03)'),
    ],
)
def test_a_bad_use_is_a_located_error(cluster: LiveCluster, expression: str, message: str) -> None:
    _book(cluster, "facts-bad", f"```local {{id: bad, readonly: true}}\necho {{{{ {expression} }}}}\n```\n")
    result = cluster.run("run", "facts-bad", "--profile", "talos-staging", "--dry-run")
    assert result.returncode != 0
    assert "facts-bad.md:11: body: template error: " in result.stderr and message in result.stderr, result.stderr


# ---------------------------------------------------------------- the views, without a cluster


def _vm(vmid: int, name: str, tags: tuple[str, ...] = (), **kw: Any) -> ExistingVm:
    return ExistingVm(vmid, name, "pve01", tags, **kw)


FACTS = Facts(
    vms=(
        _vm(101, "tpl", ("template", "talos"), template=True),
        _vm(1031, "stg-cp01", ("staging", "talos"), status="running", figures=Figures(maxmem=2**30)),
        _vm(1032, "stg-cp02", ("staging",)),
        _vm(200, "dns", ("staging", "talos"), type="lxc"),
    )
)


def test_members_is_every_profile_tag_on_a_qemu_vm_not_a_template() -> None:
    assert [vm.vmid for vm in members(FACTS.vms, ("staging", "talos"))] == [1031]
    assert members(FACTS.vms, ()) == ()
    profile = ProfileView({"tags": ["staging", "talos"]}, lambda: FACTS)
    assert [vm["name"] for vm in profile.members] == ["stg-cp01"]
    assert json.dumps(profile) == '{"tags": ["staging", "talos"]}'  # still the profile, for jq and JSON


def test_placement_adopts_the_profiles_members_by_name() -> None:
    config = {
        "cluster": {"nodes": [{"name": "pve01"}]},
        "vmid_ranges": RANGES,
        "tags": {"templates": ["template", "talos"]},
    }
    spec = {
        "name": "p",
        "tags": ["staging", "talos"],
        "nodes": {"controlplane": {"count": 2, "name_prefix": "stg-cp0", "cores": 1, "memory": 1, "disk": "1G"}},
    }
    spec["nodes"]["controlplane"]["name_prefix"] = "stg-cp"
    plan = compute_plan(spec, config, FACTS.vms)
    # stg-cp01 carries every tag: adopted; stg-cp02 lacks one: its name is not enough
    assert [(vm.name, vm.existing) for vm in plan.vms] == [("stg-cp01", True), ("stg-cp02", False)]


def test_a_planned_change_makes_only_what_it_changes_unknown() -> None:
    facts = FACTS.with_planned([Planned("vm", "1031", "act", "", "stopped", "shutdown", ("status",))])
    view = ClusterView(lambda: facts, RANGES)
    vm = view.vms[1031]
    assert vm["node"] == "pve01" and isinstance(vm["status"], Unknown)
    assert describe(vm["status"]) == "cluster.vms[1031].status (step shutdown changes it)"
    assert len(view.vms) == 4  # a shutdown does not change which VMs there are
    created = FACTS.with_planned([Planned("vm", "1500", "create", "", "stopped", "clone", ("name",))])
    view = ClusterView(lambda: created, RANGES)
    with pytest.raises(UnknownValue, match=r"cluster.vms \(step clone changes which VMs there are\)"):
        list(view.vms)
    assert describe(view.vms[1500]) == "cluster.vms[1500] (step clone changes which VMs there are)"
    assert view.next_vmid("vms") == 1000 and view.next_vmid([1500, 1501]) == 1501


def test_offline_views_are_unknown_and_missing_items_raise() -> None:
    offline = ClusterView(lambda: None, RANGES)
    assert describe(offline.vms) == "cluster.vms" and describe(offline.next_vmid("vms")) == "cluster.next_vmid('vms')"
    view = ClusterView(lambda: FACTS, RANGES)
    with pytest.raises(FactMissing, match=r"cluster.next_vmid\(\[5, 1\]\): give a vmid_ranges name"):
        view.next_vmid([5, 1])
    assert view.vms.get("nope") is None and "stg-cp01" in view.vms and 4242 not in view.vms


def test_bytes_and_tagged() -> None:
    assert to_bytes("100G") == 100 * 2**30 and to_bytes("512M") == 512 * 2**20 and to_bytes("2TiB") == 2 * 2**40
    assert to_bytes(42) == 42
    # a size known only at run time (a dry-run's bytes(steps.current.size)) stays unknown, named by its origin
    assert describe(to_bytes(Unknown("steps.current.size"))) == "steps.current.size"
    with pytest.raises(ValueError, match="bytes\\(\\) takes a size such as '100G'"):
        to_bytes("lots")
    assert tagged([{"tags": ["a", "b"]}, {"tags": ["a"]}], ["a", "b"]) == [{"tags": ["a", "b"]}]
    assert tagged([{"tags": ["a"]}], "a") == [{"tags": ["a"]}]


def test_steps_that_read_facts_are_found_in_their_templates() -> None:
    text = (
        "---\nname: t\ndescription: t\n---\n# T\n\n"
        '```local {id: a, when: "profile.members | length > 0"}\ntrue\n```\n\n'
        "```local {id: b}\necho {{ cluster.vms | length }}\n```\n\n"
        "```local {id: c}\necho {{ profile.tags }} {{ plan.vms }}\n```\n\n"
        "```api {id: d, foreach: plan.vms, as: vm}\nPOST /nodes/{{ plan.template.node }}/qemu/1/clone\n```\n"
    )
    book = parse_runbook(text, "runbooks/t.md", "t")
    assert [step.id for step in book.steps if reads_facts(step)] == ["a", "b", "d"]


# ---------------------------------------------------------------------------------- one membership rule

_TAG = st.sampled_from(["a", "b", "dev", "k8s", "talos", "worker"])


@settings(max_examples=200, deadline=None)
@given(
    written=st.lists(_TAG, max_size=5).flatmap(
        lambda tags: st.sampled_from([";", ",", " ", ", ", ";;"]).map(lambda sep: sep.join(tags))
    ),
    wanted=st.lists(_TAG, min_size=1, max_size=3),
)
def test_jq_has_tags_and_the_engine_rule_agree(written: str, wanted: list[str]) -> None:
    """Listings read with GET use jq's ``has_tags``; loops and conditions use ``tagged`` and
    ``profile.members``: the same rule, whatever separators PVE's tag string has."""
    from engine.runbook.extract import FUNCTIONS

    item = {"vmid": 1031, "name": "x", "node": "pve01", "type": "qemu", "tags": written}
    by_jq = jq.compile(FUNCTIONS + "has_tags($t)", args={"t": wanted}).input_value(item).first()
    vm = Facts.from_cluster_resources([item]).vms[0]
    assert by_jq == bool(tagged([{"tags": list(vm.tags)}], wanted)) == vm.carries(tuple(wanted))
