"""Output folders that appear only when complete.

Exports take minutes and gigabytes; a crash, Ctrl-C or full disk half way must not leave a
folder that a loader could mistake for a package. Everything is written into a hidden
sibling folder on the same filesystem and renamed into place at the end. An export that was
killed (SIGKILL, power loss) cannot clean up after itself: the next export of the same output
takes its lock and removes what was left (`.NAME.partial-*`, `.NAME.work-*`, `.NAME.replaced-*`).
"""
from __future__ import annotations

import fcntl
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


LEFTOVERS = ("partial", "work", "replaced")  # the hidden siblings an export of NAME makes


@contextmanager
def exclusive_output(output: Path) -> Iterator[None]:
    """Hold the lock of `output` for one export, after removing what a killed export of the
    same output left behind. A second export of it at the same time is refused."""
    lock_path = output.with_name(f".{output.name}.lock")
    try:
        lock = open(lock_path, "a")  # noqa: SIM115 - held open for the whole export
    except OSError as exc:
        raise OutputError(f"cannot write {output}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"another export is writing {output} now") from None
        for kind in LEFTOVERS:  # nobody else holds the lock: these are a dead export's
            for leftover in output.parent.glob(f".{output.name}.{kind}-*"):
                shutil.rmtree(leftover, ignore_errors=True)
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        lock.close()


def work_folder(output: Path) -> Path:
    """A scratch folder beside `output` (same filesystem), removed by the caller or, if the
    export dies, by the next export of `output`."""
    return Path(tempfile.mkdtemp(prefix=f".{output.name}.work-", dir=output.parent))


@contextmanager
def atomic_folder(output: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes `output` only if the block succeeds; the export
    holds `output`'s lock meanwhile (exclusive_output)."""
    check_output_path(output, force)
    with exclusive_output(output):
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
        except OSError as exc:
            raise OutputError(f"cannot write {output}: {exc.strerror or exc}") from None
        yield from _publish(staging, output)


def _publish(staging: Path, output: Path) -> Iterator[Path]:
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
