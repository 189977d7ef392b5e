"""Quarantine of unreadable stream records in the function's dead-letter queue (alarmed)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class SqsQuarantine:
    """Sends each unreadable record, with the reason, to an SQS queue for a person to look at."""

    def __init__(self, client: SQSClient, queue_url: str, *, source: str) -> None:
        self._sqs = client
        self._queue_url = queue_url
        self._source = source

    def send(self, record: Mapping[str, Any], reason: str) -> None:
        body = {
            "kind": "unreadable-stream-record",
            "source": self._source,
            "reason": reason,
            "record": record,
        }
        self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=json.dumps(body, default=str))
