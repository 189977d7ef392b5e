import datetime as dt
from typing import Any

import pytest

from mysetlist.errors import Unprocessable
from mysetlist.models import Show, ShowStatus
from mysetlist.voting import ensure_open_for_votes, voting_closes_at


def show(**kw: Any) -> Show:
    base: dict[str, Any] = {
        "show_id": "a:2030-06-01",
        "artist_id": "a",
        "date": dt.date(2030, 6, 1),
        "status": ShowStatus.UPCOMING,
    }
    return Show(**(base | kw))


def test_voting_closes_at_the_start_when_known():
    starts = dt.datetime(2030, 6, 2, 1, 30, tzinfo=dt.UTC)
    assert voting_closes_at(show(starts_at=starts)) == starts


def test_voting_closes_at_the_end_of_the_local_day_in_the_venue_zone():
    closes = voting_closes_at(show(timezone="America/Los_Angeles"))
    assert closes.astimezone(dt.UTC) == dt.datetime(2030, 6, 2, 7, 0, tzinfo=dt.UTC)


def test_without_a_zone_the_latest_midnight_on_earth_is_used():
    closes = voting_closes_at(show(timezone="Not/AZone"))
    assert closes.astimezone(dt.UTC) == dt.datetime(2030, 6, 2, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("status", [ShowStatus.COMPLETED, ShowStatus.CANCELLED])
def test_closed_statuses_refuse_votes(status):
    with pytest.raises(Unprocessable, match="voting is closed"):
        ensure_open_for_votes(show(status=status), dt.datetime(2030, 1, 1, tzinfo=dt.UTC))


def test_a_show_that_has_started_refuses_votes():
    with pytest.raises(Unprocessable, match="has started"):
        ensure_open_for_votes(show(), dt.datetime(2030, 6, 3, tzinfo=dt.UTC))


def test_an_upcoming_show_takes_votes():
    ensure_open_for_votes(show(), dt.datetime(2030, 5, 31, tzinfo=dt.UTC))
