"""One executor protocol: every kind (real and simulated) has it, the registry builds executors lazily
by kind, the dispatcher routes by an action's kind, and ``preview`` says what would change, honestly."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.executors.api import ApiExecutor
from engine.executors.base import Change, FieldChange, Registry
from engine.executors.http import HttpExecutor
from engine.executors.shell import LocalExecutor, SshExecutor
from engine.executors.talosctl import TalosctlExecutor
from engine.load.config import load_config
from engine.load.facts import Facts
from engine.load.home import Home
from engine.run.credentials import ApiToken, CredentialError
from engine.run.dispatch import Dispatcher
from engine.run.execution import plan_run
from engine.run.preview import Previewer
from engine.run.runner import Runner
from engine.run.secrets import Secret
from engine.runbook.actions import ApiRequest, HttpRequest, Result, ShellCommand, StepFailed, TalosctlCommand
from engine.runbook.parser import parse_runbook
from engine.sim.http import SimHttpExecutor
from engine.sim.shell import SimShellExecutor
from engine.sim.talos import SimTalosctlExecutor
from engine.sim.wiring import Simulation, _PathLocal
from tests.conftest import REPO

FACTS = Facts.from_cluster_resources(
    [{"type": "qemu", "vmid": 1031, "name": "stg-cp01", "node": "pve01", "status": "running"}]
)
KINDS = {
    ApiExecutor: "api",
    SshExecutor: "ssh",
    LocalExecutor: "local",
    TalosctlExecutor: "talosctl",
    HttpExecutor: "http",
    SimShellExecutor: "ssh",
    SimTalosctlExecutor: "talosctl",
    SimHttpExecutor: "http",
    _PathLocal: "local",
}


@pytest.mark.parametrize("cls", list(KINDS), ids=lambda cls: cls.__name__)
def test_every_executor_has_the_protocol(cls: type) -> None:
    assert cls.kind == KINDS[cls]
    for name in ("execute", "preview", "close"):
        assert callable(getattr(cls, name)), f"{cls.__name__}.{name}"


# ---------------------------------------------------------------- preview


def test_an_api_read_changes_nothing_and_a_write_is_the_change_the_table_of_pve_calls_says() -> None:
    api = ApiExecutor([("pve01", "https://pve01:8006")], _Tokens(), True)
    assert api.preview(ApiRequest("GET", "/nodes/pve01/qemu/1031/config"), FACTS) == []
    (change,) = api.preview(ApiRequest("PUT", "/nodes/pve01/qemu/1031/config", {"cores": 8, "digest": "ab"}), FACTS)
    assert (change.action, change.resource, change.id, change.name) == (
        "change",
        "vm",
        "1031",
        "vm 1031 stg-cp01 (pve01, running)",
    )
    # The config was not read into these facts: the value before is unknown, never made up; the digest is no field.
    assert change.fields == (FieldChange("cores", {"unknown": "not read"}, 8, True),)
    (destroy,) = api.preview(ApiRequest("DELETE", "/nodes/pve02/qemu/1099"), FACTS)
    assert (destroy.action, destroy.resource, destroy.id) == ("destroy", "vm", "1099")
    assert api.preview(ApiRequest("POST", "/nodes/pve01/qemu/1031/vncproxy"), FACTS) == []  # a console ticket


def test_a_changing_call_the_table_does_not_know_is_one_unknown_change_on_what_its_path_names() -> None:
    api = ApiExecutor([("pve01", "https://pve01:8006")], _Tokens(), True)
    (node,) = api.preview(ApiRequest("POST", "/nodes/pve01/execute"), FACTS)
    assert (node.action, node.resource, node.id) == ("unknown", "node", "pve01")
    assert "does not know" in node.detail
    assert api.preview(ApiRequest("POST", "/cluster/ha/resources"), FACTS)[0].id == "/cluster/ha/resources"


def test_a_script_without_changes_is_one_unknown_change_on_its_node_or_this_machine() -> None:
    ssh = SshExecutor({"pve01": "10.0.0.1"}, "root")
    script = "\n  qm set 1031 --cores 8\nqm reboot 1031\n"
    assert ssh.preview(ShellCommand(script, node="pve01"), FACTS) == [
        Change("unknown", "node", "pve01", "node pve01", detail="qm set 1031 --cores 8")
    ]
    assert LocalExecutor().preview(ShellCommand("x" * 200), FACTS)[0].id == "this machine"
    assert len(LocalExecutor().preview(ShellCommand("x" * 200), FACTS)[0].detail) == 80


def test_a_script_that_declares_its_changes_is_previewed_as_declared() -> None:
    declared = ({"action": "create", "resource": "file", "id": "/tmp/x"},)
    assert LocalExecutor().preview(ShellCommand("touch /tmp/x", changes=declared), FACTS) == [
        Change("create", "file", "/tmp/x", "file /tmp/x", detail="touch /tmp/x")
    ]
    assert LocalExecutor().preview(ShellCommand("exit 1", changes=()), FACTS) == []  # declared: changes nothing


def test_talosctl_names_its_nodes_and_http_its_url_without_credentials() -> None:
    command = TalosctlCommand(("apply-config", "--nodes", "10.20.0.31", "--file", "cp.yaml"))
    assert TalosctlExecutor().preview(command, FACTS) == [
        Change("unknown", "talos-node", "10.20.0.31", "talos-node 10.20.0.31", detail="talosctl apply-config")
    ]
    assert TalosctlExecutor().preview(TalosctlCommand(("-e=10.0.0.5", "health")), FACTS)[0].id == "10.0.0.5"
    with HttpExecutor() as http:
        assert http.preview(HttpRequest("GET", "https://factory.talos.dev/versions"), FACTS) == []
        post = HttpRequest("POST", "https://user:pw@factory.talos.dev/schematics?token=hunter2", body="{}")
        url = "https://factory.talos.dev/schematics"
        assert http.preview(post, FACTS) == [Change("unknown", "http", url, url, detail="POST")]


def test_a_simulated_executor_previews_as_the_real_one_of_its_kind() -> None:
    post = HttpRequest("POST", "https://factory.talos.dev/schematics", body="{}")
    with HttpExecutor() as http:
        assert SimHttpExecutor().preview(post, FACTS) == http.preview(post, FACTS)
    talos = TalosctlCommand(("upgrade", "-n", "10.20.0.31"))
    sim_talos = SimTalosctlExecutor(None, lambda ip: None)  # type: ignore[arg-type]
    assert sim_talos.preview(talos, FACTS) == TalosctlExecutor().preview(talos, FACTS)
    script = ShellCommand("qm start 1031", node="pve01")
    sim_shell = SimShellExecutor(None, None)  # type: ignore[arg-type]
    assert sim_shell.preview(script, FACTS) == SshExecutor({}, "root").preview(script, FACTS)


def test_the_runner_asks_for_changes_of_would_run_steps_only_not_of_read_only_ones() -> None:
    body = (
        "## Steps\n\n"
        "```local {id: look, readonly: true}\nls\n```\n\n"
        "```api {id: read}\nGET /nodes\n```\n\n"
        "```local {id: act}\ntouch x\n```\n"
    )
    book = parse_runbook(f"---\nname: t\nformat: 2\ndescription: t\n---\n# T\n\n{body}", "runbooks/t.md", "t")
    asked: list[str] = []

    def preview(action: Any, step: str) -> list[Change]:
        asked.append(action.script.strip())
        return [Change("unknown", "local", "this machine", detail=action.script.strip())]

    runner = Runner(book, {}, executor=_Recording(), dry_run=True, approver=_No(), preview=preview)
    entries = runner.run()
    assert [e.status for e in entries][-1] == "would_run"
    # Each change is told which step made it.
    assert asked == ["touch x"] and runner.changes == [
        Change("unknown", "local", "this machine", detail="touch x", step="act")
    ]


# ---------------------------------------------------------------- registry and dispatcher


def test_the_registry_builds_each_kind_once_on_first_use_and_closes_what_it_built() -> None:
    built: list[str] = []
    registry = Registry([("local", _maker("local", built)), ("api", _maker("api", built))])
    assert built == []
    first = registry.get("local")
    assert registry.get("local") is first and built == ["local"]
    registry.close()
    assert first.closed and built == ["local"]  # api was never built, so never closed
    with pytest.raises(TypeError, match="no executor for step kind 'file'"):
        registry.get("file")


def test_the_dispatcher_routes_by_the_actions_kind_and_registered_executors_replace_its_own() -> None:
    dispatcher = Dispatcher(load_config(Home(REPO)).data, REPO)
    built: list[str] = []
    for kind in ("api", "ssh", "local", "talosctl", "http"):
        dispatcher.register(kind, _maker(kind, built))
    actions = [
        ApiRequest("GET", "/version"),
        ShellCommand("true", node="pve01"),
        ShellCommand("true"),
        TalosctlCommand(("version",)),
        HttpRequest("GET", "https://example.org"),
    ]
    assert [dispatcher.execute(a, lambda _: None).data for a in actions] == ["api", "ssh", "local", "talosctl", "http"]
    assert dispatcher.preview(ShellCommand("true"), FACTS) == [Change("unknown", "local", "fake")]
    dispatcher.close()
    assert built == ["api", "ssh", "local", "talosctl", "http"]


def test_a_run_of_local_steps_never_builds_the_api_executor(tmp_path: Path) -> None:
    dispatcher = Dispatcher(load_config(Home(REPO)).data, tmp_path)
    dispatcher.register("api", _refuse)
    try:
        result = dispatcher.execute(ShellCommand("echo local"), lambda _: None)
    finally:
        dispatcher.close()
    assert result.data["stdout"] == "local\n"


def test_the_local_executor_is_built_with_its_token_source_and_asks_it_only_when_a_command_does() -> None:
    tokens = _Tokens()
    local = LocalExecutor(token_source=tokens)
    assert local.execute(ShellCommand("echo plain")).data["stdout"] == "plain\n" and tokens.asked == 0
    result = local.execute(ShellCommand('echo "${TOK%%=*}"; echo "$TOK"', token_env="TOK"))
    assert result.data["stdout"] == "root@pam!runbook\n*MASKED*\n" and tokens.asked == 1
    with pytest.raises(StepFailed, match="cannot get the Proxmox VE API token for the command: no pass") as failed:
        LocalExecutor(token_source=_Tokens(CredentialError("no pass"))).execute(ShellCommand("true", token_env="T"))
    assert failed.value.sent is False


def test_a_live_dry_run_previews_against_the_facts_it_read(tmp_path: Path) -> None:
    """On the simulated cluster: the one read before planning becomes the facts each preview gets."""
    root = tmp_path / "home"
    root.mkdir()
    for name in ("clusters", "runbooks"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "cluster-config.yaml", root)
    home = Home(root)
    with Simulation(home, load_config(home)) as simulation:
        dispatcher = simulation.dispatcher()
        try:
            outcome = plan_run(home, "cluster-create", "talos-staging", {}, offline=False, dispatcher=dispatcher)
            offline = plan_run(home, "cluster-create", "talos-staging", {}, offline=True, dispatcher=dispatcher)
        finally:
            dispatcher.close()
    assert outcome.status == "planned" and outcome.session is not None
    facts = outcome.session.facts
    assert facts is not None and facts.vms  # the template is on the simulated cluster
    clones = [c for c in outcome.changes if c.step == "clone"]
    # A clone creates the planned VM, and the steps after it (config, disk) are folded into that create.
    assert [(c.action, c.resource, c.id) for c in clones] == [
        ("create", "vm", str(vm.vmid)) for vm in outcome.session.plan.vms
    ]
    assert {"cores", "memory", "tags"} <= {f.name for f in clones[0].fields}
    assert all(f.before is None for c in clones for f in c.fields)
    # Offline nothing is read: the plan's VMs are cloned (none is marked existing), from a template node
    # known only at run time, never made up.
    assert offline.session is not None and offline.session.facts is None
    offline_clones = [c for c in offline.changes if c.step == "clone"]
    assert len(offline_clones) == len(clones)
    assert all("known after run: plan.template.node" in c.name for c in offline_clones)


def test_offline_every_value_before_is_unknown_never_made_up() -> None:
    previewer = Previewer(None, None)
    (change,) = previewer(ApiRequest("PUT", "/nodes/pve01/qemu/1031/config", {"cores": 8}))
    assert change.fields == (FieldChange("cores", {"unknown": "offline"}, 8, False),)
    assert change.name == "vm 1031 (pve01, status unknown (offline))"
    (destroy,) = previewer(ApiRequest("DELETE", "/nodes/pve01/qemu/1031"))
    assert destroy.lost == () and "unknown (offline)" in destroy.detail


# ---------------------------------------------------------------- helpers


class _Tokens:
    def __init__(self, fails: Exception | None = None):
        self.fails = fails
        self.asked = 0

    def get(self) -> ApiToken:
        self.asked += 1
        if self.fails is not None:
            raise self.fails
        return ApiToken("root@pam!runbook", Secret("s3cr3t-value"))


class _Fake:
    def __init__(self, kind: str):
        self.kind = kind
        self.closed = False

    def execute(self, action: Any, progress: Any = None) -> Result:
        return Result(self.kind)

    def preview(self, action: Any, facts: Facts) -> list[Change]:
        return [Change("unknown", self.kind, "fake")]

    def missing(self, action: Any) -> list[str]:
        return []

    def close(self) -> None:
        self.closed = True


def _maker(kind: str, built: list[str]) -> Callable[[], _Fake]:
    def make() -> _Fake:
        built.append(kind)
        return _Fake(kind)

    return make


def _refuse() -> _Fake:
    raise AssertionError("the API executor must not be built for local steps")


class _Recording:
    def execute(self, action: Any, progress: Any) -> Result:
        return Result({"stdout": "", "stderr": "", "exit_code": 0})


class _No:
    who = None

    def approve(self, entry: Any) -> bool:
        return False
