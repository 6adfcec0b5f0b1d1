"""The CLI's console: sized when it prints, and never cutting values from piped tables."""

from __future__ import annotations

import io

import pytest
from rich.table import Table

from api.cli.remote import PIPED_WIDTH, _Console

pytestmark = pytest.mark.unit


def wide_table() -> Table:
    table = Table("name", "remote")
    table.add_row("hv1", "tcp:127.0.0.1:1" + "0" * 150)
    return table


def test_piped_output_keeps_every_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    console = _Console(file=out, highlight=False)
    assert console.width == PIPED_WIDTH
    console.print(wide_table())
    assert "hv1" in out.getvalue() and "0" * 150 in out.getvalue()


def test_columns_is_read_when_printing_not_when_created(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    console = _Console(file=io.StringIO(), highlight=False)
    monkeypatch.setenv("COLUMNS", "120")
    assert console.width == 120
    console.size = (70, 20)  # an explicit size wins
    assert console.width == 70
