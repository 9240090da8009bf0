"""cluster-create hands a generic profile's VMs the config's SSH keys (issue 17, operation 8).

The keys come from ``cloudinit.ssh_keys_file`` and reach PVE URL-encoded in ``sshkeys``, with
nothing but ``[-%a-zA-Z0-9_.!~*'()]`` left as it is (what PVE's ``urlencoded`` format accepts:
``/``, ``+``, ``=``, ``@`` and spaces all encoded). Without the file the run says so and the VMs
keep their template's keys. Run end to end on the simulated cluster, whose VM config is checked.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from tests.test_runbooks_simulated import Sim, sim  # noqa: F401  (the fixture)

KEYS = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0+x/y=z ops@bastion\n"
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7/+w== backup key\n"
)


def test_generic_vms_get_the_configured_ssh_keys_url_encoded(sim: Sim) -> None:  # noqa: F811
    (sim.user_home / ".ssh").mkdir()
    (sim.user_home / ".ssh" / "id_ed25519.pub").write_text(KEYS)
    sim.run("cluster-create", profile="dev-generic")
    for vmid in (1201, 1211, 1212, 1213):
        sent = sim.vm_state(vmid)["config"]["sshkeys"]
        assert re.fullmatch(r"[-%a-zA-Z0-9_.!~*'()]+", sent), sent
        assert unquote(sent) == KEYS


def test_without_the_keys_file_the_vms_keep_the_template_keys(sim: Sim) -> None:  # noqa: F811
    run = sim.run("cluster-create", profile="dev-generic")
    assert run.output("ssh_keys") == ""
    assert "does not exist: the VMs keep the SSH keys of their template" in sim.outputs[-1]
    assert "sshkeys" not in sim.vm_state(1201)["config"]


def test_talos_profiles_get_no_ssh_keys(sim: Sim) -> None:  # noqa: F811
    (sim.user_home / ".ssh").mkdir()
    (sim.user_home / ".ssh" / "id_ed25519.pub").write_text(KEYS)
    run = sim.run("cluster-create", profile="talos-staging")
    assert run.status("ssh_keys") == "skipped"
    assert "sshkeys" not in sim.vm_state(1031)["config"]
