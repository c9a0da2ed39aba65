"""Times as the bot keeps them: aware, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def assume_utc(moment: datetime) -> datetime: ...


@overload
def assume_utc(moment: None) -> None: ...


def assume_utc(moment: datetime | None) -> datetime | None:
    """A naive datetime taken as UTC; an aware one (or None) as it is.

    Everything the bot stores is UTC, but SQLite and some backends' timestamps hand it
    back without a zone, and a naive datetime cannot be compared with an aware one.
    """
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
