"""A run's imagery as one thing: picklable records in priority order, opened at most once per process.

Every source has a record that describes it and opens it as a context manager: a GeoTIFF's
:class:`~canopy.imagery.geotiff.RasterRef` (opened again from its file or URL, not checked again),
or, for a source object the user passed in, a :class:`SourceObject` holding it (pickled with the
plan; canopy never closes it, its owner does).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, replace

from canopy.imagery.geotiff import RasterRef
from canopy.imagery.raster_checks import date_span
from canopy.imagery.radiometry import Scaling
from canopy.imagery.source import ImagerySource


@dataclass(frozen=True)
class SourceObject:
    """A source object the user passed in, as a record: it must be picklable to run on a cluster."""

    source: ImagerySource

    @property
    def name(self) -> str:
        """The source's name."""
        return self.source.name

    @property
    def taken(self) -> str | None:
        """When its imagery was taken, as ISO 8601, if known."""
        return getattr(self.source, "taken", None)

    @property
    def fingerprint(self) -> tuple:
        """What a resumed run compares."""
        return tuple(self.source.fingerprint)

    def open(self) -> AbstractContextManager[ImagerySource]:
        """The object itself, left open on exit: it belongs to the caller."""
        return nullcontext(self.source)


SourceRecord = RasterRef | SourceObject
"""What describes one source of a run: both kinds have ``name``, ``taken``, ``fingerprint`` and ``open()``."""


class SourceSet:
    """A run's sources in priority order: records to ship anywhere, each opened once in a process while the set is open.

    Pickling keeps the records only, so a Dask worker opens the set again, once, where it reads.
    Closing closes what this set opened (or was handed, opened, by :func:`~canopy.imagery.open_imagery`).

    Parameters
    ----------
    records
        The sources' records.
    opened
        The same sources already open, with an exit stack that closes those canopy opened.
    """

    def __init__(self, records: Sequence[SourceRecord], opened: tuple[list[ImagerySource], ExitStack] | None = None) -> None:
        self.records: tuple[SourceRecord, ...] = tuple(records)
        self._opened, self._closer = opened if opened is not None else (None, ExitStack())
        self._lock = threading.Lock()

    def open(self) -> list[ImagerySource]:
        """The sources, open; the first call in a process opens them, later calls return the same objects.

        Raises
        ------
        ImageryReadError, ImageryError
            If a source cannot be opened here (nothing is left open then).
        """
        with self._lock:
            if self._opened is None:
                with ExitStack() as stack:
                    opened = [stack.enter_context(record.open()) for record in self.records]
                    self._closer = stack.pop_all()
                self._opened = opened
            return self._opened

    def with_scaling(self, scaling: Scaling | None) -> SourceSet:
        """The set with ``scaling`` given to every GeoTIFF that has none of its own (imagery that is not 8-bit).

        The open sources move to the new set, which closes them; this one is left closed.
        """
        records = [replace(r, scaling=scaling) if isinstance(r, RasterRef) and r.scaling is None else r for r in self.records]
        opened = None
        if self._opened is not None:
            for source, record in zip(self._opened, records):
                if isinstance(record, RasterRef):
                    source.scaling = record.scaling
            opened, self._opened = (self._opened, self._closer.pop_all()), None
        return SourceSet(records, opened)

    def close(self) -> None:
        """Close the sources this set opened; it opens them again if asked."""
        with self._lock:
            self._closer.close()
            self._opened = None

    @property
    def names(self) -> list[str]:
        """The sources' names, in priority order."""
        return [r.name for r in self.records]

    @property
    def fingerprints(self) -> list[list]:
        """What a resumed run compares, per source (as lists, as JSON stores them)."""
        return [_listed(r.fingerprint) for r in self.records]

    @property
    def taken(self) -> str | None:
        """When the imagery was taken (a day, or ``first/last``), when every source says."""
        return date_span([r.taken for r in self.records])

    def __iter__(self) -> Iterator[SourceRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __enter__(self) -> SourceSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"records": self.records}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["records"])


def _listed(value):
    """Tuples as lists, all the way down."""
    return [_listed(v) for v in value] if isinstance(value, (list, tuple)) else value
