"""The journal-store contract (a TCK, like Akka's persistence plugin tests).

Every backend runs these tests: a subclass named ``Test...`` provides a ``backend`` fixture
(see ``backends.py``) and inherits everything here. Error messages are part of the contract:
the backends share them (``persistence/_checks.py``), so they are matched exactly.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from messages import CorruptSnapshot, InvalidConfig, InvalidMessage, StaleFence, encode_state
from persistence import ZERO_OFFSET, JournalStore, encode_snapshot, parse_offset
from persistence.envelope import _checksum
from tests.persistence.backends import Backend, profiles_in
from tests.persistence.worker import (
    CRASH_POINTS,
    Crash,
    Model,
    NaiveWorker,
    Worker,
    committed,
    ingest,
)

P = 1  # the partition most tests use
TTL = 60_000


def items(*keys: str | None) -> list[tuple[str | None, bytes]]:
    return [(key, f"payload-{key}".encode()) for key in keys]


def ids_of(entries: list[Any]) -> list[str]:
    return [e.entry_id for e in entries]


class StoreContract:
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        raise NotImplementedError("a backend's test class provides this fixture")

    @pytest.fixture
    def store(self, backend: Backend) -> JournalStore:
        return backend.open()

    @pytest.fixture
    def profiles(self, store: JournalStore) -> list[str]:
        return profiles_in(store.layout, P, 3)

    # --- ingest and dedupe ------------------------------------------------------------------

    def test_append_returns_increasing_ids_and_none_for_seen_trade_ids(self, store):
        first = store.append(P, items("t1", "t2", "t1"))
        assert first[2] is None
        assert first[0] is not None
        assert first[1] is not None
        assert parse_offset(first[0]) < parse_offset(first[1])
        second = store.append(P, items("t2", "t3"))
        assert second[0] is None
        assert second[1] is not None
        assert parse_offset(second[1]) > parse_offset(first[1])
        assert store.length(P) == 3
        entries = store.read(P, "c", 10)
        assert [(e.dedupe_key, e.payload) for e in entries] == items("t1", "t2", "t3")
        assert ids_of(entries) == [first[0], first[1], second[1]]

    def test_entries_without_a_dedupe_key_are_always_appended(self, store):
        ids = store.append(P, items(None, None))
        assert None not in ids
        assert len(set(ids)) == 2
        assert [e.dedupe_key for e in store.read(P, "c", 10)] == [None, None]

    def test_append_of_nothing_appends_nothing(self, store):
        assert store.append(P, []) == []
        assert store.length(P) == 0

    def test_dedupe_index_is_durable_and_per_partition(self, backend, store):
        store.append(P, items("t1"))
        again = backend.open()
        assert again.append(P, items("t1")) == [None]
        assert again.append(P + 1, items("t1"))[0] is not None  # trade ids are per partition
        assert again.length(P) == 1

    def test_journaled_finds_dedupe_keys_in_any_partition_until_pruned(self, backend, store):
        store.append(P, items("t1"))
        store.append(P + 1, items("t2", None))
        key = items("t1")[0][0]
        other = items("t2")[0][0]
        assert store.journaled([key, other, "fill:X/Y:nope", key]) == {key, other}
        assert backend.open().journaled([key]) == {key}  # durable
        assert store.journaled([]) == set()
        backend.age_dedupe_keys(P, 3_600_000)
        store.prune_seen(P, 600_000)
        assert store.journaled([key, other]) == {other}

    def test_prune_seen_forgets_only_keys_older_than_the_retention(self, backend, store):
        store.append(P, items("old1", "old2"))
        backend.age_dedupe_keys(P, 3_600_000)
        store.append(P, items("new"))
        assert store.prune_seen(P, 600_000) == 2
        assert store.prune_seen(P, 600_000) == 0
        resent = store.append(P, items("old1", "new"))
        assert resent[0] is not None  # forgotten: a re-send this late is ingested again
        assert resent[1] is None

    def test_bad_journal_items_are_refused_and_nothing_is_appended(self, store):
        with pytest.raises(InvalidMessage, match=r"^journal item 1: payload must be bytes"):
            store.append(P, [("t1", b"x"), ("t2", "not bytes")])
        with pytest.raises(InvalidMessage, match=r"^journal item 0: dedupe key must be"):
            store.append(P, [("", b"x")])
        with pytest.raises(InvalidConfig, match=r"^partition must be an int in 0\.\.3, got 4$"):
            store.append(4, items("t1"))
        assert store.length(P) == 0
        assert store.append(P, items("t1"))[0] is not None

    # --- reading through the group -----------------------------------------------------------

    def test_each_entry_goes_to_one_consumer_in_order_and_stays_pending(self, store):
        ids = store.append(P, items(*(f"t{i}" for i in range(7))))
        a1 = store.read(P, "a", 3)
        b1 = store.read(P, "b", 3)
        a2 = store.read(P, "a", 3)
        assert ids_of(a1 + b1 + a2) == ids
        assert store.read(P, "b", 3) == []
        assert store.pending_count(P) == 7
        assert store.pending_count(P, "a") == 4
        assert store.pending_count(P, "b") == 3
        assert store.pending_count(P, "nobody") == 0

    def test_read_with_nothing_to_read_returns_empty(self, store):
        assert store.read(P, "a", 10) == []
        assert store.read(P, "a", 10, block_ms=20) == []
        assert store.pending_count(P) == 0

    def test_blocking_read_returns_an_entry_appended_while_it_waits(self, store, backend):
        got: list[Any] = []
        reader = threading.Thread(target=lambda: got.extend(store.read(P, "a", 10, 3_000)))
        reader.start()
        ids = backend.open().append(P, items("t1"))
        reader.join(10)
        assert not reader.is_alive()
        assert ids_of(got) == ids

    def test_restarted_consumer_rereads_its_pending_entries_first(self, backend, store):
        ids = store.append(P, items("t1", "t2", "t3", "t4"))
        assert ids_of(store.read(P, "a", 3)) == ids[:3]
        assert ids_of(store.read(P, "b", 1)) == ids[3:]
        fence = store.acquire_lease(P, "w", TTL)
        assert store.commit(fence, {}, [ids[0]]) == 1
        more = store.append(P, items("t5"))

        restarted = backend.open()
        assert ids_of(restarted.read(P, "a", 10)) == ids[1:3]  # its own, not b's
        assert ids_of(restarted.read(P, "a", 10)) == more
        assert restarted.read(P, "a", 10) == []
        assert restarted.pending_count(P, "a") == 3

    def test_pending_backlog_is_paged_by_count_then_new_entries_follow(self, backend, store):
        ids = store.append(P, items(*(f"t{i}" for i in range(5))))
        store.read(P, "a", 5)
        new = store.append(P, items("late"))
        restarted = backend.open()
        pages = [ids_of(restarted.read(P, "a", 2)) for _ in range(4)]
        assert pages == [ids[0:2], ids[2:4], ids[4:5], new]

    def test_rewind_makes_the_next_read_start_from_the_pending_entries(self, store):
        ids = store.append(P, items("t1", "t2"))
        assert ids_of(store.read(P, "a", 10)) == ids
        assert store.read(P, "a", 10) == []
        store.rewind(P, "a")
        assert ids_of(store.read(P, "a", 10)) == ids

    def test_claim_stale_moves_idle_pending_entries_to_another_consumer(self, backend, store):
        ids = store.append(P, items("t1", "t2", "t3"))
        store.read(P, "dead", 3)
        assert store.claim_stale(P, "live", 3_600_000) == []  # not idle long enough
        claimed = store.claim_stale(P, "live", 0)
        assert ids_of(claimed) == ids
        assert [e.dedupe_key for e in claimed] == ["t1", "t2", "t3"]
        assert store.pending_count(P, "dead") == 0
        assert store.pending_count(P, "live") == 3
        assert ids_of(backend.open().read(P, "live", 10)) == ids  # now its pending backlog

    def test_bad_read_arguments_are_refused(self, store):
        with pytest.raises(InvalidConfig, match=r"^count must be an int >= 1, got 0$"):
            store.read(P, "a", 0)
        with pytest.raises(InvalidConfig, match=r"^consumer must be a non-empty str without"):
            store.read(P, "a b", 1)
        with pytest.raises(InvalidConfig, match=r"^block_ms must be an int >= 0, got -1$"):
            store.read(P, "a", 1, -1)

    # --- leases and fences ------------------------------------------------------------------

    def test_tokens_increase_with_every_acquisition_even_after_reopen(self, backend, store):
        tokens = [store.acquire_lease(P, "w", TTL).token]
        tokens.append(store.acquire_lease(P, "w", TTL).token)  # the same holder, restarted
        backend.expire_lease(P)
        tokens.append(store.acquire_lease(P, "v", TTL).token)
        tokens.append(backend.open().acquire_lease(P, "v", TTL).token)
        assert tokens == sorted(set(tokens))
        assert store.acquire_lease(P + 1, "w", TTL).token >= 1

    def test_a_live_lease_of_another_holder_refuses_acquisition(self, store):
        fence = store.acquire_lease(P, "w", TTL)
        with pytest.raises(
            StaleFence,
            match=rf"^partition 1 is leased to 'w' \(token {fence.token}\) for another "
            r"\d+ ms; 'v' refused$",
        ):
            store.acquire_lease(P, "v", TTL)
        store.renew_lease(fence)  # still w's

    def test_release_and_expiry_let_another_holder_in(self, backend, store):
        w = store.acquire_lease(P, "w", TTL)
        assert store.release_lease(w) is True
        assert store.release_lease(w) is False
        v = store.acquire_lease(P, "v", TTL)
        backend.expire_lease(P)
        u = store.acquire_lease(P, "u", TTL)
        assert w.token < v.token < u.token

    def test_stale_fence_commit_is_refused_and_writes_nothing(self, backend, store, profiles):
        pid = profiles[0]
        ids = store.append(P, items("t1", "t2"))
        store.read(P, "a", 2)
        old = store.acquire_lease(P, "w", TTL)
        store.commit(old, {pid: ({"n": 1}, ids[0])}, [ids[0]])
        backend.expire_lease(P)
        new = store.acquire_lease(P, "v", TTL)

        message = (
            rf"^commit refused: fence {old.token} of 'w' on partition 1 is not current "
            rf"\(lease is 'v' token {new.token}\)$"
        )
        with pytest.raises(StaleFence, match=message):
            store.commit(old, {pid: ({"n": 2}, ids[1])}, [ids[1]])
        snap = store.load(pid)
        assert snap is not None
        assert (snap.state, snap.offset, snap.fence) == (
            {"n": 1},
            ids[0],
            old.token,
        )
        assert store.pending_count(P) == 1
        with pytest.raises(StaleFence, match=r"^renew refused: fence"):
            store.renew_lease(old)
        assert store.release_lease(old) is False
        assert store.commit(new, {pid: ({"n": 2}, ids[1])}, [ids[1]]) == 1

    def test_reacquiring_fences_out_the_previous_incarnation_of_the_same_holder(
        self, store, profiles
    ):
        before = store.acquire_lease(P, "w", TTL)
        after = store.acquire_lease(P, "w", TTL)
        with pytest.raises(StaleFence, match=rf"^commit refused: fence {before.token} of 'w'"):
            store.commit(before, {profiles[0]: ({}, "1-0")})
        assert store.load(profiles[0]) is None
        store.commit(after, {profiles[0]: ({}, "1-0")})

    def test_commit_after_expiry_without_new_holder_is_refused(self, backend, store, profiles):
        fence = store.acquire_lease(P, "w", TTL)
        backend.expire_lease(P)
        with pytest.raises(StaleFence, match=r"\(no lease is live\)$"):
            store.commit(fence, {profiles[0]: ({}, "1-0")})
        with pytest.raises(StaleFence, match=r"\(no lease is live\)$"):
            store.renew_lease(fence)
        assert store.load(profiles[0]) is None

    def test_a_lapsed_lease_nobody_took_is_revived_and_commits_again(
        self, backend, store, profiles
    ):
        fence = store.acquire_lease(P, "w", TTL)
        store.revive_lease(fence)  # live: simply renewed
        backend.expire_lease(P)
        with pytest.raises(StaleFence, match=r"\(no lease is live\)$"):
            store.commit(fence, {profiles[0]: ({}, "1-0")})
        store.revive_lease(fence)  # no acquisition since: the token is still the latest
        store.renew_lease(fence)
        store.commit(fence, {profiles[0]: ({"n": 1}, "1-0")})
        assert store.load(profiles[0]).state == {"n": 1}
        # It is held again: another holder cannot take it.
        with pytest.raises(StaleFence, match=r"is leased to 'w'"):
            store.acquire_lease(P, "v", TTL)

    def test_a_lapsed_lease_acquired_since_is_not_revived(self, backend, store, profiles):
        old = store.acquire_lease(P, "w", TTL)
        backend.expire_lease(P)
        new = store.acquire_lease(P, "v", TTL)
        with pytest.raises(StaleFence, match=rf"\(lease is 'v' token {new.token}\)$"):
            store.revive_lease(old)
        backend.expire_lease(P)  # the newer holder lapsed too: the old token is still not latest
        with pytest.raises(StaleFence):
            store.revive_lease(old)
        store.revive_lease(new)
        with pytest.raises(StaleFence):
            store.commit(old, {profiles[0]: ({}, "1-0")})
        # The same holder restarted (a new token) fences out its earlier incarnation too.
        before = store.acquire_lease(P + 1, "w", TTL)
        store.acquire_lease(P + 1, "w", TTL)
        with pytest.raises(StaleFence):
            store.revive_lease(before)

    # --- commit and load --------------------------------------------------------------------

    def test_latest_commit_wins_and_carries_offset_and_fence(self, backend, store, profiles):
        a, b = profiles[:2]
        fence = store.acquire_lease(P, "w", TTL)
        store.commit(fence, {a: ({"v": 1}, "5-0"), b: ({"v": 1}, "5-0")})
        store.commit(fence, {a: ({"v": 2, "s": [None, True, "x"]}, "7-3")})
        reader = backend.open()
        snap_a, snap_b = reader.load(a), reader.load(b)
        assert snap_a is not None
        assert snap_b is not None
        assert (snap_a.state, snap_a.offset, snap_a.fence) == (
            {"v": 2, "s": [None, True, "x"]},
            "7-3",
            fence.token,
        )
        assert (snap_b.state, snap_b.offset) == ({"v": 1}, "5-0")
        assert reader.load_many([b, "nobody", a]) == {a: snap_a, b: snap_b}
        assert reader.load("nobody") is None
        assert reader.load_many([]) == {}

    def test_offsets_never_go_backwards_and_a_refused_commit_writes_nothing(self, store, profiles):
        a, b = profiles[:2]
        ids = store.append(P, items("t1", "t2"))
        store.read(P, "c", 2)
        fence = store.acquire_lease(P, "w", TTL)
        store.commit(fence, {a: ({"v": 1}, "9-0")})
        with pytest.raises(
            StaleFence,
            match=rf"^commit refused: snapshot of profile '{a}' at offset 8-99 "
            r"would go back from 9-0$",
        ):
            store.commit(fence, {b: ({"v": 5}, "1-0"), a: ({"v": 2}, "8-99")}, ids)
        snap = store.load(a)
        assert snap is not None
        assert (snap.state, snap.offset) == ({"v": 1}, "9-0")
        assert store.load(b) is None
        assert store.pending_count(P) == 2
        assert store.commit(fence, {a: ({"v": 3}, "9-0")}, ids) == 2  # equal is not backwards
        assert store.commit(fence, {}, ids) == 0  # acked already
        assert store.load(a).state == {"v": 3}
        # ordered as numbers, not as text: "10-0" > "9-0" and "9-10" > "9-9"
        store.commit(fence, {a: ({}, "9-10")})
        store.commit(fence, {a: ({}, "10-0")})
        with pytest.raises(StaleFence, match=r"would go back from 10-0$"):
            store.commit(fence, {a: ({}, "9-99")})

    def test_invalid_commits_are_refused_before_anything_is_written(self, store, profiles):
        fence = store.acquire_lease(P, "w", TTL)
        other = profiles_in(store.layout, P + 1, 1)[0]
        good = {profiles[0]: ({"v": 1}, "1-0")}
        with pytest.raises(
            InvalidMessage,
            match=rf"^profile '{other}' lives in partition 2, not in the fence's partition 1$",
        ):
            store.commit(fence, {**good, other: ({}, "1-0")})
        with pytest.raises(InvalidMessage, match=r"^offset must be a stream id like"):
            store.commit(fence, {profiles[0]: ({}, "01-0")})
        with pytest.raises(InvalidMessage, match=r"^state value at \$\.x is a float"):
            store.commit(fence, {**good, profiles[1]: ({"x": 1.5}, "1-0")})
        with pytest.raises(InvalidMessage, match=r"^offset must be a stream id like"):
            store.commit(fence, good, ["nope"])
        assert store.load_many(profiles) == {}

    # --- corrupt snapshots ------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("damage", "problem"),
        [
            ("truncate", r"truncated or not msgpack \(\d+ bytes\): .+"),
            ("flip_state_byte", r"bad checksum \(the stored bytes were altered\)"),
            ("future_schema", r"schema version 2 not supported \(expected 1\)"),
            ("foreign", r"not a capflow snapshot envelope \(got list\)"),
            ("other_profile", r"holds profile '.+', expected '.+'"),
            ("offset_mismatch", r"envelope offset 3-0 disagrees with stored offset 4-0"),
            ("trailing", r"1 trailing bytes after the envelope"),
            ("empty", r"truncated or not msgpack \(0 bytes\): .+"),
        ],
    )
    def test_damaged_snapshot_raises_corrupt_snapshot_naming_the_key(
        self, backend, store, profiles, damage, problem
    ):
        pid, other = profiles[:2]
        fence = store.acquire_lease(P, "w", TTL)
        store.commit(fence, {pid: ({"cash": 100, "fills": ["a"]}, "3-0")})
        good = encode_snapshot(pid, {"cash": 100, "fills": ["a"]}, "3-0", fence.token)
        offset = "3-0"
        if damage == "truncate":
            raw = good[: len(good) // 2]
        elif damage == "flip_state_byte":
            body = encode_state({"cash": 100, "fills": ["a"]})
            at = good.index(body) + body.index(b"\x64")  # the 100
            raw = good[:at] + b"\x65" + good[at + 1 :]
        elif damage == "future_schema":
            body = encode_state({"cash": 100})
            raw = msgpack.packb(
                {
                    "schema": 2,
                    "profile_id": pid,
                    "offset": offset,
                    "fence": 1,
                    "state": body,
                    "checksum": _checksum(2, pid, offset, 1, body),
                }
            )
        elif damage == "foreign":
            raw = msgpack.packb(["something", "else"])
        elif damage == "other_profile":
            raw = encode_snapshot(other, {"cash": 1}, offset, fence.token)
        elif damage == "offset_mismatch":
            raw, offset = good, "4-0"
        elif damage == "trailing":
            raw = good + b"\x00"
        else:
            raw = b""
        backend.poke_snapshot(pid, raw, offset)
        key = re.escape(store.layout.snapshot(pid))
        with pytest.raises(CorruptSnapshot, match=rf"^snapshot {key}: {problem}$"):
            store.load(pid)
        with pytest.raises(CorruptSnapshot, match=rf"^snapshot {key}: "):
            backend.open().load_many([other, pid])

    # --- exactly-once under crashes -----------------------------------------------------------

    @pytest.mark.parametrize("crash", CRASH_POINTS)
    @pytest.mark.parametrize("successor", ["same_holder", "other_holder"])
    def test_a_crash_between_any_two_steps_recovers_exactly(self, backend, crash, successor):
        store = backend.open()
        profiles = profiles_in(store.layout, P, 3)
        model = Model()
        batch1 = [(profiles[i % 3], f"tr{i}") for i in range(9)]
        batch1 += [batch1[1], batch1[4]]  # exchange re-sends
        ingest(store, batch1)
        model.ingest(batch1)

        first = Worker(store, P, "w1", "c1")
        first.step(4)  # takes over the partition: nothing pending yet
        first.step(4)  # reads, applies and commits four entries
        zombies = [first]
        if crash == "after_claim":
            # someone must have left entries pending for a successor to crash after claiming
            with pytest.raises(Crash):
                first.step(4, crash="after_read")
            middle = Worker(backend.open(), P, "w1", "c1")
            zombies.append(middle)
            with pytest.raises(Crash):
                middle.step(4, crash=crash)
        else:
            with pytest.raises(Crash):
                first.step(4, crash=crash)

        batch2 = [*batch1[5:], (profiles[0], "tr9"), (profiles[1], "tr10")]  # re-sends + new
        store2 = backend.open()  # the process restarted
        ingest(store2, batch2)
        model.ingest(batch2)
        if successor == "other_holder":
            backend.expire_lease(P)
        holder, consumer = ("w1", "c1") if successor == "same_holder" else ("w2", "c2")
        second = Worker(store2, P, holder, consumer)
        second.drain()

        assert committed(store2, profiles) == model.applied
        assert store2.pending_count(P) == 0
        # a dead incarnation, had it lived on (a long GC pause), cannot write
        for zombie in zombies:
            with pytest.raises(StaleFence, match=r"^commit refused: fence \d+ of 'w1'"):
                zombie.commit({profiles[0]: (["bogus"], "99999999999999-0")}, [])
        assert committed(backend.open(), profiles) == model.applied

    def test_the_harness_catches_a_naive_worker_applying_twice(self, backend):
        store = backend.open()
        profiles = profiles_in(store.layout, P, 2)
        fills = [(profiles[i % 2], f"tr{i}") for i in range(6)]
        ingest(store, fills)
        model = Model()
        model.ingest(fills)
        naive = NaiveWorker(store, P, "w1", "c1")
        naive.step(10)  # takes over the partition: nothing pending yet
        naive.crash_before_ack = True
        with pytest.raises(Crash):
            naive.step(3)  # snapshot written, acks not
        NaiveWorker(backend.open(), P, "w1", "c1").drain()
        applied = committed(backend.open(), profiles)
        assert applied != model.applied
        assert sorted(t for ts in applied.values() for t in ts) == sorted(
            [t for _, t in fills] + ["tr0", "tr1", "tr2"]
        )

    def test_zero_offset_constant_is_the_smallest(self):
        assert parse_offset(ZERO_OFFSET) == (0, 0)
