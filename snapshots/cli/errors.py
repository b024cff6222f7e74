"""How a command's errors reach the user: one line on stderr (plus a hint), in the run's
--log-format, and the exit code the error carries."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from snapshots.cli.options import Settings
from snapshots.errors import ExitCode, SnapshotsError

log = logging.getLogger("snapshots")


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Every expected error is one line on stderr (plus a hint) and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        settings: Settings = ctx.ensure_object(Settings)
        try:
            return func(*args, **kwargs)
        except SnapshotsError as exc:
            if settings.verbosity >= 2:
                log.exception("details")
            print_error(exc)
            ctx.exit(int(exc.exit_code))
        except KeyboardInterrupt:
            report_error("interrupted; a load in flight was rolled back, nothing half-written")
            ctx.exit(int(ExitCode.INTERRUPTED))
        except BrokenPipeError:  # `snapshots list | head`: the reader has all it wants
            quiet_stdout()
            ctx.exit(int(ExitCode.OK))
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as exc:  # a bug or something unforeseen: still one line
            if settings.verbosity >= 1:
                log.exception("unexpected error")
            from snapshots.config import first_line
            report_error(f"{type(exc).__name__}: {first_line(str(exc))}",
                         "run with -v for the traceback" if settings.verbosity < 1 else None)
            ctx.exit(int(ExitCode.FAILED))

    return wrapper


def quiet_stdout() -> None:
    """Send the rest of stdout nowhere: its reader has gone (a closed pipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def print_error(exc: SnapshotsError) -> None:
    report_error(str(exc), exc.hint)


def report_error(message: str, hint: str | None = None, *,
                 label: str | None = "error", fmt: str | None = None) -> None:
    from snapshots.output import error_lines

    if fmt is None:
        ctx = click.get_current_context(silent=True)
        settings = ctx.find_object(Settings) if ctx is not None else None
        fmt = settings.log_format if settings else "text"
    for line in error_lines(message, hint, fmt, label=label):
        click.echo(line, err=True)


def early_log_format(args: Sequence[str]) -> str:
    """--log-format before Click has parsed it (a usage error may come first)."""
    for i, arg in enumerate(args):
        if arg == "--log-format" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--log-format="):
            return arg.split("=", 1)[1]
    return os.environ.get("SNAPSHOTS_LOG_FORMAT", "text")
