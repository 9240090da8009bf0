"""Who started a run or decided a gate: the mutual-TLS client certificate, proven, or the OS user, marked so.

Temporal does not tell a workflow who sent it an update, and a name in a payload is only a claim.
So the command signs what it does (``runbook start RUN_ID``, ``runbook approve RUN_ID STEP ITEM``)
with the private key of the client certificate it connects with, and sends the certificate along;
the worker accepts the name (the certificate's subject) only when that certificate was issued by the
CA it trusts for clients (``execution.temporal.tls.client_ca_file``, default ``ca_file``), is valid
now, and signed exactly this. Without mutual TLS the name is the OS user, kept as "unauthenticated":
recorded, never trusted where four-eyes needs to know who it is.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from .. import exitcodes
from ..errors import RunbookError
from ..run.journal import current_who
from . import contract as c
from .settings import Tls

VERIFIED = "mTLS client certificate, verified"
UNAUTHENTICATED = "OS user, unauthenticated"


def started(run_id: str) -> str:
    """What a starter signs."""
    return f"runbook start {run_id}"


def scheduled(schedule: str) -> str:
    """What the operator adding a schedule signs: they start each of its runs."""
    return f"runbook schedule {schedule}"


def decided(decision: c.Decision) -> str:
    """What an approver (or rejecter) signs: the decision, the run, the step and item; nothing else replays it."""
    verb = "approve" if decision.approve else "reject"
    return f"runbook {verb} {decision.run_id} {decision.step} {decision.item or ''} {decision.reason}".rstrip()


class CannotSign(RunbookError):
    exit_code = exitcodes.NOT_STARTED


def of_this_process(tls: Tls | None, message: str, consequence: str) -> c.Identity:
    """This command's identity for ``message``: signed with its client certificate's key under mutual TLS;
    a certificate or key it cannot use is named with its setting, and ``consequence``."""
    if tls is None or tls.cert_file is None or tls.key_file is None:
        return c.Identity(current_who())

    def read(path: Path, field: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise CannotSign(
                f"execution.temporal.tls.{field} in cluster-config.yaml: cannot read {path}: "
                f"{exc.strerror or exc}. {consequence}"
            ) from None

    pem = read(tls.cert_file, "cert_file")
    try:
        certificate = x509.load_pem_x509_certificate(pem)
        key = serialization.load_pem_private_key(read(tls.key_file, "key_file"), password=None)
    except (ValueError, TypeError) as exc:
        raise CannotSign(
            f"execution.temporal.tls in cluster-config.yaml: cannot use {tls.cert_file} with {tls.key_file} "
            f"to sign: {exc}. {consequence}"
        ) from None
    data = message.encode()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(data)
    else:
        raise CannotSign(f"{tls.key_file}: a {type(key).__name__} key cannot sign (EC, RSA or Ed25519). {consequence}")
    return c.Identity(
        certificate.subject.rfc4514_string(),
        authenticated=True,
        how="mTLS client certificate",
        certificate=pem.decode(),
        signature=base64.b64encode(signature).decode(),
    )


def verified(identity: c.Identity | None, message: str, client_ca: Path | None) -> tuple[str, bool, str]:
    """``(name, authenticated, how)`` as the worker checked them: authenticated only when the certificate
    was issued by ``client_ca``, is valid now, and its key signed ``message``; else why not."""
    if identity is None:
        return "unknown", False, "no identity given"
    if identity.certificate is None or identity.signature is None:
        return identity.name, False, UNAUTHENTICATED
    if client_ca is None:
        return identity.name, False, "certificate not checked: the worker has no CA for clients (tls.ca_file)"
    try:
        certificate = x509.load_pem_x509_certificate(identity.certificate.encode())
        ca = x509.load_pem_x509_certificate(client_ca.read_bytes())
        certificate.verify_directly_issued_by(ca)
        now = datetime.now(UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            return identity.name, False, "certificate expired or not yet valid"
        _check(certificate.public_key(), base64.b64decode(identity.signature), message.encode())
    except (ValueError, TypeError, InvalidSignature, OSError) as exc:
        return identity.name, False, f"certificate or signature refused ({type(exc).__name__})"
    return certificate.subject.rfc4514_string(), True, VERIFIED


def _check(public: object, signature: bytes, data: bytes) -> None:
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    elif isinstance(public, rsa.RSAPublicKey):
        public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(public, ed25519.Ed25519PublicKey):
        public.verify(signature, data)
    else:
        raise TypeError(type(public).__name__)
