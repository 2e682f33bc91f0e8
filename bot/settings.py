"""Settings, read once from the environment and `.env` by pydantic-settings, then passed down."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    discord_token: SecretStr | None = Field(default=None, alias="DISCORD_TOKEN")
    discord_guild_id: int | None = Field(default=None, alias="DISCORD_GUILD_ID")
    slack_bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_port: int = Field(default=3000, alias="PAPERBOY_SLACK_PORT")

    db: Path = Field(default=Path("paperboy.db"), alias="PAPERBOY_DB")
    categories: str = Field(default="cs.LG cs.AI cs.CL stat.ML", alias="PAPERBOY_CATEGORIES")
    digest_time: str = Field(default="09:00", alias="PAPERBOY_DIGEST_TIME")
    timezone: str = Field(default="UTC", alias="PAPERBOY_TIMEZONE")
    admins: str = Field(default="", alias="PAPERBOY_ADMINS")
    ingest_every_minutes: int = Field(default=60, alias="PAPERBOY_INGEST_MINUTES")
    max_subscriptions: int = Field(default=50, alias="PAPERBOY_MAX_SUBSCRIPTIONS")
    commands_per_minute: int = Field(default=20, alias="PAPERBOY_COMMANDS_PER_MINUTE")
    user_agent: str = Field(
        default="paperboy/0.1 (+https://github.com/paperboy-bot/paperboy; research paper chat bot)",
        alias="PAPERBOY_USER_AGENT",
    )
    offline: bool = Field(default=False, alias="PAPERBOY_OFFLINE")
    # Test and operations knobs (the crash harness runs the real service fast); defaults are the production ones.
    console_log: Path | None = Field(default=None, alias="PAPERBOY_CONSOLE_LOG")
    digest_tick_seconds: float = Field(default=60.0, gt=0, alias="PAPERBOY_DIGEST_TICK_SECONDS")
    ingest_every_seconds: float | None = Field(default=None, gt=0, alias="PAPERBOY_INGEST_SECONDS")
    # Seconds between two Slack posts to one channel (Slack allows about one message per second per channel).
    slack_post_interval: float = Field(default=1.0, ge=0, alias="PAPERBOY_SLACK_POST_INTERVAL")

    discord_api_base: str | None = Field(default=None, alias="DISCORD_API_BASE")
    discord_gateway_url: str | None = Field(default=None, alias="DISCORD_GATEWAY_URL")
    slack_api_url: str | None = Field(default=None, alias="SLACK_API_URL")
    arxiv_api_url: str = Field(default="https://export.arxiv.org/api/query", alias="ARXIV_API_URL")
    arxiv_rss_url: str = Field(default="https://rss.arxiv.org/rss/", alias="ARXIV_RSS_URL")
    hf_api_url: str = Field(default="https://huggingface.co/api/daily_papers", alias="HF_API_URL")
    oai_pmh_url: str = Field(default="https://oaipmh.arxiv.org/oai", alias="OAI_PMH_URL")
    # Seconds between two requests to one arXiv host: the arXiv terms ask for at most one every 3 s.
    arxiv_min_interval: float = Field(default=3.0, alias="PAPERBOY_ARXIV_INTERVAL")

    @field_validator(
        "discord_token", "discord_guild_id", "slack_bot_token", "slack_app_token", "slack_signing_secret",
        "discord_api_base", "discord_gateway_url", "slack_api_url", "console_log", "ingest_every_seconds",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        # `.env.example` lists every variable with an empty value; empty means "not configured".
        return None if isinstance(v, str) and not v.strip() else v

    @property
    def category_list(self) -> tuple[str, ...]:
        return tuple(c for c in self.categories.replace(",", " ").split() if c)

    def is_listed_admin(self, platform: str, user_id: str) -> bool:
        for entry in self.admins.replace(";", ",").split(","):
            entry = entry.strip()
            if not entry:
                continue
            plat, sep, uid = entry.partition(":")
            if (sep and plat == platform and uid == user_id) or (not sep and entry == user_id):
                return True
        return False

    @staticmethod
    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None
