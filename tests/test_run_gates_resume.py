"""Gates, resume and dry-runs end to end: the real CLI as a subprocess (on a pseudo-terminal where a
person would answer), against fakepve over verified HTTPS, a real sshd, a real pass store and a
fake talosctl. Every output and journal is scanned for the token secret, as in test_run_e2e.py.

Every wait is bounded: subprocesses get a timeout, terminal reads go through ``select`` with a
deadline, and a child still running when a test ends is killed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import Any

from tests.support.cluster import RUNBOOK, LiveCluster
from tests.support.waiting import wait_for

STAGING = ("stg-cp01", "stg-cp02", "stg-cp03")
PROFILE = ("--profile", "talos-staging")
CLI_TIMEOUT = 60  # seconds any one CLI invocation may take before the test fails (and kills it)


# -- helpers ----------------------------------------------------------------------------------------


def cli(cluster: LiveCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return cluster.run(*args, timeout=CLI_TIMEOUT)


def create_vms(cluster: LiveCluster) -> None:
    result = cli(cluster, "run", "e2e-create", *PROFILE)
    assert result.returncode == 0, result.stderr
    assert sorted(staging_vms(cluster)) == list(STAGING)


def staging_vms(cluster: LiveCluster) -> dict[str, tuple]:
    def read() -> dict[str, tuple]:
        return {
            vm.name: (
                vm.vmid,
                vm.node,
                str(vm.config.get("cores")),
                str(vm.config.get("memory")),
                vm.config.get("tags"),
            )
            for vm in cluster.pve.pve.vms
            if not vm.template
        }

    return cluster.pve.do(read)


def requests(cluster: LiveCluster) -> list[tuple[str, str, Any]]:
    """fakepve's request log so far, (method, path, body), read on the fake's own loop."""
    return cluster.pve.do(lambda: list(cluster.pve.pve.requests))


def mutating(log: list[tuple[str, str, Any]]) -> list[tuple[str, str]]:
    return [(method, path) for method, path, _ in log if method != "GET"]


def report(result: subprocess.CompletedProcess[str]) -> dict:
    """The final report: the last line of the JSON-lines stream of a --json run."""
    return json.loads(result.stdout.splitlines()[-1])


def fail_run(cluster: LiveCluster) -> str:
    """A create that fails at configure[name=stg-cp02] (after all three clones); returns its run id."""
    cluster.pve.do(cluster.pve.pve.fail, "PUT", "/qemu/1032/config", error="config_lock_timeout", times=1)
    failed = cli(cluster, "run", "e2e-create", *PROFILE, "--json")
    assert failed.returncode == 5, failed.stdout + failed.stderr
    return report(failed)["run_id"]


def run_folders(cluster: LiveCluster) -> list[str]:
    """Run ids, oldest first by when their folder was made (ids started in one second sort by their
    random suffix, so the name alone does not say which came last)."""
    runs = cluster.home / ".runbook" / "runs"
    return [p.name for p in sorted(runs.iterdir(), key=lambda p: p.stat().st_mtime_ns)] if runs.is_dir() else []


def journal(cluster: LiveCluster, run_id: str) -> list[dict]:
    path = cluster.home / ".runbook" / "runs" / run_id / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def gone(pid: int) -> bool:
    """The process is dead: no such pid, or a zombie nobody reaped yet (it runs nothing any more)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return "\nState:\tZ" in status


_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[=>()][0-9A-Za-z]?")


class Terminal:
    """The CLI as a child whose stdout and stderr (and stdin, unless ``stdin_tty`` is false) are a
    pseudo-terminal; reads wait with ``select`` up to a deadline, and ``close`` kills a child still running."""

    def __init__(self, cluster: LiveCluster, *args: str, stdin_tty: bool = True):
        self.cluster = cluster
        self.raw = b""
        self._seen = 0
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))  # no wrapped lines
        try:
            self.proc = subprocess.Popen(
                [str(RUNBOOK), *args],
                env=cluster.env({"TERM": "xterm"}),
                stdin=slave if stdin_tty else subprocess.DEVNULL,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.master = master

    @property
    def text(self) -> str:
        """Everything the child wrote so far, escape sequences and carriage returns removed."""
        return _ESCAPES.sub("", self.raw.decode("utf-8", "replace")).replace("\r", "")

    def _read(self, deadline: float) -> bool:
        """Read what arrives before ``deadline``; False once the child's side of the terminal is closed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        ready, _, _ = select.select([self.master], [], [], remaining)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError as exc:
            if exc.errno == errno.EIO:  # Linux: every holder of the other side closed it
                return False
            raise
        self.raw += chunk
        return bool(chunk)

    def expect(self, needle: str, timeout: float = 20) -> str:
        """Wait for ``needle``; returns the text since the last expectation, up to and including it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text
            at = text.find(needle, self._seen)
            if at >= 0:
                shown, self._seen = text[self._seen : at + len(needle)], at + len(needle)
                return shown
            if time.monotonic() >= deadline or not self._read(deadline):
                raise AssertionError(f"{needle!r} did not appear within {timeout}s; the terminal shows:\n{text}")

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def finish(self, timeout: float = 30) -> int:
        """Read to the end of the output and return the exit code (within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(deadline):
            pass
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)
        self.cluster.outputs.append(self.raw.decode("utf-8", "replace"))  # scanned for the secret

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- 1. a gate answered on a terminal ---------------------------------------------------------------


def test_a_gate_answered_no_on_a_terminal_stops_and_yes_deletes(cluster: LiveCluster) -> None:
    create_vms(cluster)
    before = staging_vms(cluster)
    log_before = len(requests(cluster))
    with Terminal(cluster, "run", "e2e-teardown", *PROFILE) as term:
        shown = term.expect("Run this step?")
        assert "GATE: delete[stg-cp01] (DELETE /nodes/pve01/qemu/1031)" in shown
        assert "| DELETE /nodes/pve01/qemu/1031  purge=1 destroy-unreferenced-disks=1" in shown
        term.send("n\r")
        assert term.finish() == 4, term.text
        after = term.text[term.text.index("Run this step?") :]
        assert "stopped before gated step 'delete[stg-cp01]'" in after
        assert "Run this step?" not in after[len("Run this step?") :], "asked again after a no"
    assert staging_vms(cluster) == before, "a 'no' deleted something"
    assert mutating(requests(cluster)[log_before:]) == []

    with Terminal(cluster, "run", "e2e-teardown", *PROFILE) as term:
        for vmid, name in zip((1031, 1032, 1033), STAGING):
            shown = term.expect("Run this step?")
            assert f"GATE: delete[{name}] (DELETE /nodes/pve01/qemu/{vmid})" in shown
            assert f"| DELETE /nodes/pve01/qemu/{vmid}  purge=1" in shown
            term.send("y\r")
        assert term.finish() == 0, term.text
        assert "succeeded" in term.text[term._seen :]
    assert staging_vms(cluster) == {}
    deletes = [path for method, path in mutating(requests(cluster)[log_before:]) if method == "DELETE"]
    assert [p.rsplit("/", 1)[-1] for p in deletes] == ["1031", "1032", "1033"]
    run_id = run_folders(cluster)[-1]
    approved = [(r["step"], r["item"]) for r in journal(cluster, run_id) if r["type"] == "gate_approved"]
    assert approved == [("delete", f"name={name}") for name in STAGING]


def test_end_of_input_at_the_prompt_stops_like_a_no(cluster: LiveCluster) -> None:
    create_vms(cluster)
    before = staging_vms(cluster)
    with Terminal(cluster, "run", "e2e-teardown", *PROFILE) as term:
        term.expect("Run this step?")
        term.send("\x04")  # Ctrl-D: end of input on a terminal in canonical mode
        code = term.finish()
        text = term.text
    if staging_vms(cluster) != before or code == 0:  # not an AssertionError: this must fail, never xfail
        raise RuntimeError(f"end of input at a gate approved it (exit {code}):\n{text}")
    assert code == 4, text
    assert "stopped before gated step 'delete[stg-cp01]'" in text
    runs = json.loads(cli(cluster, "runs", "--json").stdout)["runs"]
    assert runs[0]["status"] == "stopped_at_gate"


# -- 2. no terminal, no approval: never yes ---------------------------------------------------------


def test_approving_another_step_does_not_approve_this_one(cluster: LiveCluster) -> None:
    create_vms(cluster)
    before = staging_vms(cluster)
    log_before = len(requests(cluster))
    for other in ("members", "delete[name=stg-cp02]"):
        stopped = cli(cluster, "run", "e2e-teardown", *PROFILE, "--approve", other)
        assert stopped.returncode == 4, (other, stopped.stderr)
        assert "stopped before gated step 'delete[stg-cp01]'" in stopped.stderr, other
        run_id = run_folders(cluster)[-1]
        assert f"runbook resume {run_id} --approve delete" in stopped.stderr
        assert "--yes" in stopped.stderr
        assert "Run this step?" not in stopped.stderr
    assert staging_vms(cluster) == before, "nothing may be deleted"
    assert mutating(requests(cluster)[log_before:]) == []


def test_a_terminal_for_output_only_is_not_one_to_answer_on(cluster: LiveCluster) -> None:
    """stdout and stderr on a terminal but stdin not: nobody can answer, so the run stops, unasked."""
    create_vms(cluster)
    with Terminal(cluster, "run", "e2e-teardown", *PROFILE, stdin_tty=False) as term:
        assert term.finish() == 4, term.text
        assert "stopped before gated step 'delete[stg-cp01]'" in term.text
        assert "Run this step?" not in term.text
    assert sorted(staging_vms(cluster)) == list(STAGING)


# -- 3. resume refuses changed inputs ---------------------------------------------------------------


def test_resume_refuses_a_changed_runbook_until_forced(cluster: LiveCluster) -> None:
    run_id = fail_run(cluster)
    runbook = cluster.home / "runbooks" / "e2e-create.md"
    runbook.write_text(runbook.read_text() + "\nA note added after the run started.\n")
    log_before = len(requests(cluster))
    refused = cli(cluster, "resume", run_id)
    assert refused.returncode == 7, refused.stderr
    assert f"refusing to resume {run_id}: runbook changed since the run started" in refused.stderr
    assert "--force" in refused.stderr
    assert "profile" not in refused.stderr and "cluster-config.yaml" not in refused.stderr
    assert mutating(requests(cluster)[log_before:]) == [], "a refused resume sent a change"

    forced = cli(cluster, "resume", run_id, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "warning: resumed with --force although runbook changed" in forced.stderr
    assert forced.stdout.strip() == f"run {run_id} succeeded"
    assert sorted(staging_vms(cluster)) == list(STAGING)
    clones = [p for m, p in mutating(requests(cluster)) if p.endswith("/clone")]
    assert len(clones) == 3, "a clone done before the failure was sent again"


def test_resume_refuses_a_changed_profile_and_a_finished_run(cluster: LiveCluster) -> None:
    run_id = fail_run(cluster)
    profile = cluster.home / "clusters" / "talos-staging.yaml"
    profile.write_text(profile.read_text() + "# edited after the run started\n")
    refused = cli(cluster, "resume", run_id)
    assert refused.returncode == 7, refused.stderr
    assert f"refusing to resume {run_id}: profile changed since the run started" in refused.stderr
    assert "--force" in refused.stderr and "runbook," not in refused.stderr

    forced = cli(cluster, "resume", run_id, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "warning: resumed with --force although profile changed" in forced.stderr

    log_before = len(requests(cluster))
    for extra in ((), ("--force",)):
        again = cli(cluster, "resume", run_id, *extra)
        assert again.returncode == 0, extra
        assert f"run {run_id} already succeeded; nothing to do" in again.stdout, extra
    assert mutating(requests(cluster)[log_before:]) == []


def test_resuming_an_unknown_run_suggests_close_ids(cluster: LiveCluster) -> None:
    create_vms(cluster)
    (run_id,) = run_folders(cluster)
    typo = cli(cluster, "resume", run_id[:-1] + ("0" if run_id[-1] != "0" else "1"))
    assert typo.returncode == 1, typo.stderr
    assert f"Did you mean {run_id}?" in typo.stderr
    prefix = cli(cluster, "resume", run_id[:-5])
    assert prefix.returncode == 1 and f"Did you mean {run_id}?" in prefix.stderr
    unrelated = cli(cluster, "resume", "nothing-like-it")
    assert unrelated.returncode == 1
    assert "no run 'nothing-like-it'" in unrelated.stderr and "Did you mean" not in unrelated.stderr
    assert "List runs with `runbook runs`" in unrelated.stderr
    assert "Traceback" not in typo.stderr + prefix.stderr + unrelated.stderr


# -- 4. a step killed in flight without a check -----------------------------------------------------


def test_a_step_killed_in_flight_without_check_is_gated_on_resume(cluster: LiveCluster, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    pid_file, log = work / "pid", work / "log"
    process = cluster.start("run", "e2e-interrupt", "--param", f"workdir={work}")
    step_group = None
    try:
        step_group = int(
            wait_for(
                lambda: pid_file.exists() and pid_file.read_text().strip().isdigit() and pid_file.read_text().strip(),
                20,
                "the long step to start",
            )
        )
        os.kill(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None and step_group is None:
            process.kill()
        if step_group is not None:  # the step runs in its own process group, which outlives the runner
            try:
                os.killpg(step_group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = process.communicate(timeout=10)
        cluster.outputs += [out, err]
    assert process.returncode == -signal.SIGKILL
    assert log.read_text().splitlines() == ["before"]

    runs = json.loads(cli(cluster, "runs", "--json").stdout)["runs"]
    assert runs[0]["status"] == "interrupted"
    run_id = runs[0]["run_id"]

    stopped = cli(cluster, "resume", run_id)
    assert stopped.returncode == 4, stopped.stderr
    assert "stopped before gated step 'wait_for_go'" in stopped.stderr
    assert "started in an earlier attempt but never finished" in stopped.stderr
    assert f"runbook resume {run_id} --approve wait_for_go" in stopped.stderr
    assert log.read_text().splitlines() == ["before"], "the step in doubt ran without approval"

    (work / "go").touch()
    resumed = cli(cluster, "resume", run_id, "--approve", "wait_for_go")
    assert resumed.returncode == 0, resumed.stderr
    assert log.read_text().splitlines() == ["before", "waited", "after"], "before ran again, or a step is missing"
    records = journal(cluster, run_id)
    assert [r["step"] for r in records if r["type"] == "gate_approved"] == ["wait_for_go"]


# -- 5. a dry-run may read the cluster, never change it ---------------------------------------------


def test_a_dry_run_reads_the_live_cluster_with_gets_only(cluster: LiveCluster) -> None:
    create_vms(cluster)
    runs_before = run_folders(cluster)
    talos_before = len(cluster.talos.calls())

    log_before = len(requests(cluster))
    result = cli(cluster, "run", "e2e-create", *PROFILE, "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    during = requests(cluster)[log_before:]
    assert during, "a dry-run without --offline should read the cluster"
    assert {method for method, _, _ in during} == {"GET"}, mutating(during)
    plan = json.loads(result.stdout)
    assert plan["offline"] is False
    assert {vm["name"]: vm["existing"] for vm in plan["plan"]["vms"]} == dict.fromkeys(STAGING, True)
    steps = {(s["step_id"], s["item_key"]): s for s in plan["steps"]}
    assert steps[("existing", None)]["status"] == "succeeded"
    assert {1031, 1032, 1033} <= set(steps[("existing", None)]["output"])
    assert [steps[("clone", f"name={n}")]["status"] for n in STAGING] == ["skipped"] * 3
    assert [steps[("configure", f"name={n}")]["status"] for n in STAGING] == ["would_run"] * 3
    assert steps[("health", None)]["status"] == "would_run"

    log_before = len(requests(cluster))
    offline = cli(cluster, "run", "e2e-create", *PROFILE, "--dry-run", "--offline", "--json")
    assert offline.returncode == 0, offline.stderr
    assert requests(cluster)[log_before:] == [], "--offline contacted the cluster"
    plan = json.loads(offline.stdout)
    assert plan["offline"] is True
    assert {vm["name"]: vm["existing"] for vm in plan["plan"]["vms"]} == dict.fromkeys(STAGING, False)
    steps = {(s["step_id"], s["item_key"]): s for s in plan["steps"]}
    assert steps[("existing", None)]["status"] == "would_run"

    assert len(cluster.talos.calls()) == talos_before, "a dry-run ran talosctl"
    assert run_folders(cluster) == runs_before, "a dry-run left a run record"


# -- 6. a hung talosctl is killed at the step's timeout ---------------------------------------------


def test_a_hung_talosctl_is_killed_at_the_step_timeout(cluster: LiveCluster) -> None:
    cluster.talos.respond(stderr="waiting for the node to answer\n", hang=True)
    started = time.monotonic()
    result = cli(cluster, "run", "e2e-talos-timeout", *PROFILE, "--json")
    took = time.monotonic() - started
    assert result.returncode == 5, result.stdout + result.stderr
    final = report(result)
    assert "step 'health' failed" in final["message"]
    assert "timed out after 2 s and was killed" in final["message"]
    assert "waiting for the node to answer" in final["message"], "stderr so far should be shown"
    assert [s["step_id"] for s in final["steps"]] == ["health"], "the run went on after a failed step"
    assert took < 15, f"a 2 s timeout took {took:.1f}s to end the run"
    (call,) = cluster.talos.calls()
    assert call["argv"][:3] == ["--nodes", "10.20.0.31", "health"]
    assert gone(call["pid"]), "the hung talosctl outlived the run"
