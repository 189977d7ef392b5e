"""Opaque, query-bound cursors for paginated lists."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from mysetlist.errors import InvalidRequest


def encode_cursor(last_evaluated_key: dict[str, Any] | None) -> str | None:
    """An opaque cursor for DynamoDB's LastEvaluatedKey (attribute values as returned)."""
    if not last_evaluated_key:
        return None
    raw = json.dumps(last_evaluated_key, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str | None, *, expect: dict[str, str]) -> dict[str, Any] | None:
    """The ExclusiveStartKey for ``cursor``; 400 unless it came from the same query.

    ``expect`` maps the key attributes the query's index uses to the partition value it reads
    (an empty value means any value of that attribute is fine, as for sort keys).
    """
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise InvalidRequest(
            "cursor is not valid: pass next_cursor from the previous page unchanged"
        ) from exc
    if not isinstance(key, dict) or set(key) != set(expect):
        raise InvalidRequest("cursor does not belong to this list: pass next_cursor with the same filters")
    for name, value in expect.items():
        attr = key[name]
        if not isinstance(attr, dict) or set(attr) != {"S"} or not isinstance(attr["S"], str):
            raise InvalidRequest("cursor is not valid: pass next_cursor from the previous page unchanged")
        if value and attr["S"] != value:
            raise InvalidRequest(
                "cursor does not belong to this list: pass next_cursor with the same filters"
            )
    return key
