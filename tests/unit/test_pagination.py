import base64
import json

import pytest

from mysetlist.errors import InvalidRequest
from mysetlist.pagination import decode_cursor, encode_cursor

KEY = {
    "PK": {"S": "SHOW#a"},
    "SK": {"S": "META"},
    "GSI2PK": {"S": "SHOWS#upcoming"},
    "GSI2SK": {"S": "2030#a"},
}
EXPECT = {"PK": "", "SK": "", "GSI2PK": "SHOWS#upcoming", "GSI2SK": ""}


def test_round_trip():
    cursor = encode_cursor(KEY)
    assert cursor is not None
    assert "=" not in cursor
    assert decode_cursor(cursor, expect=EXPECT) == KEY


def test_no_more_pages_and_no_cursor():
    assert encode_cursor(None) is None
    assert decode_cursor(None, expect=EXPECT) is None
    assert decode_cursor("", expect=EXPECT) is None


@pytest.mark.parametrize("cursor", ["not-base64!!", base64.urlsafe_b64encode(b"[1,2]").decode(), "e30"])
def test_garbage_is_a_400(cursor):
    with pytest.raises(InvalidRequest):
        decode_cursor(cursor, expect=EXPECT)


def test_a_cursor_from_another_list_is_refused():
    other = dict(KEY, GSI2PK={"S": "SHOWS#completed"})
    with pytest.raises(InvalidRequest, match="same filters"):
        decode_cursor(encode_cursor(other), expect=EXPECT)


def test_a_cursor_with_non_string_keys_is_refused():
    forged = dict(KEY, SK={"N": "1"})
    raw = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode()
    with pytest.raises(InvalidRequest):
        decode_cursor(raw, expect=EXPECT)
