"""Preflight: what a run needs on this machine is checked before its first change.

Found on a real cluster: a Talos profile's run cloned, configured and started five VMs, and only
then failed on "talosctl is not installed". The programs come from the plan (steps that may run),
their kinds' executors and the shell parser reading local scripts; talosctl's version is compared
with the profile's Talos version.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from engine import exitcodes
from engine.run.preflight import talosctl_version, version_problem
from engine.shell.programs import programs
from tests.support.cluster import LiveCluster

STAGING = ("stg-cp01", "stg-cp02", "stg-cp03")


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("talosctl gen config a b | tee out.log", ["talosctl", "tee"]),
        ('cd "$dir" && kubectl get nodes; echo done', ["kubectl"]),
        ("for n in 1 2; do sudo -u root timeout -s KILL 5 flux check; done", ["sudo", "timeout", "flux"]),
        ("version=$(jq -r .a < f | xz -d)", ["jq", "xz"]),
        ('deploy() { helm upgrade x; }\ndeploy\n"$tool" run\n./build.sh\n/usr/bin/env true', ["helm"]),
        (
            "env A=1 B=2 ansible-playbook -i x y.yaml\nANSIBLE_X=1 ansible-galaxy install",
            ["env", "ansible-playbook", "ansible-galaxy"],
        ),
        ("if test -f x; then printf '%s' ok; fi\nread -r line < f", []),
        ("echo 'unclosed", []),  # a script that does not parse names nothing; the step says why when it runs
    ],
)
def test_the_programs_a_script_runs_are_read_from_its_parse(script: str, expected: list[str]) -> None:
    assert programs(script) == expected


@pytest.mark.parametrize(
    ("output", "stops", "warns"),
    [
        ("Client:\nTalos v1.9.5\n", False, False),
        ("Client:\n\tTag:         v1.10.0\n", False, False),
        ("Client:\nTalos v1.8.3\n", True, False),
        ("Client:\nTalos v1.12.0\n", False, True),
        ("", False, True),
    ],
)
def test_talosctl_is_compared_with_the_profiles_talos_version(output: str, stops: bool, warns: bool) -> None:
    problem, warning = version_problem(talosctl_version(output), "v1.9.5", "talos.version in clusters/x.yaml")
    assert (problem is not None, warning is not None) == (stops, warns)
    if problem:
        assert "older than Talos v1.9.5 (talos.version in clusters/x.yaml)" in problem and "install" in problem


def _staging_vms(cluster: LiveCluster) -> list[str]:
    return cluster.pve.do(lambda: sorted(vm.name for vm in cluster.pve.pve.vms if not vm.template))


def test_a_talos_run_without_talosctl_stops_before_the_first_clone(cluster: LiveCluster) -> None:
    path = os.environ["PATH"]  # without the fake talosctl's folder, which the cluster's env puts first
    if shutil.which("talosctl", path=path):
        pytest.skip("a real talosctl is installed on this machine")
    result = cluster.run("run", "e2e-create", "--profile", "talos-staging", "--yes", extra_env={"PATH": path})
    assert result.returncode == exitcodes.TOOL_MISSING, result.stderr
    assert "stopped before changing anything" in result.stderr
    assert "talosctl (needed by " in result.stderr and "talos.dev" in result.stderr
    assert _staging_vms(cluster) == [], "nothing was cloned"
    assert json.loads(cluster.run("runs", "--json").stdout)["runs"] == [], "no run was started"


def test_a_talosctl_older_than_the_profiles_talos_stops_the_run(cluster: LiveCluster) -> None:
    cluster.talos.respond(argv=["version"], stdout="Client:\nTalos v1.8.0\n")
    result = cluster.run("run", "e2e-create", "--profile", "talos-staging", "--yes")
    assert result.returncode == exitcodes.TOOL_MISSING, result.stderr
    assert "talosctl v1.8 is older than Talos v1.9.5 (talos.version in clusters/talos-staging.yaml)" in result.stderr
    assert _staging_vms(cluster) == []


MISSING_LATE = """\
---
name: missing-late
format: 2
description: Changes the cluster, then runs a program this machine does not have (tests only).
---

## Create a VM

```api {id: create, check: "false"}
POST /nodes/pve01/qemu
vmid: 1999
name: preflight-probe
```

## Then a tool nobody installed

```local {id: late}
definitely-not-installed-rb-tool --version
```

## A step that never runs needs nothing

```local {id: never, when: "false"}
another-tool-nobody-has
```
"""


def test_a_program_a_late_local_step_needs_stops_the_run_before_its_first_step(cli, make_home) -> None:
    home = make_home({"runbooks/missing-late.md": MISSING_LATE})
    result = cli("--home", str(home.root), "run", "missing-late", "--simulate")
    assert result.exit_code == exitcodes.TOOL_MISSING, result.output
    assert "definitely-not-installed-rb-tool (needed by late): install it, or put it on PATH" in result.stderr
    assert "another-tool-nobody-has" not in result.stderr
    status = cli("--home", str(home.root), "sim", "status", "--json")
    assert "preflight-probe" not in status.stdout, "the VM of the first step was not created"
