"""Settings from the environment."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from api.config import Settings
from tests.support.environment import clear_settings_environment

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_settings_environment(monkeypatch)


def test_defaults() -> None:
    settings = Settings()
    assert settings.database_url == "sqlite:///./var/ovs-fabric.db"
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8080)
    assert settings.vlan_pool().intervals == ((1, 4094),)
    assert settings.vni_pool().intervals == ((1, 16_777_215),)
    assert settings.admin_token is None and settings.controller_enabled


def test_prefixed_environment_and_plain_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u@127.0.0.1/db")
    monkeypatch.setenv("OVS_FABRIC_API_PORT", "9000")
    monkeypatch.setenv("OVS_FABRIC_VLAN_RANGES", "100-199")
    monkeypatch.setenv("OVS_FABRIC_VLAN_RESERVED", "100")
    settings = Settings()
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.api_port == 9000
    assert settings.vlan_pool().lowest_free([]) == 101
    monkeypatch.setenv("OVS_FABRIC_DATABASE_URL", "sqlite:////tmp/x.db")
    assert Settings().database_url == "sqlite:////tmp/x.db"  # the prefixed name wins


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("vlan_ranges", "0-10"),
        ("vlan_ranges", "1-4095"),
        ("vni_ranges", "1-16777216"),
        ("vlan_ranges", "ten"),
        ("api_port", "0"),
    ],
)
def test_bad_values_fail_at_start(monkeypatch: pytest.MonkeyPatch, field: str, value: str) -> None:
    monkeypatch.setenv(f"OVS_FABRIC_{field.upper()}", value)
    with pytest.raises(ValidationError, match=field):
        Settings()


def test_a_pool_emptied_by_reservations_is_refused() -> None:
    with pytest.raises(ValidationError, match="leaves no VLAN id"):
        Settings(vlan_ranges="10-20", vlan_reserved="10-20")
