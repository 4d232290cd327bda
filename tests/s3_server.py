"""An S3-compatible server for tests: moto's server mode on 127.0.0.1, on a free port, in a
thread of the test process (no other network). tests/conftest.py imports the fixtures.

``s3`` gives each test a fresh bucket and the three ways a command reaches it: ``options``
(``storage_options``), ``flags`` (``--storage-option key=value`` ...) and ``env`` (the
standard ``AWS_*`` variables, for subprocesses).
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CREDENTIALS = {"key": "testing", "secret": "testing"}
_buckets = itertools.count()


class S3Server:
    """moto's threaded server; :meth:`stop` drops every connection (the port is closed, so
    clients get "connection refused"), :meth:`start` brings it back on the same port with
    the same objects (moto keeps them in this process)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
        self._cls = ThreadedMotoServer
        self.port = 0
        self._server: Any = None
        self.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server = self._cls(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]

    def stop(self) -> None:
        self._server.stop()
        self._server._server.server_close()  # refuse connections instead of hanging them


@dataclass
class S3:
    """A fresh bucket on the test server."""

    server: S3Server
    bucket: str
    options: dict[str, Any] = field(default_factory=dict)

    def url(self, name: str) -> str:
        """``s3://<bucket>/<name>``."""
        return f"s3://{self.bucket}/{name}"

    @property
    def flags(self) -> list[str]:
        """The options as ``--storage-option`` flags."""
        return [arg for key, value in self.options.items()
                for arg in ("--storage-option", f"{key}={value}")]

    @property
    def env(self) -> dict[str, str]:
        """This environment plus the standard variables that point s3fs at the server."""
        return {**os.environ, "AWS_ENDPOINT_URL": self.server.endpoint,
                "AWS_ACCESS_KEY_ID": CREDENTIALS["key"],
                "AWS_SECRET_ACCESS_KEY": CREDENTIALS["secret"],
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    @property
    def fs(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(**self.options, skip_instance_cache=True)

    def upload(self, local: Path, name: str) -> str:
        """Copy a local store into the bucket; -> its URL."""
        self.fs.put(str(local), f"{self.bucket}/{name}", recursive=True)
        return self.url(name)

    def download(self, name: str, local: Path) -> Path:
        """Copy ``name`` out of the bucket (to compare with local stores)."""
        shutil.rmtree(local, ignore_errors=True)
        self.fs.get(f"{self.bucket}/{name}", str(local), recursive=True)
        return local


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server: S3Server) -> S3:
    """A new, empty bucket; its options name the server and test credentials."""
    if s3_server._server is None or not s3_server._server._server_ready_event.is_set():
        s3_server.start()  # a test that stopped it and failed before restarting it
    bucket = S3(s3_server, f"bucket{next(_buckets)}",
                {"endpoint_url": s3_server.endpoint, **CREDENTIALS})
    bucket.fs.mkdir(bucket.bucket)
    return bucket
