"""The README's promises that code can check: its settings table and its two set-up commands."""
from __future__ import annotations

import re

from service.settings import Settings
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def test_configuration_table_lists_exactly_the_settings() -> None:
    rows = [line for line in README.splitlines() if line.startswith("| `DEEPHASH_")]
    documented = {name for row in rows for name in re.findall(r"`(DEEPHASH_[A-Z0-9_]+)`", row.split("|")[1])}
    assert documented == {f"DEEPHASH_{name.upper()}" for name in Settings.model_fields}


def test_setup_commands_are_the_makefile_targets_ci_runs() -> None:
    setup = README.split("## Set-up", 1)[1].split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in setup.splitlines() if line.strip()]
    assert commands == ["sh", "make run", "make test"]
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^run: install$", makefile, flags=re.M) and re.search(r"^test: install$", makefile, flags=re.M)
    assert (REPO_ROOT / ".ci" / "run").read_text().rstrip().endswith("make test")
