"""`ovs-fabric pki`: the CA, the controller's and hosts' certificates, checked as TLS will."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from api import pki
from api.cli import main

pytestmark = pytest.mark.unit


def _cert(path: Path) -> x509.Certificate:
    return pki.load_certificate(path)


def test_init_makes_a_ca_and_a_controller_certificate_it_signed(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    ca, controller = pki.init(root)
    assert ca.created and controller.created
    ca_cert, leaf = _cert(ca.pair.certificate), _cert(controller.pair.certificate)
    assert pki.verify_signed_by(leaf, ca_cert)
    constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    ca_usage = ca_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ca_usage.key_cert_sign and ca_usage.crl_sign and not ca_usage.digital_signature
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Keys are readable by their owner only.
    assert ca.pair.private_key.stat().st_mode & 0o777 == 0o600
    assert controller.pair.private_key.stat().st_mode & 0o777 == 0o600
    assert root.stat().st_mode & 0o777 == 0o700


def test_host_certificate_names_the_host_and_serves_both_ends(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    pki.init(root)
    now = datetime.datetime.now(datetime.UTC)
    issued = pki.issue_host(root, "hv-01.example", now=now)
    cert = _cert(issued.pair.certificate)
    assert pki.common_name(cert) == "hv-01.example"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["hv-01.example"]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    purposes = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(purposes) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - now > datetime.timedelta(days=pki.LEAF_DAYS - 1)
    assert pki.verify_signed_by(cert, _cert(pki.PkiDir(root).ca.certificate))


def test_the_chain_is_accepted_by_openssl_and_a_foreign_ca_is_not(tmp_path: Path) -> None:
    ours, foreign = tmp_path / "ours", tmp_path / "foreign"
    pki.init(ours)
    pki.init(foreign)
    host = pki.issue_host(ours, "h1")
    stranger = pki.issue_host(foreign, "h1")

    def store(root: Path) -> x509.verification.Store:
        return x509.verification.Store([_cert(pki.PkiDir(root).ca.certificate)])

    def verify(cert_path: Path, root: Path) -> None:
        verifier = x509.verification.PolicyBuilder().store(store(root)).build_client_verifier()
        verifier.verify(_cert(cert_path), [])

    verify(host.pair.certificate, ours)
    verify(pki.PkiDir(ours).controller.certificate, ours)
    with pytest.raises(x509.verification.VerificationError):
        verify(stranger.pair.certificate, ours)
    # Python's ssl (OpenSSL) loads every file as TLS will.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(host.pair.certificate, host.pair.private_key)
    context.load_verify_locations(pki.PkiDir(ours).ca.certificate)


def test_init_and_host_are_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    first = pki.init(root)
    ca_bytes = first[0].pair.certificate.read_bytes()
    again = pki.init(root)
    assert not any(item.created for item in again)
    assert first[0].pair.certificate.read_bytes() == ca_bytes
    host = pki.issue_host(root, "h1")
    host_bytes = host.pair.certificate.read_bytes()
    assert not pki.issue_host(root, "h1").created
    assert host.pair.certificate.read_bytes() == host_bytes


def test_expired_validity_is_what_was_asked(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    pki.init(root)
    long_ago = datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC)
    # A CA made long ago signs a certificate whose validity is clipped to the CA's.
    old_root = tmp_path / "old"
    pki.init(old_root, now=long_ago)
    cert = _cert(pki.issue_host(old_root, "h1", now=long_ago).pair.certificate)
    ca_cert = _cert(pki.PkiDir(old_root).ca.certificate)
    assert cert.not_valid_after_utc <= ca_cert.not_valid_after_utc
    assert cert.not_valid_after_utc < datetime.datetime.now(datetime.UTC)


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["pki", "host", "h1"], "run `ovs-fabric pki init"),
        ("init", ["pki", "host", "bad name"], "is not a host name"),
        ("half-ca", ["pki", "init"], "refusing to guess"),
        ("foreign-host", ["pki", "host", "h1"], "was not issued by the CA"),
        ("file", ["pki", "init"], "not a directory"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    setup: str | None,
    args: list[str],
    message: str,
) -> None:
    root = tmp_path / "pki"
    if setup == "init":
        pki.init(root)
    elif setup == "half-ca":
        root.mkdir()
        (root / "ca-privkey.pem").write_text("x")
    elif setup == "foreign-host":
        pki.init(root)
        pki.init(tmp_path / "other")
        other = pki.issue_host(tmp_path / "other", "h1").pair
        for path, target in zip(other.paths(), pki.PkiDir(root).host("h1").paths(), strict=True):
            target.write_bytes(path.read_bytes())
    elif setup == "file":
        root.write_text("not a directory")
    before = sorted(p.name for p in root.iterdir()) if root.is_dir() else None
    with pytest.raises(SystemExit) as exited:
        main([*args, "--dir", str(root)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    after = sorted(p.name for p in root.iterdir()) if root.is_dir() else None
    assert after == before


def test_cli_init_then_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "pki"
    for args in (["pki", "init"], ["pki", "host", "h1"], ["pki", "host", "h1"]):
        with pytest.raises(SystemExit) as exited:
            main([*args, "--dir", str(root)])
        assert exited.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == ["created", "created", "created", "kept"]
    assert (root / "host-h1-cert.pem").is_file()
