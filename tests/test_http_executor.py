"""HttpExecutor against a real http.server on loopback, in a thread."""

from __future__ import annotations

import datetime
import json
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine.executors.http import BODY_LIMIT, HttpExecutor
from engine.runbook.actions import HttpRequest, StepFailed
from tests.support.sshd import find_free_port


class _Handler(BaseHTTPRequestHandler):
    """Routes by path: each one is a behaviour a test needs."""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/json":
            self._send(200, json.dumps({"id": "abc123"}).encode(), "application/json")
        elif path == "/fail":
            self._send(500, b"<html><body>\n  database   is down\n</body></html>", "text/html")
        elif path == "/slow":
            time.sleep(2)
            self._send(200, b"late", "text/plain")
        elif path == "/big":
            self._send(200, b"x" * (BODY_LIMIT + 10), "text/plain")
        else:
            self._send(404, b"no such thing", "text/plain")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        echo = {"content_type": self.headers.get("Content-Type"), "body": body.decode()}
        self._send(201, json.dumps(echo).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Test", "yes")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


class _QuietServer(ThreadingHTTPServer):
    """The slow handler's late write hits a client that already gave up (that is the test): a broken
    pipe there is expected, and printing it to stderr would land in whatever test runs next."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve _Handler on a loopback port in a thread; yields the base URL."""
    server = _QuietServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    yield from _serve()


@pytest.fixture(scope="module")
def self_signed_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An HTTPS server whose certificate no trust store knows."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    directory: Path = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    yield from _serve(context)


@pytest.fixture
def http() -> Iterator[HttpExecutor]:
    with HttpExecutor(timeout=5) as executor:
        yield executor


def test_json_response(http: HttpExecutor, base_url: str) -> None:
    result = http.execute(HttpRequest("GET", f"{base_url}/json"))
    assert result.data["status"] == 200
    assert result.data["json"] == {"id": "abc123"}
    assert result.data["body"] == '{"id": "abc123"}'
    assert result.data["headers"]["x-test"] == "yes"
    assert result.summary.endswith(": 200")


def test_json_body_is_sent_as_json_and_other_bodies_as_given(http: HttpExecutor, base_url: str) -> None:
    result = http.execute(HttpRequest("POST", f"{base_url}/schematics", body='{"customization": {}}', expect=(201,)))
    assert result.data["json"] == {"content_type": "application/json", "body": '{"customization": {}}'}
    yaml = "customization:\n  extraKernelArgs: [net.ifnames=0]\n"
    result = http.execute(
        HttpRequest(
            "POST", f"{base_url}/schematics", headers={"Content-Type": "application/yaml"}, body=yaml, expect=(201,)
        )
    )
    assert result.data["json"] == {"content_type": "application/yaml", "body": yaml}


def test_unexpected_status_quotes_the_body(http: HttpExecutor, base_url: str) -> None:
    with pytest.raises(StepFailed) as failed:
        http.execute(HttpRequest("GET", f"{base_url}/fail?token=hunter2"))
    message = failed.value.message
    assert f"GET {base_url}/fail returned 500 Internal Server Error (expected 2xx)" in message
    assert "database is down" in message
    assert "hunter2" not in message
    assert failed.value.data["status"] == 500


def test_expect_accepts_listed_codes_only(http: HttpExecutor, base_url: str) -> None:
    assert http.execute(HttpRequest("GET", f"{base_url}/missing", expect=(404,))).data["status"] == 404
    with pytest.raises(StepFailed) as failed:
        http.execute(HttpRequest("GET", f"{base_url}/json", expect=(201, 202)))
    assert "(expected 201, 202)" in failed.value.message


def test_slow_response_times_out(http: HttpExecutor, base_url: str) -> None:
    started = time.monotonic()
    with pytest.raises(StepFailed) as failed:
        http.execute(HttpRequest("GET", f"{base_url}/slow", timeout=0.5))
    assert time.monotonic() - started < 2
    assert "no complete response within 0.5 s" in failed.value.message
    assert failed.value.retryable is True  # GET is idempotent


def test_connection_refused_was_not_sent(http: HttpExecutor) -> None:
    url = f"http://127.0.0.1:{find_free_port()}/x"
    with pytest.raises(StepFailed) as failed:
        http.execute(HttpRequest("POST", url, body="{}"))
    assert f"POST {url}: could not connect" in failed.value.message
    assert "Is the service up" in failed.value.message
    assert failed.value.sent is False and failed.value.retryable is True


def test_tls_to_a_plain_http_port_is_a_tls_error(http: HttpExecutor, base_url: str) -> None:
    with pytest.raises(StepFailed) as failed:
        http.execute(HttpRequest("GET", base_url.replace("http://", "https://") + "/json"))
    assert "TLS handshake failed" in failed.value.message
    assert failed.value.sent is False and failed.value.retryable is False


def test_untrusted_certificate_is_a_trust_problem(http: HttpExecutor, self_signed_url: str) -> None:
    with pytest.raises(StepFailed) as failed:
        http.execute(HttpRequest("GET", f"{self_signed_url}/json"))
    message = failed.value.message
    assert "TLS certificate does not verify (self-signed certificate)" in message
    assert "trust store" in message
    assert failed.value.sent is False and failed.value.retryable is False


def test_big_body_is_cut_and_not_parsed(http: HttpExecutor, base_url: str) -> None:
    result = http.execute(HttpRequest("GET", f"{base_url}/big"))
    assert result.data["body"].endswith(f"[runbook: body cut at {BODY_LIMIT} bytes]")
    assert "json" not in result.data


def test_not_a_url(http: HttpExecutor) -> None:
    with pytest.raises(StepFailed) as failed:
        http.execute(HttpRequest("GET", "ftp://example.net/file"))
    assert "not a usable http:// or https:// URL" in failed.value.message and failed.value.sent is False
