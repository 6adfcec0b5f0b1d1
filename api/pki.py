"""The operator's own certificate authority for mutual TLS (`ovs-fabric pki`).

One directory holds the CA, the controller's key and certificate, and one key
and certificate per host, as PEM files:

    ca-privkey.pem, ca-cert.pem                  the CA (keep ca-privkey.pem offline)
    controller-privkey.pem, controller-cert.pem  the service: OpenFlow server, OVSDB client
    host-NAME-privkey.pem, host-NAME-cert.pem    a hypervisor's OVS: OVSDB server,
                                                 OpenFlow client (CN=NAME)

Every leaf certificate may serve both ends of a TLS connection (serverAuth and
clientAuth): the controller is the OpenFlow server but the OVSDB client, a host
the other way round. Keys are ECDSA P-256, written 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_PKI_DIR: Final = Path("/etc/ovs-fabric/pki")
CA_DAYS: Final = 3650
LEAF_DAYS: Final = 825
CONTROLLER_NAME: Final = "controller"
CONTROLLER_CN: Final = "ovs-fabric-controller"
_ORGANIZATION: Final = "ovs-fabric"
# A host name is what the REST API registers and what its certificate's CN says:
# a DNS label (or dotted name) so it also fits a subjectAltName.
_HOST_NAME_RE: Final = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9-]+)*$"
)


class PkiError(Exception):
    """Bad input or a directory in a state we refuse to touch; one line for the operator."""


@dataclass(frozen=True)
class KeyPair:
    """Where one identity's private key and certificate live."""

    private_key: Path
    certificate: Path

    def paths(self) -> tuple[Path, Path]:
        return self.private_key, self.certificate


@dataclass(frozen=True)
class PkiDir:
    root: Path

    @property
    def ca(self) -> KeyPair:
        return self._pair("ca")

    @property
    def controller(self) -> KeyPair:
        return self._pair(CONTROLLER_NAME)

    def host(self, name: str) -> KeyPair:
        return self._pair(f"host-{check_host_name(name)}")

    def _pair(self, stem: str) -> KeyPair:
        return KeyPair(self.root / f"{stem}-privkey.pem", self.root / f"{stem}-cert.pem")


@dataclass(frozen=True)
class Issued:
    """What a command made (or found already made)."""

    pair: KeyPair
    created: bool


def check_host_name(name: str) -> str:
    if not _HOST_NAME_RE.match(name) or len(name) > 253:
        raise PkiError(f"{name!r} is not a host name (letters, digits, '-' and '.')")
    return name


# ---- commands ----------------------------------------------------------------------------


def init(root: Path, *, now: datetime.datetime | None = None) -> tuple[Issued, Issued]:
    """Make the CA and the controller's certificate in `root` (created if missing).

    Idempotent: a directory that already holds both, consistent, is left as it
    is. A partial or inconsistent one is refused, never overwritten.
    """
    now = now or _now()
    pki = PkiDir(root)
    if not root.parent.is_dir():
        raise PkiError(f"cannot create {root}: {root.parent} is not a directory")
    if root.exists() and not root.is_dir():
        raise PkiError(f"{root} exists and is not a directory")
    root.mkdir(mode=0o700, exist_ok=True)
    ca = _existing_or_none(pki.ca, what="the CA")
    if ca is None:
        _refuse_existing(*pki.controller.paths(), reason="without the CA that signed them")
        ca_key = _new_key()
        ca_cert = _build_ca(ca_key, now=now)
        _write_pair(pki.ca, ca_key, ca_cert)
        ca_issued = Issued(pki.ca, created=True)
    else:
        ca_key, ca_cert = ca
        ca_issued = Issued(pki.ca, created=False)
    controller = _issue_leaf(
        pki.controller, CONTROLLER_CN, ca_key, ca_cert, now=now, dns_name=CONTROLLER_CN
    )
    return ca_issued, controller


def issue_host(root: Path, name: str, *, now: datetime.datetime | None = None) -> Issued:
    """Issue host NAME's key and certificate (CN=NAME, DNS:NAME), signed by the CA in `root`.

    Idempotent: an existing pair for NAME signed by this CA is kept."""
    check_host_name(name)
    pki = PkiDir(root)
    if not root.is_dir():
        raise PkiError(f"{root} is not a directory: run `ovs-fabric pki init --dir {root}` first")
    ca = _existing_or_none(pki.ca, what="the CA")
    if ca is None:
        raise PkiError(f"no CA in {root}: run `ovs-fabric pki init --dir {root}` first")
    ca_key, ca_cert = ca
    return _issue_leaf(pki.host(name), name, ca_key, ca_cert, now=now or _now(), dns_name=name)


# ---- reading back ------------------------------------------------------------------------


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM certificate: {exc}") from None


def verify_signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if `issuer`'s key signed `cert` (and names match); validity dates not checked."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


# ---- building ----------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _key_usage(*allowed: str) -> x509.KeyUsage:
    """A KeyUsage extension allowing the uses named, and no other."""
    uses = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    if unknown := set(allowed) - set(uses):
        raise ValueError(f"not a key usage: {sorted(unknown)}")
    return x509.KeyUsage(**{use: use in allowed for use in uses})


def _build_ca(key: ec.EllipticCurvePrivateKey, *, now: datetime.datetime) -> x509.Certificate:
    name = _name("ovs-fabric CA")
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        # Backdated a little: a host whose clock lags must not see "not yet valid".
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage("key_cert_sign", "crl_sign"), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def build_leaf(
    common: str,
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    now: datetime.datetime,
    days: int = LEAF_DAYS,
    dns_name: str | None,
) -> x509.Certificate:
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage("digital_signature", "key_agreement"), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if dns_name is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(dns_name)]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _issue_leaf(
    pair: KeyPair,
    common: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    now: datetime.datetime,
    dns_name: str | None,
) -> Issued:
    existing = _existing_or_none(pair, what=f"{common}'s key and certificate")
    if existing is not None:
        if not verify_signed_by(existing[1], ca_cert):
            raise PkiError(
                f"{pair.certificate} was not issued by the CA in {pair.certificate.parent}"
            )
        return Issued(pair, created=False)
    key = _new_key()
    _write_pair(pair, key, build_leaf(common, key, ca_key, ca_cert, now=now, dns_name=dns_name))
    return Issued(pair, created=True)


# ---- files -------------------------------------------------------------------------------


def _existing_or_none(
    pair: KeyPair, *, what: str
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    """Both files loaded, or None when neither exists; half a pair is refused."""
    present = [p for p in pair.paths() if p.exists()]
    if not present:
        return None
    if len(present) == 1:
        missing = next(p for p in pair.paths() if p not in present)
        raise PkiError(f"{present[0]} exists but {missing} does not: refusing to guess {what}")
    try:
        key = serialization.load_pem_private_key(pair.private_key.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{pair.private_key} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{pair.private_key} is not an EC key")
    cert = load_certificate(pair.certificate)
    if cert.public_key() != key.public_key():
        raise PkiError(f"{pair.certificate} does not belong to {pair.private_key}")
    return key, cert


def _refuse_existing(*paths: Path, reason: str) -> None:
    for path in paths:
        if path.exists():
            raise PkiError(f"{path} exists {reason}: refusing to overwrite it")


def _write_pair(pair: KeyPair, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(pair.private_key, key_pem, mode=0o600)
    _write_new(pair.certificate, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _write_new(path: Path, data: bytes, *, mode: int) -> None:
    # O_EXCL: two concurrent runs never overwrite each other's key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise PkiError(f"{path} appeared while writing: refusing to overwrite it") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
