"""The base every topic message shares: a schema version, forward-compatible fields, and text Postgres can store.

Compatibility rule (docs/consumers.md): schema_version is "MAJOR.MINOR". A minor bump only adds optional fields,
so a reader ignores fields it does not know and accepts any version of its own major; a major bump (a field
removed, renamed or re-typed) is refused by older readers rather than misread. What stays strict is what safety
needs: the message `type` (an unknown event is not guessed at), the major version, and every bound the database
or a reader relies on.
"""
from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

SCHEMA_MAJOR = 1
SCHEMA_VERSION = f"{SCHEMA_MAJOR}.0"  # what this code writes
INT32_MAX = 2**31 - 1  # Postgres `integer`: a larger number would be refused by the table, not by the contract


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _without_nul(value: str) -> str:
    return value.replace("\x00", "")


# Free text from users or from OCR. Postgres text cannot hold NUL (0x00): the contract drops it, so no
# producer can send a record that the persister would be refused.
Text = Annotated[str, AfterValidator(_without_nul)]
Int32 = Annotated[int, Field(ge=0, le=INT32_MAX)]


def _as_major_minor(version: int | str) -> str:
    return f"{version}.0" if isinstance(version, int) else version


# "1.N" for any N; the integer 1 is how records were versioned before minor versions (still in compacted topics).
SchemaVersion = Annotated[
    Literal[1] | Annotated[str, Field(pattern=rf"^{SCHEMA_MAJOR}\.[0-9]+$")], AfterValidator(_as_major_minor),
    Field(description=f'"MAJOR.MINOR": readers accept their own major ({SCHEMA_MAJOR}.x) and ignore unknown fields'),
]


class Message(BaseModel):
    """A topic message: unknown fields are ignored (a newer minor version added them), another major is refused."""

    model_config = ConfigDict(extra="ignore")

    schema_version: SchemaVersion = SCHEMA_VERSION


class PageRange(BaseModel):
    """Pages first_page..last_page (1-based, inclusive) of a document of total_pages pages."""

    model_config = ConfigDict(extra="ignore")

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
