"""The command line: the only package that imports click. It parses options, calls the
libraries underneath, prints, and maps errors to exit codes; the commands live in one
module per group (importing, syncing, ledger, db), the options they share in options, the
error reporting in errors.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import click

from snapshots import __version__
from snapshots.cli.db import db_group
from snapshots.cli.errors import early_log_format, report_error
from snapshots.cli.importing import import_cmd
from snapshots.cli.ledger import forget_cmd, list_cmd, migrate_cmd, retry_cmd
from snapshots.cli.options import command_settings, shared_options
from snapshots.cli.syncing import sync_cmd
from snapshots.errors import ExitCode

__all__ = ["cli", "main", "run"]


class SnapshotsGroup(click.Group):
    """`snapshots FILE...` (the seed's form) means `snapshots import FILE...`."""

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            if Path(args[0]).exists():
                return "import", self.commands["import"], args
            raise click.UsageError(
                f"{args[0]!r} is neither a command nor an existing file or directory "
                f"(commands: {', '.join(self.commands)})", ctx)
        return super().resolve_command(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "[OPTIONS] COMMAND [ARGS]...  |  FILE...")


@click.group(cls=SnapshotsGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                   "max_content_width": 100})
@shared_options
@click.option("-v", "--verbose", count=True, help="More output (-vv for debug and tracebacks).")
@click.option("-q", "--quiet", is_flag=True, envvar="SNAPSHOTS_QUIET",
              help="Only errors.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              envvar="SNAPSHOTS_LOG_FORMAT", show_default=True, help="Log line format.")
@click.version_option(__version__, "--version", prog_name="snapshots")
@click.pass_context
def cli(ctx: click.Context, database: str | None, table: str | None, schema_: str | None,
        verbose: int, quiet: bool, log_format: str) -> None:
    """Load CSV snapshot files into PostgreSQL exactly once, and know what was loaded.

    \b
    snapshots import data/*.csv     load files (or directories)
    snapshots list                  what is loaded, when, by whom
    snapshots sync --data-dir DIR   keep a directory in sync
    """
    from snapshots.output import configure_logging

    settings = command_settings(ctx, database, table, schema_)
    settings.verbosity = -1 if quiet else verbose
    settings.log_format = log_format
    configure_logging(settings.verbosity, log_format)


# In this order: the error for an unknown command lists them so (--help sorts them itself).
for _command in (import_cmd, list_cmd, forget_cmd, retry_cmd, sync_cmd, migrate_cmd, db_group):
    cli.add_command(_command)
del _command


def run(argv: Sequence[str] | None = None) -> int:
    """The command line ``argv`` (default: ``sys.argv[1:]``) run to its exit code.

    Nothing here ends the process: the console script (:func:`main`) does that, and tests
    call this in process.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args, prog_name="snapshots", standalone_mode=False)
        # A command's ctx.exit(code) ends here.
        return code if isinstance(code, int) else int(ExitCode.OK)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        report_error("interrupted", fmt=early_log_format(args))
        return int(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        # Usage errors (the seed's `snapshots FILE` form included) look like every other
        # error: one `error:` line and a hint, rather than Click's usage block and `Error:`.
        ctx = getattr(exc, "ctx", None)
        hint = f"see '{ctx.command_path} --help'" if ctx is not None else None
        report_error(exc.format_message(), hint, fmt=early_log_format(args))
        return exc.exit_code
    except SystemExit as exc:  # sys.exit(code) in a command, as the interpreter maps it
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or int(ExitCode.OK)
        click.echo(exc.code, err=True)
        return int(ExitCode.FAILED)  # what the interpreter exits with for sys.exit("message")


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: :func:`run`, then exit with its code."""
    try:
        code = run(argv)
    finally:
        # On the way out, the interpreter's last garbage collection walks every object the
        # database driver and the rest created (~0.1 s here); frozen objects are skipped.
        # Nothing needs them collected: the process is ending.
        gc.freeze()
    sys.exit(code)
