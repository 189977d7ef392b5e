"""Read a moto DynamoDB stream in-process, in the shape Lambda delivers its records."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

PAGE_SIZE = 1000  # GetRecords' maximum
MAX_PAGES = 100  # a test writes hundreds of records between reads, never a hundred thousand


@dataclass
class StreamReader:
    """Returns the records written since the previous call, oldest first, Lambda-shaped.

    A reader starts at the end of the stream as it is when the reader is made (a LATEST
    iterator per shard), so it only ever reads what was written after it: the tables of
    the test session are shared and their streams only grow, and reading a long stream
    from its start through moto's serializer costs seconds per call. It keeps each
    shard's next iterator between calls, as a Lambda poller does.
    """

    client: Any  # a dynamodbstreams client
    stream_arn: str
    region: str = "us-east-1"
    _next: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for shard_id in self._shard_ids():
            latest = self.client.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType="LATEST"
            )["ShardIterator"]
            # An empty read turns LATEST into a position that stays put as records arrive.
            self._next[shard_id] = self.client.get_records(ShardIterator=latest, Limit=1)["NextShardIterator"]

    def _shard_ids(self) -> list[str]:
        shards = self.client.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        return [shard["ShardId"] for shard in shards]

    def new_records(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for shard_id in self._shard_ids():
            iterator = (
                self._next.get(shard_id)
                or self.client.get_shard_iterator(
                    StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            )
            for _ in range(MAX_PAGES):
                page = self.client.get_records(ShardIterator=iterator, Limit=PAGE_SIZE)
                iterator = page["NextShardIterator"]
                records.extend(self._lambda_shaped(record) for record in page["Records"])
                if len(page["Records"]) < PAGE_SIZE:  # caught up: later writes are the next call's
                    break
            else:
                raise RuntimeError(
                    f"{self.stream_arn}: more than {MAX_PAGES * PAGE_SIZE} records in one read; a test "
                    "is writing to the stream while it is read, or a reader is far behind"
                )
            self._next[shard_id] = iterator
        return records

    def _lambda_shaped(self, record: dict[str, Any]) -> dict[str, Any]:
        shaped = dict(record)
        body = dict(record["dynamodb"])
        created = body.get("ApproximateCreationDateTime")
        if isinstance(created, dt.datetime):
            body["ApproximateCreationDateTime"] = int(created.timestamp())
        shaped["dynamodb"] = body
        shaped["eventSourceARN"] = self.stream_arn
        shaped["awsRegion"] = self.region
        return shaped
