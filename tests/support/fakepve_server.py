"""fakepve served over real HTTPS for synchronous tests, plus stand-ins for dead nodes.

Why: the API executor must be tested over the wire it will use in production (TLS with a real
certificate, real sockets, dropped connections), not against a mocked transport. FakePve's
``start``/``stop`` are coroutines, so each server runs on its own event loop in a daemon thread
(the pattern of docs/fakepve-notes.md, section 1), and every mutation of the fake goes through
``do()`` so it happens on that loop, never concurrently with a request being handled.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from fakepve import FakePve, settle
from fakepve.certs import make_cert

__all__ = ["HOST", "NODES", "TOKEN_ID", "FakePveServer", "closed_port_url", "colon_fingerprint"]

HOST = "127.0.0.1"
TOKEN_ID = "root@pam!runbook"
NODES = ("pve01", "pve02", "pve03")
#: More loopback addresses the certificate covers (``add_listener(host)``), one per extra node.
EXTRA_HOSTS = ("127.0.0.2", "127.0.0.3")
#: Seconds to wait for anything run on the fake's loop.
LOOP_TIMEOUT = 30.0

T = TypeVar("T")


def colon_fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate in PVE's colon style (``AB:CD:...``)."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def closed_port_url() -> str:
    """``https://127.0.0.1:<port>`` where nothing listens: a node whose pveproxy is down (connection refused).

    The port was free a moment ago; the kernel does not hand it out again at once, so a test has it
    to itself in practice.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    return f"https://{HOST}:{port}"


class FakePveServer:
    """A FakePve on ``https://127.0.0.1:<free port>`` with a fresh self-signed certificate.

    The API token ``token_id`` is registered with ``token_secret``; the fake's cluster has exactly
    the nodes ``nodes``. ``seed`` seeds the network-fault randomness (``flaky_network``), which
    fakepve only honours when set before the server starts. ``add_listener()`` serves the same fake
    on another port, so failover tests can have several live "nodes" share one cluster state.
    """

    def __init__(
        self,
        workdir: Path | str,
        token_secret: str,
        *,
        token_id: str = TOKEN_ID,
        nodes: Iterable[str] = NODES,
        time_scale: float = 0.0,
        seed: int | None = None,
    ):
        # Valid for three loopback addresses, so a test cluster can give each node its own host.
        self.certfile, self.keyfile, self.der = make_cert(str(workdir), hosts=(HOST, *EXTRA_HOSTS))
        self.fingerprint = colon_fingerprint(self.der)
        pve = FakePve(host=HOST, port=0)
        pve.time_scale = time_scale
        pve.apitokens[token_id] = token_secret
        pve.nodes.clear()  # drop the default 'pve1': the fake's cluster is exactly `nodes`
        for node in nodes:
            pve.add_node(node)
        pve.network["seed"] = seed
        self.pve = pve
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"fakepve-{id(pve)}", daemon=True)
        self.thread.start()
        try:
            self.call(pve.start(self.certfile, self.keyfile))
        except BaseException:
            self._halt()
            raise

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        return int(self.pve.port)

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = LOOP_TIMEOUT) -> T:
        """Run a coroutine on the fake's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def do(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a plain function (a mutation of the fake) on the fake's loop, between requests."""

        async def run() -> T:
            return fn(*args, **kwargs)

        return self.call(run())

    def add_listener(self, host: str = HOST) -> str:
        """Serve this same fake on one more free port of ``host``; returns that endpoint's URL."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certfile, self.keyfile)

        async def listen() -> int:
            runner = self.pve.runner
            before = {tuple(a) for a in runner.addresses}
            await web.TCPSite(runner, host, 0, ssl_context=context).start()
            (added,) = [a for a in runner.addresses if tuple(a) not in before]
            return int(added[1])

        return f"https://{host}:{self.call(listen())}"

    def stop(self) -> None:
        """Stop serving, join the thread and close the loop; the ports are free afterwards.

        Pending tasks (a request hung by ``flaky_network``) are cancelled first: they would
        otherwise hold aiohttp's graceful shutdown for many seconds.
        """

        async def cancel_pending() -> None:
            me = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not me:
                    task.cancel()

        try:
            self.call(settle())
            self.call(cancel_pending())
            self.call(self.pve.stop())
        finally:
            self._halt()

    def _halt(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(LOOP_TIMEOUT)
        if not self.thread.is_alive():
            self.loop.close()

    def __enter__(self) -> FakePveServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
