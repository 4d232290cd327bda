"""A store on an object store (``s3://bucket/logits.zarr``, any fsspec URL): what the writer,
the dump and the lock need beyond zarr -- the filesystem of a URL, whether something is
there, removing it, and telling a lost connection from bad data.

A URL's options come from ``storage_options`` (``--storage-option key=value`` on the
commands) merged over what the filesystem reads from its environment itself (s3fs:
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ...; fsspec:
``FSSPEC_S3_<KEY>``). Local paths take no options.

Example::

    fs, root = filesystem("s3://bucket/logits.zarr", {"endpoint_url": "http://127.0.0.1:9000"})
    store_state("s3://bucket/logits.zarr", options)   # "absent", "creating" or "store"
"""

from __future__ import annotations

import json
from typing import Any, Literal

from store.errors import StoreError

#: Root attribute of a store whose create has not finished (object stores only: there is no
#: rename to hide the arrays until they are complete). The final attributes replace it.
CREATING = "entkd_create_in_progress"

# Packages whose exceptions mean "the object store could not be reached or refused the
# request", never bad data: connection refused, timeouts, HTTP errors, expired credentials.
_TRANSPORT = ("botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "adlfs", "urllib3")


def is_remote(path: Any) -> bool:
    """True for a URL with a protocol other than ``file://`` (``s3://b/x.zarr``)."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def check_options(path: Any, storage_options: dict[str, Any] | None) -> None:
    """Refuse storage options for a local path (zarr would take them for a damaged store)."""
    if storage_options and not is_remote(path):
        raise StoreError(f"--storage-option {', '.join(sorted(storage_options))} given for the "
                         f"local path {path}: storage options apply to object-store URLs "
                         f"(e.g. s3://bucket/logits.zarr) only")


def options_per_store(storage_options: dict[str, Any] | None,
                      *paths: Any) -> list[dict[str, Any] | None]:
    """One command's ``--storage-option`` flags, per store it names: the options for each
    object-store URL, None for each local path (or absent store, ``None``). Refused when
    options are given and no store is a URL.

    >>> options_per_store({"anon": True}, "s3://b/new.zarr", "old.zarr", None)
    [{'anon': True}, None, None]
    """
    if storage_options and not any(is_remote(p) for p in paths if p is not None):
        check_options(next(p for p in paths if p is not None), storage_options)
    return [storage_options if p is not None and is_remote(p) else None for p in paths]


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) of ``url``."""
    from fsspec.core import url_to_fs

    try:
        return url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError) as exc:  # no such protocol, or its package is missing
        raise StoreError(f"cannot open {url}: {exc}") from None


def is_transport_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the store could not be reached (as opposed to bad bytes)."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return any(type(e).__module__.split(".")[0] in _TRANSPORT for e in _chain(exc))


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def unreachable(where: str, exc: BaseException, doing: str) -> StoreError:
    """The one-line error for a store that stopped answering while ``doing``."""
    return StoreError(f"lost the connection to {where} while {doing} ({type(exc).__name__}: "
                      f"{exc}); check the endpoint, credentials and network")


StoreState = Literal["absent", "creating", "store", "other"]


def store_state(url: str, storage_options: dict[str, Any] | None = None) -> StoreState:
    """What is at ``url``: nothing, a create that was interrupted (the group carries the
    :data:`CREATING` marker), a group that may be a store (opening it says whether it is
    one), or other objects (no group metadata: not ours, never removed)."""
    fs, root = filesystem(url, storage_options)
    try:
        fs.invalidate_cache(root)  # another process may have written it since
        if not fs.exists(root):
            return "absent"
        try:
            attrs = json.loads(fs.cat_file(f"{root}/zarr.json")).get("attributes", {})
        except FileNotFoundError:
            return "other"
        except (ValueError, AttributeError):
            return "store"  # damaged metadata: the opener names it
    except Exception as exc:
        if is_transport_error(exc):
            raise unreachable(url, exc, "looking for the store") from exc
        raise
    return "creating" if isinstance(attrs, dict) and CREATING in attrs else "store"


def remove_store(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Delete every object under ``url`` (a store this run created, or an interrupted create)."""
    fs, root = filesystem(url, storage_options)
    try:
        if fs.exists(root):
            fs.rm(root, recursive=True)
    except Exception as exc:
        if is_transport_error(exc):
            raise unreachable(url, exc, "removing it") from exc
        raise
    fs.invalidate_cache(root)


def remove_command(url: str) -> str:
    """How a user removes a store at ``url`` (for messages)."""
    if url.startswith("s3://"):
        return f"`aws s3 rm --recursive {url}`"
    return f"`python -c \"import fsspec; fsspec.url_to_fs('{url}')[0].rm('{url}', recursive=True)\"`"
