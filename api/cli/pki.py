"""`ovs-fabric pki`: the operator's certificate authority for mutual TLS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from api.cli.common import CliError
from api.pki import DEFAULT_PKI_DIR

pki_app = typer.Typer(help="The TLS certificate authority (mutual TLS).", no_args_is_help=True)

PkiDirOption = Annotated[
    Path, typer.Option("--dir", help="The PKI directory.", show_default=True)
]


@pki_app.command("init")
def pki_init(pki_dir: PkiDirOption = DEFAULT_PKI_DIR) -> None:
    """Make the CA and the controller's key and certificate (idempotent)."""
    from api import pki

    try:
        issued = pki.init(pki_dir)
    except pki.PkiError as exc:
        raise CliError(str(exc)) from None
    for item in issued:
        state = "created" if item.created else "kept"
        typer.echo(f"{state}: {item.pair.private_key} {item.pair.certificate}")


@pki_app.command("host")
def pki_host(
    name: Annotated[str, typer.Argument(help="The host's name, as registered (its CN).")],
    pki_dir: PkiDirOption = DEFAULT_PKI_DIR,
) -> None:
    """Issue host NAME's key and certificate, signed by the CA (idempotent)."""
    from api import pki

    try:
        issued = pki.issue_host(pki_dir, name)
    except pki.PkiError as exc:
        raise CliError(str(exc)) from None
    state = "created" if issued.created else "kept"
    typer.echo(f"{state}: {issued.pair.private_key} {issued.pair.certificate}")


def register(app: typer.Typer) -> None:
    app.add_typer(pki_app, name="pki")
