"""The teacher-logit cache: a Zarr v3 store of top-k soft labels (see ``store/FORMAT.md``).

Stage 1 writes it with :class:`StoreWriter`, stage 2 streams it with :class:`StoreReader`;
``python -m store`` inspects, verifies and summarises one. Nothing here imports torch.

Example::

    from store import StoreReader
    reader = StoreReader.open("logits.zarr", num_classes=5994)
    block = reader.read(0, 1024)           # RowBlock of numpy arrays
"""

from store.errors import CorruptShardError, StoreError
from store.reader import StoreReader
from store.schema import (
    FORMAT_VERSION,
    READABLE_VERSIONS,
    FeatureInfo,
    RowBlock,
    StoreSpec,
    TeacherInfo,
    check_block,
)
from store.writer import StoreWriter

__all__ = [
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "CorruptShardError",
    "FeatureInfo",
    "RowBlock",
    "StoreError",
    "StoreReader",
    "StoreSpec",
    "StoreWriter",
    "TeacherInfo",
    "check_block",
]
