"""`ovs-fabric` finds command groups of other packages through entry points.

The service's CLI must not import the lab (an import-linter contract says so);
the lab still appears as `ovs-fabric lab` because it declares itself in the
`ovs_fabric.commands` entry-point group.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest
import typer
from typer.testing import CliRunner

from api import cli

pytestmark = pytest.mark.unit


def test_lab_commands_are_found_through_the_entry_point() -> None:
    cli.register_plugin_commands()

    result = CliRunner().invoke(cli.app, ["lab", "--help"])

    assert result.exit_code == 0, result.output
    assert "up" in result.output and "clean" in result.output


def test_registering_twice_adds_the_group_once() -> None:
    cli.register_plugin_commands()
    cli.register_plugin_commands()

    names = [group.name for group in cli.app.registered_groups]
    assert names.count("lab") == 1


def test_a_broken_plugin_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = EntryPoint(name="broken", value="no_such_module_xyz:app", group=cli.COMMAND_PLUGINS)
    monkeypatch.setattr(cli, "entry_points", lambda group: [broken])
    monkeypatch.setattr(cli, "app", typer.Typer())

    cli.register_plugin_commands()

    assert "broken commands unavailable" in capsys.readouterr().err
    assert [group.name for group in cli.app.registered_groups] == []
