"""Set-up as a new user meets it: what `make run` and `make test` install, and what the
README's first screen tells them before the walkthrough."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import require_tool

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The Makefile and pyproject.toml on their own: `make -n` only needs those."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / name, tmp_path / name)
    return tmp_path


def planned(checkout: Path, target: str) -> str:
    """The commands `make TARGET` would run (make -n runs none of them)."""
    result = subprocess.run([require_tool("make"), "-n", target], cwd=checkout,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def installs(plan: str) -> list[str]:
    return [line.split("install --quiet", 1)[1].strip() for line in plan.splitlines()
            if "pip install --quiet" in line and "--upgrade pip" not in line]


def test_make_run_installs_the_cli_alone_and_make_test_adds_the_extras(checkout: Path) -> None:
    assert installs(planned(checkout, "run")) == ["-e ."]
    # After `make run` (its stamp newer than pyproject.toml), `make test` still installs the
    # test extras, and `make run` installs nothing again.
    venv = checkout / ".venv"
    venv.mkdir()
    (venv / ".installed-run").touch()
    assert installs(planned(checkout, "test")) == ["-e '.[test,operator]'"]
    assert installs(planned(checkout, "run")) == []
    # After `make test`, both are satisfied.
    (venv / ".installed-test").touch()
    assert installs(planned(checkout, "test")) == []
    assert installs(planned(checkout, "run")) == []


def test_readme_first_screen_says_where_the_cli_is_and_how_to_log_in() -> None:
    first_screen = (REPO / "README.md").read_text().split("\n## ", 1)[0]
    for words in (". .venv/bin/activate", "pip install .", "pipx install .",
                  "PGUSER", "PGPASSWORD", "~/.pgpass",
                  "postgresql://user:password@host:port/db"):
        assert words in first_screen, words
    assert len(first_screen.splitlines()) <= 40
