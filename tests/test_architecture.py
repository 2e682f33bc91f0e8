"""The dependency rule of DESIGN.md: bot/ (except the composition root and the CLI) imports only the standard
library, pydantic and itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

BOT = Path(__file__).resolve().parents[1] / "bot"
EXEMPT = {"app.py", "cli.py"}
ALLOWED = {"bot", "pydantic"}
SETTINGS_ONLY = {"pydantic_settings"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_core_imports_only_stdlib_pydantic_and_itself() -> None:
    offenders = {}
    for path in sorted(BOT.glob("*.py")):
        if path.name in EXEMPT:
            continue
        allowed = ALLOWED | (SETTINGS_ONLY if path.name == "settings.py" else set())
        bad = {m for m in imports_of(path) if m not in allowed and m not in sys.stdlib_module_names}
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}


def test_the_rule_catches_a_chat_sdk_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("import discord\nfrom httpx import AsyncClient\nimport json\n")
    assert imports_of(bad) - sys.stdlib_module_names == {"discord", "httpx"}
