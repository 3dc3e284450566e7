"""Output folders that appear only when complete.

Exports take minutes and gigabytes; a crash, Ctrl-C or full disk half way must not leave a
folder that a loader could mistake for a package. Everything is written into a hidden
sibling folder on the same filesystem and renamed into place at the end.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError

GIB = 1024 ** 3


def check_output_path(output: Path, force: bool) -> None:
    """Refuse an existing output (unless force) or a parent that cannot hold it."""
    if output.exists() or output.is_symlink():
        if not force:
            raise OutputError(f"{output} already exists; pass --force to replace it")
        if not output.is_dir() or output.is_symlink():
            raise OutputError(f"{output} exists and is not a folder; refusing to replace it")
    parent = output.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot write {output}: {parent} is not a folder") from None
    except OSError as exc:
        raise OutputError(f"cannot write {output}: cannot create {parent}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {output}: no write permission in {parent}")


def check_free_space(folder: Path, needed_bytes: int, what: str) -> None:
    """Fail early, before any work, when the filesystem cannot take `needed_bytes`."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise OutputError(
            f"too little disk space for {what} in {folder}: about {needed_bytes / GIB:.2f} GiB "
            f"needed, {free / GIB:.2f} GiB free")


@contextmanager
def atomic_folder(output: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes `output` only if the block succeeds."""
    check_output_path(output, force)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    except OSError as exc:
        raise OutputError(f"cannot write {output}: {exc.strerror or exc}") from None
    try:
        yield staging
        # mkdtemp makes the folder private (0700); a finished package gets normal permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        replaced = None
        if output.exists():
            replaced = output.with_name(f".{output.name}.replaced-{os.getpid()}")
            os.rename(output, replaced)
        os.rename(staging, output)
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
