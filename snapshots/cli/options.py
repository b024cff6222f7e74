"""The options more than one command takes: --database/--table/--schema, and the loading
options import and sync share; how the group's and the command's values merge."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import click

from snapshots.errors import UsageError

if TYPE_CHECKING:
    from snapshots.options import ImportOptions

DEFAULT_TABLE = "snapshots"


def shared_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--database/--table/--schema, accepted before or after the command name."""
    func = click.option("--schema", "schema_", metavar="NAME", envvar="SNAPSHOTS_SCHEMA",
                        help="Schema of the table and ledger [default: the connection's "
                             "first schema].")(func)
    func = click.option("--table", metavar="NAME", envvar="SNAPSHOTS_TABLE",
                        help=f"Target table [default: {DEFAULT_TABLE}].")(func)
    func = click.option("--database", metavar="DB", envvar="SNAPSHOTS_DATABASE",
                        help="host[:port][/dbname], postgresql:// URI or libpq key=value "
                             "string [default: PG* variables, else embedded].")(func)
    return func


class Settings:
    """Options from the group and the command, merged (the command's win)."""

    def __init__(self) -> None:
        self.database: str | None = None
        self.table: str | None = None
        self.schema: str | None = None
        self.verbosity = 0
        self.log_format = "text"

    def merge(self, database: str | None, table: str | None, schema: str | None) -> None:
        self.database = database or self.database
        self.table = table or self.table
        self.schema = schema or self.schema

    @property
    def table_name(self) -> str:
        name = self.table or DEFAULT_TABLE
        if not name.strip() or len(name.encode()) > 63 or "\x00" in name:
            raise UsageError(f"--table {name!r}: a table name is 1 to 63 bytes")
        return name


def command_settings(ctx: click.Context, database: str | None, table: str | None,
                     schema: str | None) -> Settings:
    """The run's Settings with this command's --database/--table/--schema merged in."""
    settings: Settings = ctx.ensure_object(Settings)
    if ctx.parent is not None:
        # The group already read SNAPSHOTS_DATABASE & co.; a command re-reading them must not
        # override an option given before the command (`--database` beats the environment).
        env = click.core.ParameterSource.ENVIRONMENT
        database, table, schema = (
            None if ctx.get_parameter_source(name) is env else value
            for name, value in (("database", database), ("table", table), ("schema_", schema)))
    settings.merge(database, table, schema)
    return settings


def connect_target(settings: Settings) -> str:
    """The conninfo to use; starts (or joins) the embedded server when none is given."""
    from snapshots.config import resolve_database

    target = resolve_database(settings.database)
    if target.conninfo is not None:
        return target.conninfo
    from snapshots import embedded

    return embedded.acquire()


# --------------------------------------------------------------------------- loading options


def _parse_size(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    """`32M` -> bytes (binary multiples)."""
    text = str(value).strip()
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:].lower(), 1)
    number = text[:-1] if scale != 1 else text
    if not number.isdigit() or int(number) * scale < 1:
        raise click.BadParameter(f"{value!r} is not a size such as 32M, 512k or 1000000")
    return int(number) * scale


def _named(name: str, decorator: Callable[..., Any]) -> Callable[..., Any]:
    decorator.snapshots_name = name  # type: ignore[attr-defined]
    return decorator


def import_options(func: Callable[..., Any]) -> Callable[..., Any]:
    return _loading_options(func, dry_run=True)


def sync_loading_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """import's loading options without --dry-run (a service that writes nothing is no use)."""
    return _loading_options(func, dry_run=False)


def _loading_options(func: Callable[..., Any], *, dry_run: bool) -> Callable[..., Any]:
    decorators = [
        click.option("--mode", type=click.Choice(["auto", "append", "upsert"]), default="auto",
                     envvar="SNAPSHOTS_MODE", show_default=True,
                     help="append keeps every snapshot's rows; upsert merges on the primary "
                          "key; auto picks from the table."),
        click.option("--replace", is_flag=True, envvar="SNAPSHOTS_REPLACE",
                     help="Supersede an earlier import of the same name with different bytes."),
        click.option("--force", is_flag=True, envvar="SNAPSHOTS_FORCE",
                     help="Upsert a snapshot older than the newest one merged."),
        click.option("--delete-missing", is_flag=True, envvar="SNAPSHOTS_DELETE_MISSING",
                     help="Upsert: delete rows whose key is not in the snapshot."),
        _named("dry_run", click.option("--dry-run", is_flag=True, envvar="SNAPSHOTS_DRY_RUN",
                                       help="Validate every row; write nothing.")),
        click.option("--on-error", type=click.Choice(["abort", "skip"]), default="abort",
                     envvar="SNAPSHOTS_ON_ERROR", show_default=True,
                     help="skip: load the good rows, keep bad ones in snapshot_rejects."),
        click.option("--max-rejects", type=click.IntRange(min=0), envvar="SNAPSHOTS_MAX_REJECTS",
                     help="With --on-error skip: fail the file beyond N rejected rows."),
        click.option("--type", "types", multiple=True, metavar="COL=TYPE",
                     envvar="SNAPSHOTS_TYPE", help="Column type for a new table (repeatable)."),
        click.option("--schema-evolution", type=click.Choice(["strict", "add"]),
                     default="strict", envvar="SNAPSHOTS_SCHEMA_EVOLUTION", show_default=True,
                     help="add: add new columns, load missing ones as NULL, widen types."),
        click.option("--delimiter", envvar="SNAPSHOTS_DELIMITER",
                     help="Field delimiter (one character; \\t for tab) [default: detected "
                          "per file among , ; tab |; tab for .tsv]."),
        click.option("--quote", default='"', envvar="SNAPSHOTS_QUOTE", show_default=True,
                     help="Quote character."),
        click.option("--null", default="", envvar="SNAPSHOTS_NULL",
                     help="String that means NULL [default: unquoted empty field]."),
        click.option("--encoding", default="UTF8", envvar="SNAPSHOTS_ENCODING",
                     show_default=True, help="File encoding (converted by the server)."),
        click.option("--no-header", is_flag=True, envvar="SNAPSHOTS_NO_HEADER",
                     help="The file has no header line: give --columns."),
        click.option("--columns", metavar="A,B,...", envvar="SNAPSHOTS_COLUMNS",
                     help="Column names for --no-header files."),
        click.option("--jobs", type=click.IntRange(min=1), envvar="SNAPSHOTS_JOBS",
                     help="Database connections to use at once [default: CPUs, at most 4]."),
        click.option("--pushgateway", metavar="URL", envvar="SNAPSHOTS_PUSHGATEWAY",
                     help="Push this run's metrics to a Prometheus Pushgateway."),
        click.option("--part-size", metavar="SIZE", envvar="SNAPSHOTS_PART_SIZE",
                     default="32M", show_default=True, callback=_parse_size,
                     help="Smallest part of one file loaded over several --jobs "
                          "connections (bytes; k, M, G suffixes)."),
    ]
    if not dry_run:
        decorators = [d for d in decorators if getattr(d, "snapshots_name", "") != "dry_run"]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def loading_options_from(options: Mapping[str, Any], **fixed: Any) -> ImportOptions:
    """The loading options as Click parsed them, built (and their rules checked) by the
    library's builder; `fixed` is what the command decides itself (sync's origin, ...)."""
    from snapshots.options import build_import_options

    return build_import_options(
        mode=options["mode"], replace=options["replace"], force=options["force"],
        delete_missing=options["delete_missing"], dry_run=options.get("dry_run", False),
        on_error=options["on_error"], max_rejects=options["max_rejects"],
        types=options["types"], schema_evolution=options["schema_evolution"],
        part_size=options["part_size"], delimiter=options["delimiter"],
        quote=options["quote"], null=options["null"], encoding=options["encoding"],
        no_header=options["no_header"], columns=options["columns"], **fixed)
