"""The teacher-logit cache: a Zarr v3 store of top-k soft labels (see ``store/FORMAT.md``).

Stage 1 writes it with :class:`StoreWriter`, stage 2 streams it with :class:`StoreReader`;
``python -m store`` inspects, verifies and summarises one. Nothing here imports torch.

Example::

    from store import StoreReader
    reader = StoreReader.open("logits.zarr", num_classes=5994)
    block = reader.read(0, 1024)           # RowBlock of numpy arrays
"""

# First: Ctrl-C during the seconds of imports that follow is one line, not a traceback.
from store import _signals  # noqa: F401  (installs its handlers on import)
from store.errors import CorruptShardError, StoreError
from store.reader import StoreReader
from store.rows import RowBlock, check_block
from store.schema import FORMAT_VERSION, READABLE_VERSIONS, FeatureInfo, StoreSpec, TeacherInfo
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
