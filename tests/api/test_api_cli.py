"""The `ovs-fabric` command line: schema commands, tokens, serve, and one-line errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.store.db import head_revision

pytestmark = pytest.mark.api


def cli_env(database_url: str | None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OVS_FABRIC_") and k != "DATABASE_URL"
    }
    if database_url is not None:
        env["OVS_FABRIC_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def run_cli(*args: str, database_url: str | None, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=cli_env(database_url, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_db_upgrade_current_downgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    head = head_revision(url)  # the newest migration in migrations/versions
    assert head is not None
    assert (
        run_cli("db", "current", database_url=url).stdout.strip() == f"current: base  head: {head}"
    )
    upgraded = run_cli("db", "upgrade", database_url=url)
    assert upgraded.returncode == 0 and head in upgraded.stdout
    assert (
        run_cli("db", "current", database_url=url).stdout.strip()
        == f"current: {head}  head: {head}"
    )
    downgraded = run_cli("db", "downgrade", "base", database_url=url)
    assert downgraded.returncode == 0 and "base" in downgraded.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("db", "current"), {"DATABASE_URL": "mysql://u@127.0.0.1/x"}, "unsupported database"),
        (("db", "current"), {"DATABASE_URL": "::not a url::"}, "invalid database URL"),
        (("db", "downgrade", "nonesuch"), {}, "nonesuch"),
        (("db", "upgrade"), {"OVS_FABRIC_VLAN_RANGES": "0-5"}, "vlan_ranges"),
        (("token", "create", "--name", "x", "--tenant", "no-such-tenant"), {}, "not found"),
        (("token", "create", "--name", "x", "--expires-at", "2001-01-01"), {}, "not in the future"),
        (("token", "revoke", "no-such-token"), {}, "not found"),
        (("token", "list", "--tenant", "no-such-tenant"), {}, "not found"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    url = None if "DATABASE_URL" in env else f"sqlite:///{tmp_path / 'cli.db'}"
    result = run_cli(*args, database_url=url, **env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ovs-fabric: error:") and message in lines[0], (
        lines
    )
    assert "Traceback" not in result.stderr


def test_unreachable_postgres_is_a_one_line_error() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli("db", "current", database_url=f"postgresql+psycopg://u@127.0.0.1:{port}/x")
    assert result.returncode == 2 and "database error" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_token_create_prints_a_working_token_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    first = run_cli("token", "create", "--name", "ops", database_url=url)
    second = run_cli("token", "create", "--name", "ops2", database_url=url)
    assert first.returncode == second.returncode == 0
    assert len(first.stdout.split()) == 1 and first.stdout != second.stdout


def test_tokens_are_listed_without_their_secret_and_revoked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    kept = run_cli("token", "create", "--name", "kept", database_url=url).stdout.strip()
    leaked = run_cli(
        "token", "create", "--name", "leaked", "--expires-at", "2999-01-01", database_url=url
    ).stdout.strip()
    listed = run_cli("token", "list", database_url=url, COLUMNS="200")
    assert listed.returncode == 0, listed.stderr
    assert "kept" in listed.stdout and "never" in listed.stdout and "2999-01-01" in listed.stdout
    assert kept not in listed.stdout and leaked not in listed.stdout
    leaked_id = next(
        line.split("│")[1].strip() for line in listed.stdout.splitlines() if "leaked" in line
    )

    revoked = run_cli("token", "revoke", leaked_id, database_url=url)
    assert revoked.returncode == 0 and leaked_id in revoked.stdout
    after = run_cli("token", "list", database_url=url, COLUMNS="200").stdout
    assert "leaked" not in after and "kept" in after
    kept_id = next(line.split("│")[1].strip() for line in after.splitlines() if "kept" in line)
    last = run_cli("token", "revoke", kept_id, database_url=url)
    assert last.returncode == 2 and "last admin token" in last.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_answers_and_prints_a_generated_admin_token_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    port = free_port()
    env = cli_env(url, OVS_FABRIC_CONTROLLER_ENABLED="false", OVS_FABRIC_LIBVIRT_ENABLED="false")
    stdout_path = tmp_path / "serve.out"
    with stdout_path.open("w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, stdout_path.read_text()
            assert time.monotonic() < deadline, stdout_path.read_text()
            time.sleep(0.1)
        printed = [line for line in stdout_path.read_text().splitlines() if "admin token" in line]
        assert len(printed) == 1
        token = printed[0].rsplit(" ", 1)[-1]
        hosts = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/hosts", headers={"Authorization": f"Bearer {token}"}
        )
        assert hosts.status_code == 200 and hosts.json()["total"] == 0
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_simultaneous_upgrades_from_several_processes_all_succeed(tmp_path: Path) -> None:
    """Replicas starting together on a fresh database: one migrates, the others find it done."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "api.cli", "db", "upgrade"],
            env=cli_env(url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [process.communicate(timeout=60) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], results
    head = head_revision(url)
    assert (
        run_cli("db", "current", database_url=url).stdout.strip()
        == f"current: {head}  head: {head}"
    )
