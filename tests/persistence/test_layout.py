"""Key layout: stable partitioning, one hash slot per partition, offsets."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from messages import InvalidConfig, InvalidMessage
from persistence import ZERO_OFFSET, KeyLayout, format_offset, parse_offset


def test_key_names():
    layout = KeyLayout("capflow", 16)
    assert layout.partition_of("alice") == 7  # crc32(b"alice") % 16: the same everywhere
    assert layout.journal(3) == "{capflow:p3}:journal"
    assert layout.seen(3) == "{capflow:p3}:seen"
    assert layout.lease(3) == "{capflow:p3}:lease"
    assert layout.fence(3) == "{capflow:p3}:fence"
    assert layout.snapshot("alice") == "{capflow:p7}:snap:alice"
    assert layout.meta == "{capflow}:meta"


def test_every_key_of_a_partition_hashes_to_one_cluster_slot():
    layout = KeyLayout("prod", 64)
    for partition in range(64):
        profiles = [f"bot-{i}" for i in range(300) if layout.partition_of(f"bot-{i}") == partition]
        keys = [layout.journal(partition), layout.seen(partition), layout.lease(partition)]
        keys += [layout.fence(partition), *map(layout.snapshot, profiles)]
        assert len({key_slot(k.encode()) for k in keys}) == 1


def test_partitions_spread_profiles():
    layout = KeyLayout(partitions=8)
    counts = [0] * 8
    for i in range(8000):
        counts[layout.partition_of(f"profile-{i}")] += 1
    assert min(counts) > 800  # roughly 1000 each


@pytest.mark.parametrize(
    ("prefix", "partitions", "message"),
    [
        ("", 4, r"^key prefix must be a non-empty str without braces: ''$"),
        ("a{b", 4, r"^key prefix must be a non-empty str without braces: 'a\{b'$"),
        ("ok", 0, r"^partitions must be an int in 1\.\.16384, got 0$"),
        ("ok", True, r"^partitions must be an int in 1\.\.16384, got True$"),
    ],
)
def test_bad_layouts_are_refused(prefix, partitions, message):
    with pytest.raises(InvalidConfig, match=message):
        KeyLayout(prefix, partitions)


def test_profile_ids_must_be_non_empty_strings():
    with pytest.raises(InvalidMessage, match=r"^profile id must be a non-empty str, got ''$"):
        KeyLayout().partition_of("")


def test_offsets_parse_order_numerically_and_format_back():
    assert parse_offset(ZERO_OFFSET) == (0, 0)
    assert parse_offset("1700000000000-5") == (1700000000000, 5)
    assert parse_offset("10-0") > parse_offset("9-99")
    assert format_offset(*parse_offset("18446744073709551615-0")) == "18446744073709551615-0"
    for bad in ("", "1", "-1-0", "1-", "01-0", "1-0-0", " 1-0", "1-0\n", "18446744073709551616-0"):
        with pytest.raises(InvalidMessage, match=r"^offset must be a stream id like"):
            parse_offset(bad)
