"""`snapshots db`: the embedded PostgreSQL, started, located, inspected and stopped by hand."""

from __future__ import annotations

import json
import os

import click

from snapshots.cli.errors import handle_errors
from snapshots.errors import DatabaseUnavailable, ExitCode, SnapshotsError


@click.group("db")
def db_group() -> None:
    """The embedded PostgreSQL used when no database is given.

    Examples:

    \b
      snapshots db start && psql "$(snapshots db url)"
      snapshots db status
      snapshots db stop
    """


@db_group.command("start")
@handle_errors
def db_start() -> None:
    """Start it and keep it running until `snapshots db stop`."""
    from snapshots import embedded

    click.echo(embedded.start())


@db_group.command("url")
@handle_errors
def db_url() -> None:
    """Print a URI for psql (the server must be running: `snapshots db start`)."""
    from snapshots import embedded

    uri = embedded.url()
    if uri is None:
        raise DatabaseUnavailable("the embedded PostgreSQL is not running",
                                  hint="start it with `snapshots db start`")
    click.echo(uri)


@db_group.command("status")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
@handle_errors
def db_status(ctx: click.Context, fmt: str) -> None:
    """Is it running, where is its data, who uses it."""
    from dataclasses import asdict

    from snapshots import embedded

    status = embedded.status()
    if fmt == "json":
        click.echo(json.dumps(asdict(status), default=str, indent=2))
        return
    for key, value in asdict(status).items():
        click.echo(f"{key}: {value}")
    if not status.running:
        ctx.exit(int(ExitCode.FAILED))


@db_group.command("stop")
@click.option("--force", is_flag=True,
              help="Stop it even while other snapshots processes use it.")
@handle_errors
def db_stop(force: bool) -> None:
    """Stop it now."""
    from snapshots import embedded

    users = [pid for pid in embedded.status().users if pid != os.getpid()]
    if users and not force:
        raise SnapshotsError(
            f"{len(users)} snapshots process(es) still use the embedded PostgreSQL "
            f"(pid {', '.join(map(str, users))}); stopping it would cut them off",
            hint="stop them first, or `snapshots db stop --force`")
    click.echo("stopped" if embedded.stop() else "not running")
