"""The fraud evaluation's machinery (``make eval-fraud``): scoring from labels, the seeded
simulation, Lambda-like batching, and one small seed end to end. The eval's targets are the
eval's business; these tests check that it measures what it says."""

from __future__ import annotations

import zlib
from collections import Counter

from mysetlist.signals import VoteSignal
from tests.bench import fraud_eval
from tests.bench.fraud_eval import (
    ACCOUNT_BURST,
    ATTACKS,
    BOT_FARM,
    BRIGADE,
    ORGANIC,
    aggregate,
    batches,
    run_seed,
    score,
    simulate,
)
from tests.unit.test_fraud_detectors import NOW, vote


def test_score_counts_recall_and_false_positives_from_the_labels() -> None:
    labels = {f"o{i}": ORGANIC for i in range(200)} | {f"b{i}": BOT_FARM for i in range(10)}
    labels |= {f"g{i}": BRIGADE for i in range(5)}
    flagged = {"o1": "network_cluster", "o2": "downvote_brigade", "b0": "network_cluster"}
    flagged |= {f"b{i}": "network_cluster" for i in range(1, 8)} | {"g0": "downvote_brigade"}
    result = score(labels, flagged)
    assert result["injected_votes"] == 15
    assert result["injected_flagged"] == 9
    assert result["recall"] == round(9 / 15, 4)
    assert result["recall_by_attack"] == {BOT_FARM: 0.8, BRIGADE: 0.2}
    assert result["organic_votes"] == 200
    assert result["organic_flagged"] == 2
    assert result["organic_fp"] == 0.01
    assert result["organic_flagged_by"] == {"network_cluster": 1, "downvote_brigade": 1}


def test_the_simulation_is_seeded_and_varies_with_the_seed() -> None:
    world, attacks = simulate(7, users=600)
    again, attacks_again = simulate(7, users=600)
    other, _ = simulate(8, users=600)
    assert list(world.votes) == list(again.votes)
    assert attacks == attacks_again
    assert set(world.votes) != set(other.votes)
    labels = Counter(v.label for v in world.votes.values())
    assert labels[ORGANIC] > 2 * sum(labels[a] for a in ATTACKS)
    assert all(labels[a] > 0 for a in ATTACKS)
    # One vote per account, song and show.
    keys = [(v.signal.show_id, v.signal.user_id, v.signal.song_id) for v in world.votes.values()]
    assert len(keys) == len(set(keys))


def test_batches_follow_lambda_per_shard_and_deliver_every_record_once() -> None:
    votes = [vote(f"u{i % 50}", song=f"s{i}", at=0.05 * i) for i in range(1000)]
    delivered: list[VoteSignal] = []
    last_close = 0.0
    for closed, records in batches(votes, shards=3, batch_size=40, window=1.0):
        assert closed >= last_close
        last_close = closed
        assert 1 <= len(records) <= 40
        shards = {zlib.crc32(f"{r.show_id}#{r.user_id}".encode()) % 3 for r in records}
        assert len(shards) == 1
        assert [r.at for r in records] == sorted(r.at for r in records)
        assert records[-1].at <= closed <= records[0].at + 1.0
        delivered += records
    assert sorted(v.vote_id for v in delivered) == sorted(v.vote_id for v in votes)
    assert last_close >= NOW


def test_one_small_seed_scores_its_own_run() -> None:
    row = run_seed(3, users=500)
    assert row["votes_evaluated"] == row["injected_votes"] + row["organic_votes"]
    assert row["recall"] == round(row["injected_flagged"] / row["injected_votes"], 4)
    assert row["organic_fp"] == round(row["organic_flagged"] / row["organic_votes"], 5)
    assert sum(row["organic_flagged_by"].values()) == row["organic_flagged"]
    assert set(row["recall_by_attack"]) <= set(ATTACKS)
    assert row["batches"] > 0
    assert set(row["alerts"]) <= set(row["incidents"])
    other = run_seed(4, users=500)
    pooled = aggregate([row, other])
    assert pooled["injected_votes"] == row["injected_votes"] + other["injected_votes"]
    caught = row["injected_flagged"] + other["injected_flagged"]
    assert pooled["recall"] == round(caught / pooled["injected_votes"], 4)
    assert pooled["organic_flagged"] == row["organic_flagged"] + other["organic_flagged"]
    assert pooled["recall_per_seed"]["min"] == min(row["recall"], other["recall"])


def test_the_account_burst_attack_casts_what_it_says() -> None:
    world, attacks = simulate(11, users=600)
    (burst,) = [a for a in attacks if a["kind"] == ACCOUNT_BURST]
    by_account = Counter(v.signal.user_id for v in world.votes.values() if v.label == ACCOUNT_BURST)
    assert len(by_account) == burst["accounts"]
    assert all(20 <= n <= 50 for n in by_account.values())
    assert all(0 <= v.signal.at - fraud_eval.BASE_TIME < fraud_eval.DURATION for v in world.votes.values())
