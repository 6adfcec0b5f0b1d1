"""TLS settings, the controller target each kind of host gets, and plaintext refusal rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from api import pki
from api.config import Settings
from api.runtime import controller_config
from controller.core.model import HostSpec
from controller.host_agent import (
    ControllerConfig,
    controller_target_for,
    plaintext_remotes,
    remote_address,
)
from tests.support.environment import clear_settings_environment

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_settings_environment(monkeypatch)


@pytest.fixture
def tls_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pki.PkiDir:
    root = tmp_path / "pki"
    pki.init(root)
    files = pki.PkiDir(root)
    monkeypatch.setenv("OVS_FABRIC_TLS_PRIVATE_KEY", str(files.controller.private_key))
    monkeypatch.setenv("OVS_FABRIC_TLS_CERTIFICATE", str(files.controller.certificate))
    monkeypatch.setenv("OVS_FABRIC_TLS_CA_CERTIFICATE", str(files.ca.certificate))
    return files


def _host(remote: str) -> HostSpec:
    return HostSpec(id="00000000-0000-0000-0000-000000000001", name="hv1", ovsdb_remote=remote)


def test_tls_files_reach_the_controller(tls_env: pki.PkiDir) -> None:
    config = controller_config(Settings())
    files = config.tls_files()
    assert files is not None and files.ca_certificate == tls_env.ca.certificate
    listener = config.openflow_tls()
    assert listener is not None and (listener.host, listener.port) == ("127.0.0.1", 6654)
    assert controller_config(Settings(require_tls=True)).require_tls


def test_half_a_tls_configuration_is_refused(
    tls_env: pki.PkiDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OVS_FABRIC_TLS_CA_CERTIFICATE")
    with pytest.raises(ValidationError, match="missing tls_ca_certificate"):
        Settings()
    monkeypatch.setenv("OVS_FABRIC_TLS_CA_CERTIFICATE", "/nonexistent/ca.pem")
    with pytest.raises(ValidationError, match="is not a readable file"):
        Settings()
    # The CA's key with the controller's certificate: refused before anything listens.
    monkeypatch.setenv("OVS_FABRIC_TLS_CA_CERTIFICATE", str(tls_env.ca.certificate))
    monkeypatch.setenv("OVS_FABRIC_TLS_PRIVATE_KEY", str(tls_env.ca.private_key))
    with pytest.raises(ValidationError, match="TLS files do not load: KEY_VALUES_MISMATCH"):
        Settings()


def test_require_tls_needs_tls_and_a_loopback_plaintext_listener(
    tls_env: pki.PkiDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVS_FABRIC_REQUIRE_TLS", "true")
    monkeypatch.setenv("OVS_FABRIC_OPENFLOW_LISTEN_HOST", "0.0.0.0")
    with pytest.raises(ValidationError, match="must be a loopback address"):
        Settings()
    monkeypatch.setenv("OVS_FABRIC_OPENFLOW_LISTEN_HOST", "::1")
    assert Settings().require_tls
    for name in ("KEY", "CERTIFICATE", "CA_CERTIFICATE"):
        monkeypatch.delenv(f"OVS_FABRIC_TLS_{'PRIVATE_' if name == 'KEY' else ''}{name}")
    with pytest.raises(ValidationError, match="require_tls needs"):
        Settings()


def test_controller_targets(tls_env: pki.PkiDir) -> None:
    plain = ControllerConfig(openflow_advertise="tcp:192.0.2.1:6653")
    tls = controller_config(
        Settings(openflow_advertise="tcp:192.0.2.1:6653", openflow_tls_port=6700)
    )
    network_host, local_host = _host("ssl:192.0.2.11:6640"), _host("unix:/run/h1/db.sock")
    assert controller_target_for(network_host, plain) == "tcp:192.0.2.1:6653"
    assert controller_target_for(network_host, tls) == "ssl:192.0.2.1:6700"
    # A local host goes through its relay socket whatever TLS says.
    assert controller_target_for(local_host, tls) == "unix:/run/h1/ovs-fabric-ofp.sock"
    bare = controller_config(Settings(openflow_advertise="192.0.2.1"))
    assert controller_target_for(network_host, bare) == "ssl:192.0.2.1:6654"
    natted = controller_config(Settings(openflow_advertise="ssl:203.0.113.9:443"))
    assert controller_target_for(network_host, natted) == "ssl:203.0.113.9:443"
    assert controller_target_for(network_host, controller_config(Settings())) is None


def test_plaintext_remotes_and_where_a_switch_connects_from() -> None:
    assert plaintext_remotes(_host("tcp:192.0.2.11:6640")) == ["tcp:192.0.2.11:6640"]
    assert plaintext_remotes(_host("unix:/run/db.sock")) == []
    assert plaintext_remotes(_host("ssl:192.0.2.11:6640,tcp:192.0.2.12:6640")) == [
        "tcp:192.0.2.12:6640"
    ]
    assert remote_address(_host("ssl:192.0.2.11:6640")) == "192.0.2.11"
    assert remote_address(_host("ssl:[2001:db8::1]:6640")) == "2001:db8::1"
    assert remote_address(_host("unix:/run/db.sock")) is None
