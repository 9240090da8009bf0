"""Crash and resume: the shipped ``cluster-create`` is SIGKILLed at random moments, resumed, killed
again, and finally resumed to the end; the cluster must then be exactly what a clean run leaves.

The cluster is ``tests/support/pve_process.py``: the simulated PVE cluster in a process of its own,
so it keeps running (migrations finish, requests already sent are carried out) while the engine is
dead, as a real cluster does. Talos, kubectl and flux are small stateful fakes on PATH (below) that
behave as the real tools do where it matters here: a Talos node accepts one ``apply-config
--insecure`` (afterwards it has left maintenance mode and refuses the insecure connection), and
etcd is bootstrapped once.

What is compared after every sequence (``converged``):

- the cluster: the same VMs (VMID, name, node, status, cores, memory, CPU, tags, MAC, disk size,
  onboot, agent), no lock left, no VM or disk whose VMID the plan does not have (no orphan), and
  every storage volume belonging to an existing VM;
- the effects: each mutating API call the clean run makes succeeded exactly as often (once), and no
  clone ever failed with "config file already exists"; each Talos action (gen secrets, gen config,
  apply per node, bootstrap) succeeded exactly once; the Talos files and markers are those of the
  final VMs; the Flux bootstrap ran once, or once more per kill that caught it running (the runbook
  declares it safe to repeat, and marks it done only after it);
- the journal: every journal line parses, except possibly the torn last line a kill left (which a
  resume cuts off, noting ``repaired``), and ``runbook runs show`` reports the run succeeded;
- the lock: every resume after a kill reclaims the dead run's lock, saying so;
- one resume: after the last kill, the next ``resume`` finishes the run. Tasks the killed run left
  running (a migration; clones too, when they take time: ``RUNBOOK_CRASH_CLONE_SECS``) are followed
  by the resume itself;
  the steps a kill may leave in doubt without a check (``SAFE_IN_DOUBT``) are approved up front,
  as an operator who read the runbook would.

Kills land at seeded moments (``test_killed_and_resumed_runs_converge_to_a_clean_run``) and just after
given journal records (``test_a_run_killed_at_a_journal_record_converges_with_one_resume``: after
each kind of record; ``RUNBOOK_CRASH_RECORDS=all`` kills after every record of a clean run's
journal in turn, the sweep ``bench/crash.py`` runs).

The fast default runs ``RUNBOOK_CRASH_SEEDS`` = 4 sequences (alternating the ``dev-generic`` and
``talos-staging`` profiles); a thorough sweep: ``RUNBOOK_CRASH_SEEDS=200 pytest tests/test_crash_resume.py``
(``RUNBOOK_CRASH_FIRST_SEED`` shifts the seeds). Every seed is reproducible: the kill times, the
number of kills and whether a record is torn come from ``random.Random(seed)``. A summary of crash
points is written to ``.pytest_cache/crash-resume-summary.json`` (or ``$RUNBOOK_CRASH_SUMMARY``).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.run.journal import load_run, read_journal
from tests.support.pve_process import PveProcess
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
RUNBOOK = Path(sys.executable).parent / "runbook"
SECRET = "crash-7d1e94b0c2a8f3e6-resume-51ab"
TOKEN_ID = "root@pam!runbook"
PROFILES = ("dev-generic", "talos-staging")
SEEDS = int(os.environ.get("RUNBOOK_CRASH_SEEDS", "4"))
FIRST_SEED = int(os.environ.get("RUNBOOK_CRASH_FIRST_SEED", "1"))
TIME_SCALE = 0.02  # real seconds per PVE second: a migration (20 PVE s) takes 0.4 s
LATENCY = 2.0  # PVE seconds added to every answer (40 ms), so kills land in requests as well as between them
MAX_KILLS = 3
EARLY_SHARE = 0.2  # share of kills that may land during start-up and planning (before the run record)
TEAR_RATE = 0.25  # share of kills after which the journal's last record is torn (as a power loss can)
CLI_TIMEOUT = 120
FINISH_ATTEMPTS = 8
#: Steps the harness approves when a kill left them in doubt without a check (read-only steps are
#: re-run without a gate): each only prints and fails, or rewrites a file from the profile.
SAFE_IN_DOUBT = {"template_missing", "vmid_taken", "talos_inputs.inputs_missing"}
SUMMARY = Path(os.environ.get("RUNBOOK_CRASH_SUMMARY", REPO / ".pytest_cache" / "crash-resume-summary.json"))
#: PVE seconds per task type (``RUNBOOK_CRASH_CLONE_SECS``, default 0: a clone ends with its request;
#: the sweep in bench/crash.py sets 30, so a clone holds its new VM's lock for 0.6 s and kills catch it in flight).
TASK_SECS = {"qmclone": float(os.environ.get("RUNBOOK_CRASH_CLONE_SECS", "0")), "qmstart": 5.0}
#: For kills at journal records: clones outlast a resume's start-up (2.4 s), so the resume meets them running.
SLOW_CLONE = 120.0
#: Kills just after a journal record, in CI: (profile, record type, step, which one of them). One of each
#: kind the engine writes while it changes the cluster, at the steps where a kill used to need a second resume.
RECORD_KILLS = (
    ("talos-staging/shared", "task_started", "clone", 1),
    ("talos-staging", "step_finished", "clone", 2),
    ("dev-generic", "step_started", "start", 1),
    ("dev-generic", "step_skipped", "wait_running", 1),
)
ALL_RECORDS = os.environ.get("RUNBOOK_CRASH_RECORDS") == "all"


# ------------------------------------------------------------------ fakes on PATH

TALOSCTL = r'''#!{python}
"""A Talos cluster as talosctl sees it, kept in a JSON file; every call is logged with its outcome."""
import fcntl, json, os, sys, time
argv = sys.argv[1:]
state_path, log_path = os.environ["CRASH_TALOS_STATE"], os.environ["CRASH_TALOS_LOG"]

def opt(name):
    return argv[argv.index(name) + 1] if name in argv else None

with open(state_path + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    state = json.load(open(state_path)) if os.path.exists(state_path) else {{"applied": [], "bootstrapped": []}}
    code, err, key = 0, "", None
    if argv[:2] == ["gen", "secrets"]:
        out = opt("--output-file"); key = ["gen secrets", os.path.basename(out)]
        if os.path.exists(out):
            code, err = 1, "error: file %r already exists, use --force to overwrite\n" % out
        else:
            open(out, "w").write("secrets: fake\n")
    elif argv[:2] == ["gen", "config"]:
        folder = opt("--output-dir"); key = ["gen config", os.path.basename(folder)]
        names = ("controlplane.yaml", "worker.yaml", "talosconfig")
        if any(os.path.exists(os.path.join(folder, n)) for n in names):
            code, err = 1, "error: controlplane.yaml already exists, use --force to overwrite\n"
        else:
            for n in names:
                open(os.path.join(folder, n), "w").write("fake: %s\n" % n)
    elif argv[:1] == ["apply-config"]:
        node = opt("--nodes"); key = ["apply", node]
        if node in state["applied"]:
            code, err = 1, ("error applying new configuration: rpc error: code = Unavailable desc = connection "
                            "error: desc = \"transport: authentication handshake failed: tls: certificate required\"\n")
        else:
            state["applied"].append(node)
    elif argv[:1] == ["bootstrap"]:
        node = opt("--nodes"); key = ["bootstrap", node]
        if state["bootstrapped"]:
            code, err = 1, ("error executing bootstrap: rpc error: code = AlreadyExists desc = etcd data "
                            "directory is not empty\n")
        else:
            state["bootstrapped"].append(node)
    elif argv[:1] == ["version"]:  # authenticated: only a node that has the cluster's config answers
        if opt("--nodes") not in state["applied"]:
            code, err = 1, ("error getting version: rpc error: code = Unavailable desc = connection error: desc = "
                            "\"transport: authentication handshake failed: x509: certificate signed by unknown "
                            "authority\"\n")
    elif argv[:2] == ["etcd", "members"]:
        if opt("--nodes") not in state["bootstrapped"]:
            code, err = 1, "error getting etcd members: rpc error: code = Unavailable desc = etcd is not running\n"
    elif argv[:1] == ["kubeconfig"]:
        open(argv[1], "w").write("kubeconfig: fake\n")
    tmp = state_path + ".tmp"
    json.dump(state, open(tmp, "w")); os.replace(tmp, state_path)
    with open(log_path, "a") as log:
        log.write(json.dumps({{"argv": argv, "key": key, "exit": code}}) + "\n")
if argv[:1] in (["apply-config"], ["bootstrap"]) and code == 0:  # done on the node; talosctl lingers
    time.sleep(float(os.environ.get("CRASH_TALOS_SLOW_" + argv[0].split("-")[0].upper(), "0")))
sys.stderr.write(err)
sys.exit(code)
'''

KUBECTL = "#!/bin/sh\nprintf 'NAME       STATUS   ROLES           AGE\\nstg-cp01   Ready    control-plane   1m\\n'\n"
FLUX = '#!/bin/sh\necho "$*" >> "$CRASH_FLUX_LOG"\necho \'bootstrap finished\'\n'


# ------------------------------------------------------------------ one cluster and its home


@dataclass
class Rig:
    """A fresh simulated cluster in its own process, a home pointing at it, and the fake tools."""

    root: Path
    home: Path
    profile: str
    fake: PveProcess
    env: dict[str, str]
    setup: str = ""  # the profile, or PROFILE/shared (make_rig)
    outputs: list[str] = field(default_factory=list)

    @property
    def talos_dir(self) -> Path:
        return self.root / "talos" / "staging"

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(RUNBOOK), *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(RUNBOOK), *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        self.outputs += [result.stdout, result.stderr]
        return result

    @property
    def lock(self) -> Path:
        return self.home / ".runbook" / "locks" / f"{self.profile}.lock"

    def run_folders(self) -> set[str]:
        runs = self.home / ".runbook" / "runs"
        return {p.name for p in runs.iterdir()} if runs.is_dir() else set()

    def journal(self, run_id: str) -> Path:
        return self.home / ".runbook" / "runs" / run_id / "journal.jsonl"

    def talos_calls(self) -> list[dict[str, Any]]:
        log = self.root / "talos-calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def flux_calls(self) -> list[str]:
        log = self.root / "flux-calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def every_byte(self) -> str:
        texts = list(self.outputs)
        for path in (self.home / ".runbook").rglob("*"):
            if path.is_file():
                texts.append(path.read_bytes().decode("utf-8", "replace"))
        return "\n".join(texts)

    def stop(self) -> None:
        self.fake.stop()


def make_rig(root: Path, setup: str) -> Rig:
    """A rig for ``setup``: a profile name, or ``PROFILE/shared`` for the shared storage ``ceph-vm``
    (each clone is made straight onto its VM's node, with ``target``: no migration)."""
    profile, _, storage = setup.partition("/")
    home = root / "home"
    home.mkdir(parents=True)
    shutil.copy(REPO / "cluster-config.yaml", home / "cluster-config.yaml")
    if storage == "shared":
        config = yaml.safe_load((home / "cluster-config.yaml").read_text())
        config["defaults"].update(storage="ceph-vm", shared_storage=True)
        (home / "cluster-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copytree(REPO / "clusters", home / "clusters")
    (home / "runbooks").mkdir()
    for name in ("cluster-create", "talos-cluster-bootstrap"):  # create runs bootstrap's Talos sequence
        shutil.copy(REPO / "runbooks" / f"{name}.md", home / "runbooks" / f"{name}.md")
    staging = home / "clusters" / "talos-staging.yaml"
    staging.write_text(staging.read_text().replace("~/.config/runbook/talos/staging", str(root / "talos" / "staging")))
    fake = PveProcess.start(root / "pve", home, SECRET, time_scale=TIME_SCALE, listeners=3)
    try:
        fake.call("slow_network", LATENCY)
        fake.call("set_task_secs", TASK_SECS)
        config = yaml.safe_load((home / "cluster-config.yaml").read_text())
        config["cluster"]["nodes"] = [
            dict(node, host=url.split("//")[1].split(":")[0], port=int(url.rsplit(":", 1)[1]))
            for node, url in zip(config["cluster"]["nodes"], fake.urls)
        ]
        config["tls"] = {"ca_file": fake.certfile}
        (home / "cluster-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        bin_dir = root / "bin"
        bin_dir.mkdir()
        for name, text in (("talosctl", TALOSCTL.format(python=sys.executable)), ("kubectl", KUBECTL), ("flux", FLUX)):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOK_", "PROXMOX_"))}
        env.update(
            RUNBOOK_HOME=str(home),
            PROXMOX_API_TOKEN=f"{TOKEN_ID}={SECRET}",
            PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            CRASH_TALOS_STATE=str(root / "talos-state.json"),
            CRASH_TALOS_LOG=str(root / "talos-calls.jsonl"),
            CRASH_FLUX_LOG=str(root / "flux-calls.log"),
        )
    except BaseException:
        fake.stop()
        raise
    return Rig(root, home, profile, fake, env, setup)


# ------------------------------------------------------------------ what a cluster looks like


def snapshot(rig: Rig) -> dict[str, Any]:
    """The cluster and the Talos side, normalised to what must be equal between a clean and a crashed run."""
    state = rig.fake.state()
    vms = {}
    uuids = {}
    for vm in state["vms"]:
        if vm["template"]:
            continue
        config = vm["config"]
        uuids[vm["name"]] = (re.search(r"uuid=([0-9a-f-]+)", str(config.get("smbios1", ""))) or [None, None])[1]
        vms[vm["vmid"]] = {
            "name": vm["name"],
            "node": vm["node"],
            "status": vm["status"],
            "lock": vm["lock"] or config.get("lock"),
            **{
                key: str(config.get(key))
                for key in ("cores", "memory", "cpu", "tags", "onboot", "agent", "ciuser", "ipconfig0")
            },
            "mac": (re.search(r"=([0-9A-F:]{17})", str(config.get("net0", ""))) or [None, None])[1],
            "disk": (re.search(r"size=(\w+)", str(config.get("scsi0", ""))) or [None, None])[1],
        }
    templates = {vm["vmid"] for vm in state["vms"] if vm["template"]}
    volumes: dict[str, list[tuple[int, int]]] = {}
    orphans = []
    for sid, store in state["storages"].items():
        for name, volume in store["volumes"].items():
            owner = volume["vmid"]
            if owner is not None and int(owner) not in vms and int(owner) not in templates:
                orphans.append(f"{sid}:{name}")
            volumes.setdefault(sid, []).append((int(owner) if owner is not None else -1, int(volume["size"] or 0)))
    talos_files = []
    markers_ok = True
    if rig.talos_dir.exists():
        for path in sorted(rig.talos_dir.rglob("*")):
            if path.is_file():
                relative = str(path.relative_to(rig.talos_dir))
                marker = re.fullmatch(r"state/(applied|bootstrapped|flux)-([a-z0-9-]+?)-([0-9a-f-]{36})", relative)
                if marker:
                    markers_ok &= uuids.get(marker[2]) == marker[3]
                    relative = f"state/{marker[1]}-{marker[2]}"
                talos_files.append(relative)
    talos_state = rig.root / "talos-state.json"
    return {
        "vms": vms,
        "orphans": orphans,
        "volumes": {k: sorted(v) for k, v in volumes.items()},
        "talos_files": talos_files,
        "markers_match_vms": markers_ok,
        "talos": json.loads(talos_state.read_text()) if talos_state.exists() else None,
    }


def effects(rig: Rig) -> tuple[Counter[tuple[str, ...]], list[str]]:
    """Successful changes (API and Talos) counted by what they changed, and the failed attempts seen."""
    tasks = {t["upid"]: t for t in rig.fake.tasks()}
    done: Counter[tuple[str, ...]] = Counter()
    failed = []
    for outcome in rig.fake.outcomes():
        if outcome["method"] == "GET":
            continue
        path = outcome["path"].removeprefix("/api2/json")
        key: tuple[str, ...] = (outcome["method"], re.sub(r"^/nodes/[^/]+", "/nodes/*", path))
        if path.endswith("/clone"):
            key += (str(outcome["params"].get("newid")),)
        ok = 200 <= outcome["status"] < 300
        exitstatus = tasks.get(outcome["upid"], {}).get("exitstatus") if outcome["upid"] else "OK"
        if ok and exitstatus == "OK":
            done[key] += 1
        else:
            failed.append(f"{' '.join(key)}: {outcome['status']} {outcome['reason']} {exitstatus or ''}".strip())
    for call in rig.talos_calls():
        if call["key"] is not None:
            if call["exit"] == 0:
                done[("talosctl", *call["key"])] += 1
            else:
                failed.append(f"talosctl {' '.join(call['key'])}: exit {call['exit']}")
    if rig.flux_calls():
        done[("flux", "bootstrap")] += len(rig.flux_calls())
    return done, failed


# ------------------------------------------------------------------ one crash sequence


@dataclass
class Sequence:
    seed: int
    profile: str
    kills: list[dict[str, Any]] = field(default_factory=list)
    torn: int = 0
    reclaimed: int = 0
    fresh_runs: int = 0  # `run` invocations: 1, plus one per kill that came before the run record
    finished_before_kill: int = 0
    flux_repeats: int = 0


def latest_run(rig: Rig, before: set[str]) -> str | None:
    new = sorted(
        name for name in rig.run_folders() - before if (rig.home / ".runbook" / "runs" / name / "run.json").exists()
    )
    return new[-1] if new else None


def crash_point(rig: Rig, run_id: str | None) -> str:
    """Where the kill landed, as the journal tells it: its last record."""
    if run_id is None:
        return "before the run record"
    try:
        records, _ = read_journal(rig.journal(run_id))
    except FileNotFoundError:
        return "before the first journal record"
    if not records:
        return "before the first journal record"
    last = records[-1]
    where = f"{last['step']}[{last['item']}]" if last.get("item") else last.get("step", "")
    return f"{last['type']} {where}".strip()


def tear(rig: Rig, run_id: str, rng: random.Random) -> bool:
    """Cut the journal's last record at a random byte, as a power loss in the middle of its write would."""
    path = rig.journal(run_id)
    if not path.exists():
        return False
    data = path.read_bytes()
    lines = data.rstrip(b"\n").split(b"\n")
    if len(lines) < 2:
        return False
    last = lines[-1]
    keep = rng.randint(1, max(1, len(last) - 1))
    path.write_bytes(b"\n".join(lines[:-1]) + b"\n" + last[:keep])
    return True


def run_sequence(rig: Rig, seed: int, timing: tuple[float, float]) -> Sequence:
    """Start the run; kill it (or the resume) 1..MAX_KILLS times at seeded moments; then resume to the end.

    After each invocation that was not killed, the harness acts as the operator reading its message
    would (``_Operator.react``): approve a step a kill left in doubt, wait for the cluster's tasks, write the
    marker the runbook says to write, or start again when the run never got its record.

    ``timing`` is a clean run's (start-up, total) seconds: one kill in EARLY_SHARE lands anywhere
    from the start of the process (start-up, planning), the others while steps run.
    """
    startup, budget = timing
    rng = random.Random(seed)
    report = Sequence(seed, rig.profile)
    operator = _Operator(rig, report)
    kills_left = rng.randint(1, MAX_KILLS)
    for _ in range(MAX_KILLS + FINISH_ATTEMPTS):
        before = rig.run_folders()
        args = operator.command()
        # A lock file left by a killed run: whoever takes it next must say it reclaimed it.
        lock_left = rig.lock.exists() and rig.lock.stat().st_size > 0
        if kills_left:
            process = rig.start(*args)
            delay = rng.uniform(0.0 if rng.random() < EARLY_SHARE else startup, budget)
            try:
                process.wait(delay)
                killed = False
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                killed = True
            out, err = process.communicate(timeout=CLI_TIMEOUT)
            rig.outputs += [out, err]
            returncode = process.returncode
        else:
            result = rig.cli(*args)
            out, err, returncode, killed = result.stdout, result.stderr, result.returncode, False
        if args[0] == "run":
            operator.run_id = latest_run(rig, before)
        if lock_left and "reclaimed the lock of profile" in err:
            report.reclaimed += 1
        elif lock_left and not killed and returncode in (0, 4, 5):
            pytest.fail(f"a lock left by a killed run was taken without saying it was reclaimed:\n{err}")
        if killed:
            kills_left -= 1
            kill = {"after": round(delay, 3), "command": args[0], "point": crash_point(rig, operator.run_id)}
            if operator.run_id is not None and rng.random() < TEAR_RATE and tear(rig, operator.run_id, rng):
                kill["torn"] = True
                report.torn += 1
            report.kills.append(kill)
            if operator.run_id is not None and _succeeded(rig, operator.run_id):
                return report  # killed after its last record: the run was over
            continue
        if kills_left:
            report.finished_before_kill += 1
        if returncode == 0:
            return report
        operator.react(args, returncode, out + err)
    pytest.fail(f"the run did not succeed after {MAX_KILLS + FINISH_ATTEMPTS} invocations ({report})")


class _Operator:
    """What the operator does with each message; the state of their next command."""

    def __init__(self, rig: Rig, report: Sequence):
        self.rig = rig
        self.report = report
        self.run_id: str | None = None
        # Approved up front: the Flux bootstrap is expected, and the steps a kill may leave in doubt
        # without a check are safe to run again (the runbook says what each does).
        self.approvals = ["talos.flux", *sorted(SAFE_IN_DOUBT)]

    def command(self) -> list[str]:
        approve = [arg for step in self.approvals for arg in ("--approve", step)]
        if self.run_id is None:
            self.report.fresh_runs += 1
            return ["run", "cluster-create", "--profile", self.rig.profile, *approve]
        return ["resume", self.run_id, *approve]

    def react(self, args: list[str], returncode: int, text: str) -> None:
        if returncode == 1 and "is missing: the run was stopped before its record was written" in text:
            self.run_id = None  # killed before its run.json existed: nothing ran, start again
            return
        # Anything else: the first invocation after the last kill did not finish the run.
        pytest.fail(f"exit {returncode} from `runbook {' '.join(args)}` after a kill; one resume must do:\n{text}")


def _succeeded(rig: Rig, run_id: str) -> bool:
    return load_run(rig.home / ".runbook", run_id).state.status == "succeeded"


def check_journal(rig: Rig, run_id: str) -> None:
    """Every line parses except a torn last one (tolerated, then cut by the next resume); the run succeeded."""
    shown = rig.cli("runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "succeeded"
    run = load_run(rig.home / ".runbook", run_id)
    assert not run.warnings, run.warnings  # the final resume repaired any torn record
    seqs = [record["seq"] for record in run.records]
    assert seqs == list(range(1, len(seqs) + 1))


# ------------------------------------------------------------------ fixtures and tests

_REFERENCE: dict[str, tuple[dict[str, Any], Counter[tuple[str, ...]], tuple[float, float]]] = {}
_SUMMARY: list[dict[str, Any]] = []


def reference(
    setup: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Counter, tuple[float, float]]:
    """A clean run's cluster, effects, and (seconds until its first journal record, seconds in all);
    made once per profile per session. Two clean runs: they must give the same cluster and effects,
    and the quicker one's timing is kept, so a busy moment during one does not push the kills of
    every sequence past the end of their runs."""
    if setup not in _REFERENCE:
        made = []
        for attempt in range(2):
            rig = make_rig(tmp_path_factory.mktemp(f"clean-{setup.replace('/', '-')}-{attempt}"), setup)
            try:
                started, wall = time.monotonic(), time.time()
                result = rig.cli("run", "cluster-create", "--profile", rig.profile, "--approve", "talos.flux")
                took = time.monotonic() - started
                assert result.returncode == 0, result.stdout + result.stderr
                (run_id,) = rig.run_folders()
                first = read_journal(rig.journal(run_id))[0][0]
                startup = datetime.fromisoformat(first["ts"]).timestamp() - wall
                clean = snapshot(rig)
                done, failed = effects(rig)
                assert not failed, failed
                assert set(done.values()) == {1}, done
                assert SECRET not in rig.every_byte()
            finally:
                rig.stop()
            made.append((clean, done, (startup, took)))
        (clean, done, timing), (again, done_again, other) = made
        assert again == clean and done_again == done, "two clean runs of the same profile differ"
        _REFERENCE[setup] = (clean, done, min(timing, other, key=lambda t: t[1]))
    return _REFERENCE[setup]


@pytest.fixture
def rig_for(tmp_path: Path) -> Iterator[Any]:
    made: list[Rig] = []

    def make(setup: str) -> Rig:
        rig = make_rig(tmp_path / f"rig{len(made)}", setup)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.stop()


@pytest.mark.parametrize("seed", range(FIRST_SEED, FIRST_SEED + SEEDS))
def test_killed_and_resumed_runs_converge_to_a_clean_run(
    seed: int, rig_for: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    profile = PROFILES[seed % len(PROFILES)]
    clean, clean_effects, timing = reference(profile, tmp_path_factory)
    rig = rig_for(profile)
    report = run_sequence(rig, seed, timing)
    assert_converged(rig, report, clean, clean_effects, f"seed {seed}")


def assert_converged(
    rig: Rig, report: Sequence, clean: dict[str, Any], clean_effects: Counter[tuple[str, ...]], what: str
) -> None:
    """The cluster, the effects, the journal and the outputs are those of a clean run (the module doc)."""
    run_ids = sorted(p for p in rig.run_folders() if (rig.home / ".runbook" / "runs" / p / "run.json").exists())
    assert run_ids, "no run was recorded"
    final = snapshot(rig)
    done, failed = effects(rig)
    # The Flux bootstrap is safe to run again (the runbook says so), and is marked done by a `touch`
    # after it in the same step: a kill while it runs (the dead engine's pipes break under it) may
    # repeat it, once per such kill. Everything else must have happened exactly as often as in a clean run.
    flux = ("flux", "bootstrap")
    in_flight = sum(1 for kill in report.kills if kill["point"] == "step_started talos.flux")
    assert clean_effects[flux] <= done[flux] <= clean_effects[flux] + in_flight, (done[flux], report)
    report.flux_repeats = done[flux] - clean_effects[flux]
    if flux in clean_effects:
        done[flux] = clean_effects[flux]
    _SUMMARY.append({**report.__dict__, "converged": final == clean and done == clean_effects})
    SUMMARY.parent.mkdir(exist_ok=True)
    SUMMARY.write_text(json.dumps(_SUMMARY, indent=1))
    assert final == clean, f"{what}: the cluster differs from a clean run's ({report})"
    assert done == clean_effects, (
        f"{what}: effects differ: {done - clean_effects} extra, {clean_effects - done} missing ({report})"
    )
    assert not [f for f in failed if "already exists" in f], failed
    succeeded = [r for r in run_ids if json.loads(rig.cli("runs", "show", r, "--json").stdout)["status"] == "succeeded"]
    assert len(succeeded) == 1, run_ids
    check_journal(rig, succeeded[0])
    assert SECRET not in rig.every_byte(), "the API token leaked into an output or a journal"


def kill_after_record(rig: Rig, args: list[str], wanted: Any, what: str) -> tuple[str, str]:
    """Start ``runbook *args`` and SIGKILL it as soon as its journal's whole records satisfy ``wanted``;
    the run id and the crash point (the last record when the kill landed)."""
    before = rig.run_folders()
    process = rig.start(*args)
    run_id = None
    try:
        deadline = time.monotonic() + CLI_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            run_id = run_id or latest_run(rig, before)
            if run_id is not None and rig.journal(run_id).exists():
                lines = rig.journal(run_id).read_bytes().split(b"\n")[:-1]  # whole records only
                if wanted([json.loads(line) for line in lines]):
                    os.kill(process.pid, signal.SIGKILL)
                    break
            time.sleep(0.002)
    finally:
        if process.poll() is None and run_id is None:
            process.kill()
        rig.outputs += list(process.communicate(timeout=CLI_TIMEOUT))
    assert process.returncode == -signal.SIGKILL, f"the run ended (exit {process.returncode}) before {what}"
    assert run_id is not None
    return run_id, crash_point(rig, run_id)


def _kill_and_resume_once(rig: Rig, wanted: Any, what: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    clean, clean_effects, _ = reference(rig.setup, tmp_path_factory)
    rig.fake.call("set_task_secs", {**TASK_SECS, "qmclone": SLOW_CLONE})
    report = Sequence(0, rig.profile)
    operator = _Operator(rig, report)
    run_id, point = kill_after_record(rig, operator.command(), wanted, what)
    report.kills.append({"after": what, "command": "run", "point": point})
    operator.run_id = run_id
    if _succeeded(rig, run_id):  # the kill landed after the last record: the run was over
        report.finished_before_kill += 1
        assert_converged(rig, report, clean, clean_effects, f"killed after {what}")
        return
    resumed = rig.cli(*operator.command())
    assert resumed.returncode == 0, f"killed after {what} ({point}): one resume did not do:\n{resumed.stderr[-4000:]}"
    assert "reclaimed the lock of profile" in resumed.stderr
    report.reclaimed += 1
    assert_converged(rig, report, clean, clean_effects, f"killed after {what}")
    check_journal(rig, run_id)
    assert SECRET not in rig.every_byte(), "the API token leaked into an output or a journal"


@pytest.mark.skipif(ALL_RECORDS, reason="RUNBOOK_CRASH_RECORDS=all runs the whole sweep instead")
@pytest.mark.parametrize(("setup", "kind", "step", "nth"), RECORD_KILLS)
def test_a_run_killed_at_a_journal_record_converges_with_one_resume(
    setup: str, kind: str, step: str, nth: int, rig_for: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    def wanted(records: list[dict[str, Any]]) -> bool:
        return sum(1 for r in records if r["type"] == kind and r.get("step") == step) >= nth

    _kill_and_resume_once(rig_for(setup), wanted, f"{kind} {step} #{nth}", tmp_path_factory)


@pytest.mark.skipif(not ALL_RECORDS, reason="the sweep over every record: RUNBOOK_CRASH_RECORDS=all")
@pytest.mark.parametrize("profile", PROFILES)
def test_a_run_killed_after_any_journal_record_converges_with_one_resume(
    profile: str, rig_for: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Kill after record 2 (``run_started`` is record 1: before it, nothing is resumable), 3, ... up to the
    last record before ``run_finished`` of a clean run, each on a fresh cluster, and resume once."""
    rig = rig_for(profile)
    result = rig.cli("run", "cluster-create", "--profile", profile, *_Operator(rig, Sequence(0, profile)).command()[4:])
    assert result.returncode == 0, result.stderr
    (run_id,) = rig.run_folders()
    total = len(read_journal(rig.journal(run_id))[0])
    for number in range(2, total):
        fresh = rig_for(profile)
        _kill_and_resume_once(fresh, lambda records, n=number: len(records) >= n, f"record {number}", tmp_path_factory)
        fresh.stop()


def test_a_torn_last_record_is_skipped_then_cut_on_resume(rig_for: Any) -> None:
    rig = rig_for("dev-generic")
    rig.fake.call("set_time_scale", 0.2)  # migrations are not used; every answer takes 0.2 s
    process = rig.start("run", "cluster-create", "--profile", "dev-generic")
    deadline = time.monotonic() + 30
    run_id = None
    while time.monotonic() < deadline:
        run_id = latest_run(rig, set())
        if run_id and rig.journal(run_id).exists() and "clone" in rig.journal(run_id).read_text():
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    assert run_id is not None
    before = rig.journal(run_id).read_bytes()
    assert tear(rig, run_id, random.Random(0))
    listed = rig.cli("runs", "show", run_id)
    assert listed.returncode == 0, listed.stderr
    assert "skipped a torn last record, left by a run killed while writing it" in listed.stdout
    rig.fake.call("set_time_scale", 0.0)
    resumed = rig.cli("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert "reclaimed the lock of profile 'dev-generic'" in resumed.stderr
    records, warnings = read_journal(rig.journal(run_id))
    assert not warnings
    resumed_record = next(r for r in records if r["type"] == "run_resumed")
    assert resumed_record["repaired"].startswith("cut a torn last record of ")
    assert len(records) > len(before.splitlines()) - 1
    assert sorted(vm["name"] for vm in rig.fake.state()["vms"] if not vm["template"]) == [
        "dev-cp01",
        "dev-w01",
        "dev-w02",
        "dev-w03",
    ]


def test_a_live_run_blocks_a_second_run_on_its_profile_naming_the_holder(rig_for: Any) -> None:
    rig = rig_for("dev-generic")
    rig.fake.call("set_time_scale", 0.5)  # every answer takes 0.5 s: the first run is still going
    first = rig.start("run", "cluster-create", "--profile", "dev-generic")
    try:
        lock = rig.home / ".runbook" / "locks" / "dev-generic.lock"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
            time.sleep(0.02)
        holder = json.loads(lock.read_text())
        second = rig.cli("run", "cluster-create", "--profile", "dev-generic")
        assert second.returncode == 6, second.stderr
        assert f"profile 'dev-generic' is locked by run {holder['run_id']} (pid {first.pid} on " in second.stderr
        assert "only one run per profile at a time" in second.stderr
        assert f"runbook runs show {holder['run_id']}" in second.stderr
        resume_too = rig.cli("resume", holder["run_id"])
        assert resume_too.returncode == 6 and f"pid {first.pid}" in resume_too.stderr
    finally:
        first.kill()
        out, err = first.communicate()
        rig.outputs += [out, err]
    rig.fake.call("set_time_scale", 0.0)
    rig.fake.settle()
    again = rig.cli("resume", holder["run_id"])
    assert again.returncode == 0, again.stderr
    assert f"reclaimed the lock of profile 'dev-generic' from run {holder['run_id']} (pid {first.pid}" in again.stderr
    assert SECRET not in rig.every_byte()


def _last_record(rig: Rig) -> dict[str, Any] | None:
    run_id = latest_run(rig, set())
    if run_id is None or not rig.journal(run_id).exists():
        return None
    records, _ = read_journal(rig.journal(run_id))
    return records[-1] if records else None


def test_a_read_only_step_killed_in_flight_runs_again_on_resume_without_a_gate(rig_for: Any) -> None:
    """A GET that was in flight changed nothing: resume re-runs it, with no gate to approve."""
    rig = rig_for("dev-generic")
    rig.fake.call("set_time_scale", 1.0)  # every answer takes a second
    process = rig.start("run", "cluster-create", "--profile", "dev-generic")
    try:
        record = wait_for(
            lambda: (r := _last_record(rig)) and r["type"] == "step_started" and r, 30, "the first step to start"
        )
        assert record["step"] == "api_version"  # GET /version, in flight
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        rig.outputs += list(process.communicate())
    rig.fake.call("set_time_scale", 0.0)
    resumed = rig.cli("resume", latest_run(rig, set()))
    assert "GATE" not in resumed.stderr, resumed.stderr
    assert resumed.returncode == 0, resumed.stderr


@pytest.mark.parametrize("what", ["apply", "bootstrap"])
def test_a_run_killed_between_a_talos_change_and_its_marker_resumes_without_help(rig_for: Any, what: str) -> None:
    """The node took its config (or etcd was bootstrapped), the run died before the marker: resume
    asks the node (talos.configured, talos.etcd_running), does not send it again, writes the marker."""
    rig = rig_for("talos-staging")
    rig.env[f"CRASH_TALOS_SLOW_{what.upper()}"] = "3"
    state = rig.root / "talos-state.json"
    done_key = "applied" if what == "apply" else "bootstrapped"
    process = rig.start("run", "cluster-create", "--profile", "talos-staging", "--approve", "talos.flux")
    try:
        wait_for(lambda: state.exists() and json.loads(state.read_text())[done_key], 60, f"the first {what}")
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        rig.outputs += list(process.communicate())
    rig.env[f"CRASH_TALOS_SLOW_{what.upper()}"] = "0"
    time.sleep(3.5)  # the talosctl the killed run started has finished
    markers = rig.talos_dir / "state"
    assert not list(markers.glob(f"{done_key}-*")), "the kill came after the marker: nothing to prove"
    resumed = rig.cli("resume", latest_run(rig, set()), "--approve", "talos.flux")
    assert resumed.returncode == 0, resumed.stderr
    sent = [call for call in rig.talos_calls() if call["key"] and call["key"][0] == what]
    assert [call["exit"] for call in sent] == [0] * len(sent), sent  # never sent again to a node that had it
    final = json.loads(state.read_text())
    assert len(final["applied"]) == len(set(final["applied"])) == 3 and len(final["bootstrapped"]) == 1
    assert len(list(markers.glob("applied-*"))) == 3 and len(list(markers.glob("bootstrapped-*"))) == 1
    assert SECRET not in rig.every_byte()
