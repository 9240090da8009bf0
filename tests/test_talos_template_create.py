"""talos-template-create (operation 50) takes the Talos version and the schematic from the profile when
run with ``--profile``, refuses to guess without one, and leaves a VMID in use alone; run on the
simulated cluster, whose state is checked afterwards."""

from __future__ import annotations

import json
from typing import Any

from tests.test_runbooks_simulated import SCHEMATIC, Sim, sim  # noqa: F401  (the fixture)


def test_with_a_profile_the_version_and_schematic_are_the_profiles(sim: Sim) -> None:  # noqa: F811
    run = sim.run("talos-template-create", "vmid=120", "node=pve03", profile="talos-staging")
    made = sim.vm_state(120)
    assert (made["name"], made["node"], made["template"]) == ("talos-v1.9.5", "pve03", True)
    assert f"schematic {SCHEMATIC}" in made["config"]["description"]
    image = f"/var/lib/vz/template/iso/talos-v1.9.5-{SCHEMATIC[:12]}-nocloud-amd64.raw"
    assert image in sim.state()["files"]["pve03"], "the image is kept without remove_image"
    assert run.output("verify_template")["tags"] == "template;talos"

    again = sim.run("talos-template-create", "vmid=120", "node=pve03", profile="talos-staging")
    changing = ("create_vm", "fetch_image", "import_disk", "boot_order", "make_template", "tag_template")
    assert [again.status(step) for step in changing] == ["skipped"] * len(changing), "a second run changes nothing"


def test_a_parameter_wins_over_the_profile(sim: Sim) -> None:  # noqa: F811
    sim.run("talos-template-create", "vmid=121", "node=pve01", "version=v1.9.6", profile="talos-staging")
    assert sim.vm_state(121)["name"] == "talos-v1.9.6"


def _refused(sim: Sim, *args: str) -> Any:  # noqa: F811
    params = [a for p in args for a in ("--param", p)]
    result = sim.invoke("run", "talos-template-create", "--simulate", "--yes", "--json", *params)
    assert result.exit_code == 5, result.output
    return json.loads(result.stdout.splitlines()[-1])


def test_without_a_profile_or_a_version_it_refuses_before_any_change(sim: Sim) -> None:  # noqa: F811
    report = _refused(sim, "vmid=122", "node=pve01")
    assert "or run with --profile NAME of a Talos profile" in report["message"]
    assert 122 not in sim.vms()


def test_a_vmid_in_use_is_never_touched(sim: Sim) -> None:  # noqa: F811
    report = _refused(sim, "vmid=102", "node=pve01", "version=v1.9.5", f"schematic={SCHEMATIC}")
    assert "VMID 102 is used by" in report["message"] and "Choose a free VMID, e.g. 1" in report["message"]
    kept = sim.vm_state(102)
    assert (kept["name"], kept["template"]) == ("template-102", True) and "Talos" not in kept["config"].get(
        "description", ""
    )
    assert [s["step"] for s in report["steps"] if s["status"] == "succeeded"] == ["api_version"]
