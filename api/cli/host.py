"""`ovs-fabric host prepare`: run on a hypervisor to make its OVS ready for the controller."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from api.cli.common import CliError
from api.pki import DEFAULT_PKI_DIR, PkiError

host_app = typer.Typer(help="Run on a hypervisor: prepare its OVS.", no_args_is_help=True)


@host_app.command("prepare")
def host_prepare(
    name: Annotated[str, typer.Option(help="This host's name (its certificate's CN).")],
    ovsdb_listen: Annotated[
        str, typer.Option(help="ADDRESS:PORT for the OVSDB TLS listener (pssl:).")
    ],
    pki_dir: Annotated[
        Path, typer.Option("--pki-dir", help="Holds host-NAME-*.pem and ca-cert.pem.")
    ] = DEFAULT_PKI_DIR,
    underlay_ip: Annotated[
        str | None, typer.Option(help="Underlay address/prefix for VXLAN, on br-phy.")
    ] = None,
    underlay_if: Annotated[
        str | None, typer.Option(help="The underlay NIC, made a port of br-phy.")
    ] = None,
    trunk: Annotated[str | None, typer.Option(help="The VLAN trunk NIC (the uplink).")] = None,
    datapath_type: Annotated[str, typer.Option(help="br-phy's datapath type.")] = "netdev",
    db: Annotated[
        str | None, typer.Option(help="OVSDB to configure (default: the local socket).")
    ] = None,
) -> None:
    """Make this hypervisor's OVS ready for the controller over mutual TLS (idempotent)."""
    from api import hostprep

    plan = hostprep.HostPlan(
        name=name, pki_dir=pki_dir, ovsdb_listen=ovsdb_listen, underlay_ip=underlay_ip,
        underlay_if=underlay_if, trunk=trunk, datapath_type=datapath_type, db=db,
    )
    try:
        changes = hostprep.prepare(plan)
        remote = hostprep.ovsdb_remote_for(ovsdb_listen)
    except (hostprep.PrepareError, PkiError) as exc:
        raise CliError(str(exc)) from None
    for change in changes:
        typer.echo(f"changed: {change}")
    if not changes:
        typer.echo("nothing to change")
    facts = {"name": name, "ovsdb_remote": remote, "tunnel_ip": underlay_ip, "uplink": trunk}
    registration = ", ".join(
        f"{key}={value.split('/')[0] if key == 'tunnel_ip' else value}"
        for key, value in facts.items()
        if value is not None
    )
    typer.echo(f"register with: {registration}")


def register(app: typer.Typer) -> None:
    app.add_typer(host_app, name="host")
