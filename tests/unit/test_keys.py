import zlib

from mysetlist import keys


def test_slugify_folds_case_accents_and_punctuation():
    assert keys.slugify("Sugar Magnolia") == "sugar-magnolia"
    assert keys.slugify("  Montréal (Live!) ") == "montreal-live"
    assert keys.slugify("I'm A King Bee") == "i-m-a-king-bee"
    assert keys.slugify("???") == ""


def test_search_name_ignores_a_leading_the():
    assert keys.search_name("The Grateful Dead") == "grateful-dead"
    assert keys.search_name("Theory of a Deadman") == "theory-of-a-deadman"


def test_song_ids_are_stable_and_never_empty():
    assert keys.song_id_for("grateful-dead", "Dark Star") == "grateful-dead:dark-star"
    assert keys.song_id_for("grateful-dead", "dark   star!") == "grateful-dead:dark-star"
    odd = keys.song_id_for("grateful-dead", "???")
    assert odd.startswith("grateful-dead:t")
    assert odd != "grateful-dead:"
    assert odd == keys.song_id_for("grateful-dead", "???")
    assert odd != keys.song_id_for("grateful-dead", "!!!")


def test_vote_keys_spread_a_show_over_users_and_index_shards():
    show = "grateful-dead:2030-01-01"
    partitions = {keys.vote_pk(show, f"user-{i}") for i in range(1000)}
    assert len(partitions) == 1000
    shards = {keys.vote_index_pk(show, f"user-{i}") for i in range(1000)}
    assert len(shards) == keys.VOTE_INDEX_SHARDS


def test_tallies_of_a_show_spread_over_its_shards_and_are_all_read():
    show = "s"
    pks = {keys.tally_pk(show, f"song-{i}") for i in range(200)}
    assert pks == set(keys.tally_partitions(show))


def test_shards_and_lanes_are_deterministic_across_processes():
    # CRC-32 of fixed input: a value that must never change, or stored keys would move.
    assert keys.shard_of("user-1", 16) == 2116437524 % 16
    assert keys.vote_index_pk("show", "user-1") == "show#04"
    assert [keys.lane_of(str(n)) for n in range(100, 104)] == [
        zlib.crc32(str(n).encode()) % 4 for n in range(100, 104)
    ]
