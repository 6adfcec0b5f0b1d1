"""Mutual TLS for both southbound protocols: the files, the contexts, and what failed.

The controller is the TLS server for OpenFlow (switches connect to it) and the
TLS client for OVSDB (it connects to each host's `pssl:` listener). Both ends
present a certificate from the operator's CA and accept only that CA's
(`ovs-fabric pki`). A failed handshake is turned into one sentence an operator
can act on: Python's ssl module knows why it failed, the OVS library only
keeps an errno.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# OpenSSL's X509_V_ERR_* codes (x509_vfy.h) for the failures an operator can fix.
_NOT_YET_VALID = 9
_EXPIRED = 10
_UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21})  # self-signed, unable to get issuer, ...


@dataclass(frozen=True)
class TlsFiles:
    """This controller's identity and the CA it trusts, as PEM files."""

    private_key: Path
    certificate: Path
    ca_certificate: Path

    def server_context(self) -> ssl.SSLContext:
        """For the OpenFlow listener: a client certificate from our CA is required."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._load(context)
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_context(self) -> ssl.SSLContext:
        """For OVSDB: the host's certificate must be from our CA. Its name is checked
        against the registered host name by the caller (see `peer_names`), not
        against the address dialled: hosts are registered by IP."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        self._load(context)
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def _load(self, context: ssl.SSLContext) -> None:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certificate, self.private_key)
        context.load_verify_locations(self.ca_certificate)


def peer_names(cert: Mapping[str, Any] | None) -> list[str]:
    """The names a peer certificate (ssl's getpeercert() dict) is for: CN and DNS SANs."""
    if not cert:
        return []
    names: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(str(value))
    for kind, value in cert.get("subjectAltName", ()):
        if kind in ("DNS", "IP Address") and str(value) not in names:
            names.append(str(value))
    return names


def describe_handshake_failure(exc: BaseException, *, peer: str) -> str:
    """One sentence saying why a TLS handshake with `peer` ("the host", "the switch") failed.

    `exc` is what Python's ssl raised on our side of the handshake: either our
    verification of the peer's certificate, or an alert the peer sent because it
    refused ours."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        detail = exc.verify_message
        if code == _EXPIRED:
            return f"{peer}'s certificate has expired ({detail})"
        if code == _NOT_YET_VALID:
            return f"{peer}'s certificate is not valid yet ({detail})"
        if code in _UNKNOWN_ISSUER:
            return f"{peer}'s certificate is not issued by our CA ({detail})"
        return f"{peer}'s certificate was refused: {detail}"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if "UNKNOWN_CA" in reason:
            return f"{peer} refused our certificate: unknown CA ({peer} trusts another CA)"
        if "CERTIFICATE_EXPIRED" in reason:
            return f"{peer} refused our certificate as expired"
        if "BAD_CERTIFICATE" in reason or "CERTIFICATE_UNKNOWN" in reason:
            return f"{peer} refused our certificate"
        if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in reason or "CERTIFICATE_REQUIRED" in reason:
            return f"{peer} presented no certificate (a client certificate is required)"
        if "WRONG_VERSION_NUMBER" in reason or "HTTP_REQUEST" in reason or "RECORD_LAYER" in reason:
            return f"{peer} does not speak TLS (a plaintext tcp: connection?)"
        if isinstance(exc, ssl.SSLEOFError) or "EOF" in reason:
            return (
                f"{peer} closed the connection during the TLS handshake"
                " (plaintext listener, or TLS not configured on its side?)"
            )
        return f"TLS handshake with {peer} failed: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return f"{peer} did not complete a TLS handshake in time"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return (
            f"{peer} closed the connection during the TLS handshake"
            " (plaintext listener, or it refused our certificate?)"
        )
    return f"TLS handshake with {peer} failed: {exc}"
