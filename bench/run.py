#!/usr/bin/env python3
"""Benchmark: cluster-create then cluster-teardown against the simulated cluster, timed; see bench/README.md.

    .venv/bin/python bench/run.py                 # 3, 12, 48 VMs at time_scale 0.02, and 3 VMs in real time
    .venv/bin/python bench/run.py --quick         # without the real-time row
    .venv/bin/python bench/run.py --sizes 12 --scale 0.02 --storage local

Each scenario runs in a child process of its own (a fresh home, a fresh simulated cluster), so
peak memory and the tasks' history are its own. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: PVE seconds each task type takes (the type in its UPID). Migration is SimPve.migrate_secs (20).
DURATIONS = {"qmclone": 30.0, "qmstart": 10.0, "qmshutdown": 15.0}
MIGRATE = 20.0
TEMPLATE = 110
FIRST_VMID = 1300


# ---------------------------------------------------------------- the lower bound


def critical_path(
    kind: str, vms: int, storage: str, per_template: int | None, per_storage: int | None, concurrency: int
) -> float:
    """The shortest wall time any engine could take, in PVE seconds, from the durations and the lock rules.

    create: a VM's chain is clone (30), then migrate (20, only without shared storage), then start
    (10); configure and resize are instantaneous here. Clones of one template onto one storage run
    at most ``min(limits)`` at once, so they end in waves of 30 s; the last VM's chain then needs
    its migrate and start. Items hold one of ``concurrency`` slots for their whole chain, so there
    are also ``ceil(vms / concurrency)`` waves of whole chains.
    teardown: every shutdown (15) runs at once; stop and delete are instantaneous.
    """
    if kind == "teardown":
        return DURATIONS["qmshutdown"] * math.ceil(vms / concurrency)
    clone = DURATIONS["qmclone"]
    after = (MIGRATE if storage == "local" else 0.0) + DURATIONS["qmstart"]
    slots = min(x for x in (per_template, per_storage, concurrency, vms) if x)
    by_clones = math.ceil(vms / slots) * clone + after
    by_chains = math.ceil(vms / concurrency) * (clone + after)
    return max(by_clones, by_chains)


# ---------------------------------------------------------------- one scenario (child process)


def make_home(root: Path, vms: int, storage: str, limits: dict[str, int]) -> Path:
    import yaml

    home = root / "home"
    (home / "runbooks").mkdir(parents=True)
    (home / "clusters").mkdir()
    for name in ("cluster-create", "cluster-teardown"):
        shutil.copy(REPO / "runbooks" / f"{name}.md", home / "runbooks" / f"{name}.md")
    config = yaml.safe_load((REPO / "cluster-config.yaml").read_text())
    if storage == "shared":
        config["defaults"].update(storage="ceph-vm", shared_storage=True)
    if limits:
        config["limits"] = limits
    (home / "cluster-config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    profile = {
        "name": "bench",
        "description": "benchmark cluster",
        "type": "generic",
        "network": {"pod_cidr": "10.248.0.0/16", "service_cidr": "10.112.0.0/12"},
        "nodes": {
            "controlplane": {
                "count": 1,
                "name_prefix": "bench-cp",
                "cores": 2,
                "memory": 2048,
                "disk": "32G",
                "start_vmid": FIRST_VMID,
                "placement": "spread",
            },
            "workers": {
                "count": vms - 1,
                "name_prefix": "bench-w",
                "cores": 2,
                "memory": 2048,
                "disk": "32G",
                "start_vmid": FIRST_VMID + 100,
                "placement": "spread",
            },
        },
        "template": TEMPLATE,
        "tags": ["bench", "kubernetes"],
    }
    (home / "clusters" / "bench.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return home


class _Yes:
    who = "bench"

    def approve(self, entry: Any) -> bool:
        return True


HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
TOKEN_ID = "root@pam!bench"


def serve(options: dict[str, Any]) -> None:
    """The simulated cluster in a process of its own (as a real cluster is): fakepve's SimPve seeded from
    the home, serving on 127.0.0.1-3 (one address per node), tasks taking ``DURATIONS`` scaled by
    ``time_scale``. Prints ``{"urls", "certfile", "token"}``; then answers each ``count`` line on stdin
    with ``{"requests", "tasks"}``; ends when stdin closes."""
    import asyncio
    import logging
    import secrets
    import ssl

    from aiohttp import web
    from fakepve.certs import make_cert

    from engine.load.config import load_config
    from engine.load.home import Home
    from engine.load.profiles import load_profiles
    from engine.sim.server import SimPve, _seed

    class BenchPve(SimPve):
        migrate_secs = MIGRATE

        async def task(self, node, ttype, tid, user, body, vm=None, lock=True, log=()):  # type: ignore[override]
            secs = DURATIONS.get(ttype, 0.0)

            async def timed():  # the task's work happens after its duration, as a disk copy or a boot ends
                await self.pause(secs)
                return await body()

            return await super().task(node, ttype, tid, user, timed if secs else body, vm=vm, lock=lock, log=log)

    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)
    home = Home(Path(options["home"]))
    config = load_config(home)
    certfile, keyfile, _der = make_cert(options["workdir"], name="pve-ssl", hosts=HOSTS)
    pve = BenchPve(host=HOSTS[0], port=0)
    pve.time_scale = options["scale"]
    pve.max_requests = 10**7
    secret = secrets.token_hex(16)
    pve.apitokens[TOKEN_ID] = secret
    _seed(pve, config, load_profiles(home, config)[0])

    async def main() -> None:
        await pve.start(certfile, keyfile)
        urls = [f"https://{HOSTS[0]}:{pve.port}"]
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile, keyfile)
        for host in HOSTS[1:]:
            before = {tuple(a) for a in pve.runner.addresses}
            await web.TCPSite(pve.runner, host, 0, ssl_context=context).start()
            (added,) = [a for a in pve.runner.addresses if tuple(a) not in before]
            urls.append(f"https://{host}:{added[1]}")
        print(json.dumps({"urls": urls, "certfile": certfile, "token": f"{TOKEN_ID}={secret}"}), flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            print(json.dumps({"requests": len(pve.requests), "tasks": len(pve.tasklog)}), flush=True)
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()
        await pve.stop()

    asyncio.run(main())


class Cluster:
    """The simulated cluster's process, as the engine sees it."""

    def __init__(self, home: Path, workdir: Path, scale: float):
        options = {"home": str(home), "workdir": str(workdir), "scale": scale}
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.info = json.loads(self.process.stdout.readline())

    def counts(self) -> dict[str, int]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


def point_home_at(home: Path, cluster: Cluster) -> None:
    import yaml

    path = home / "cluster-config.yaml"
    config = yaml.safe_load(path.read_text())
    for node, url in zip(config["cluster"]["nodes"], cluster.info["urls"]):
        host, port = url.split("//")[1].rsplit(":", 1)
        node.update(host=host, port=int(port))
    config["tls"] = {"ca_file": cluster.info["certfile"]}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def one_run(home: Path, cluster: Cluster, runbook: str, concurrency: int) -> dict[str, Any]:
    """Run ``runbook`` once, in this process, against the cluster process; what it took."""
    from engine.load.config import load_config
    from engine.load.home import Home
    from engine.run.dispatch import Dispatcher
    from engine.run.execution import start_run

    h = Home(home)
    config = load_config(h)
    dispatcher = Dispatcher(config.data, h.root, env={"PROXMOX_API_TOKEN": cluster.info["token"]})
    before = cluster.counts()
    cpu0 = time.process_time()
    started = time.perf_counter()
    try:
        outcome = start_run(
            h, runbook, "bench", {}, dispatcher=dispatcher, approver=_Yes(), mode="run", concurrency=concurrency
        )
    finally:
        dispatcher.close()
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    after = cluster.counts()
    if outcome.status != "succeeded":
        raise SystemExit(f"{runbook} did not succeed: {outcome.message}")
    executed = [
        e
        for e in outcome.entries
        if e.status == "succeeded" and e.duration is not None and e.reason != "finished in an earlier attempt"
    ]
    return {
        "wall": wall,
        "requests": after["requests"] - before["requests"],
        "tasks": after["tasks"] - before["tasks"],
        "cpu": cpu,
        "steps": len(executed),
    }


def scenario(options: dict[str, Any]) -> dict[str, Any]:
    vms, scale, storage = options["vms"], options["scale"], options["storage"]
    limits = options.get("limits") or {}
    concurrency = options.get("concurrency") or min(64, vms)
    with tempfile.TemporaryDirectory(prefix="runbook-bench-") as tmp:
        home = make_home(Path(tmp), vms, storage, limits)
        cluster = Cluster(home, Path(tmp), scale)
        try:
            point_home_at(home, cluster)
            if options.get("warm", True):  # the journal of an earlier run: tasks are polled when likely done
                one_run(home, cluster, "cluster-create", concurrency)
                one_run(home, cluster, "cluster-teardown", concurrency)
            result: dict[str, Any] = {}
            for name in ("create", "teardown"):
                result[name] = one_run(home, cluster, f"cluster-{name}", concurrency)
            for name in ("create", "teardown"):
                result[name]["sequential"] = one_run(home, cluster, f"cluster-{name}", 1)["wall"]
        finally:
            cluster.stop()
    result["concurrency"] = concurrency
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for name in ("create", "teardown"):
        bound = (
            critical_path(
                name, vms, storage, limits.get("clones_per_template"), limits.get("clones_per_storage"), concurrency
            )
            * scale
        )
        result[name]["bound"] = bound
    return result


# ---------------------------------------------------------------- startup and validation


def startup(runs: int = 15) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "runbook"), "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def validation(count: int = 200) -> tuple[float, float]:
    """(ms per runbook for ``runbook validate`` over ``count`` generated runbooks, ms for the same home without them)."""
    runbooks = sorted(p for p in (REPO / "runbooks").glob("*.md") if not p.name.startswith("_"))
    runner = str(Path(sys.executable).parent / "runbook")
    with tempfile.TemporaryDirectory(prefix="runbook-validate-") as tmp:
        home = Path(tmp)
        shutil.copy(REPO / "cluster-config.yaml", home)
        shutil.copytree(REPO / "clusters", home / "clusters")
        (home / "runbooks").mkdir()
        empty = _timed([runner, "--home", str(home), "validate"])
        for number in range(count):
            source = runbooks[number % len(runbooks)]
            name = f"{source.stem}-{number:03d}"
            text = source.read_text().replace(f"name: {source.stem}\n", f"name: {name}\n", 1)
            # Each copy differs in its headings and in a comment in every shell body, so little is shared.
            text = re.sub(r"(\n```(?:ssh|local) \{[^\n]*\n)", rf"\1# copy {number}\n", text)
            text = text.replace("\n## ", f"\n## ({number}) ")
            (home / "runbooks" / f"{name}.md").write_text(text)
        full = _timed([runner, "--home", str(home), "validate"])
    return (full - empty) * 1000 / count, empty * 1000


def parsing() -> dict[str, float]:
    """Milliseconds to parse the large inputs tests/test_fuzz.py feeds the parser (it checks only that
    they finish and what they report; how fast is this report's)."""
    from engine.load.problems import InputError
    from engine.runbook.parser import parse_runbook

    front = "---\nname: big\nformat: 2\ndescription: A large runbook.\n---\n\n"
    inputs = {
        "5000 steps": front
        + "".join(
            f'## Step {i}\n\n```local {{id: s{i}, when: "true"}}\necho {i} {{{{ 1 + {i} }}}}\n```\n\n'
            for i in range(5000)
        ),
        "5000 broken steps": front
        + "".join(f"```local {{id: s{i % 50}, bogus: {i}}}\necho\n```\n\n" for i in range(5000)),
        "a 2 MB line, 20000 attributes": front
        + "```local {id: a}\necho "
        + "x" * 2_000_000
        + "\n```\n\n```local {"
        + ", ".join(f"k{i}: {i}" for i in range(20_000))
        + "}\necho\n```\n",
    }
    took = {}
    for name, text in inputs.items():
        started = time.perf_counter()
        try:
            parse_runbook(text, "runbooks/big.md")
        except InputError:
            pass
        took[name] = (time.perf_counter() - started) * 1000
    return took


def _timed(argv: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    took = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}")
    return took


# ---------------------------------------------------------------- the table


def child(options: dict[str, Any]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOK_", "PROXMOX_"))}
    done = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(options)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"scenario {options} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    head = (
        "VMs",
        "scale",
        "storage",
        "conc",
        "run",
        "wall s",
        "bound s",
        "wall/bound",
        "conc=1 s",
        "speed-up",
        "req/task",
        "req/VM",
        "CPU ms/step",
        "peak MB",
    )
    lines = [head]
    for options, result in rows:
        for name in ("create", "teardown"):
            r = result[name]
            lines.append(
                (
                    str(options["vms"]),
                    f"{options['scale']:g}",
                    options["storage"],
                    str(result["concurrency"]),
                    name,
                    f"{r['wall']:.2f}",
                    f"{r['bound']:.2f}",
                    f"{r['wall'] / r['bound']:.2f}",
                    f"{r['sequential']:.2f}",
                    f"{r['sequential'] / r['wall']:.1f}x",
                    f"{r['requests'] / max(1, r['tasks']):.2f}",
                    f"{r['requests'] / options['vms']:.2f}",
                    f"{r['cpu'] * 1000 / max(1, r['steps']):.1f}",
                    f"{result['peak_mb']:.0f}",
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in lines]
    out.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="3,12,48", help="VM counts (default 3,12,48)")
    parser.add_argument("--scale", type=float, default=0.02, help="real seconds per PVE second (default 0.02)")
    parser.add_argument(
        "--storage",
        choices=("shared", "local"),
        default="shared",
        help="shared: clone straight onto the VM's node; local: clone, then migrate (default shared)",
    )
    parser.add_argument("--clone-limit", type=int, help="limits.clones_per_template and clones_per_storage")
    parser.add_argument("--quick", action="store_true", help="skip the real-time (time_scale 1) row")
    parser.add_argument("--no-startup", action="store_true", help="skip the --help and validate timings")
    args = parser.parse_args()
    if args.serve:
        serve(json.loads(args.serve))
        return
    if args.one:
        print(json.dumps(scenario(json.loads(args.one))))
        return
    limits = (
        {"clones_per_template": args.clone_limit, "clones_per_storage": args.clone_limit} if args.clone_limit else {}
    )
    plans = [
        {"vms": int(n), "scale": args.scale, "storage": args.storage, "limits": limits} for n in args.sizes.split(",")
    ]
    if not args.quick:
        plans.append({"vms": 3, "scale": 1.0, "storage": args.storage, "limits": limits})
    rows = []
    for options in plans:
        print(
            f"running {options['vms']} VMs at time_scale {options['scale']:g} ({options['storage']} storage)...",
            file=sys.stderr,
            flush=True,
        )
        rows.append((options, child(options)))
    print(table(rows))
    durations = ", ".join(f"{k} {v:g} s" for k, v in DURATIONS.items())
    print(
        f"\ntask durations (PVE s): {durations}, qmigrate {MIGRATE:g} s; others 0."
        f" limits: {limits or 'none'}; req = API requests (POST/PUT/GET, polls included)"
    )
    if not args.no_startup:
        print(f"runbook --help: {startup() * 1000:.0f} ms (median of 15)")
        per, empty = validation()
        print(
            f"runbook validate: {per:.1f} ms per runbook over 200 generated runbooks "
            f"(the same home without them: {empty:.0f} ms)"
        )
        print("parsing: " + ", ".join(f"{name} {ms:.0f} ms" for name, ms in parsing().items()))


if __name__ == "__main__":
    main()
