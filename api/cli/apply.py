"""`ovs-fabric apply FILE`: make the service hold a declared topology.

Shows the plan as a diff, stops there with --dry-run, else makes the changes through
the REST API (parents first), then waits with a progress bar until every port the
file binds is ACTIVE. Any failure ends it with one line and a non-zero status.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from api.cli.common import CliError
from api.cli.document import Document, DocumentError, load_document
from api.cli.plan import (
    RESOURCE_PATH,
    Change,
    Key,
    Kind,
    Plan,
    bound_ports,
    create_body,
    plan,
    update_body,
)
from api.cli.remote import TokenOption, UrlOption, connect, console, describe_api_error
from api.client import ApiError, FabricClient

_MARK = {"create": "[green]+[/green]", "update": "[yellow]~[/yellow]", "delete": "[red]-[/red]"}


def render_plan(result: Plan, source: str) -> None:
    console.print(f"plan for {source}:")
    for change in result.changes:
        details = "".join(
            f"  {_field_text(change, f.name, f.current, f.desired)}" for f in change.fields
        )
        console.print(f"  {_MARK[change.action]} {escape(change.label + details)}")
    prunable = tuple(label for label in result.kept if " (" not in label)
    if prunable:
        console.print(f"  [dim]= {escape(kept_summary(prunable))}[/dim]")
    for label in result.kept:
        if " (" in label:  # never pruned, and says why
            console.print(f"  [dim]= {escape(label)}[/dim]")
    for conflict in result.conflicts:
        console.print(f"  [red]! {escape(conflict)}[/red]")
    if result:
        console.print(
            f"{result.count('create')} to create, {result.count('update')} to change, "
            f"{result.count('delete')} to delete."
        )
    else:
        console.print("nothing to change.")


_KINDS = ("load balancer", "network", "tenant", "host", "port")


def kept_summary(labels: tuple[str, ...]) -> str:
    """One line for what stays: the outermost objects by name, the ones inside counted."""
    def path(label: str) -> str:
        kind = next(k for k in _KINDS if label.startswith(k + " "))
        return label[len(kind) + 1:]

    paths = {label: path(label) for label in labels}
    outer = [label for label in labels if not any(
        other != paths[label] and paths[label].startswith(other + "/")
        for other in paths.values())]
    inside = len(labels) - len(outer)
    return (f"kept, not in the file (--prune deletes them): {', '.join(outer)}"
            + (f" and {inside} object(s) inside them" if inside else ""))


def _field_text(change: Change, name: str, current: object, desired: object) -> str:
    if change.action == "create":
        return f"{name}={_value(desired)}"
    return f"{name}: {_value(current)} -> {_value(desired)}"


def _value(value: object) -> str:
    """Compact and stable: lists joined, mappings as k=v, backends as target:port wN."""
    if isinstance(value, list | tuple):
        if len(value) == 4 and value[0] in ("ip", "port") and isinstance(value[2], int):
            return f"{value[1]}:{value[2]} w{value[3]}"  # a backend's plan key
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        if "port" in value and ("ip" in value or "port_name" in value):
            target = value.get("port_name") or value.get("ip")
            return f"{target}:{value['port']} w{value.get('weight', 1)}"
        return "{" + ", ".join(f"{k}={_value(v)}" for k, v in value.items()) + "}"
    return "-" if value is None else str(value)


def apply(
    file: Annotated[Path, typer.Argument(help="Topology YAML (see topologies/).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan, change nothing.")
    ] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="Delete what the file does not declare.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for bound ports to become ACTIVE.")
    ] = 60.0,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Apply a declarative topology: show the diff, make it so, wait until realised."""
    try:
        document = load_document(file)
    except DocumentError as exc:
        raise CliError(str(exc)) from None
    with connect(url, token) as client:
        topology = client.topology()
        result = plan(document, topology, prune=prune)
        render_plan(result, str(file))
        if result.conflicts:
            more = f" (and {len(result.conflicts) - 1} more)" if len(result.conflicts) > 1 else ""
            raise CliError(result.conflicts[0] + more)
        if dry_run:
            console.print("dry run: nothing changed.")
            return
        ids = _existing_ids(topology)
        _execute(client, result, ids)
        _wait_active(client, document, ids, timeout)
    console.print(
        f"[green]applied[/green] {file}: {result.count('create')} created, "
        f"{result.count('update')} changed, {result.count('delete')} deleted."
    )


def _existing_ids(topology: dict[str, Any]) -> dict[tuple[Kind, Key], str]:
    from api.cli.plan import _index  # the plan's own view of names, for the ids

    current = _index(topology)
    return {
        (kind, key): item["id"]
        for kind in RESOURCE_PATH
        for key, item in current.of(kind).items()
    }


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=False,
    )


def _execute(client: FabricClient, result: Plan, ids: dict[tuple[Kind, Key], str]) -> None:
    if not result:
        return

    def id_of(kind: Kind, key: Key) -> str:
        try:
            return ids[(kind, key)]
        except KeyError:
            raise CliError(f"{kind} {'/'.join(key)} does not exist") from None

    with _progress() as progress:
        task = progress.add_task("applying", total=len(result.changes))
        for done, change in enumerate(result.changes):
            path = RESOURCE_PATH[change.kind]
            try:
                if change.action == "create":
                    made = client.create(path, **create_body(change, id_of))
                    ids[(change.kind, change.key)] = made["id"]
                elif change.action == "update":
                    assert change.id is not None
                    client.update(path, change.id, **update_body(change, id_of))
                else:
                    assert change.id is not None
                    client.delete(path, change.id)
            except ApiError as exc:
                progress.stop()
                raise CliError(
                    f"{change.action} {change.label} failed after {done} of "
                    f"{len(result.changes)} changes: {describe_api_error(exc)}"
                ) from None
            progress.advance(task)


def _wait_active(
    client: FabricClient, document: Document, ids: dict[tuple[Kind, Key], str], timeout: float
) -> None:
    keys = bound_ports(document)
    if not keys:
        return
    deadline = time.monotonic() + timeout
    with _progress() as progress:
        task = progress.add_task("ports ACTIVE", total=len(keys))
        for key in keys:
            port_id = ids[("port", key)]
            port = client.wait_port_active(port_id, timeout=max(0.1, deadline - time.monotonic()))
            while port["status"] != "ACTIVE" and time.monotonic() < deadline:
                # The API answers one wait at most every 300 s; ours may be longer.
                remaining = min(300.0, deadline - time.monotonic())
                port = client.wait_port_active(port_id, timeout=max(0.1, remaining))
            if port["status"] != "ACTIVE":
                progress.stop()
                binding = port["binding"]
                raise CliError(
                    f"port {'/'.join(key)} is still {port['status']} after {timeout:g}s "
                    f"(hint: is interface {binding['interface']} present on its host? "
                    "`ovs-fabric status` shows the hosts)"
                )
            progress.advance(task)


def register(app: typer.Typer) -> None:
    app.command()(apply)
