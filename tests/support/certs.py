"""Certificates the PKI would never issue, for tests of how TLS failures read."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from api import pki


def write_expired_leaf(
    pki_root: Path,
    name: str,
    key_path: Path,
    cert_path: Path,
    *,
    issued_days_ago: int,
    days: int,
) -> None:
    """Write a new key and a certificate for `name` from the CA under `pki_root`, issued
    `issued_days_ago` days ago and valid for `days` days (fewer: it has expired)."""
    ca = pki.PkiDir(pki_root).ca
    ca_key = serialization.load_pem_private_key(ca.private_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    issued = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=issued_days_ago)
    cert = pki.build_leaf(
        name, key, ca_key, pki.load_certificate(ca.certificate),
        now=issued, days=days, dns_name=name,
    )  # fmt: skip
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
