"""fakepve in a process of its own, so the cluster outlives the engine that a test kills.

Why: the crash-and-resume harness SIGKILLs ``runbook`` at random moments. A fake served from the
test's own process (``fakepve_server.FakePveServer``) would do, except that every test then shares
the interpreter with it; here the cluster is a separate program, exactly as a real cluster is
separate from the machine that drives it, and its tasks go on running while the engine is dead.

Run as a program::

    python -m tests.support.pve_process --workdir DIR --home HOME [--time-scale 0.02] [--listeners 3]

It reads the API token *secret* from its stdin (one line: a secret never goes in an argument
list), serves the simulated cluster of ``HOME`` (``engine.sim.server.SimPve``, seeded from HOME's
cluster-config.yaml and profiles exactly as ``--simulate`` seeds it, migrate and resize modelled)
over HTTPS with a fresh certificate for 127.0.0.1-3, prints one JSON line
``{"urls": [...], "certfile", "fingerprint", "control", "pid"}`` and serves until SIGTERM/SIGKILL.

``control`` is a plain-HTTP endpoint on 127.0.0.1 for the test only (no secret crosses it):

- ``GET /state``: nodes, quorum, every VM (vmid, name, node, status, template, lock, config) and
  every storage's volumes and free space;
- ``GET /outcomes``: every authenticated request the fake answered, in order: method, path, the
  form/query parameters, HTTP status, reason phrase, and the task UPID of a 2xx task answer;
- ``GET /tasks``: every task (upid, type, id, status, exitstatus);
- ``GET /settle?timeout=S``: returns once no task is running (or after S seconds, ``settled: false``);
- ``POST /call`` ``{"method": name, "args": [...], "kwargs": {...}}``: one of the fault
  injections listed in ``CALLS`` (fakepve's own, plus ``revoke_token``/``restore_token``,
  ``set_time_scale``, ``clear_failures``, ``set_storage_avail``, ``set_task_secs`` (PVE seconds a
  task type takes before its work is done, e.g. ``{"qmclone": 30}``: a clone holds its lock meanwhile)).

In tests, ``PveProcess.start(...)`` runs it and wraps the control endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
TOKEN_ID = "root@pam!runbook"
START_TIMEOUT = 30.0

#: Fault injections the control endpoint accepts (method names on the fake, or our own below).
CALLS = frozenset(
    {
        "fail",
        "flaky_network",
        "slow_network",
        "set_node_offline",
        "lose_quorum",
        "regain_quorum",
        "snapshot_lock",
        "unlock",
        "hold_config_lock",
        "release_config_lock",
        "backup",
        "revoke_token",
        "restore_token",
        "set_time_scale",
        "clear_failures",
        "set_storage_avail",
        "set_task_secs",
    }
)


# ---------------------------------------------------------------- the server (child process)


def _serve(args: argparse.Namespace) -> None:
    from aiohttp import web
    from fakepve.certs import make_cert
    from fakepve.server import params

    from engine.load.config import load_config
    from engine.load.home import Home
    from engine.load.profiles import load_profiles
    from engine.sim.server import SimPve, _seed
    from tests.support.fakepve_server import colon_fingerprint

    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # dropped connections log tracebacks
    secret = sys.stdin.readline().strip()
    if not secret:
        raise SystemExit("pve_process: no token secret on stdin")

    class ProcessPve(SimPve):
        """SimPve that also logs every answer (status, reason, UPID) for the test to audit."""

        outcomes: list[dict[str, Any]]
        task_secs: dict[str, float] = {}

        async def task(self, node, ttype, tid, user, body, vm=None, lock=True, log=()):  # type: ignore[no-untyped-def, override]
            secs = self.task_secs.get(ttype, 0.0)

            async def timed():  # type: ignore[no-untyped-def]
                await self.pause(secs)  # the work is done at the end, as a disk copy or a boot ends
                return await body()

            return await super().task(node, ttype, tid, user, timed if secs else body, vm=vm, lock=lock, log=log)

        async def _answer(self, request: Any, handler: Any, generic: Any, path_node: Any) -> Any:
            values = {k: v for k, v in (await params(request)).items()}
            response = await super()._answer(request, handler, generic, path_node)
            upid = None
            if 200 <= response.status < 300 and getattr(response, "text", None):
                try:
                    data = json.loads(response.text).get("data")
                except (ValueError, AttributeError):
                    data = None
                if isinstance(data, str) and data.startswith("UPID:"):
                    upid = data
            self.outcomes.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "params": values,
                    "status": response.status,
                    "reason": response.reason,
                    "upid": upid,
                    "at": time.time(),
                }
            )
            return response

    home = Home(Path(args.home).resolve())
    config = load_config(home)
    profiles = load_profiles(home, config)[0]
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    certfile, keyfile, der = make_cert(str(workdir), name="pve-ssl", hosts=HOSTS)
    pve = ProcessPve(host=HOSTS[0], port=0)
    pve.outcomes = []
    pve.time_scale = args.time_scale
    pve.apitokens[args.token_id] = secret
    revoked: dict[str, str] = {}
    _seed(pve, config, profiles)
    # The template's base disk as a volume with a size, so clones allocate real space and a storage
    # can fill up (fakepve sizes a clone's disks from the volumes it copies).
    for vm in pve.vms:
        if vm.template:
            for key, value in vm.config.items():
                if key.startswith("scsi") and ":base-" in str(value):
                    sid, name = str(value).split(",")[0].split(":", 1)
                    pve.storages[sid].setdefault("volumes", {})[name] = {
                        "content": "images",
                        "format": "raw",
                        "size": 8 * 1024**3,
                        "vmid": vm.vmid,
                    }

    async def call(request: web.Request) -> web.Response:
        body = await request.json()
        name, call_args, kwargs = body["method"], body.get("args", []), body.get("kwargs", {})
        if name not in CALLS:
            return web.json_response({"error": f"not an allowed call: {name}"}, status=400)
        if name == "revoke_token":
            revoked.update({tid: pve.apitokens.pop(tid) for tid in list(pve.apitokens)})
            result: Any = None
        elif name == "restore_token":
            pve.apitokens.update(revoked)
            revoked.clear()
            result = None
        elif name == "set_time_scale":
            pve.time_scale = float(call_args[0])
            result = None
        elif name == "set_task_secs":
            pve.task_secs = {str(kind): float(secs) for kind, secs in call_args[0].items()}
            result = None
        elif name == "clear_failures":
            pve.failures.clear()
            result = None
        elif name == "set_storage_avail":
            sid, avail = call_args
            if avail is None:
                pve.storages[sid].pop("avail", None)
            else:
                pve.storages[sid]["avail"] = int(avail)
            result = None
        else:
            result = getattr(pve, name)(*call_args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
        return web.json_response({"result": result if isinstance(result, (str, int, float, type(None))) else None})

    async def state(request: web.Request) -> web.Response:
        vms = [
            {
                "vmid": vm.vmid,
                "name": vm.name,
                "node": vm.node,
                "status": vm.status,
                "template": bool(vm.template),
                "lock": vm.lock,
                "config": dict(vm.config),
            }
            for vm in pve.vms
        ]
        storages = {
            sid: {
                "avail": store.get("avail"),
                "volumes": {
                    n: {"vmid": v.get("vmid"), "size": v.get("size")} for n, v in (store.get("volumes") or {}).items()
                },
            }
            for sid, store in pve.storages.items()
        }
        running = sum(1 for t in pve.tasks.values() if t.get("status") == "running")
        return web.json_response(
            {"nodes": pve.nodes, "quorate": pve.quorate, "vms": vms, "storages": storages, "running_tasks": running},
            dumps=lambda d: json.dumps(d, default=str),
        )

    async def outcomes(request: web.Request) -> web.Response:
        return web.json_response(pve.outcomes, dumps=lambda d: json.dumps(d, default=str))

    async def tasks(request: web.Request) -> web.Response:
        return web.json_response(
            [{k: t.get(k) for k in ("upid", "type", "id", "status", "exitstatus", "node")} for t in pve.tasks.values()]
        )

    async def settle(request: web.Request) -> web.Response:
        deadline = time.monotonic() + float(request.query.get("timeout", "30"))
        while time.monotonic() < deadline:
            if not any(t.get("status") == "running" for t in pve.tasks.values()):
                return web.json_response({"settled": True})
            await asyncio.sleep(0.02)
        return web.json_response({"settled": False})

    async def main() -> None:
        import ssl

        await pve.start(certfile, keyfile)
        urls = [f"https://{HOSTS[0]}:{pve.port}"]
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile, keyfile)
        for host in HOSTS[1 : args.listeners]:
            before = {tuple(a) for a in pve.runner.addresses}
            await web.TCPSite(pve.runner, host, 0, ssl_context=context).start()
            (added,) = [a for a in pve.runner.addresses if tuple(a) not in before]
            urls.append(f"https://{host}:{added[1]}")
        app = web.Application()
        app.add_routes(
            [
                web.get("/state", state),
                web.get("/outcomes", outcomes),
                web.get("/tasks", tasks),
                web.get("/settle", settle),
                web.post("/call", call),
            ]
        )
        control = web.AppRunner(app, access_log=None)
        await control.setup()
        site = web.TCPSite(control, "127.0.0.1", 0)
        await site.start()
        control_port = control.addresses[0][1]
        print(
            json.dumps(
                {
                    "urls": urls,
                    "certfile": certfile,
                    "fingerprint": colon_fingerprint(der),
                    "control": f"http://127.0.0.1:{control_port}",
                    "pid": os.getpid(),
                }
            ),
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        me = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not me:
                task.cancel()
        await control.cleanup()
        await pve.stop()

    asyncio.run(main())


# ---------------------------------------------------------------- the client (in the test)


@dataclass
class PveProcess:
    """A running ``pve_process``: where it serves, and its control endpoint."""

    process: subprocess.Popen[str]
    urls: list[str]
    certfile: str
    fingerprint: str
    control: str

    @classmethod
    def start(
        cls,
        workdir: Path,
        home: Path,
        secret: str,
        *,
        token_id: str = TOKEN_ID,
        time_scale: float = 0.0,
        listeners: int = 1,
    ) -> PveProcess:
        """Start the fake for ``home``'s cluster; the secret goes over stdin, never in the argument list."""
        argv = [
            sys.executable,
            "-m",
            "tests.support.pve_process",
            "--workdir",
            str(workdir),
            "--home",
            str(home),
            "--token-id",
            token_id,
            "--time-scale",
            repr(time_scale),
            "--listeners",
            str(listeners),
        ]
        env = {k: v for k, v in os.environ.items() if k not in ("PROXMOX_API_TOKEN", "PYTHONPATH")}
        env["PYTHONPATH"] = str(REPO)
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(secret + "\n")
        process.stdin.close()
        import selectors

        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(START_TIMEOUT):
                process.kill()
                raise RuntimeError(f"pve_process did not start within {START_TIMEOUT}s: {process.communicate()[1]}")
        line = process.stdout.readline()
        if not line:
            process.wait(10)
            stderr = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"pve_process exited ({process.returncode}): {stderr}")
        info = json.loads(line)
        return cls(process, info["urls"], info["certfile"], info["fingerprint"], info["control"])

    @property
    def pid(self) -> int:
        return self.process.pid

    def _client(self) -> Any:
        import httpx

        return httpx.Client(base_url=self.control, trust_env=False, timeout=60)

    def get(self, path: str, **params: Any) -> Any:
        with self._client() as client:
            response = client.get(path, params=params)
            response.raise_for_status()
            return response.json()

    def state(self) -> dict[str, Any]:
        return self.get("/state")

    def outcomes(self) -> list[dict[str, Any]]:
        return self.get("/outcomes")

    def tasks(self) -> list[dict[str, Any]]:
        return self.get("/tasks")

    def settle(self, timeout: float = 30) -> bool:
        """Wait until no task runs on the fake (as an operator checks the task list); False on timeout."""
        return bool(self.get("/settle", timeout=timeout)["settled"])

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._client() as client:
            response = client.post("/call", json={"method": method, "args": list(args), "kwargs": kwargs})
            response.raise_for_status()
            return response.json()["result"]

    def stop(self) -> None:
        """SIGTERM this process (by its pid), SIGKILL it if it lingers, and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> PveProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pve_process", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="folder for the certificate and key")
    parser.add_argument("--home", required=True, help="runbook home whose config and profiles seed the cluster")
    parser.add_argument("--token-id", default=TOKEN_ID)
    parser.add_argument("--time-scale", type=float, default=0.0, help="real seconds per PVE second (0: instant)")
    parser.add_argument(
        "--listeners",
        type=int,
        default=1,
        choices=(1, 2, 3),
        help="serve on this many loopback addresses (one per node)",
    )
    _serve(parser.parse_args(argv))


if __name__ == "__main__":
    main()
