"""The process environment as the settings read it."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest


def clear_settings_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every variable `api.config.Settings` reads (OVS_FABRIC_*, DATABASE_URL) for
    the rest of the test, so only what the test sets counts."""
    for name in list(os.environ):
        if name.startswith("OVS_FABRIC_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)
