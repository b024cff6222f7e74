"""The documentation holds together: README.md and docs/ link only to files and headings that
exist, and docs/cli.md is the `--help` of the code as it is, naming every command and option."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import click
import pytest

from snapshots.cli import cli

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
             REPO / "charts" / "snapshots-operator" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _without_code(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", _without_code(path.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_every_relative_link_and_anchor_resolves() -> None:
    checked = 0
    for document in DOCUMENTS:
        for target in LINK.findall(_without_code(document.read_text())):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (document.parent / path).resolve() if path else document
            where = f"{document.relative_to(REPO)}: ({target})"
            assert resolved.exists(), f"{where}: no such file"
            if anchor:
                assert anchor in anchors(resolved), f"{where}: no such heading"
            checked += 1
    assert checked > 30


def generator():
    spec = importlib.util.spec_from_file_location("gen_cli_reference",
                                                  REPO / "docs" / "gen_cli_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli_sections() -> dict[str, str]:
    """docs/cli.md by heading: the command's path, its help text."""
    text = (REPO / "docs" / "cli.md").read_text()
    return {m[1]: m[2] for m in re.finditer(r"^## ([^\n]+)\n(.*?)(?=^## |\Z)", text, re.M | re.S)}


def test_cli_reference_is_up_to_date() -> None:
    expected = generator().render()
    assert (REPO / "docs" / "cli.md").read_text() == expected, (
        "docs/cli.md is out of date: run python docs/gen_cli_reference.py")


def _every_command(command: click.Command, path: str) -> list[tuple[str, click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            if not sub.hidden:
                found += _every_command(sub, f"{path} {name}")
    return found


def test_cli_reference_names_every_command_and_option() -> None:
    sections = cli_sections()
    every = _every_command(cli, "snapshots")
    assert {"snapshots import", "snapshots sync", "snapshots db start"} <= {p for p, _ in every}
    for path, command in every:
        assert path in sections, f"{path}: not in docs/cli.md"
        help_text = sections[path]
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                for opt in (*param.opts, *param.secondary_opts):
                    assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", help_text), (
                        f"{path}: {opt} not in docs/cli.md")
        if isinstance(command, click.Group):
            for name in command.commands:
                assert re.search(rf"^  {name} ", help_text, re.M), f"{path}: {name} not listed"


def test_cli_reference_names_every_operator_option() -> None:
    pytest.importorskip("kopf")
    sys.path.insert(0, str(REPO / "operator"))
    from snapshots_operator.cli import build_parser

    section = cli_sections()["snapshots-operator"]
    options = [opt for action in build_parser()._actions for opt in action.option_strings]
    assert "--all-namespaces" in options
    for opt in options:
        assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", section), opt


def test_readme_stays_short() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 250
