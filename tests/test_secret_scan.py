"""The API token never leaks: every command and scenario, run with a known token and DEBUG logging,
scanned byte by byte for it.

One test drives the real CLI (a process per command, as an operator runs it) through every command
(list, show, validate, profiles, run: dry-run, offline, JSON, HTML, real runs, failures of every
kind, resume, runs, runs show, ingest, trust, sim) against fakepve over verified HTTPS, a real sshd,
a real pass store and the fake talosctl. Each process imports a ``sitecustomize`` that turns on
DEBUG logging for every logger (httpx, httpcore, runbook.*) into stderr and a log file, with
Python's development mode on (warnings shown). Scanned afterwards:

- stdout and stderr of every command, the debug log, every file in the home (journals, run
  records, locks, the simulated cluster's state, ingested runbooks) and every HTML page written;
- the fake talosctl's record of its argv and environment;
- the argument list of every process on the machine, read from ``/proc/<pid>/cmdline`` every few
  milliseconds while the commands run: a secret handed to a child may go through its environment or
  stdin, never its argv.

The scan looks for the secret itself, for every 12-character piece of it (a truncated or wrapped
leak), and for its base64 and URL-encoded forms; and for the wrong secret used in the 401 scenario.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from engine.executors.shell import SshExecutor
from engine.runbook.actions import ShellCommand
from tests.support.cluster import PASS_PATH, TOKEN_ID, LiveCluster, node_endpoints, seed_cluster, write_home
from tests.support.fake_talosctl import install
from tests.support.fakepve_server import FakePveServer, closed_port_url
from tests.support.passstore import create_pass_store
from tests.support.sshd import start_sshd

REPO = Path(__file__).resolve().parent.parent
SECRET = "5c4n-9e1d7a3f0b6c2e84-tok-d5f1a7c3e9b2"
WRONG = "wr0ng-77ab31c9e0f4d2a6-tok-8c1e5b9d3f70"
PIECE = 12
CLI_TIMEOUT = 90

SITECUSTOMIZE = """\
import logging, os, sys
_log = os.environ.get("RUNBOOK_SCAN_LOG")
if _log:
    logging.basicConfig(level=logging.DEBUG, force=True,
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
                        handlers=[logging.FileHandler(_log), logging.StreamHandler(sys.stderr)])
"""

SCAN_RUNBOOK = """\
---
name: scan-token
format: 2
description: Hand the token to commands that print it, succeed and fail (tests only).
---

## Print it, and succeed

```local {id: echo_ok, api_token_env: TOK}
echo "stdout: $TOK"
echo "stderr: $TOK" >&2
```

## Print it, and fail

```local {id: echo_fail, api_token_env: TOK}
echo "stdout: $TOK"
echo "stderr: ${TOK#*=}" >&2
exit 3
```
"""


#: Found on a real cluster: with the token only in $PROXMOX_API_TOKEN, a ``local`` step running
#: ``env`` printed it. Children inherit no variable holding it now, and steps that ask for it and
#: print it in any form show the mask.
SCAN_ENV_RUNBOOK = """\
---
name: scan-env
format: 2
description: Print the environment, and the token in the forms tools print it (tests only).
---

## What every child inherits

```local {id: print_env}
env
```

## The token, asked for and printed on purpose

```local {id: print_forms, api_token_env: TOK}
echo "as is: $TOK"
printf %s "PVEAPIToken=$TOK" | base64 -w0; echo
python3 -c 'import json, os, urllib.parse; t = os.environ["TOK"]; print(urllib.parse.quote(t, safe="")); print(json.dumps(t))'
printf %s "${TOK#*=}" | fold -w 10; echo
```
"""


def forms(secret: str) -> dict[str, str]:
    """What a leak of ``secret`` could look like: itself, pieces of it, and encodings."""
    found = {
        "secret": secret,
        "base64": base64.b64encode(secret.encode()).decode(),
        "url-encoded": urllib.parse.quote(secret, safe=""),
        "header base64": base64.b64encode(f"{TOKEN_ID}={secret}".encode()).decode()[8:],
    }
    for start in range(len(secret) - PIECE + 1):
        found[f"piece {start}"] = secret[start : start + PIECE]
    return found


class ArgvWatcher:
    """Reads every process's argv from /proc in a loop; remembers those holding a secret."""

    def __init__(self, secrets: list[str]):
        self.secrets = [s.encode() for s in secrets]
        self.hits: list[tuple[int, str]] = []
        self.seen: set[str] = set()
        self.sweeps = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            for name in os.listdir("/proc"):
                if not name.isdigit() or int(name) == me:
                    continue
                try:
                    raw = Path(f"/proc/{name}/cmdline").read_bytes()
                except OSError:
                    continue
                if not raw:
                    continue
                # argv[0], and argv[1] for scripts (pass and the fake talosctl run under an interpreter)
                self.seen.update(Path(arg.decode(errors="replace")).name for arg in raw.split(b"\0")[:2])
                if any(secret in raw for secret in self.secrets):
                    self.hits.append((int(name), raw.replace(b"\0", b" ").decode(errors="replace")))
            self.sweeps += 1
            time.sleep(0.002)

    def __enter__(self) -> ArgvWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def scan_cluster(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCluster]:
    sshd = start_sshd(tmp_path_factory.mktemp("sshd"), aliases=("127.0.0.1", "127.0.0.2", "127.0.0.3"))
    store = create_pass_store(tmp_path_factory.mktemp("pass"), entries={PASS_PATH: [TOKEN_ID, SECRET]})
    (tmp_path / "pve").mkdir()
    try:
        with FakePveServer(tmp_path / "pve", SECRET, seed=3) as pve:
            seed_cluster(pve)
            home = write_home(tmp_path / "home", pve, sshd)
            (home / "runbooks" / "scan-token.md").write_text(SCAN_RUNBOOK)
            (home / "runbooks" / "scan-env.md").write_text(SCAN_ENV_RUNBOOK)
            yield LiveCluster(home, pve, sshd, store, install(tmp_path / "talos"))
    finally:
        sshd.stop()
        store.stop()


def test_every_command_and_scenario_leaves_no_trace_of_the_token(scan_cluster: LiveCluster, tmp_path: Path) -> None:
    cluster = scan_cluster
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    debug_log = tmp_path / "debug.log"
    html = tmp_path / "html"
    html.mkdir()
    debug = {
        "PYTHONPATH": str(site),
        "RUNBOOK_SCAN_LOG": str(debug_log),
        "PYTHONDEVMODE": "1",
        "PYTHONWARNINGS": "always",
    }
    codes: list[tuple[str, int]] = []

    def run(*args: str, expect: int | None = 0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = cluster.run(*args, timeout=CLI_TIMEOUT, extra_env={**debug, **(env or {})})
        codes.append((" ".join(args), result.returncode))
        if expect is not None:
            assert result.returncode == expect, (args, result.stdout[-2000:], result.stderr[-3000:])
        return result

    def report(result: subprocess.CompletedProcess[str]) -> dict:
        return json.loads(result.stdout.splitlines()[-1])

    profile = ("--profile", "talos-staging")
    with ArgvWatcher([SECRET, WRONG]) as watcher:
        # Looking around: nothing here needs the token, and nothing may print it.
        for args in (
            ("list",),
            ("list", "--json"),
            ("show", "e2e-create"),
            ("show", "scan-token", "--json"),
            ("validate",),
            ("validate", "--json"),
            ("profiles",),
            ("profiles", "--json"),
            ("profiles", "show", "talos-staging"),
            ("profiles", "show", "talos-staging", "--json"),
        ):
            run(*args, expect=None)
        # Plans: read-only steps run against the cluster (with the token), or nothing is contacted.
        run("run", "e2e-create", *profile, "--dry-run")
        run("run", "e2e-create", *profile, "--dry-run", "--json")
        run("run", "e2e-create", *profile, "--dry-run", "--offline", "--json")
        run("run", "e2e-create", *profile, "--dry-run", "--html", str(html / "plan.html"))
        # Real runs: create (every step kind), again (skips), the token handed to local commands.
        first = report(run("run", "e2e-create", *profile, "--json"))
        run("run", "e2e-create", *profile)
        run("run", "e2e-token-env", "--json")
        run("run", "scan-token", "--json", expect=5)
        run("runs")
        run("runs", "--json")
        run("runs", "show", first["run_id"])
        run("runs", "show", first["run_id"], "--json")
        run("runs", "show", first["run_id"], "--html", str(html / "run.html"))

        # Failures, each then resumed once the cause is gone.
        cluster.pve.do(cluster.pve.pve.fail, "PUT", "/qemu/1032/config", error="config_lock_timeout", times=1)
        cluster.pve.do(lambda: [cluster.pve.pve.vms.remove(vm) for vm in list(cluster.pve.pve.vms) if not vm.template])
        failed = report(run("run", "e2e-create", *profile, "--json", expect=5))
        run("resume", failed["run_id"], "--json")
        run("run", "e2e-teardown", *profile, expect=4)  # refused before its first change: a gate
        run("run", "e2e-teardown", *profile, "--approve", "delete")
        # A wrong secret in the store: a 401 that names the token id, never a secret (before any run: 8).
        cluster.store.insert(PASS_PATH, [TOKEN_ID, WRONG])
        run("run", "e2e-create", *profile, "--json", expect=10)
        cluster.store.insert(PASS_PATH, [TOKEN_ID, SECRET])
        run("run", "e2e-create", *profile, "--json")
        # The token from the environment instead of pass; and a malformed one.
        run("run", "e2e-create", *profile, env={"PROXMOX_API_TOKEN": f"{TOKEN_ID}={SECRET}"})
        in_env = {"PROXMOX_API_TOKEN": f"{TOKEN_ID}={SECRET}"}
        run("run", "scan-env", env=in_env)
        printed = report(run("run", "scan-env", "--json", env=in_env))
        run("runs", "show", printed["run_id"], "--json")
        run("run", "e2e-create", *profile, env={"PROXMOX_API_TOKEN": f"{TOKEN_ID}={SECRET} x"}, expect=None)
        run("run", "e2e-create", *profile, env={"PROXMOX_API_TOKEN": f"{SECRET}"}, expect=None)
        # httpx failing in every way: dropped connections, a refused node, a certificate that does not match.
        cluster.pve.do(cluster.pve.pve.flaky_network, drop_rate=0.5)
        for _ in range(2):
            run("run", "e2e-create", *profile, "--json", expect=None)
        cluster.pve.do(cluster.pve.pve.flaky_network)
        live = node_endpoints(cluster.pve)
        write_home(cluster.home, cluster.pve, cluster.sshd, node_urls=[closed_port_url()] * 3)
        run("run", "e2e-create", *profile, expect=None)
        config_path = cluster.home / "cluster-config.yaml"
        write_home(cluster.home, cluster.pve, cluster.sshd, node_urls=live)
        config = yaml.safe_load(config_path.read_text())
        config["tls"] = {"fingerprint": "AB:" * 31 + "CD"}
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        run("run", "e2e-create", *profile, expect=10)
        (tmp_path / "other").mkdir()
        with FakePveServer(tmp_path / "other", "another-cluster") as other:
            config["tls"] = {"ca_file": str(other.certfile)}
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            run("run", "e2e-create", *profile, expect=10)
        write_home(cluster.home, cluster.pve, cluster.sshd, node_urls=live)
        # Programs failing: a talosctl that hangs, an ssh host that refuses.
        cluster.talos.respond(stderr="waiting\n", hang=True)
        timed_out = report(run("run", "e2e-talos-timeout", *profile, "--json", expect=5))
        cluster.talos.state.write_text(json.dumps({"rules": []}))
        run("resume", timed_out["run_id"])
        # Interrupted: Ctrl-C (a traceback, if any, is scanned too), then SIGKILL, then resume.
        cluster.pve.pve.time_scale = 0.05
        for sig in (signal.SIGINT, signal.SIGKILL):
            cluster.pve.do(
                lambda: [cluster.pve.pve.vms.remove(vm) for vm in list(cluster.pve.pve.vms) if not vm.template]
            )
            process = cluster.start("run", "e2e-create", *profile, extra_env=debug)
            time.sleep(1.2)
            process.send_signal(sig)
            out, err = process.communicate(timeout=CLI_TIMEOUT)
            cluster.outputs += [out, err]
        cluster.pve.pve.time_scale = 0
        interrupted = json.loads(run("runs", "--json").stdout)["runs"][0]["run_id"]
        run("resume", interrupted, "--yes", expect=None)
        # Ingest and trust a page; the simulated cluster.
        run("ingest", str(REPO / "tests" / "ingest_pages" / "mixed.md"), "--name", "scan-ingested", "--yes")
        run("trust", "scan-ingested", "--yes", expect=None)
        run("sim", "status")
        run("run", "cluster-create", "--profile", "dev-generic", "--simulate", expect=None)
        run("sim", "status", "--json")

    # ------------------------------------------------------------------ the scan
    texts = {f"output {n}": text for n, text in enumerate(cluster.outputs)}
    texts["debug log"] = debug_log.read_text(errors="replace")
    for path in [*cluster.home.rglob("*"), *html.rglob("*")]:
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
    texts["talosctl calls"] = cluster.talos.log.read_text() if cluster.talos.log.exists() else ""
    leaks = [
        (where, name)
        for where, text in texts.items()
        for secret in (SECRET, WRONG)
        for name, form in forms(secret).items()
        if form in text
    ]
    contexts = {
        where: texts[where][max(0, texts[where].find(SECRET) - 600) : texts[where].find(SECRET) + 200]
        for where, _ in leaks
        if SECRET in texts[where]
    }
    assert not leaks, f"the token leaked: {leaks[:10]}\n{contexts}"
    assert not watcher.hits, f"a secret was on a command line: {watcher.hits}"

    # The scan saw what it was meant to see.
    assert "DEBUG" in texts["debug log"] and "runbook.api" in texts["debug log"], "debug logging was not on"
    assert "httpcore" in texts["debug log"] and "httpx" in texts["debug log"], "httpx's own debug log was not on"
    assert "*MASKED*" in "".join(cluster.outputs), "the printing steps' output should show the mask"
    assert any("401" in t for t in cluster.outputs) and any("does not verify" in t for t in cluster.outputs)
    assert any("fingerprint" in t for t in cluster.outputs) and any("timed out after" in t for t in cluster.outputs)
    assert {"ssh", "bash", "talosctl", "pass", "gpg"} <= watcher.seen, sorted(watcher.seen)
    assert watcher.sweeps > 100
    programs = sorted(watcher.seen & {"ssh", "bash", "talosctl", "pass", "gpg", "gpg-agent"})
    print(
        f"scan: {len(codes)} CLI invocations (+2 interrupted), {len(texts)} texts, {watcher.sweeps} /proc sweeps, "
        f"programs seen: {programs}"
    )
    assert len(codes) > 40 and len(texts) > 60


def test_argv_builders_never_carry_a_secret_or_a_script() -> None:
    """The ssh command line names the host and a time limit; env values (secret or not) and the script
    travel on stdin. (Local scripts run as ``bash -s``, talosctl with the runbook's own arguments.)"""
    ssh = SshExecutor({"pve01": "10.0.0.1"}, "root", ssh_config="/etc/ssh/cfg")
    command = ShellCommand(script=f"echo {SECRET[:6]}", node="pve01", env={"TOKEN": SECRET}, timeout=5)
    argv = ssh.argv(command)
    assert not any(SECRET in arg or SECRET[:6] in arg for arg in argv)
    assert argv[-2:] == ["root@10.0.0.1", "timeout --kill-after=2 6 bash -s"]


def test_a_command_that_prints_only_the_secret_part_of_the_token_is_masked_too(tmp_path: Path) -> None:
    """Found by the scan: the token handed to a command (``api_token_env``) is ``user@realm!id=secret``,
    and a command printing just the part after ``=`` (as ``${TOK#*=}`` or Ansible's modules split it)
    showed the secret in its output, the progress events, the failure message and the journal."""
    from engine.executors.shell import LocalExecutor
    from engine.run.secrets import Secret
    from engine.runbook.actions import StepFailed

    lines: list[str] = []
    command = ShellCommand(script='echo "${TOK#*=}"; echo "${TOK#*=}" >&2; exit 3', token_env="TOK")
    with pytest.raises(StepFailed) as failed:
        LocalExecutor().run(command, lines.append, secret_env={"TOK": Secret(f"{TOKEN_ID}={SECRET}")})
    assert SECRET not in failed.value.message and SECRET not in json.dumps(failed.value.data)
    assert SECRET not in "".join(lines) and lines == ["*MASKED*", "*MASKED*"]
