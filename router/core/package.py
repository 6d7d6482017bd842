"""A function's deployment package: its code directory as a deterministic zip, the zip's CodeSha256, and
the zip extracted once into a local cache directory named by that hash.

Deterministic: the same files give the same bytes, so the same hash. Entries are the regular files under
the directory (symlinks followed), sorted by path, each with the fixed date 1980-01-01 00:00:00 and mode
0755 when executable else 0644, deflated at level 6; ``__pycache__`` directories and ``*.pyc`` files are
left out (running ``$LATEST`` writes them into the code directory, which must not make a new version).
``CodeSha256`` is as Lambda reports it: the base64 SHA-256 of the zip's bytes.

Blocking (reads and writes files): call these through ``asyncio.to_thread``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

from router.errors import VersionError

MAX_ZIP = 50 * 1024 * 1024
"""Largest zipped package kept (Lambda's 50 MB for a zip uploaded directly)."""
MAX_UNZIPPED = 250 * 1024 * 1024
"""Largest unzipped package (Lambda's 250 MB)."""
_DATE = (1980, 1, 1, 0, 0, 0)
_SKIP_DIRS = {"__pycache__"}


def code_sha256(data: bytes) -> str:
    """Lambda's CodeSha256: base64 of the SHA-256 of the package bytes."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def zip_directory(root: Path, where: str) -> bytes:
    """The deterministic zip of ``root``; ``where`` names it in errors (e.g. ``function 'resize'``)."""
    if not root.is_dir():
        raise VersionError(f"{where}: code directory does not exist, got {str(root)!r}; check its code:")
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in filenames:
            if name.endswith(".pyc"):
                continue
            path = Path(dirpath) / name
            if path.is_file():
                files.append((path.relative_to(root).as_posix(), path))
    files.sort()
    buffer = io.BytesIO()
    unzipped = 0
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for arcname, path in files:
            data = path.read_bytes()
            unzipped += len(data)
            if unzipped > MAX_UNZIPPED:
                raise VersionError(f"{where}: the code directory {str(root)!r} holds more than "
                                   f"{MAX_UNZIPPED // 2**20} MB (Lambda's unzipped limit); make it smaller")
            info = zipfile.ZipInfo(arcname, date_time=_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            executable = path.stat().st_mode & stat.S_IXUSR
            info.external_attr = ((0o100755 if executable else 0o100644) & 0xFFFF) << 16
            archive.writestr(info, data, compresslevel=6)
            if buffer.tell() > MAX_ZIP:
                break
    data = buffer.getvalue()
    if len(data) > MAX_ZIP:
        raise VersionError(f"{where}: the zipped code of {str(root)!r} is over {MAX_ZIP // 2**20} MB "
                           "(Lambda's limit for a zip uploaded directly); make the code directory smaller")
    return data


def cache_root() -> Path:
    """Where packages are extracted: ``$ROUTER_VERSIONS_CACHE``, else a directory of this user's in the
    system temporary directory."""
    configured = os.environ.get("ROUTER_VERSIONS_CACHE")
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"router-versions-{os.getuid()}"


def _check_private(root: Path, where: str) -> None:
    """The cache must be this user's and writable by no one else: code found there is run as it is."""
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise VersionError(
            f"{where}: the versions cache {str(root)!r} is not a directory of this user's that only it can "
            "write (code found there would be run); remove it, or set ROUTER_VERSIONS_CACHE to a private "
            "directory")


def extract(data: bytes, sha256: str, root: Path, where: str) -> Path:
    """``data`` extracted into ``root/<hex of the hash>`` (once: an existing one is reused). The bytes
    are checked against ``sha256`` first."""
    if code_sha256(data) != sha256:
        raise VersionError(f"{where}: the stored code does not match its CodeSha256 {sha256}; publish a "
                           "new version")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(root, where)
    target = root / hashlib.sha256(data).hexdigest()
    if target.is_dir():
        return target
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                dest = (staging / info.filename).resolve()
                if not dest.is_relative_to(staging.resolve()):
                    raise VersionError(f"{where}: the stored code holds a path outside its directory: "
                                       f"{info.filename!r}")
                archive.extract(info, staging)
                mode = (info.external_attr >> 16) & 0o777
                if mode:
                    os.chmod(dest, mode)
        staging.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:  # another extraction of the same hash won the race: theirs is the same
            if not target.is_dir():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
