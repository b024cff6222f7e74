"""Render every command's `--help` into docs/cli.md.

    python docs/gen_cli_reference.py           # rewrite docs/cli.md
    python docs/gen_cli_reference.py --check   # exit 1 if docs/cli.md is not what the code says

The text is Click's own help (and argparse's for `snapshots-operator`), rendered through their
APIs at a fixed width, so it reads as `--help` does on a terminal of 100 columns or more.
tests/test_docs.py checks that docs/cli.md is up to date and names every command and option.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
TARGET = REPO / "docs" / "cli.md"
WIDTH = 98  # what Click and argparse use on a terminal at least 100 columns wide

sys.path.insert(0, str(REPO / "operator"))  # snapshots_operator, also from a plain checkout


def commands() -> Iterator[tuple[str, click.Command, click.Context]]:
    """(the command's path, the command, its context) for `snapshots` and everything below it,
    in the order `--help` lists them."""
    from snapshots.cli import cli

    def walk(command: click.Command, name: str,
             parent: click.Context | None) -> Iterator[tuple[str, click.Command, click.Context]]:
        ctx = click.Context(command, info_name=name, parent=parent, terminal_width=WIDTH,
                            **command.context_settings)
        yield ctx.command_path, command, ctx
        if isinstance(command, click.Group):
            for sub in command.list_commands(ctx):
                child = command.get_command(ctx, sub)
                if child is not None and not child.hidden:
                    yield from walk(child, sub, ctx)

    yield from walk(cli, "snapshots", None)


def operator_parser() -> argparse.ArgumentParser:
    from snapshots_operator.cli import build_parser

    return build_parser()


def operator_help() -> str:
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH + 2)  # argparse wraps at COLUMNS - 2
    try:
        return operator_parser().format_help()
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns


def render() -> str:
    parts = [
        "# Command-line reference\n",
        "Every command's `--help`, generated from the code by `python docs/gen_cli_reference.py`"
        "\n(do not edit by hand; tests/test_docs.py fails when it is out of date). What the"
        "\noptions mean in depth: [reference.md](reference.md).\n",
    ]
    for path, command, ctx in commands():
        parts.append(f"## {path}\n\n```text\n{command.get_help(ctx).rstrip()}\n```\n")
    parts.append(f"## snapshots-operator\n\n```text\n{operator_help().rstrip()}\n```\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    text = render()
    if check:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET.relative_to(REPO)} is out of date: "
                  "run python docs/gen_cli_reference.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
