"""The project's exceptions for bad input: the cache's and everyone else's.

Every message names the file, store path, shard, row or value at fault and, where it
helps, what to do, so CLIs print it as one ``error: ...`` line (see :mod:`store.cli`).
"""

from __future__ import annotations


class StoreError(Exception):
    """A store cannot be created, opened, written or read as asked.

    Example::

        try:
            reader = StoreReader.open("logits.zarr", num_classes=5994)
        except StoreError as exc:
            print(f"error: {exc}")
    """


class CorruptShardError(StoreError):
    """Stored bytes of a complete shard fail their checksum or are missing.

    ``shard`` is the shard index, ``array`` the array whose bytes are bad, and
    ``rows`` the half-open global row range of the chunk that could not be read.
    """

    def __init__(self, message: str, *, shard: int, array: str, rows: tuple[int, int]) -> None:
        super().__init__(message)
        self.shard = shard
        self.array = array
        self.rows = rows


class UserError(Exception):
    """Bad input (file, value, option) that the user can fix; never a bug.

    Raised across the project (audio, manifests, options, checkpoints); :func:`store.cli.run`
    prints it as one line, exit status 2.
    """


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a
    one-line ``error:`` quotes of a library's multi-line failure.

    >>> first_line(ValueError("bad header\\n  at offset 12"))
    'bad header'
    >>> first_line(OSError())
    'OSError'
    """
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
