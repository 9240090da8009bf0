"""A TLS front for a plaintext server (the Temporal dev server has no TLS of its own): it terminates
TLS with a server certificate and, for mutual TLS, accepts only clients whose certificate a given
CA signed, then passes bytes through. A production Temporal frontend does the same checks itself.

Certificates are made here with ``cryptography``: a CA, a server certificate for 127.0.0.1 and a
client certificate (``clientAuth``) signed by it, and one signed by nobody the front trusts.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    (folder / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{stem}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _signed(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    usage: list[x509.ObjectIdentifier],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if not ca and ExtendedKeyUsageOID.SERVER_AUTH in usage:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256()), key


def make_certificates(folder: Path) -> None:
    """``ca``, ``server`` (127.0.0.1), ``client`` and ``reviewer`` (signed by ``ca``: two operators) and
    ``stranger`` (self-signed), .crt and .key."""
    ca_cert, ca_key = _signed("runbook test CA", None, ca=True, usage=[])
    issuer = (ca_cert.subject, ca_key)
    _write(folder, "ca", ca_cert, ca_key)
    _write(folder, "server", *_signed("temporal", issuer, ca=False, usage=[ExtendedKeyUsageOID.SERVER_AUTH]))
    _write(folder, "client", *_signed("operator", issuer, ca=False, usage=[ExtendedKeyUsageOID.CLIENT_AUTH]))
    _write(folder, "reviewer", *_signed("reviewer", issuer, ca=False, usage=[ExtendedKeyUsageOID.CLIENT_AUTH]))
    _write(folder, "stranger", *_signed("stranger", None, ca=False, usage=[ExtendedKeyUsageOID.CLIENT_AUTH]))


class TlsFront:
    """Serves TLS on 127.0.0.1:``port`` (mutual: a client certificate ``ca`` signed) in front of ``target``."""

    def __init__(self, folder: Path, target: tuple[str, int]):
        self.target = target
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(folder / "server.crt", folder / "server.key")
        context.set_alpn_protocols(["h2"])  # gRPC
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(folder / "ca.crt")
        self.context = context
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tls-front", daemon=True)

    def start(self) -> TlsFront:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._link, "127.0.0.1", 0, ssl=self.context))
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        self.loop.run_forever()
        server.close()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()
