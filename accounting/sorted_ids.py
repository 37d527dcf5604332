"""A set of ids kept sorted as it grows, so that a snapshot lists it without sorting.

The books remember every applied trade id (a redelivered fill must stay a no-op, also long after
its order completed) and every client order id they used. Their snapshot lists them sorted, so
the same books always give the same state whatever order the fills came in. Sorting the whole
history at every checkpoint cost O(n log n) per checkpoint, forever growing (3.6 ms at 20,000
trade ids; ``docs/performance.md``, section 4). Here an id is appended to a short list of new
ids (O(1) per fill, whatever order ids come in); a snapshot sorts only those and inserts them
into the sorted history in place (a ``memmove`` each), so it costs one copy of the history
(the snapshot's list) plus ``k log n`` for the ``k`` ids since the last snapshot.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator


class SortedIds:
    """A growing set of ``str`` ids that lists them in sorted order without sorting them all.

    Args:
        ids: the initial ids (repeats are kept once).
    """

    __slots__ = ("_new", "_set", "_sorted")

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._set = set(ids)
        self._sorted = sorted(self._set)
        self._new: list[str] = []  # added since the last merge, in arrival order

    def __contains__(self, item: object) -> bool:
        return item in self._set

    def __len__(self) -> int:
        return len(self._set)

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_list())

    def add(self, item: str) -> None:
        """Remember ``item`` (a no-op if it is known)."""
        if item not in self._set:
            self._set.add(item)
            self._new.append(item)

    def update(self, items: Iterable[str]) -> None:
        """Remember every id of ``items``."""
        for item in items:
            self.add(item)

    def truncate(self, size: int) -> None:
        """Forget the ids added last until ``size`` are left: a rollback of an operation that
        added ids. Only ids added since the last :meth:`to_list` can be forgotten (a rollback
        never spans a snapshot); asking for more is a bug.
        """
        excess = len(self._set) - size
        if excess <= 0:
            return
        if excess > len(self._new):
            raise RuntimeError(
                f"cannot forget {excess} ids: only {len(self._new)} were added since the last"
                " listing"
            )
        for item in self._new[-excess:]:
            self._set.discard(item)
        del self._new[-excess:]

    def as_set(self) -> frozenset[str]:
        """The ids as a set (a copy)."""
        return frozenset(self._set)

    def to_list(self) -> list[str]:
        """The ids in sorted order, as a new list."""
        self._merge()
        return self._sorted.copy()

    def __repr__(self) -> str:
        return f"SortedIds({len(self._set)} ids)"

    def _merge(self) -> None:
        if not self._new:
            return
        new, old = sorted(self._new), self._sorted
        self._new = []
        if not old or old[-1] < new[0]:
            old.extend(new)  # ids in increasing order (most exchanges): no merge at all
        elif len(new) * 8 > len(old):
            old.extend(new)
            old.sort()  # many new ids: timsort merges the two sorted runs
        else:
            start = 0
            for item in new:  # in place: a memmove per id, no copy of the history
                start = bisect_left(old, item, start)
                old.insert(start, item)
