"""Run ``ApiRequest`` actions against the Proxmox VE REST API, with node failover and task polling.

What decides the design is what an operator must be able to trust afterwards:

- A request is repeated only when repeating it cannot do something twice. A connection that
  never opened (refused, connect timeout) provably sent nothing, so the next node is tried. A
  certificate that does not verify stops the step instead: nothing was sent either, but failing
  over would hide a renewed certificate or an interception. A request that may have reached PVE
  and got no answer is retried only when the method is idempotent (GET, PUT, DELETE); a POST is
  never repeated blindly: the step fails saying it may or may not have happened.
- The node's certificate is checked before the token is ever sent: a CA (hostname checked), or a
  pinned SHA-256 fingerprint compared before the first authenticated request, after which only
  that exact certificate is trusted. Each PVE node has its own certificate, so a node's own
  ``fingerprint`` pins it, and ``tls.fingerprint`` pins the nodes without one. A CA and a pin are
  never combined: the config refuses both at once rather than let one silently win.
  ``tls.insecure`` works but warns on every run.
- The API token is fetched once per call (never kept between calls), sent only in the
  ``Authorization`` header, and scrubbed from every message and result as a last line of defence.
- Tasks (a UPID answer) are waited for with adaptive polling, and a failed task's message holds
  its exit status and the tail of its log, which is where PVE says what went wrong. The UPID is
  handed to ``on_task`` before the first poll, so the run journals it and a resume can follow it.
- Losing the API mid-run (a pveproxy restart, a network blip) is an outage, not a failure: once a
  node has answered in this run, a request that provably was not sent (every node refused), or an
  idempotent one whose connection was dropped, is tried again with backoff across the nodes for
  ``outage_window`` seconds (``limits.api_outage_window``), saying so on the progress line. A task
  being polled is therefore followed through the outage. A POST that may have reached PVE is still
  never repeated, and a request that hangs (a timeout) is not an outage.
- An answer saying the state a power request asks for already holds (``VM N not running`` to a
  shutdown or stop, ``already running`` to a start: ``ALREADY_HOLDS``) is that request's success.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
import re
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from .. import exitcodes
from ..errors import RunbookError
from ..load.facts import Facts
from ..run.credentials import ApiToken, CredentialError
from ..run.retry import Backoff, Policy, retry
from ..run.secrets import Secret, scrub
from ..runbook.actions import ApiRequest, Result, StepFailed, TaskFollow
from .base import Change, Progress, TaskStarted, TokenProvider
from .preview import api_changes

log = logging.getLogger("runbook.api")

API_PREFIX = "/api2/json"
DEFAULT_PORT = 8006
IDEMPOTENT = frozenset({"GET", "PUT", "DELETE"})
# PVE's words for a guest or cluster lock held by someone else: worth trying again later.
LOCK_ERROR = re.compile(r"can't lock file .*got timeout|VM is locked|cfs-lock .*got lock request timeout")
TASK_SUCCESS = re.compile(r"OK|WARNINGS: \d+")
LOG_TAIL_LINES = 20
LOG_PAGE = 500  # task log lines asked for per request
BACKOFF_CAP = 10.0  # seconds: the longest pause between retries of an idempotent request
#: How long (seconds) a run waits for the API to answer again once it has answered (limits.api_outage_window).
OUTAGE_WINDOW = 120.0
OUTAGE_BACKOFF, OUTAGE_BACKOFF_CAP = 0.5, 3.0  # first and longest pause between tries during an outage
#: PVE's refusals that say what a power request asks for already holds (path, PVE's words): its success.
ALREADY_HOLDS = (
    (re.compile(r"/status/(?:shutdown|stop)$"), re.compile(r"\b(?:VM|CT) \d+ not running\b")),
    (re.compile(r"/status/start$"), re.compile(r"\b(?:VM|CT) \d+ already running\b")),
)


@dataclass(frozen=True)
class PollPolicy:
    """How often to ask whether a task has ended: one status request per poll, never a busy loop.

    A task of a type not seen before is asked about at once (at ``time_scale`` 0, or for a quick
    task, it has ended), then after pauses growing from ``initial`` by ``factor`` up to ``cap``.
    A task of a type whose duration is known (``TaskTimes``: earlier tasks of this executor, or
    the journals of earlier runs) is asked about first when it is expected to have ended, that
    expectation times ``1 + margin``; if it still runs, the pauses start at ``settle`` of the
    expectation, so a late task costs a few more polls, not many.
    """

    initial: float = 0.05
    factor: float = 1.5
    cap: float = 2.0
    margin: float = 0.02
    settle: float = 0.05

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(self.cap, delay * self.factor)

    def schedule(self, expected: float | None = None) -> Iterator[float]:
        """Pauses before each poll of one task: the first is 0 when nothing is expected."""
        if expected is None:
            yield 0.0
            yield from self.delays()
            return
        yield expected * (1 + self.margin)
        delay = max(self.initial, min(self.cap, expected * self.settle))
        while True:
            yield delay
            delay = min(self.cap, delay * self.factor)


class TaskTimes:
    """How long tasks of each type (``qmclone``, ``qmstart``...) take, learnt from the polls themselves.

    The expectation for a type is set by what the polls of its tasks saw:

    - a task seen running, then stopped: three quarters of the way between the two polls;
    - a task already stopped at its first poll: only that it took less. The expectation is lowered
      a little (1%), and faster each time in a row this happens (2%, 4%, 8%...), so a figure that
      is too high (a slow earlier run, a busy cluster) comes down within a few tasks, while one
      that is right costs a second poll now and then, not the polling delay on every task.

    Tasks started together with the same expectation lower it once, not once each. A type not
    polled yet starts from ``hint`` (the shortest such task in the journals of earlier runs); the
    first task of that type probes a little before it (``EARLY``), so what this run learns is a
    bracket around the true duration rather than one more upper bound, and the figure cannot creep
    up from run to run by the polling delay. Thread-safe: the items of a parallel step share one
    executor.
    """

    PROBE = 0.99
    EARLY = 0.9
    BRACKET = 0.75

    def __init__(self) -> None:
        self._expected: dict[str, float] = {}
        self._early: dict[str, int] = {}  # first polls in a row that found the task already stopped
        self._probed: set[str] = set()
        self._lock = threading.Lock()

    def expect(self, kind: str, hint: float | None = None) -> tuple[float | None, str | None]:
        """The expected duration, and where it comes from: ``learnt`` (this executor's own polls),
        ``probe`` (the run's first task of the type, asking early) or ``hint``; (None, None) when
        nothing is known."""
        with self._lock:
            if kind in self._expected:
                return self._expected[kind], "learnt"
            if not hint:
                return None, None
            if kind not in self._probed:
                self._probed.add(kind)
                return hint * self.EARLY, "probe"
            return hint, "hint"

    def learnt(self, kind: str) -> float | None:
        """The expectation this executor's own polls give, if any (without probing)."""
        with self._lock:
            return self._expected.get(kind)

    def observe(self, kind: str, expected: float | None, running_until: float, stopped_at: float) -> None:
        """A task of ``kind``, polled first at the ``expected`` time (None: at once), was last seen
        running ``running_until`` s after it started (0: never) and seen stopped at ``stopped_at`` s."""
        with self._lock:
            current = self._expected.get(kind, expected)
            if running_until > 0 or expected is None:
                # Towards the later poll: after growing pauses the bracket can be wide, and a figure
                # a little long costs a little time once, where one too short costs several polls.
                self._expected[kind] = (
                    running_until + (stopped_at - running_until) * self.BRACKET if running_until > 0 else stopped_at
                )
                self._early[kind] = 0
            elif current == expected:
                early = self._early.get(kind, 0) + 1
                self._early[kind] = early
                self._expected[kind] = min(expected, stopped_at) * self.PROBE ** (2 ** min(early - 1, 6))


@dataclass(frozen=True)
class PinnedCert:
    """Trust exactly the certificate whose SHA-256 is ``fingerprint`` (colon form, as PVE shows it).

    ``field`` says where cluster-config.yaml sets it, so a mismatch names what to check and update.
    """

    fingerprint: str
    field: str = "tls.fingerprint"


Verify = ssl.SSLContext | PinnedCert | Literal[False]
"""How node certificates are checked: a context holding the CA, a pinned fingerprint, or False (insecure)."""


class ApiSetupError(RunbookError):
    """The cluster config cannot give a usable API client (a missing CA file...); says what to fix."""

    exit_code = exitcodes.FAILED


class _NotSent(Exception):
    """No connection could be made to an endpoint, so nothing was sent to it."""


class _MaybeSent(Exception):
    """The request may have reached the node, but no (complete) answer came back; ``timed_out``
    when it hung (no answer in time) rather than its connection being dropped."""

    def __init__(self, node: str, reason: str, timed_out: bool = False):
        super().__init__(reason)
        self.node = node
        self.reason = reason
        self.timed_out = timed_out


class _Unreachable(StepFailed):
    """No node accepted a connection, so nothing was sent; ``summary`` is one line of why."""

    def __init__(self, message: str, summary: str):
        super().__init__(message, retryable=True, sent=False)
        self.summary = summary


@dataclass
class _Call:
    """What one ``call()`` carries around: its token, request count and deadline, where progress
    goes, and since when the API has not answered (None: it answers)."""

    token: ApiToken
    requests: int = 0
    deadline: float | None = None
    started: float = field(default_factory=time.monotonic)
    progress: Progress | None = None
    outage_since: float | None = None


class ApiExecutor:
    """Sends ``ApiRequest``s to a PVE cluster, one keep-alive connection pool per node.

    ``endpoints`` are ``(node name, base URL)`` pairs, e.g. ``("pve01", "https://pve01:8006")``,
    tried in order. ``verify`` checks every node's certificate, or maps each node name to its own
    check (a pin per node). ``timeout`` bounds each HTTP request (``connect_timeout`` its connection);
    ``retries`` is how many more times an idempotent request is sent after it got no answer, with
    jittered exponential pauses starting at ``backoff`` seconds. ``outage_window`` is how long, once
    the API has answered, it may stop answering before a request fails (see the module doc).
    ``warnings`` lists what the operator must be told on every run (insecure TLS).
    """

    kind = "api"

    def __init__(
        self,
        endpoints: Sequence[tuple[str, str]],
        token_source: TokenProvider,
        verify: Verify | Mapping[str, Verify],
        *,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.5,
        poll: PollPolicy = PollPolicy(),
        task_times: TaskTimes | None = None,
        task_estimates: Mapping[str, float] | None = None,
        warnings: list[str] | None = None,
        outage_window: float = OUTAGE_WINDOW,
    ):
        if not endpoints:
            raise ApiSetupError("no API endpoints: cluster.nodes in cluster-config.yaml lists no node")
        self.endpoints = [(name, base.rstrip("/")) for name, base in endpoints]
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retries = retries
        self.backoff = backoff
        self.poll = poll
        self.outage_window = outage_window
        self._answered = False  # a node has answered: from then on, losing every node is an outage
        self.task_times = task_times or TaskTimes()
        # Shared with the dispatcher, which fills it from the journals when the run starts.
        self._task_estimates: Mapping[str, float] = task_estimates if task_estimates is not None else {}
        # Shared with the dispatcher when it gives one: what the operator must be told, as it happens.
        self.warnings: list[str] = warnings if warnings is not None else []
        self._named_down: set[str] = set()  # nodes already said not to answer
        self._tokens = token_source
        if isinstance(verify, Mapping):
            unchecked = [name for name, _ in self.endpoints if name not in verify]
            if unchecked:
                raise ApiSetupError(
                    f"no way to check the certificate of node(s) {', '.join(unchecked)}: give each "
                    f"node a fingerprint in cluster-config.yaml, or set tls.fingerprint"
                )
            self._verify: dict[str, Verify] = {name: verify[name] for name, _ in self.endpoints}
        else:
            self._verify = {name: verify for name, _ in self.endpoints}
        self._clients: dict[str, httpx.Client] = {}
        self._last_good: str | None = None
        self._down: set[str] = set()
        self._random = random.Random()
        if any(check is False for check in self._verify.values()):
            self._warn(
                "TLS certificate verification is off (tls.insecure: true): anyone on the network path to "
                "the nodes can read the API token and change what runbook does. Set tls.ca_file to the "
                "cluster CA (/etc/pve/pve-root-ca.pem on any node), or give each node the fingerprint of its "
                "certificate, instead."
            )

    @classmethod
    def from_config(
        cls,
        config_data: Mapping[str, Any],
        token_source: TokenProvider,
        *,
        base_dir: Path | None = None,
        **options: Any,
    ) -> ApiExecutor:
        """The executor for a validated cluster config: its nodes as endpoints, its ``tls`` as verification.

        With pinning, each node is pinned by its own ``fingerprint`` when it has one, else by
        ``tls.fingerprint``. A relative ``tls.ca_file`` is taken from ``base_dir`` (the runbook
        home), else the current folder. ``options`` are the constructor's keyword arguments.
        The combinations the config check refuses (see ``engine.load.config``) are refused here too.
        """
        nodes = config_data["cluster"]["nodes"]
        endpoints = [
            (str(node["name"]), _base_url(str(node["host"]), int(node.get("port", DEFAULT_PORT)))) for node in nodes
        ]
        tls = config_data["tls"]
        own = {str(node["name"]): str(node["fingerprint"]) for node in nodes if node.get("fingerprint")}
        pinned = bool(tls.get("fingerprint") or own)
        verify: Verify | dict[str, Verify]
        if tls.get("insecure"):
            if pinned or tls.get("ca_file"):
                raise ApiSetupError(
                    "tls.insecure: true together with ca_file or a fingerprint in cluster-config.yaml "
                    "is contradictory; remove insecure to verify the certificates"
                )
            verify = False
        elif pinned:
            if tls.get("ca_file"):
                raise ApiSetupError(
                    "tls.ca_file and a fingerprint are both given in cluster-config.yaml, but a "
                    "node's certificate is checked one way only: remove ca_file to pin every node "
                    "by its fingerprint, or remove the fingerprint(s) to verify with the cluster CA"
                )
            verify = {}
            for name, _ in endpoints:
                if name in own:
                    verify[name] = PinnedCert(own[name], f"the fingerprint of node {name} (cluster.nodes)")
                elif tls.get("fingerprint"):
                    verify[name] = PinnedCert(str(tls["fingerprint"]))
                else:
                    raise ApiSetupError(
                        f"node {name} has no fingerprint in cluster-config.yaml, while other nodes "
                        f"are pinned by their own: add fingerprint: to {name}, or set "
                        f"tls.fingerprint for the nodes without one of their own"
                    )
        elif tls.get("ca_file"):
            verify = _ca_context(Path(str(tls["ca_file"])).expanduser(), base_dir)
        else:
            raise ApiSetupError(
                "tls in cluster-config.yaml says neither ca_file nor fingerprint: set one so the "
                "nodes' certificate can be verified"
            )
        options.setdefault("outage_window", configured_outage_window(config_data))
        return cls(endpoints, token_source, verify, **options)

    def expect_tasks(self, estimates: Mapping[str, float]) -> None:
        """How long PVE tasks of each type (``qmclone``) took in earlier runs, from their journals
        (``engine.run.journal.task_history``): a task of a known type is polled first when it is likely
        to have ended, and the figure is refined from this executor's own polls (``TaskTimes``)."""
        self._task_estimates = dict(estimates)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> ApiExecutor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the call

    def missing(self, request: ApiRequest) -> list[str]:
        """Nothing: requests go over HTTPS from this process."""
        return []

    def preview(self, request: ApiRequest, facts: Facts) -> list[Change]:
        """What sending ``request`` would change (see ``engine.executors.preview``); sends nothing."""
        return api_changes(request, facts)

    def execute(
        self, request: ApiRequest | TaskFollow, progress: Progress | None = None, *, on_task: TaskStarted | None = None
    ) -> Result:
        """Send ``request``; wait for its task when it starts one and ``request.poll``; raise ``StepFailed``.

        ``request.timeout``, when given, bounds each HTTP request and the wait for the task.
        ``on_task(upid, node)`` is told a task's UPID before it is first polled. A ``TaskFollow``
        waits for a task already running instead of sending anything.
        """
        try:
            token = self._tokens.get()
        except CredentialError as exc:
            raise StepFailed(f"cannot get the Proxmox VE API token: {exc}", sent=False) from None
        state = _Call(token, progress=progress)
        if request.timeout is not None:
            state.deadline = state.started + request.timeout
        try:
            if isinstance(request, TaskFollow):
                node, _ = parse_upid(request.upid)
                task, summary = self._wait_task(request.upid, node, state, progress, self.timeout, known=False)
                result = Result(data=task, summary=summary, requests=state.requests)
            else:
                result = self._call(request, state, progress, on_task)
        except StepFailed as exc:
            raise StepFailed(
                scrub(exc.message, token.secret),
                retryable=exc.retryable,
                sent=exc.sent,
                data=_scrub_data(exc.data, token.secret),
                lock=exc.lock,
            ) from None
        except Exception as exc:  # noqa: BLE001 - last line of defence: a library error must not carry the token
            raise StepFailed(
                scrub(f"{request.method} {request.path} failed: {type(exc).__name__}: {exc}", token.secret)
            ) from None
        result.data = _scrub_data(result.data, token.secret)
        result.summary = scrub(result.summary, token.secret)
        return result

    def _call(
        self, request: ApiRequest, state: _Call, progress: Progress | None, on_task: TaskStarted | None
    ) -> Result:
        method = request.method.upper()
        path = request.path if request.path.startswith("/") else "/" + request.path
        timeout = min(self.timeout, request.timeout) if request.timeout is not None else self.timeout
        params = encode_params(request.params)
        node, response = self._send(method, path, params, state, prefer=request.node, timeout=timeout)
        try:
            data = self._data(method, path, node, response, state)["data"]
        except StepFailed as refused:
            return self._already_holds(method, path, refused, _task_data("", node, None), state)
        if request.poll and isinstance(data, str) and data.startswith("UPID:"):
            if on_task is not None:
                on_task(data, parse_upid(data)[0])
            try:
                task, summary = self._wait_task(data, node, state, progress, timeout)
            except StepFailed as failed:
                if not isinstance(failed.data, dict) or not failed.data.get("exitstatus"):
                    raise
                return self._already_holds(method, path, failed, failed.data, state)
            return Result(data=task, summary=summary, requests=state.requests)
        return Result(
            data=data,
            summary=f"{method} {path}: {response.status_code} {response.reason_phrase}",
            requests=state.requests,
        )

    @staticmethod
    def _already_holds(method: str, path: str, failure: StepFailed, data: dict[str, Any], state: _Call) -> Result:
        """``failure`` as a success when PVE's words say the state the request asks for already holds
        (``ALREADY_HOLDS``); otherwise ``failure`` is raised again."""
        words = str(data.get("exitstatus") or failure.message)
        for wanted_path, wanted_words in ALREADY_HOLDS if method == "POST" else ():
            said = wanted_words.search(words) if wanted_path.search(path) else None
            if said is not None:
                return Result(
                    data=data,
                    summary=f"{method} {path}: PVE answered '{said[0]}', the state this step asks for already holds",
                    requests=state.requests,
                )
        raise failure

    # ------------------------------------------------------------- sending

    def _send(
        self, method: str, path: str, params: dict[str, str], state: _Call, *, prefer: str | None, timeout: float
    ) -> tuple[str, httpx.Response]:
        """Send with failover; retry an unanswered idempotent request. Returns (node, response), any status."""

        def once() -> tuple[str, httpx.Response]:
            return self._send_once(method, path, params, state, prefer, timeout)

        def unanswered(error: Exception) -> bool:
            return isinstance(error, _MaybeSent) and method in IDEMPOTENT

        def outage(error: Exception) -> bool:
            """The API stopped answering after it had answered: nothing was sent, or an idempotent
            request's connection was dropped. Ridden out for ``outage_window`` (and the step's timeout)."""
            lost = isinstance(error, _Unreachable) or (
                isinstance(error, _MaybeSent) and method in IDEMPOTENT and not error.timed_out
            )
            if not (lost and self._answered):
                return False
            now = time.monotonic()
            if state.outage_since is None:
                state.outage_since = now
            return now - state.outage_since < self.outage_window and (state.deadline is None or now < state.deadline)

        def waiting(error: Exception, number: int, pause: float) -> None:
            nonlocal prefer
            assert state.outage_since is not None
            why = (
                error.summary
                if isinstance(error, _Unreachable)
                else f"{error.node}: {error.reason}"
                if isinstance(error, _MaybeSent)
                else str(error)
            )
            note = (
                f"API outage: no node answers ({scrub(str(why), state.token.secret)}) since "
                f"{time.monotonic() - state.outage_since:.0f} s; trying again in {pause:.1f} s, for up to "
                f"{self.outage_window:.0f} s"
            )
            log.info("%s %s: %s", method, path, note)  # the progress line says it; a warning per item and try is noise
            if state.progress is not None:
                state.progress(note)
            prefer = None  # the next try goes round the nodes again, the last one that answered first

        def again(error: Exception, number: int, pause: float) -> None:
            nonlocal prefer
            assert isinstance(error, _MaybeSent)
            log.warning(
                "%s %s: no answer from %s (%s); trying again in %.2f s",
                method,
                path,
                error.node,
                scrub(error.reason, state.token.secret),
                pause,
            )
            prefer = error.node

        try:
            return retry(
                once,
                Policy(self.retries, Backoff(self.backoff, BACKOFF_CAP), unanswered, again),
                Policy(sys.maxsize, Backoff(OUTAGE_BACKOFF, OUTAGE_BACKOFF_CAP), outage, waiting),
                rng=self._random,
            )
        except _Unreachable as exc:
            if state.outage_since is None:
                raise
            raise _Unreachable(
                f"{exc.message}\nThe API had answered earlier in this run, and did not answer again for "
                f"{time.monotonic() - state.outage_since:.0f} s (limits.api_outage_window in cluster-config.yaml "
                f"is {self.outage_window:.0f} s).",
                exc.summary,
            ) from None
        except _MaybeSent as exc:
            if method not in IDEMPOTENT:
                raise StepFailed(
                    f"{method} {path} was sent to {exc.node}, but no answer came back ({exc.reason}). It may "
                    f"or may not have been carried out, so it is not sent again: check the cluster (the "
                    f"node's task list, or the object the step changes) before running this step again.",
                    sent=True,
                ) from None
            raise StepFailed(
                f"{method} {path}: no answer from {exc.node} after {self.retries + 1} attempts (last: "
                f"{exc.reason}). Check the network to the nodes and that pveproxy is healthy "
                f"(systemctl status pveproxy).",
                retryable=True,
                sent=True,
            ) from None

    def _send_once(
        self, method: str, path: str, params: dict[str, str], state: _Call, prefer: str | None, timeout: float
    ) -> tuple[str, httpx.Response]:
        """One try: the preferred node first, then the others, as long as nothing could have been sent."""
        unreachable: list[tuple[str, str, str]] = []
        for name, base in self._order(prefer):
            try:
                client = self._client(name, base)
            except _NotSent as exc:
                unreachable.append((name, base, str(exc)))
                self._down.add(name)
                continue
            state.requests += 1
            started = time.monotonic()
            try:
                response = client.request(
                    method,
                    base + API_PREFIX + path,
                    params=params if method in ("GET", "DELETE") else None,
                    data=params if method not in ("GET", "DELETE") else None,
                    headers={"Authorization": state.token.authorization()},
                    timeout=httpx.Timeout(timeout, connect=min(timeout, self.connect_timeout)),
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                why = scrub(_describe(exc), state.token.secret)
                if why.startswith(_TLS_FAILED):
                    # Not a dead node: something answers there with a certificate that is not trusted.
                    # Failing over would hide it, so the step stops (the handshake failed: nothing was sent).
                    raise _untrusted(method, path, name, base, why, self._verify[name]) from None
                unreachable.append((name, base, why))
                self._down.add(name)
                continue
            except httpx.TransportError as exc:  # read/write timeout, connection dropped: may have been sent
                timed_out = isinstance(exc, httpx.TimeoutException)
                raise _MaybeSent(name, scrub(_describe(exc), state.token.secret), timed_out) from None
            log.debug(
                "%s %s%s on %s: %s in %.3f s",
                method,
                API_PREFIX,
                path,
                name,
                response.status_code,
                time.monotonic() - started,
            )
            self._last_good = name
            self._down.discard(name)
            self._answered = True
            for down, down_base, why in unreachable:
                if down not in self._named_down:
                    # Failover keeps the run going; the operator must still know a node's API is down.
                    self._named_down.add(down)
                    self._warn(f"node {down} ({down_base}) does not answer ({why}); its requests went to {name}")
            if state.outage_since is not None:
                if state.progress is not None:
                    state.progress(
                        f"API answers again, through {name}, after {time.monotonic() - state.outage_since:.0f} s"
                    )
                state.outage_since = None
            return name, response
        raise _all_unreachable(method, path, unreachable)

    def _order(self, prefer: str | None) -> list[tuple[str, str]]:
        """Endpoints to try: the request's node, else the last node that answered, then the rest in order.

        Nodes that could not be reached earlier in the run go last, so a dead node costs its
        connect timeout once per run, not once per call; they are still tried when all else fails.
        """
        first = prefer if any(name == prefer for name, _ in self.endpoints) else self._last_good
        return sorted(self.endpoints, key=lambda endpoint: (endpoint[0] in self._down, endpoint[0] != first))

    def _client(self, name: str, base: str) -> httpx.Client:
        """The node's connection pool, made on first use; with pinning, only after the certificate matched."""
        client = self._clients.get(name)
        if client is None:
            verify = self._verify[name]
            if isinstance(verify, PinnedCert):
                verify = self._pin(name, base, verify)
            # trust_env off: the endpoint and the trust are exactly what cluster-config.yaml says,
            # never a proxy or CA bundle picked up from the environment.
            client = httpx.Client(verify=verify, trust_env=False, follow_redirects=False)
            self._clients[name] = client
        return client

    def _pin(self, name: str, base: str, pin: PinnedCert) -> ssl.SSLContext:
        """Fetch the node's certificate (no token involved), compare it, and trust exactly it from then on."""
        url = httpx.URL(base)
        try:
            pem = ssl.get_server_certificate((url.host, url.port or 443), timeout=self.connect_timeout)
        except OSError as exc:  # refused, timed out, handshake failed: nothing was sent
            raise _NotSent(f"could not fetch its certificate: {exc}") from None
        der = ssl.PEM_cert_to_DER_cert(pem)
        actual = colon_fingerprint(der)
        if _hex(actual) != _hex(pin.fingerprint):
            raise StepFailed(
                f"the certificate of node {name} ({base}) has SHA-256 fingerprint {actual}, but {pin.field} in "
                f"cluster-config.yaml is {pin.fingerprint.upper()}. Nothing was sent. Either the node's certificate "
                f"changed (renewed, or another node answers at that address) or something is intercepting the "
                f"connection. Compare with `pvenode cert info` on {name}, and update {pin.field} only once "
                f"you have confirmed the new value there.",
                sent=False,
            )
        return pinned_context(der)

    # ------------------------------------------------------------ answers

    def _data(self, method: str, path: str, node: str, response: httpx.Response, state: _Call) -> dict[str, Any]:
        """PVE's JSON envelope of a 2xx answer; any other answer becomes a ``StepFailed`` in PVE's words."""
        body = _json_object(response)
        if response.is_success:
            if body is None or "data" not in body:
                raise StepFailed(
                    f"{method} {path}: {node} answered HTTP {response.status_code} without PVE's JSON "
                    f"body; is the address a Proxmox VE node (its API listens on port {DEFAULT_PORT} unless "
                    "changed)?"
                )
            return body
        raise _http_failure(method, path, node, response, body, state.token)

    def _get(self, path: str, params: Mapping[str, Any], state: _Call, node: str, timeout: float) -> Any:
        """The data of a GET inside a call (task status, log): same failover and retries, endpoint ``node`` first."""
        used, response = self._send("GET", path, encode_params(params), state, prefer=node, timeout=timeout)
        return self._data("GET", path, used, response, state)["data"]

    def _wait_task(
        self, upid: str, via: str, state: _Call, progress: Progress | None, timeout: float, *, known: bool = True
    ) -> tuple[dict[str, Any], str]:
        """Poll the task until it stops; returns (Result.data, summary) or raises with its log's tail.

        The polls go to ``via``, the node that answered the request: any node's pveproxy answers
        for the task's node, and ``via`` is known to be reachable.
        """
        node, kind = parse_upid(upid)
        # A task this call did not start (``known`` False: left by an interrupted run) started at an
        # unknown moment: it is polled from now on, and says nothing about how long its type takes.
        expected, source = self.task_times.expect(kind, self._task_estimates.get(kind)) if known else (None, None)
        if expected is not None and expected < self.poll.initial:
            # A quick task: ask at once when this executor saw it end that fast; when only earlier
            # runs say so, give it ``initial`` (a busy cluster, or a run of many items, is slower).
            expected = None if source == "learnt" else self.poll.initial
        began = time.monotonic()  # the task started about when its request was answered
        if source == "hint" and expected is not None:
            # Tasks started together with the run's probe: when the probe (or any task of the
            # kind) has told this executor more than the earlier runs did, ask when that says.
            # That wait is the schedule's first pause, so the first poll comes at once after it.
            expected = self._until_expected(kind, expected, began, state)
            pauses = itertools.chain([0.0], itertools.islice(self.poll.schedule(expected), 1, None))
        else:
            pauses = self.poll.schedule(expected)
        running_until = 0.0
        while True:
            pause = next(pauses)
            if state.deadline is not None:
                pause = min(pause, max(0.0, state.deadline - time.monotonic()))
            if pause > 0:
                time.sleep(pause)
            status = self._task_status(upid, node, kind, via, state, timeout)
            if status.get("status") == "stopped":
                break
            running_until = time.monotonic() - began
            elapsed = time.monotonic() - state.started
            if progress is not None:
                progress(f"waiting for task {kind} on {node}: running {elapsed:.1f} s")
            if state.deadline is not None and state.deadline - time.monotonic() <= 0:
                raise StepFailed(
                    f"task {kind} on {node} is still running after {elapsed:.1f} s, the step's timeout. It goes "
                    f"on in PVE: follow it (GET /nodes/{node}/tasks/{upid}/status, or the task list) and stop "
                    f"it there if needed before running this step again.",
                    sent=True,
                    data=_task_data(upid, node, None),
                )
        exitstatus = str(status.get("exitstatus", ""))
        data = _task_data(upid, node, exitstatus)
        elapsed = time.monotonic() - state.started
        if TASK_SUCCESS.fullmatch(exitstatus):
            if known:
                self.task_times.observe(kind, expected, running_until, time.monotonic() - began)
            return data, f"task {kind} on {node}: {exitstatus} after {elapsed:.1f} s"
        tail = self._log_tail(node, upid, via, state, timeout)
        hint, transient = _advice(exitstatus, upid.split(":")[6] if upid.count(":") >= 7 else "VMID")
        message = f"task {kind} on {node} failed: {exitstatus}{hint}\nlast lines of its log:\n{tail}\ntask: {upid}"
        raise StepFailed(message, retryable=transient, sent=True, data=data, lock=_lock_held(message))

    def _until_expected(self, kind: str, expected: float, began: float, state: _Call) -> float:
        """Wait until a task started at ``began`` is expected to have ended, following what this
        executor learns meanwhile (no request is made); returns the expectation it went by."""
        step = max(self.poll.initial, expected * self.poll.margin)
        while True:
            learnt = self.task_times.learnt(kind)
            if learnt is not None:
                expected = learnt
            remaining = began + expected * (1 + self.poll.margin) - time.monotonic()
            if state.deadline is not None:
                remaining = min(remaining, state.deadline - time.monotonic())
            if remaining <= 0:
                return expected
            time.sleep(min(remaining, step))

    def _task_status(self, upid: str, node: str, kind: str, via: str, state: _Call, timeout: float) -> dict[str, Any]:
        """One status poll; a failure says the task was started, so nobody re-runs the step blindly."""
        try:
            return self._get(f"/nodes/{node}/tasks/{upid}/status", {}, state, via, timeout) or {}
        except StepFailed as exc:
            raise StepFailed(
                f"task {kind} on {node} was started, but following it failed: {exc.message}\n"
                f"Check the task ({upid}) before running this step again.",
                sent=True,
                data=_task_data(upid, node, None),
            ) from None

    def _log_tail(self, node: str, upid: str, via: str, state: _Call, timeout: float) -> str:
        """The task log's last lines, indented; read in pages with start/limit, since a clone's log can be long."""
        path = f"/nodes/{node}/tasks/{upid}/log"
        lines: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        start = 0
        try:
            while True:
                page = self._get(path, {"start": start, "limit": LOG_PAGE}, state, via, timeout) or []
                lines.extend(str(entry.get("t", "")) for entry in page)
                if len(page) < LOG_PAGE:
                    break
                start += len(page)
        except StepFailed as exc:
            lines.append(f"(the rest of the log could not be read: {exc.message})")
        return "\n".join(f"  {line}" for line in lines) or "  (empty)"

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s", message)


# ---------------------------------------------------------------- helpers


def configured_outage_window(config_data: Mapping[str, Any]) -> float:
    """``limits.api_outage_window`` of a validated cluster config, in seconds (``OUTAGE_WINDOW`` when unset)."""
    window = (config_data.get("limits") or {}).get("api_outage_window")
    return OUTAGE_WINDOW if window is None else float(window)


def encode_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Parameters as PVE's form and query strings: booleans 1/0, lists comma-joined, None left out.

    Comma-joined is what PVE's list formats take (``delete=net1,scsi1``, ``tags``, VMID lists);
    PVE has no null, so an unset optional parameter is simply not sent.
    """
    encoded: dict[str, str] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            encoded[name] = ",".join(_scalar(name, item) for item in value)
        else:
            encoded[name] = _scalar(name, value)
    return encoded


def _scalar(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise StepFailed(
        f"parameter '{name}' is a {type(value).__name__}; PVE takes text, numbers, booleans or lists "
        f"(write property strings as text, e.g. net0: 'virtio,bridge=vmbr0')",
        sent=False,
    )


def parse_upid(upid: str) -> tuple[str, str]:
    """(node, task type) of ``UPID:node:pid:pstart:starttime:type:id:user:``."""
    parts = upid.split(":")
    if len(parts) < 8 or not parts[1]:
        raise StepFailed(f"PVE answered with a malformed task id {upid!r}; check the task list on the cluster")
    return parts[1], parts[5]


def colon_fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as PVE shows it: ``AB:CD:...``."""
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def pinned_context(der: bytes) -> ssl.SSLContext:
    """A client context that trusts this one certificate and nothing else.

    VERIFY_X509_PARTIAL_CHAIN lets the leaf itself be the trust anchor (a PVE node certificate is
    signed by the cluster CA, which is not loaded); the host name is not checked because the pin
    is stronger than a name.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cadata=der)
    return context


def _ca_context(path: Path, base_dir: Path | None) -> ssl.SSLContext:
    """A verifying context (host name checked) trusting the CA in ``path``."""
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    if not path.is_file():
        raise ApiSetupError(
            f"tls.ca_file {path} does not exist. Copy the cluster CA from a node, e.g. "
            f"`scp root@NODE:/etc/pve/pve-root-ca.pem {path}`, or set tls.fingerprint instead."
        )
    try:
        return ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as exc:
        raise ApiSetupError(
            f"tls.ca_file {path} is not a PEM certificate ({exc.reason or exc}); it should be a "
            f"copy of /etc/pve/pve-root-ca.pem from a node"
        ) from None


def _base_url(host: str, port: int) -> str:
    return f"https://[{host}]:{port}" if ":" in host and not host.startswith("[") else f"https://{host}:{port}"


def _hex(fingerprint: str) -> str:
    return fingerprint.replace(":", "").lower()


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The body as a JSON object, or None (an HTML error page from a proxy, an empty body...)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _describe(exc: httpx.TransportError) -> str:
    """Why a connection failed, in a line: the TLS verification reason when that was it."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS certificate does not verify: {cause.verify_message}"
    if isinstance(exc, httpx.TimeoutException):
        return f"{type(exc).__name__} ({str(exc) or 'no answer in time'})"
    return str(exc) or type(exc).__name__


_TLS_FAILED = "TLS certificate does not verify"


def _untrusted(method: str, path: str, name: str, base: str, why: str, verify: Verify) -> StepFailed:
    """A node whose certificate does not verify: stop, name it and the setting to check; never fail over."""
    if isinstance(verify, PinnedCert):
        check = (
            f"Compare with `pvenode cert info` on {name}, and update {verify.field} in cluster-config.yaml "
            f"only once you have confirmed the new value there."
        )
    else:
        check = (
            "Check tls.ca_file in cluster-config.yaml (the cluster CA is /etc/pve/pve-root-ca.pem on any node) "
            "and that the node names in the certificate match the hosts configured."
        )
    return StepFailed(
        f"{method} {path}: the certificate of node {name} ({base}) does not verify ({why}). Nothing "
        f"was sent, and no other node was tried in its place: the node's certificate may have been "
        f"renewed, another machine may answer at that address, or something may be intercepting the "
        f"connection. {check}",
        retryable=False,
        sent=False,
    )


def _all_unreachable(method: str, path: str, unreachable: list[tuple[str, str, str]]) -> StepFailed:
    lines = "\n".join(f"  - {name} ({base}): {why}" for name, base, why in unreachable)
    tls = any(why.startswith("TLS certificate does not verify") for _, _, why in unreachable)
    ports = sorted({str(httpx.URL(base).port or 443) for _, base, _ in unreachable})
    port = f"port {ports[0]} is" if len(ports) == 1 else f"ports {', '.join(ports)} are"
    advice = (
        "Check tls.ca_file / tls.fingerprint and the nodes' own fingerprints in cluster-config.yaml (the "
        "cluster CA is /etc/pve/pve-root-ca.pem on any node) and that the node names in the certificate match "
        "the hosts configured."
        if tls
        else f"Check that pveproxy runs on the nodes (systemctl status pveproxy) and that {port} reachable "
        "from here (firewall, VPN, host names and ports in cluster-config.yaml)."
    )
    message = f"no Proxmox VE node could be reached for {method} {path}; nothing was sent:\n{lines}\n{advice}"
    if tls:
        return StepFailed(message, retryable=False, sent=False)
    by_why: dict[str, list[str]] = {}
    for name, _, why in unreachable:
        by_why.setdefault(why, []).append(name)
    return _Unreachable(message, "; ".join(f"{', '.join(names)}: {why}" for why, names in by_why.items()))


def _http_failure(
    method: str, path: str, node: str, response: httpx.Response, body: dict[str, Any] | None, token: ApiToken
) -> StepFailed:
    """PVE's refusal in its own words (JSON ``message``/``errors`` and the reason phrase) plus what to do."""
    status = response.status_code
    message = str((body or {}).get("message") or "").strip()
    reason = response.reason_phrase.strip()
    # Older PVE puts the text only in the reason phrase; newer repeats its first line there.
    if not message:
        text = reason or "(no message)"
    else:
        text = message if reason in message else f"{message} ({reason})"
    errors = (body or {}).get("errors")
    where = f"{method} {path} on {node}"
    if status == 401:
        return StepFailed(
            f"{where}: the API rejected token {token.token_id} from {token.source} (401 {text}). Check that the "
            f"token exists and has not expired (`pveum user token list USER@REALM` on a node) and that the stored "
            f"secret is the one shown when the token was created; if it is lost, create a new token (the RBAC "
            f"bootstrap) and store it again."
        )
    if status == 403:
        grant = re.search(r"\((/[^,]*), ([^)]+)\)", text)
        how = (
            f"`pveum acl modify {grant[1]} --tokens '{token.token_id}' --roles ROLE` with a role holding {grant[2]}"
            if grant
            else f"an ACL for token {token.token_id} on the path"
        )
        return StepFailed(
            f"{where}: permission denied (403 {text}). Token {token.token_id} lacks that privilege; "
            f"grant it on a node: {how} (a token with privilege separation needs its own ACL entry, "
            f"not only its user's)."
        )
    if status == 400:
        listed = (
            "".join(f"\n  - {name}: {str(why).strip()}" for name, why in (errors or {}).items())
            if isinstance(errors, dict)
            else ""
        )
        return StepFailed(
            f"{where}: PVE refused the parameters (400 {text}){listed}\nFix the step's parameters; nothing was changed."
        )
    if status in (595, 596):
        return StepFailed(
            f"{where}: {status} {text}: {node} could not reach the node named in the path. Check that "
            f"node is up and in the cluster (`pvecm status`).",
            retryable=True,
            lock=_lock_held(text),
        )
    vmid = re.search(r"/(?:qemu|lxc)/(\d+)", path)
    hint, transient = _advice(text, vmid[1] if vmid else "VMID")
    return StepFailed(f"{where}: HTTP {status} {text}{hint}", retryable=transient, lock=_lock_held(text))


def _advice(text: str, vmid: str) -> tuple[str, bool]:
    """What to do about a refusal or a failed task in PVE's words ``text``, and whether it may pass by itself
    (a held lock, lost quorum: a step with ``retries`` tries again; resume works once it has passed)."""
    held = re.search(r"VM is locked \((\w+)\)", text)
    if held and held[1] == "backup":
        return (
            f" A backup (vzdump) of VM {vmid} holds its lock: wait for it to end (the node's task list shows "
            f"it), then resume. If no backup runs any more, the lock is stale: clear it with `qm unlock "
            f"{vmid}` on the node.",
            True,
        )
    if held:
        return (
            f" Another task holds VM {vmid}'s lock ({held[1]}); wait for it to end (the node's task list), then "
            f"resume. If no task holds it any more, the lock is stale: clear it with `qm unlock {vmid}` on the "
            f"node.",
            True,
        )
    if _lock_held(text):
        return " Another task holds the lock; wait for it to end, then run the step again.", True
    if "no quorum" in text:
        return (
            " The cluster has lost quorum: /etc/pve is read-only until a majority of the nodes is back, so "
            "nothing was changed. Check `pvecm status` on a node, and resume once it shows Quorate: Yes.",
            True,
        )
    if "No space left on device" in text:
        return (
            " The storage is full: free space on it (unused disks, old backups or ISO images) or choose "
            "another storage (defaults.storage in cluster-config.yaml), then resume.",
            False,
        )
    return "", False


def _lock_held(text: str) -> bool:
    """Whether PVE's words say a lock held by someone else stopped it (``StepFailed.lock``)."""
    return LOCK_ERROR.search(text) is not None


def _task_data(upid: str, node: str, exitstatus: str | None) -> dict[str, Any]:
    return {"upid": upid, "node": node, "exitstatus": exitstatus, "data": upid}


def _scrub_data(data: Any, secret: Secret) -> Any:
    """``data`` with the secret masked in every string, however deep: results are journaled."""
    if isinstance(data, str):
        return scrub(data, secret)
    if isinstance(data, list):
        return [_scrub_data(item, secret) for item in data]
    if isinstance(data, dict):
        return {scrub(str(k), secret) if isinstance(k, str) else k: _scrub_data(v, secret) for k, v in data.items()}
    return data
