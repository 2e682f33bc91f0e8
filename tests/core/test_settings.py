"""`.env.example` is a working configuration: copied to `.env` as is, it means "nothing configured"."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bot.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_env_example_lists_every_setting_and_loads_as_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = (REPO / ".env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"^([A-Z_]+)=", example, flags=re.M))
    aliases = {f.alias for f in Settings.model_fields.values() if f.alias}
    assert aliases - listed == set()
    for name in list(os.environ):
        if name in aliases:
            monkeypatch.delenv(name)
    (tmp_path / ".env").write_text(example, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.discord_token is None and s.slack_bot_token is None and s.slack_app_token is None
    assert s.console_log is None and s.ingest_every_seconds is None
    assert s.category_list == ("cs.LG", "cs.AI", "cs.CL", "stat.ML")


def test_admins_allow_list() -> None:
    s = Settings(PAPERBOY_ADMINS="123, discord:456, slack:U9")  # type: ignore[call-arg]
    assert s.is_listed_admin("discord", "123") and s.is_listed_admin("slack", "123")
    assert s.is_listed_admin("discord", "456") and not s.is_listed_admin("slack", "456")
    assert s.is_listed_admin("slack", "U9") and not s.is_listed_admin("discord", "U9")
