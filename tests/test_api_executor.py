"""The API executor over real HTTPS against fakepve, with the token read from a real ``pass`` store.

Every test that makes a call fail also checks that neither the secret in use nor any other secret
shows up in the failure's message, repr, traceback or data, nor in any log record (DEBUG included,
so httpx's and httpcore's own logging is covered).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import ssl
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakepve.certs import make_cert

from engine.executors.api import (
    ApiExecutor,
    ApiSetupError,
    PinnedCert,
    PollPolicy,
    _http_failure,
    encode_params,
    pinned_context,
)
from engine.load.config import config_problems
from engine.load.yamlsource import load_yaml
from engine.run.credentials import DEFAULT_TOKEN_ENV, ApiToken, TokenSource
from engine.run.secrets import Secret
from engine.runbook.actions import ApiRequest, StepFailed
from tests.support.fakepve_server import EXTRA_HOSTS, HOST, TOKEN_ID, FakePveServer, closed_port_url, colon_fingerprint
from tests.support.passstore import PassStore, create_pass_store
from tests.support.relay import Relay

SECRET = "sekret-5f1d2c7a-91e0-4c8b-a6d3-0e2f4b6c8d10"
WRONG_SECRET = "sekret-wrong-0c1f9e27-b3a4-4d5e-8f60-718293a4b5c6"
LIMITED_ID = "runbook@pve!ci"
LIMITED_SECRET = "sekret-limited-77aa31d4-2b9c-4e01-9d3f-5a6b7c8d9e0f"
ALL_SECRETS = (SECRET, WRONG_SECRET, LIMITED_SECRET)
ENTRY = "proxmox/lab/runbook-token"
WRONG_ENTRY = "proxmox/lab/wrong-secret"
LIMITED_ENTRY = "proxmox/lab/limited"
FAST = PollPolicy(initial=0.01, factor=1.5, cap=0.05)
Logs = pytest.LogCaptureFixture


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PassStore]:
    entries = {
        ENTRY: [TOKEN_ID, SECRET],
        WRONG_ENTRY: [TOKEN_ID, WRONG_SECRET],
        LIMITED_ENTRY: [LIMITED_ID, LIMITED_SECRET],
    }
    store = create_pass_store(tmp_path_factory.mktemp("pass"), entries=entries)
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture
def pass_env(store: PassStore) -> dict[str, str]:
    env = store.full_env()
    env.pop(DEFAULT_TOKEN_ENV, None)  # the developer's shell must not decide which token is used
    return env


def serve(tmp_path: Path, name: str = "pve", **options: Any) -> FakePveServer:
    workdir = tmp_path / name
    workdir.mkdir()
    server = FakePveServer(workdir, SECRET, **options)
    pve = server.pve
    server.do(pve.apitokens.__setitem__, LIMITED_ID, LIMITED_SECRET)
    server.do(
        pve.add_vm,
        100,
        "tmpl-debian12",
        node="pve01",
        template=True,
        config={
            "scsi0": "local-lvm:base-100-disk-0,size=8G",
            "memory": 2048,
            "cores": 2,
            "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
            "tags": "runbook;base",
        },
    )
    server.do(
        pve.add_vm,
        200,
        "web-1",
        node="pve01",
        config={"scsi0": "local-lvm:vm-200-disk-0,size=8G", "description": "old", "tags": "web"},
    )
    return server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakePveServer]:
    with serve(tmp_path) as server:
        yield server


@pytest.fixture(autouse=True)
def all_logs(caplog: Logs) -> Logs:
    caplog.set_level(logging.DEBUG)
    return caplog


def cluster_config(*ports: int, tls: dict[str, Any] | None = None, pass_path: str = ENTRY) -> dict[str, Any]:
    return {
        "cluster": {
            "name": "lab",
            "nodes": [{"name": f"pve0{i}", "host": "127.0.0.1", "port": port} for i, port in enumerate(ports, 1)],
        },
        "credentials": {"pass_path": pass_path, "token_env": DEFAULT_TOKEN_ENV, "ssh_user": "root"},
        "tls": tls or {},
    }


def tokens(pass_env: dict[str, str], entry: str = ENTRY) -> TokenSource:
    return TokenSource(cluster_config(8006, pass_path=entry), pass_env)


def ca(server: FakePveServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=server.certfile)


def executor(server: FakePveServer, pass_env: dict[str, str], entry: str = ENTRY, **options: Any) -> ApiExecutor:
    options.setdefault("poll", FAST)
    options.setdefault("backoff", 0.01)
    return ApiExecutor([("pve01", server.url)], tokens(pass_env, entry), ca(server), **options)


def fails(api: ApiExecutor, request: ApiRequest, logs: Logs) -> StepFailed:
    """Call, expect StepFailed, and check that no secret leaked anywhere."""
    with pytest.raises(StepFailed) as info:
        api.execute(request)
    exc = info.value
    shown = "".join(
        [exc.message, str(exc), repr(exc), repr(exc.data), logs.text, "".join(traceback.format_exception(exc))]
    )
    for secret in ALL_SECRETS:
        assert secret not in shown
    return exc


def clone_requests(server: FakePveServer) -> list[tuple[str, str, bytes]]:
    return [r for r in server.pve.requests if r[0] == "POST" and r[1].endswith("/clone")]


# ------------------------------------------------------------------ success


def test_get_returns_data(server: FakePveServer, pass_env: dict[str, str], all_logs: Logs) -> None:
    with executor(server, pass_env) as api:
        result = api.execute(ApiRequest("GET", "/cluster/resources", {"type": "vm"}))
    assert sorted(vm["vmid"] for vm in result.data) == [100, 200]
    assert result.requests == 1
    assert result.summary == "GET /cluster/resources: 200 OK"
    assert SECRET not in all_logs.text and SECRET not in repr(result)


def test_post_clone_waits_for_its_task(server: FakePveServer, pass_env: dict[str, str]) -> None:
    with executor(server, pass_env) as api:
        result = api.execute(
            ApiRequest(
                "POST", "/nodes/pve01/qemu/100/clone", {"newid": 1001, "name": "web-2", "full": True}, node="pve01"
            )
        )
    upid = result.data["upid"]
    assert upid.startswith("UPID:pve01:") and ":qmclone:100:" in upid
    assert result.data == {"upid": upid, "node": "pve01", "exitstatus": "OK", "data": upid}
    assert result.requests == 2  # the POST and one status poll (time_scale 0: the task is already done)
    assert result.summary.startswith("task qmclone on pve01: OK after ")
    vm = server.pve.vm(1001)
    assert vm is not None and vm.name == "web-2" and vm.node == "pve01"
    assert clone_requests(server)[0][2] == b"newid=1001&name=web-2&full=1"


def test_running_task_is_polled_with_growing_pauses_and_progress(tmp_path: Path, pass_env: dict[str, str]) -> None:
    with serve(tmp_path, time_scale=0.01) as server:
        server.do(setattr, server.pve.vm(200), "start_secs", 30)  # 0.3 s of wall time
        seen: list[str] = []
        with executor(server, pass_env, poll=PollPolicy(initial=0.02, factor=1.5, cap=0.1)) as api:
            started = time.monotonic()
            result = api.execute(ApiRequest("POST", "/nodes/pve01/qemu/200/status/start"), progress=seen.append)
            elapsed = time.monotonic() - started
        assert result.data["exitstatus"] == "OK" and server.pve.vm(200).status == "running"
    assert seen and all(s.startswith("waiting for task qmstart on pve01: running ") and s.endswith(" s") for s in seen)
    # Pauses 0.02, 0.03, 0.045, 0.0675 (0.16 s), then one per 0.1 s: a handful of polls, no busy loop.
    assert 4 <= result.requests <= 1 + 4 + math.ceil(elapsed / 0.1) + 1


def test_step_timeout_leaves_a_running_task_to_the_operator(
    tmp_path: Path, pass_env: dict[str, str], all_logs: Logs
) -> None:
    with serve(tmp_path, time_scale=0.01) as server:
        server.do(setattr, server.pve.vm(200), "start_secs", 300)  # 3 s of wall time
        with executor(server, pass_env) as api:
            exc = fails(api, ApiRequest("POST", "/nodes/pve01/qemu/200/status/start", timeout=0.2), all_logs)
    assert "task qmstart on pve01 is still running after 0.2 s, the step's timeout" in exc.message
    assert exc.sent and exc.data["exitstatus"] is None and exc.data["upid"] in exc.message


def test_params_are_encoded_as_pve_takes_them(server: FakePveServer, pass_env: dict[str, str]) -> None:
    with executor(server, pass_env) as api:
        api.execute(
            ApiRequest(
                "PUT",
                "/nodes/pve01/qemu/200/config",
                {"onboot": True, "protection": False, "delete": ["description", "tags"], "cores": 4, "agent": None},
            )
        )
    config = server.pve.vm(200).config
    assert (config["onboot"], config["protection"], config["cores"]) == ("1", "0", "4")
    assert "description" not in config and "tags" not in config and "agent" not in config


# ------------------------------------------------------------------ PVE says no


def test_failed_task_shows_exit_status_and_log_tail(
    server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    server.do(setattr, server.pve.vm(200), "start_error", "start failed: QEMU exited with code 1")
    with executor(server, pass_env) as api:
        exc = fails(api, ApiRequest("POST", "/nodes/pve01/qemu/200/status/start"), all_logs)
    assert "task qmstart on pve01 failed: start failed: QEMU exited with code 1" in exc.message
    assert "last lines of its log:\n" in exc.message
    assert "  TASK ERROR: start failed: QEMU exited with code 1" in exc.message
    assert exc.data["exitstatus"] == "start failed: QEMU exited with code 1" and exc.sent and not exc.retryable
    assert exc.data["upid"] in exc.message


def test_long_task_log_is_read_in_pages_and_only_its_tail_shown(
    tmp_path: Path, pass_env: dict[str, str], all_logs: Logs
) -> None:
    with serve(tmp_path, time_scale=0.01) as server:
        vm = server.pve.vm(200)
        server.do(setattr, vm, "start_secs", 20)
        server.do(setattr, vm, "start_error", "start failed: QEMU exited with code 1")

        def grow_log(_: str) -> None:  # at the first poll, as a long clone's progress lines would
            task = server.pve.tasklog[-1]
            if len(task["log"]) < 1200:
                server.do(task["log"].extend, [f"progress line {n}" for n in range(1, 1201)])

        with executor(server, pass_env) as api:
            with pytest.raises(StepFailed) as info:
                api.execute(ApiRequest("POST", "/nodes/pve01/qemu/200/status/start"), progress=grow_log)
    message = info.value.message
    # The last 20 lines: 18 progress lines, the error, TASK ERROR.
    assert "log:\n  progress line 1183\n" in message and "progress line 1182\n" not in message
    assert message.count("\n  ") == 20
    assert "  TASK ERROR: start failed: QEMU exited with code 1\ntask: UPID:" in message
    log_requests = [r for r in server.pve.requests if r[1].endswith("/log")]
    assert len(log_requests) == 3  # 1202 lines in pages of 500


def test_task_failing_on_a_lock_is_retryable(server: FakePveServer, pass_env: dict[str, str], all_logs: Logs) -> None:
    server.call(server.pve.hold_config_lock(200, None))
    with executor(server, pass_env) as api:
        exc = fails(api, ApiRequest("POST", "/nodes/pve01/qemu/200/status/start"), all_logs)
    assert "can't lock file '/var/lock/qemu-server/lock-200.conf' - got timeout" in exc.message
    assert exc.retryable and exc.lock


def test_http_lock_error_is_retryable(server: FakePveServer, pass_env: dict[str, str], all_logs: Logs) -> None:
    server.do(server.pve.snapshot_lock, 200, "backup")
    server.do(setattr, server.pve.vm(200), "status", "running")
    with executor(server, pass_env) as api:
        exc = fails(api, ApiRequest("POST", "/nodes/pve01/qemu/200/status/shutdown"), all_logs)
    assert "HTTP 500 VM is locked (backup)" in exc.message and "wait for it to end" in exc.message
    assert exc.retryable and exc.lock


def test_wrong_secret_is_401_naming_the_token_id(
    server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    with executor(server, pass_env, entry=WRONG_ENTRY) as api:
        exc = fails(api, ApiRequest("GET", "/nodes"), all_logs)
    assert (
        f"the API rejected token {TOKEN_ID} from pass entry '{WRONG_ENTRY}' (401 authentication failure)" in exc.message
    )
    assert "pveum user token list" in exc.message and not exc.retryable


def test_missing_privilege_is_403_with_how_to_grant_it(
    server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    server.do(server.pve.grant, "runbook@pve", "/vms/100", "VM.Audit")
    with executor(server, pass_env, entry=LIMITED_ENTRY) as api:
        exc = fails(api, ApiRequest("POST", "/nodes/pve01/qemu/100/clone", {"newid": 1001}), all_logs)
    assert "permission denied (403 Permission check failed (/vms/100, VM.Clone))" in exc.message
    assert (
        f"pveum acl modify /vms/100 --tokens '{LIMITED_ID}' --roles ROLE` with a role holding VM.Clone" in exc.message
    )
    assert server.pve.vm(1001) is None


def test_unknown_parameter_is_400_listing_pve_errors(
    server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    with executor(server, pass_env) as api:
        exc = fails(api, ApiRequest("POST", "/nodes/pve01/qemu/100/clone", {"newid": 1001, "bogus": 1}), all_logs)
    assert "PVE refused the parameters (400 Parameter verification failed.)" in exc.message
    assert (
        "  - bogus: property is not defined in schema and the schema does not allow additional properties"
        in exc.message
    )
    assert server.pve.vm(1001) is None


def test_parameter_encoding() -> None:
    assert encode_params(
        {
            "full": True,
            "onboot": False,
            "delete": ["net1", "scsi1"],
            "cores": 2,
            "ratio": 0.5,
            "agent": None,
            "name": "web-1",
        }
    ) == {"full": "1", "onboot": "0", "delete": "net1,scsi1", "cores": "2", "ratio": "0.5", "name": "web-1"}
    with pytest.raises(StepFailed, match="parameter 'net0' is a dict") as info:
        encode_params({"net0": {"model": "virtio"}})
    assert not info.value.sent


def test_reason_phrase_alone_is_used_as_older_pve_sends_it() -> None:
    response = httpx.Response(500, json={"data": None}, extensions={"reason_phrase": b"unable to open file"})
    token = ApiToken(TOKEN_ID, Secret(SECRET), "pass entry 'x'")
    exc = _http_failure("GET", "/nodes/pve01/storage", "pve01", response, {"data": None}, token)
    assert exc.message == "GET /nodes/pve01/storage on pve01: HTTP 500 unable to open file"


# ------------------------------------------------------------------ nodes and the network


def test_dead_first_node_fails_over_and_later_calls_start_at_the_live_one(
    server: FakePveServer, pass_env: dict[str, str]
) -> None:
    endpoints = [("pve01", closed_port_url()), ("pve02", server.url)]
    with ApiExecutor(endpoints, tokens(pass_env), ca(server), poll=FAST) as api:
        clone = api.execute(ApiRequest("POST", "/nodes/pve01/qemu/100/clone", {"newid": 1001}, node="pve01"))
        assert clone.data["exitstatus"] == "OK"
        assert clone.requests == 3  # refused on pve01 (nothing sent), POST and status poll on pve02
        assert len(clone_requests(server)) == 1 and server.pve.vm(1001) is not None
        listing = api.execute(ApiRequest("GET", "/nodes/pve01/qemu", node="pve01"))
        assert listing.requests == 1  # pve01 is known to be down: asked last, so not at all


def test_request_node_is_asked_first_then_the_last_node_that_answered(
    server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    second = server.add_listener()  # the same cluster behind another port: a second live node

    def answered_by() -> str:
        lines = [r.getMessage() for r in all_logs.records if r.name == "runbook.api"]
        return lines[-1].split(" on ")[1].split(":")[0]

    with ApiExecutor([("pve01", server.url), ("pve02", second)], tokens(pass_env), ca(server)) as api:
        api.execute(ApiRequest("GET", "/nodes"))
        assert answered_by() == "pve01"
        api.execute(ApiRequest("GET", "/nodes/pve02/qemu", node="pve02"))
        assert answered_by() == "pve02"
        api.execute(ApiRequest("GET", "/version"))
        assert answered_by() == "pve02"


def test_all_nodes_down_lists_each_node_and_why(
    server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    dead1, dead2 = closed_port_url(), closed_port_url()
    with ApiExecutor([("pve01", dead1), ("pve02", dead2)], tokens(pass_env), ca(server)) as api:
        exc = fails(api, ApiRequest("POST", "/nodes/pve01/qemu/100/clone", {"newid": 1001}), all_logs)
    assert "no Proxmox VE node could be reached for POST /nodes/pve01/qemu/100/clone; nothing was sent" in exc.message
    assert f"  - pve01 ({dead1}): " in exc.message and f"  - pve02 ({dead2}): " in exc.message
    assert "Connection refused" in exc.message
    # The ports the config names, not PVE's default (found on a cluster behind a port forward).
    ports = ", ".join(sorted(url.rsplit(":", 1)[1] for url in (dead1, dead2)))
    assert "systemctl status pveproxy" in exc.message and f"ports {ports} are reachable" in exc.message
    assert "8006" not in exc.message
    assert not exc.sent and exc.retryable


# Seeds of fakepve's network randomness: 16 drops the first two requests and then lets them through;
# 9 drops the first request only.
DROP_TWICE, DROP_ONCE = 16, 9


def test_dropped_get_is_retried(tmp_path: Path, pass_env: dict[str, str], all_logs: Logs) -> None:
    with serve(tmp_path, seed=DROP_TWICE) as server:
        server.do(server.pve.flaky_network, drop_rate=0.5)
        with executor(server, pass_env, retries=3) as api:
            result = api.execute(ApiRequest("GET", "/nodes"))
    assert [n["node"] for n in result.data] == ["pve01", "pve02", "pve03"]
    assert result.requests == 3
    assert all_logs.text.count("no answer from pve01 (Server disconnected without sending a response.)") == 2
    assert SECRET not in all_logs.text


def test_dropped_post_is_not_sent_again(tmp_path: Path, pass_env: dict[str, str], all_logs: Logs) -> None:
    with serve(tmp_path, seed=DROP_ONCE) as server:
        server.do(server.pve.flaky_network, drop_rate=0.5)
        request = ApiRequest("POST", "/nodes/pve01/qemu/100/clone", {"newid": 1001})
        with executor(server, pass_env, retries=3) as api:
            exc = fails(api, request, all_logs)
            assert "may or may not have been carried out" in exc.message and "check the cluster" in exc.message
            assert exc.sent and not exc.retryable
            assert server.pve.vm(1001) is None
            # A second send would have gone through: only the operator may decide to make it.
            assert api.execute(request).data["exitstatus"] == "OK"
        assert len(clone_requests(server)) == 1


def test_unanswered_post_is_not_sent_again_and_get_gives_up_after_retries(
    tmp_path: Path, pass_env: dict[str, str], all_logs: Logs
) -> None:
    with serve(tmp_path) as server:
        server.do(server.pve.flaky_network, hang_rate=1.0, hang_secs=2)
        with executor(server, pass_env, timeout=0.2, retries=1) as api:
            post = fails(api, ApiRequest("POST", "/nodes/pve01/qemu/100/clone", {"newid": 1001}), all_logs)
            get = fails(api, ApiRequest("GET", "/nodes"), all_logs)
    assert "ReadTimeout" in post.message and "may or may not have been carried out" in post.message
    assert "GET /nodes: no answer from pve01 after 2 attempts (last: ReadTimeout" in get.message
    assert get.retryable and get.sent


# ------------------------------------------------------------------ TLS


def test_fingerprint_pin_is_checked_then_trusted(server: FakePveServer, pass_env: dict[str, str]) -> None:
    config = cluster_config(server.port, tls={"fingerprint": server.fingerprint.lower()})
    with ApiExecutor.from_config(config, tokens(pass_env)) as api:
        assert api.execute(ApiRequest("GET", "/version")).data["release"]
        assert api.warnings == []


def test_fingerprint_mismatch_stops_before_anything_is_sent(
    tmp_path: Path, server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    with serve(tmp_path, "other") as other:
        config = cluster_config(server.port, tls={"fingerprint": other.fingerprint})
        with ApiExecutor.from_config(config, tokens(pass_env)) as api:
            exc = fails(api, ApiRequest("GET", "/nodes"), all_logs)
    assert f"has SHA-256 fingerprint {server.fingerprint}, but tls.fingerprint" in exc.message
    assert f"cluster-config.yaml is {other.fingerprint}" in exc.message and "pvenode cert info" in exc.message
    assert not exc.sent and server.pve.requests == []


def test_pinned_context_trusts_no_other_certificate(tmp_path: Path, server: FakePveServer) -> None:
    with serve(tmp_path, "other") as other:
        pinned = pinned_context(server.der)
        assert httpx.get(server.url + "/api2/json/version", verify=pinned).status_code == 401  # TLS passed
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(other.url + "/api2/json/version", verify=pinned)


def test_wrong_ca_file_fails_verification_without_sending(
    tmp_path: Path, server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    with serve(tmp_path, "other") as other:
        config = cluster_config(server.port, tls={"ca_file": other.certfile})
        with ApiExecutor.from_config(config, tokens(pass_env)) as api:
            exc = fails(api, ApiRequest("GET", "/nodes"), all_logs)
    assert "TLS certificate does not verify: self-signed certificate" in exc.message
    assert "tls.ca_file" in exc.message and "/etc/pve/pve-root-ca.pem" in exc.message
    assert not exc.sent and not exc.retryable and server.pve.requests == []


def test_relative_ca_file_is_found_in_the_home(server: FakePveServer, pass_env: dict[str, str]) -> None:
    config = cluster_config(server.port, tls={"ca_file": Path(server.certfile).name})
    with ApiExecutor.from_config(config, tokens(pass_env), base_dir=Path(server.certfile).parent) as api:
        assert api.execute(ApiRequest("GET", "/nodes")).requests == 1


def test_missing_ca_file_is_a_setup_error(tmp_path: Path, pass_env: dict[str, str]) -> None:
    with pytest.raises(ApiSetupError, match="does not exist. Copy the cluster CA from a node"):
        ApiExecutor.from_config(cluster_config(8006, tls={"ca_file": str(tmp_path / "nope.pem")}), tokens(pass_env))


def test_insecure_works_and_warns(server: FakePveServer, pass_env: dict[str, str], all_logs: Logs) -> None:
    with ApiExecutor.from_config(cluster_config(server.port, tls={"insecure": True}), tokens(pass_env)) as api:
        assert api.execute(ApiRequest("GET", "/nodes")).requests == 1
    assert len(api.warnings) == 1 and "TLS certificate verification is off" in api.warnings[0]
    assert any(r.levelno == logging.WARNING and "verification is off" in r.getMessage() for r in all_logs.records)


# ------------------------------------------------------------------ one certificate per node


class OwnCertNode:
    """The fake served on one more port with a certificate of its own, as each real PVE node has one.

    All such nodes share the fake's cluster state (a clone made through one is seen through the
    other) but each presents a different certificate, so each needs its own fingerprint. ``down()``
    makes the node refuse new connections and drops its open ones, like a node that just died.
    """

    def __init__(self, server: FakePveServer, workdir: Path, host: str = HOST):
        workdir.mkdir()
        certfile, keyfile, der = make_cert(str(workdir), name="node", hosts=(host,))
        self.fingerprint = colon_fingerprint(der)
        self.host = host
        self._server = server
        self._handlers: list[Any] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile, keyfile)

        async def listen() -> asyncio.Server:
            factory = server.pve.runner.server

            def handler() -> Any:
                made = factory()
                self._handlers.append(made)
                return made

            return await asyncio.get_running_loop().create_server(handler, host, 0, ssl=context)

        self._listener = server.call(listen())
        self.port = int(self._listener.sockets[0].getsockname()[1])
        self.url = f"https://{host}:{self.port}"

    def down(self) -> None:
        async def close() -> None:
            self._listener.close()
            for handler in self._handlers:
                if handler.transport is not None:
                    handler.transport.close()

        self._server.call(close())

    def __enter__(self) -> OwnCertNode:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.down()


def node_config(
    *nodes: tuple[str, OwnCertNode | FakePveServer, str | None], tls: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A cluster config whose nodes are ``(name, where it is served, its own fingerprint or None)``."""
    config = cluster_config(8006, tls=tls)
    config["cluster"]["nodes"] = [
        {"name": name, "host": where.host, "port": where.port, **({"fingerprint": own} if own else {})}
        for name, where, own in nodes
    ]
    return config


def answered_by(logs: Logs) -> str:
    """The node that answered the last request, from the executor's own DEBUG line."""
    lines = [r.getMessage() for r in logs.records if r.name == "runbook.api" and " in " in r.getMessage()]
    return lines[-1].split(" on ")[1].split(":")[0]


def test_each_node_is_pinned_by_its_own_fingerprint(
    tmp_path: Path, server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    with OwnCertNode(server, tmp_path / "n1") as one, OwnCertNode(server, tmp_path / "n2", EXTRA_HOSTS[0]) as two:
        assert len({one.fingerprint, two.fingerprint, server.fingerprint}) == 3
        config = node_config(("pve01", one, one.fingerprint), ("pve02", two, two.fingerprint.lower()))
        with ApiExecutor.from_config(config, tokens(pass_env), poll=FAST) as api:
            api.execute(ApiRequest("GET", "/nodes/pve01/qemu", node="pve01"))
            assert answered_by(all_logs) == "pve01"
            clone = api.execute(ApiRequest("POST", "/nodes/pve01/qemu/100/clone", {"newid": 1001}, node="pve02"))
            assert answered_by(all_logs) == "pve02"
            assert clone.data["exitstatus"] == "OK" and server.pve.vm(1001) is not None
            assert api.warnings == []


def test_failover_goes_to_a_node_pinned_by_its_own_fingerprint(
    tmp_path: Path, server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    with OwnCertNode(server, tmp_path / "n1") as one, OwnCertNode(server, tmp_path / "n2", EXTRA_HOSTS[0]) as two:
        config = node_config(("pve01", one, one.fingerprint), ("pve02", two, two.fingerprint))
        with ApiExecutor.from_config(config, tokens(pass_env), poll=FAST) as api:
            assert api.execute(ApiRequest("GET", "/nodes")).requests == 1
            assert answered_by(all_logs) == "pve01"  # pinned and in use: its connection is open
            one.down()
            clone = api.execute(ApiRequest("POST", "/nodes/pve01/qemu/100/clone", {"newid": 1001}, node="pve01"))
            assert answered_by(all_logs) == "pve02"
            assert clone.data["exitstatus"] == "OK" and clone.requests == 3  # refused on pve01, POST, poll
            assert len(clone_requests(server)) == 1 and server.pve.vm(1001) is not None
            # pve01 is known to be down now: the next call goes straight to pve02, on its pinned connection.
            assert api.execute(ApiRequest("GET", "/nodes/pve01/qemu/1001/config", node="pve01")).requests == 1
            assert answered_by(all_logs) == "pve02"


def test_node_whose_own_fingerprint_is_wrong_fails_naming_that_node(
    tmp_path: Path, server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    with OwnCertNode(server, tmp_path / "n1") as one, OwnCertNode(server, tmp_path / "n2", EXTRA_HOSTS[0]) as two:
        # pve02 is given pve01's fingerprint, as a copy-paste slip would.
        config = node_config(("pve01", one, one.fingerprint), ("pve02", two, one.fingerprint))
        with ApiExecutor.from_config(config, tokens(pass_env)) as api:
            api.execute(ApiRequest("GET", "/nodes"))
            before = len(server.pve.requests)
            exc = fails(api, ApiRequest("GET", "/nodes/pve02/qemu", node="pve02"), all_logs)
            assert len(server.pve.requests) == before  # the token never went to pve02
            assert api.execute(ApiRequest("GET", "/nodes/pve01/qemu", node="pve01")).requests == 1  # pve01 unaffected
    assert exc.message.startswith(
        f"the certificate of node pve02 ({two.url}) has SHA-256 fingerprint "
        f"{two.fingerprint}, but the fingerprint of node pve02 (cluster.nodes) in "
        f"cluster-config.yaml is {one.fingerprint}. Nothing was sent."
    )
    assert "`pvenode cert info` on pve02" in exc.message and not exc.sent and not exc.retryable


def test_cluster_wide_fingerprint_pins_the_nodes_without_their_own(
    tmp_path: Path, server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    with OwnCertNode(server, tmp_path / "n2", EXTRA_HOSTS[0]) as two:
        # One tls.fingerprint for a cluster whose nodes have different certificates: pve02 is refused.
        single = node_config(("pve01", server, None), ("pve02", two, None), tls={"fingerprint": server.fingerprint})
        with ApiExecutor.from_config(single, tokens(pass_env)) as api:
            api.execute(ApiRequest("GET", "/nodes", node="pve01"))
            exc = fails(api, ApiRequest("GET", "/nodes", node="pve02"), all_logs)
        assert (
            f"node pve02 ({two.url}) has SHA-256 fingerprint {two.fingerprint}, but tls.fingerprint in "
            f"cluster-config.yaml is {server.fingerprint}"
            in exc.message
            and not exc.sent
        )
        # pve02's own fingerprint fixes it; pve01 stays pinned by tls.fingerprint.
        mixed = node_config(
            ("pve01", server, None), ("pve02", two, two.fingerprint), tls={"fingerprint": server.fingerprint}
        )
        with ApiExecutor.from_config(mixed, tokens(pass_env)) as api:
            api.execute(ApiRequest("GET", "/nodes", node="pve01"))
            assert answered_by(all_logs) == "pve01"
            api.execute(ApiRequest("GET", "/nodes", node="pve02"))
            assert answered_by(all_logs) == "pve02"


def test_config_with_a_fingerprint_per_node_validates_and_connects(
    tmp_path: Path, server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    """From cluster-config.yaml text: ``tls: {}`` is enough when every node has its own fingerprint."""
    with OwnCertNode(server, tmp_path / "n1") as one, OwnCertNode(server, tmp_path / "n2", EXTRA_HOSTS[0]) as two:
        text = f"""\
cluster:
  name: lab
  nodes:
    - {{name: pve01, host: {one.host}, port: {one.port}, fingerprint: "{one.fingerprint}"}}
    - {{name: pve02, host: {two.host}, port: {two.port}, fingerprint: "{two.fingerprint}"}}
credentials: {{pass_path: {ENTRY}, ssh_user: root}}
tls: {{}}
defaults: {{storage: local-lvm, bios: ovmf, cpu: host, network_bridge: vmbr0, scsi_controller: virtio-scsi-single,
           guest_agent: true}}
vmid_ranges: {{templates: {{min: 100, max: 199}}, vms: {{min: 1000, max: 1999}}}}
"""
        doc = load_yaml(text, "cluster-config.yaml")
        assert config_problems(doc) == []
        with ApiExecutor.from_config(doc.data, tokens(pass_env)) as api:
            for node in ("pve01", "pve02"):
                api.execute(ApiRequest("GET", "/version", node=node))
                assert answered_by(all_logs) == node
        # Take pve02's fingerprint away: pinning covers every node or none, and the problem names pve02.
        doc = load_yaml(text.replace(f', fingerprint: "{two.fingerprint}"', ""), "cluster-config.yaml")
        assert [str(p) for p in config_problems(doc)] == [
            "cluster-config.yaml:5: cluster.nodes[1]: node pve02 has no fingerprint, while node pve01 is pinned by "
            "its own: when pinning, every node needs one. Add fingerprint: to pve02 (on that node: 'openssl x509 "
            "-noout -fingerprint -sha256 -in /etc/pve/local/pve-ssl.pem'), or set tls.fingerprint for the nodes "
            "without one of their own"
        ]


@pytest.mark.parametrize(
    ("nodes", "tls", "message"),
    [
        (
            [None, None],
            {"fingerprint": "AB:" * 31 + "AB", "ca_file": "ca.pem"},
            "tls.ca_file and a fingerprint are both given in cluster-config.yaml, but a node's certificate is checked "
            "one way only",
        ),
        (["AB:" * 31 + "AB", None], {"ca_file": "ca.pem"}, "tls.ca_file and a fingerprint are both given"),
        (
            ["AB:" * 31 + "AB", None],
            {},
            "node pve02 has no fingerprint in cluster-config.yaml, while other nodes are "
            "pinned by their own: add fingerprint: to pve02",
        ),
        (
            ["AB:" * 31 + "AB", "CD:" * 31 + "CD"],
            {"insecure": True},
            "tls.insecure: true together with ca_file or a fingerprint in cluster-config.yaml is contradictory",
        ),
    ],
    ids=[
        "ca-file-and-tls-fingerprint",
        "ca-file-and-node-fingerprint",
        "node-without-fingerprint",
        "insecure-and-node-fingerprints",
    ],
)
def test_unclear_trust_is_a_setup_error(
    nodes: list[str | None], tls: dict[str, Any], message: str, pass_env: dict[str, str]
) -> None:
    """What the config check refuses, the executor refuses too, should an unchecked config reach it."""
    config = cluster_config(8006, 8007, tls=tls)
    for node, own in zip(config["cluster"]["nodes"], nodes):
        if own:
            node["fingerprint"] = own
    with pytest.raises(ApiSetupError, match=re.escape(message)):
        ApiExecutor.from_config(config, tokens(pass_env))


def test_per_node_verification_must_cover_every_endpoint(pass_env: dict[str, str]) -> None:
    with pytest.raises(ApiSetupError, match="no way to check the certificate of node[(]s[)] pve02"):
        ApiExecutor(
            [("pve01", "https://127.0.0.1:8006"), ("pve02", "https://127.0.0.2:8006")],
            tokens(pass_env),
            {"pve01": PinnedCert("AB:" * 31 + "AB")},
        )


# ------------------------------------------------------------------ where the token comes from


def test_token_from_environment_variable(server: FakePveServer, pass_env: dict[str, str]) -> None:
    env = dict(pass_env, PROXMOX_API_TOKEN=f"{LIMITED_ID}={LIMITED_SECRET}")
    with ApiExecutor([("pve01", server.url)], tokens(env), ca(server), poll=FAST) as api:
        result = api.execute(ApiRequest("POST", "/nodes/pve01/qemu/100/clone", {"newid": 1001}))
    assert result.data["upid"].endswith(f":{LIMITED_ID}:")  # PVE names the token that started the task


def test_malformed_environment_token_is_not_sent(
    server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    env = dict(pass_env, PROXMOX_API_TOKEN=SECRET)
    with ApiExecutor([("pve01", server.url)], tokens(env), ca(server)) as api:
        exc = fails(api, ApiRequest("GET", "/nodes"), all_logs)
    assert "cannot get the Proxmox VE API token: environment variable PROXMOX_API_TOKEN has no '='" in exc.message
    assert not exc.sent and server.pve.requests == []


def test_missing_pass_entry_is_not_sent(server: FakePveServer, pass_env: dict[str, str], all_logs: Logs) -> None:
    with executor(server, pass_env, entry="proxmox/lab/absent") as api:
        exc = fails(api, ApiRequest("GET", "/nodes"), all_logs)
    assert "pass entry 'proxmox/lab/absent' does not exist" in exc.message
    assert not exc.sent and server.pve.requests == []


def test_token_is_fetched_at_each_call(
    store: PassStore, server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    store.insert("proxmox/lab/rotating", [TOKEN_ID, SECRET])
    with executor(server, pass_env, entry="proxmox/lab/rotating") as api:
        api.execute(ApiRequest("GET", "/nodes"))
        store.insert("proxmox/lab/rotating", [TOKEN_ID, WRONG_SECRET])
        exc = fails(api, ApiRequest("GET", "/nodes"), all_logs)
    assert "(401 authentication failure)" in exc.message


# ------------------------------------------------------------------ outages and states that already hold


def _outage(relay: Relay, after: float, lasting: float) -> threading.Thread:
    """Take ``relay`` down ``after`` seconds from now for ``lasting`` seconds, in the background."""

    def run() -> None:
        time.sleep(after)
        relay.down()
        time.sleep(lasting)
        relay.up()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_task_is_followed_through_an_api_outage_and_its_upid_is_told_before_the_first_poll(
    tmp_path: Path, pass_env: dict[str, str], all_logs: Logs
) -> None:
    with serve(tmp_path, time_scale=0.01) as server:
        server.do(setattr, server.pve.vm(200), "start_secs", 100)  # 1 s of wall time
        relay = Relay(HOST, (HOST, server.port))
        events: list[str] = []
        try:
            with ApiExecutor([("pve01", relay.url)], tokens(pass_env), ca(server), poll=FAST, outage_window=10) as api:
                api.execute(ApiRequest("GET", "/version"))  # the API answered: from now on, losing it is an outage
                outage = _outage(relay, 0.2, 1.5)
                result = api.execute(
                    ApiRequest("POST", "/nodes/pve01/qemu/200/status/start"),
                    events.append,
                    on_task=lambda upid, node: events.append(f"task {upid} on {node}"),
                )
                outage.join()
        finally:
            relay.close()
    assert result.data["exitstatus"] == "OK"
    assert events[0] == f"task {result.data['upid']} on pve01", events  # before any poll said anything
    notes = [e for e in events if e.startswith("API outage: no node answers (")]
    assert notes and all("trying again in" in n and "for up to 10 s" in n for n in notes), events
    assert "Connection refused" in notes[0] or "disconnected" in notes[0], notes[0]
    assert any(e.startswith("API answers again, through pve01, after ") for e in events), events
    assert SECRET not in "".join(events) + all_logs.text


def test_an_outage_longer_than_its_window_fails_the_step_saying_how_long_it_waited(
    tmp_path: Path, pass_env: dict[str, str], all_logs: Logs
) -> None:
    with serve(tmp_path, time_scale=0.01) as server:
        server.do(setattr, server.pve.vm(200), "start_secs", 100)
        relay = Relay(HOST, (HOST, server.port))
        try:
            with ApiExecutor([("pve01", relay.url)], tokens(pass_env), ca(server), poll=FAST, outage_window=0.6) as api:
                api.execute(ApiRequest("GET", "/version"))
                outage = _outage(relay, 0.1, 3)
                started = time.monotonic()
                exc = fails(api, ApiRequest("POST", "/nodes/pve01/qemu/200/status/start"), all_logs)
                took = time.monotonic() - started
                outage.join()
        finally:
            relay.close()
    assert "task qmstart on pve01 was started, but following it failed: no Proxmox VE node could be reached" in (
        exc.message
    )
    assert "The API had answered earlier in this run, and did not answer again for" in exc.message
    assert "limits.api_outage_window in cluster-config.yaml is 1 s" in exc.message
    assert took < 3, f"a 0.6 s window took {took:.1f} s"


def test_a_cluster_that_never_answered_is_not_waited_for(
    server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    """Unreachable from the first request on is a configuration or network problem, not an outage."""
    started = time.monotonic()
    with ApiExecutor([("pve01", closed_port_url())], tokens(pass_env), ca(server), outage_window=30) as api:
        exc = fails(api, ApiRequest("GET", "/version"), all_logs)
    assert "no Proxmox VE node could be reached" in exc.message and "did not answer again" not in exc.message
    assert time.monotonic() - started < 5


def test_a_power_request_whose_state_already_holds_succeeds(
    server: FakePveServer, pass_env: dict[str, str], all_logs: Logs
) -> None:
    with executor(server, pass_env) as api:
        stopped = api.execute(ApiRequest("POST", "/nodes/pve01/qemu/200/status/shutdown"))
        assert stopped.summary == (
            "POST /nodes/pve01/qemu/200/status/shutdown: PVE answered 'VM 200 not running', the state this step "
            "asks for already holds"
        )
        assert stopped.data == {"upid": "", "node": "pve01", "exitstatus": None, "data": ""}
        assert api.execute(ApiRequest("POST", "/nodes/pve01/qemu/200/status/start")).data["exitstatus"] == "OK"
        again = api.execute(ApiRequest("POST", "/nodes/pve01/qemu/200/status/start"))  # a task that fails saying so
        assert "PVE answered 'VM 200 already running'" in again.summary
        assert ":qmstart:200:" in again.data["upid"] and again.data["exitstatus"] == "VM 200 already running"
        api.execute(ApiRequest("POST", "/nodes/pve01/qemu/200/status/stop"))
        # Only the wanted state counts: a reboot of a stopped VM is still refused.
        refused = fails(api, ApiRequest("POST", "/nodes/pve01/qemu/200/status/reboot"), all_logs)
    assert "VM 200 not running" in refused.message
