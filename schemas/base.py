"""The base every topic message shares: a schema version, strict fields, and text Postgres can store."""
from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
INT32_MAX = 2**31 - 1  # Postgres `integer`: a larger number would be refused by the table, not by the contract


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _without_nul(value: str) -> str:
    return value.replace("\x00", "")


# Free text from users or from OCR. Postgres text cannot hold NUL (0x00): the contract drops it, so no
# producer can send a record that the persister would be refused.
Text = Annotated[str, AfterValidator(_without_nul)]
Int32 = Annotated[int, Field(ge=0, le=INT32_MAX)]


class Message(BaseModel):
    """A topic message. Unknown fields and unknown schema versions are rejected, not guessed at."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION


class PageRange(BaseModel):
    """Pages first_page..last_page (1-based, inclusive) of a document of total_pages pages."""

    model_config = ConfigDict(extra="forbid")

    first_page: int = Field(ge=1, le=INT32_MAX)
    last_page: int = Field(ge=1, le=INT32_MAX)
    total_pages: int = Field(ge=1, le=INT32_MAX)

    @model_validator(mode="after")
    def _ordered(self) -> "PageRange":
        if not self.first_page <= self.last_page <= self.total_pages:
            raise ValueError("a page range needs first_page <= last_page <= total_pages")
        return self

    @property
    def page_count(self) -> int:
        return self.last_page - self.first_page + 1
