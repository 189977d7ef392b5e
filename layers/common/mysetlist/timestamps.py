"""Stored timestamps: ISO 8601 text, read as UTC when they carry no offset."""

from __future__ import annotations

import datetime as dt


def parse_utc(stamp: str) -> dt.datetime:
    """An ISO 8601 timestamp as an aware datetime (no offset: UTC). ValueError when it is not one."""
    moment = dt.datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def epoch_of(stamp: str) -> float:
    """An ISO 8601 timestamp as epoch seconds (no offset: UTC)."""
    return parse_utc(stamp).timestamp()
