"""Where everything lives: partitions and key names (see ``docs/redis-layout.md``).

Profiles are spread over ``partitions`` by ``crc32(profile_id) % partitions``, a hash that is
stable across processes, Python versions and machines. Every key of partition ``N`` starts with
the hash tag ``{<prefix>:p<N>}``, so a Lua script that touches the journal, the lease and the
snapshots of one partition touches a single Redis Cluster slot.

The partition count is part of the data: a snapshot key names its partition, so changing the
count hides every snapshot. The stores record the count they were created with and refuse to
open with another.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

from messages import InvalidConfig, InvalidMessage

DEFAULT_PREFIX: Final = "capflow"
DEFAULT_PARTITIONS: Final = 16
MAX_PARTITIONS: Final = 16384  # one per Cluster slot is already more than useful

#: Bumped when key names or value formats change incompatibly.
LAYOUT_VERSION: Final = 1


def check_profile_id(profile_id: str) -> str:
    """Return ``profile_id`` if it is a non-empty str, else raise ``InvalidMessage``."""
    if type(profile_id) is not str or not profile_id:
        raise InvalidMessage(f"profile id must be a non-empty str, got {profile_id!r}")
    return profile_id


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Key names of one capflow deployment.

    Args:
        prefix: namespace of every key; several deployments can share a Redis database.
        partitions: how many partitions profiles are hashed into (fixed for a deployment).

    Raises:
        InvalidConfig: an empty prefix or one with braces (it goes inside a hash tag), or a
            partition count outside ``1..MAX_PARTITIONS``.
    """

    prefix: str = DEFAULT_PREFIX
    partitions: int = DEFAULT_PARTITIONS

    def __post_init__(self) -> None:
        if type(self.prefix) is not str or not self.prefix or {"{", "}"} & set(self.prefix):
            raise InvalidConfig(
                f"key prefix must be a non-empty str without braces: {self.prefix!r}"
            )
        if type(self.partitions) is not int or not 1 <= self.partitions <= MAX_PARTITIONS:
            raise InvalidConfig(
                f"partitions must be an int in 1..{MAX_PARTITIONS}, got {self.partitions!r}"
            )

    def partition_of(self, profile_id: str) -> int:
        """The partition that holds ``profile_id``'s snapshot and journal entries."""
        check_profile_id(profile_id)
        return zlib.crc32(profile_id.encode("utf-8")) % self.partitions

    def check_partition(self, partition: int) -> int:
        """Return ``partition`` if it exists, else raise ``InvalidConfig``."""
        if type(partition) is not int or not 0 <= partition < self.partitions:
            raise InvalidConfig(
                f"partition must be an int in 0..{self.partitions - 1}, got {partition!r}"
            )
        return partition

    def tag(self, partition: int) -> str:
        """The hash tag shared by every key of ``partition``, e.g. ``{capflow:p3}``."""
        return f"{{{self.prefix}:p{self.check_partition(partition)}}}"

    def journal(self, partition: int) -> str:
        """The partition's journal stream."""
        return f"{self.tag(partition)}:journal"

    def seen(self, partition: int) -> str:
        """The partition's dedupe index: ingested trade ids scored by ingest time (ms)."""
        return f"{self.tag(partition)}:seen"

    def lease(self, partition: int) -> str:
        """The partition's lease: ``"<token> <holder>"`` with a time to live."""
        return f"{self.tag(partition)}:lease"

    def fence(self, partition: int) -> str:
        """The partition's fencing-token counter (never expires, never goes down)."""
        return f"{self.tag(partition)}:fence"

    def snapshot(self, profile_id: str) -> str:
        """The profile's snapshot hash, in the profile's partition."""
        return f"{self.tag(self.partition_of(profile_id))}:snap:{profile_id}"

    @property
    def meta(self) -> str:
        """Deployment facts (layout version, partition count), outside every partition.

        Braced like the partition keys, so one ACL key pattern ``~{<prefix>*`` covers all.
        """
        return f"{{{self.prefix}}}:meta"
