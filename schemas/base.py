"""The base every topic message shares: a schema version and strict fields."""
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION = 1


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Message(BaseModel):
    """A topic message. Unknown fields and unknown schema versions are rejected, not guessed at."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
