"""Read a moto DynamoDB stream in-process, in the shape Lambda delivers its records."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StreamReader:
    """Returns the records written since the previous call, oldest first, Lambda-shaped."""

    client: Any  # a dynamodbstreams client
    stream_arn: str
    region: str = "us-east-1"
    _last: dict[str, str] = field(default_factory=dict)

    def new_records(self) -> list[dict[str, Any]]:
        shards = self.client.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        records: list[dict[str, Any]] = []
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id in self._last:
                iterator = self.client.get_shard_iterator(
                    StreamArn=self.stream_arn,
                    ShardId=shard_id,
                    ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                    SequenceNumber=self._last[shard_id],
                )["ShardIterator"]
            else:
                iterator = self.client.get_shard_iterator(
                    StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            while iterator:
                page = self.client.get_records(ShardIterator=iterator, Limit=1000)
                for record in page["Records"]:
                    records.append(self._lambda_shaped(record))
                    self._last[shard_id] = record["dynamodb"]["SequenceNumber"]
                if not page["Records"]:
                    break
                iterator = page.get("NextShardIterator")
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
