"""What a dump is asked for: the settings that define a cache's rows (:class:`DumpConfig`, recorded
in the store) and the options that choose which rows and labels (:class:`RowOptions`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from speaker.views.augment import AugmentConfig


@dataclass(frozen=True)
class DumpConfig:
    """What defines the rows of a cache (recorded in the store's attrs)."""

    views_per_utt: int = 4
    crop_seconds: float = 2.0
    topk: int = 32
    temperatures: tuple[float, ...] = (1.0, 2.0, 4.0)
    seed: int = 0
    embeddings: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    chunk_rows: int = 4096
    shard_rows: int = 65536
    store_features: bool = False
    tail_samples: int = 0  # M classes drawn per row and temperature from the tail (0: none)


#: Chunk and shard rows without / with stored features (a shard of 65,536 2-s rows of
#: features would be 2 GB in memory; 256-row chunks keep a shuffle buffer at ~32 MB).
DEFAULT_GEOMETRY = {False: (4096, 65536), True: (256, 4096)}



@dataclass(frozen=True)
class RowOptions:
    """Options that change which rows are dumped and their labels (see ``row_plan``)."""

    teacher_labels: Path | None = None
    unknown_speakers: str = "refuse"
    views_from: str | Path | None = None  # a path or an object-store URL
