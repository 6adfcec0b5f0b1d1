"""Why a TLS handshake failed, in the words an operator reads on the host.

Real handshakes between the contexts the controller uses and peers made with
`api.pki`, run in memory (ssl.MemoryBIO): OpenSSL decides, nothing is faked.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from api import pki
from controller.tls import TlsFiles, describe_handshake_failure, peer_names
from tests.support.certs import write_expired_leaf

pytestmark = pytest.mark.unit


def _ours(tmp_path: Path, name: str = "ours") -> tuple[Path, TlsFiles]:
    root = tmp_path / name
    pki.init(root)
    files = pki.PkiDir(root)
    controller = files.controller
    return root, TlsFiles(controller.private_key, controller.certificate, files.ca.certificate)


def _peer_context(
    root: Path, host: str, *, server: bool, trusts: Path | None = None
) -> ssl.SSLContext:
    """A host's OVS as OpenSSL sees it: its pair from `root`, trusting `trusts` (or root's CA)."""
    pair = pki.PkiDir(root).host(host)
    pki.issue_host(root, host)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    if not server:
        context.check_hostname = False
    context.load_cert_chain(pair.certificate, pair.private_key)
    context.load_verify_locations(trusts or pki.PkiDir(root).ca.certificate)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _handshake(
    client: ssl.SSLContext, server: ssl.SSLContext
) -> tuple[ssl.SSLObject, BaseException | None, BaseException | None]:
    """Run a handshake (and one exchange, where TLS 1.3 delivers late alerts) in memory;
    returns the client end and what each side raised."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_end = client.wrap_bio(c_in, c_out, server_side=False)
    server_end = server.wrap_bio(s_in, s_out, server_side=True)
    errors: dict[str, BaseException] = {}

    def step(name: str, end: ssl.SSLObject, action: str) -> None:
        if name in errors:
            return
        try:
            if action == "handshake":
                end.do_handshake()
            elif action == "write":
                end.write(b"ping")
            else:
                end.read(4)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except ssl.SSLError as exc:
            errors[name] = exc

    for action in ("handshake",) * 4 + ("write", "read", "read"):
        step("client", client_end, action)
        s_in.write(c_out.read())
        step("server", server_end, action)
        c_in.write(s_out.read())
    return client_end, errors.get("client"), errors.get("server")


def _foreign_peer(tmp_path: Path, ours: TlsFiles, *, server: bool) -> ssl.SSLContext:
    """A peer "hv1" whose pair comes from a foreign CA, trusting our CA."""
    foreign, _ = _ours(tmp_path, "foreign")
    return _peer_context(foreign, "hv1", server=server, trusts=ours.ca_certificate)


def _failure(error: BaseException | None, peer: str) -> str:
    """What the operator reads about a handshake that must have failed."""
    assert error is not None
    return describe_handshake_failure(error, peer=peer)


def _expired_host_context(root: Path, tmp_path: Path) -> ssl.SSLContext:
    """A host "hv1" serving a certificate from root's CA whose validity ended 5 days ago."""
    key_path, cert_path = tmp_path / "k.pem", tmp_path / "c.pem"
    write_expired_leaf(root, "hv1", key_path, cert_path, issued_days_ago=10, days=5)
    host = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    host.load_cert_chain(cert_path, key_path)
    return host


def test_ours_on_both_ends_is_accepted_and_names_the_host(tmp_path: Path) -> None:
    root, ours = _ours(tmp_path)
    client_end, client_error, server_error = _handshake(
        ours.client_context(), _peer_context(root, "hv1", server=True)
    )
    assert client_error is None and server_error is None
    assert peer_names(client_end.getpeercert()) == ["hv1"]


def test_a_host_with_a_foreign_ca_certificate(tmp_path: Path) -> None:
    _, ours = _ours(tmp_path)
    host = _foreign_peer(tmp_path, ours, server=True)
    _, client_error, _ = _handshake(ours.client_context(), host)
    assert _failure(client_error, "the host").startswith(
        "the host's certificate is not issued by our CA ("
    )


def test_a_host_that_trusts_another_ca_refuses_us(tmp_path: Path) -> None:
    root, ours = _ours(tmp_path)
    foreign, _ = _ours(tmp_path, "foreign")
    host = _peer_context(root, "hv1", server=True, trusts=pki.PkiDir(foreign).ca.certificate)
    _, client_error, _ = _handshake(ours.client_context(), host)
    assert _failure(client_error, "the host") == (
        "the host refused our certificate: unknown CA (the host trusts another CA)"
    )


def test_an_expired_host_certificate(tmp_path: Path) -> None:
    root, ours = _ours(tmp_path)
    host = _expired_host_context(root, tmp_path)
    _, client_error, _ = _handshake(ours.client_context(), host)
    assert _failure(client_error, "the host").startswith("the host's certificate has expired")


def test_the_openflow_listener_demands_a_certificate_from_our_ca(tmp_path: Path) -> None:
    root, ours = _ours(tmp_path)
    # A switch with a foreign certificate that trusts our CA: we refuse it.
    switch = _foreign_peer(tmp_path, ours, server=False)
    _, _, server_error = _handshake(switch, ours.server_context())
    assert _failure(server_error, "the switch").startswith(
        "the switch's certificate is not issued by our CA"
    )
    # A switch with no certificate at all.
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname = False
    bare.load_verify_locations(ours.ca_certificate)
    _, _, server_error = _handshake(bare, ours.server_context())
    assert _failure(server_error, "the switch") == (
        "the switch presented no certificate (a client certificate is required)"
    )
    # One of ours is accepted.
    _, client_error, server_error = _handshake(
        _peer_context(root, "hv1", server=False), ours.server_context()
    )
    assert client_error is None and server_error is None


def test_plaintext_and_timeouts() -> None:
    plaintext = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    plaintext.reason = "WRONG_VERSION_NUMBER"  # type: ignore[misc]
    assert "does not speak TLS" in describe_handshake_failure(plaintext, peer="the switch")
    assert "in time" in describe_handshake_failure(TimeoutError(), peer="the switch")
    assert "closed the connection" in describe_handshake_failure(
        ConnectionResetError(), peer="the host"
    )
