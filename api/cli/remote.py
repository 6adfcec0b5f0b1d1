"""Commands that talk to a running service over its REST API: where it is, which token,
how results are printed, and how its errors read.

The service is found, in this order, from `--url`/`--token`, the environment
(OVS_FABRIC_URL, OVS_FABRIC_TOKEN) and the config file (OVS_FABRIC_CONFIG, else
~/.config/ovs-fabric/config.toml), e.g.:

    url = "https://fabric.example.net:8080"
    token = "…"
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console, ConsoleDimensions
from rich.table import Table

from api.cli.common import CliError
from api.client import ApiError, FabricClient

DEFAULT_URL = "http://127.0.0.1:8080"
CONFIG_ENV = "OVS_FABRIC_CONFIG"
URL_ENV = "OVS_FABRIC_URL"
TOKEN_ENV = "OVS_FABRIC_TOKEN"
CONNECTION_PANEL = "Connection"

# Output that goes to a file or a pipe is not wrapped or cut: a table keeps every value
# for grep and scripts (Rich would squeeze it into 80 columns).
PIPED_WIDTH = 1000


class _Console(Console):
    """Rich's console, sized when it prints (not when the CLI was imported): COLUMNS as
    it is then, else the terminal's width, else PIPED_WIDTH."""

    _explicit: ConsoleDimensions | None = None

    @property
    def size(self) -> ConsoleDimensions:
        if self._explicit is not None:
            return self._explicit
        columns = os.environ.get("COLUMNS", "")
        if columns.isdigit():
            return ConsoleDimensions(int(columns), 25)
        if not self.is_terminal:
            return ConsoleDimensions(PIPED_WIDTH, 25)
        width, height = os.get_terminal_size(self.file.fileno())
        return ConsoleDimensions(width, height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._explicit = ConsoleDimensions(*new_size)


console = _Console(highlight=False)


class Output(StrEnum):
    table = "table"
    json = "json"


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", envvar=URL_ENV, show_envvar=True, rich_help_panel=CONNECTION_PANEL,
        help=f"The service's base URL (else the config file, else {DEFAULT_URL}).",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", envvar=TOKEN_ENV, show_envvar=True, rich_help_panel=CONNECTION_PANEL,
        help="Bearer token (else the config file).",
    ),
]
OutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="Rich tables, or the API's JSON.")
]


@dataclass(frozen=True)
class Connection:
    url: str
    token: str


def config_path() -> Path:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ovs-fabric" / "config.toml"


def _config_file() -> dict[str, Any]:
    path = config_path()
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read config file {path}: {exc}") from None


_before_command: dict[str, str | None] = {"url": None, "token": None}


def given_before_the_command(url: str | None, token: str | None) -> None:
    """`ovs-fabric --url U --token T <command>`: these win over the environment."""
    _before_command.update(url=url, token=token)


def resolve_connection(url: str | None, token: str | None) -> Connection:
    """Flags before the command, then the command's flags or the environment (which
    Typer has merged), then the config file."""
    url = _before_command["url"] or url
    token = _before_command["token"] or token
    config = _config_file() if url is None or token is None else {}
    url = url or str(config.get("url") or DEFAULT_URL)
    token = token or config.get("token")
    if not token:
        raise CliError(
            f"no API token: pass --token, set {TOKEN_ENV}, or put token = \"...\" in "
            f"{config_path()} (an admin creates one with `ovs-fabric token create`)"
        )
    return Connection(url=url.rstrip("/"), token=str(token))


@contextmanager
def connect(url: str | None, token: str | None) -> Iterator[FabricClient]:
    """A client of the service; its errors leave as `CliError`s of one line with a hint."""
    connection = resolve_connection(url, token)
    with FabricClient(connection.url, connection.token) as client:
        try:
            yield client
        except ApiError as exc:
            raise CliError(describe_api_error(exc)) from exc
        except httpx.HTTPError as exc:
            raise CliError(describe_transport_error(exc, connection.url)) from exc


_STATUS_HINTS: dict[int, tuple[str, str]] = {
    400: ("bad request", ""),
    401: (
        "not authenticated",
        f"the token is missing, wrong, revoked or expired (--token, {TOKEN_ENV})",
    ),
    403: ("forbidden", "a tenant token may not do this; use an admin token"),
    404: ("not found", "check the name or id (`list` shows what this token can see)"),
    409: ("conflict", "it clashes with what exists; `list` shows it"),
    422: ("invalid", "fix the field it names"),
    429: ("too many requests", "retry in a moment"),
    503: ("service unavailable", "retry in a moment; the service log says why"),
}


def describe_api_error(exc: ApiError) -> str:
    """`HTTP 409 conflict: <the service's detail> (hint: ...)` on one line."""
    label, hint = _STATUS_HINTS.get(
        exc.status,
        ("server error", "see the service log") if exc.status >= 500 else ("error", ""),
    )
    # pydantic's "Value error, " prefix says nothing to a reader of the CLI.
    detail = " ".join(exc.detail.replace("Value error, ", "").split())
    text = f"HTTP {exc.status} {label}: {detail}"
    return f"{text} (hint: {hint})" if hint else text


def describe_transport_error(exc: httpx.HTTPError, url: str) -> str:
    if isinstance(exc, httpx.ConnectError):
        reason = "connection refused" if "refused" in str(exc).lower() else str(exc) or "no route"
        return (
            f"cannot reach the service at {url}: {reason} (hint: is `ovs-fabric serve` "
            f"running there? set --url or {URL_ENV})"
        )
    if isinstance(exc, httpx.TimeoutException):
        return f"the service at {url} did not answer in time (hint: retry; see the service log)"
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return f"bad service URL {url!r}: {exc} (hint: e.g. {DEFAULT_URL})"
    return f"talking to {url}: {type(exc).__name__}: {exc}"


# ---- printing --------------------------------------------------------------------------

Column = tuple[str, Callable[[dict[str, Any]], object]]


def field(name: str) -> Callable[[dict[str, Any]], object]:
    return lambda item: item.get(name)


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "[green]yes[/green]" if value else "[red]no[/red]"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def table(title: str, columns: Sequence[Column], items: Sequence[dict[str, Any]]) -> Table:
    result = Table(title=title, title_justify="left")
    for header, _get in columns:
        result.add_column(header, overflow="fold")
    for item in items:
        result.add_row(*(cell(get(item)) for _header, get in columns))
    return result


def print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def short_id(value: object) -> str:
    return str(value)[:8] if value else "-"
