"""Atomic file writes: a temporary name in the same folder, fsync, then one rename.

A reader sees either the old file or the complete new one, never a half-written file, whatever
kills the writer. Temporary names start with ``.tmp-`` and are unique, so concurrent writers of
the same file never share one; a failed write removes its temporary file or folder.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_PREFIX = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    # makes the rename itself durable; some filesystems cannot sync a folder, which is harmless
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yields a unique temporary path beside ``path`` to write to; on success it replaces ``path``.

    For writers that need a file name rather than bytes (Keras saving a ``.keras`` file, a zip
    appended to). The temporary name keeps ``path``'s suffix. On an exception the temporary file
    is removed and ``path`` is left as it was.

    Args:
        path: the file to write.
        durable: fsync the file and its folder, so the write survives a power loss; files rewritten
            many times a second that a crash may lose (progress) pass False and stay atomic.

    Yields:
        the temporary path, an existing empty file.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, durable: bool = True) -> None:
    """Writes ``data`` to ``path`` atomically (see :func:`atomic_path` for ``durable``).

    Raises:
        OSError: the file cannot be written; ``path`` is then left as it was.
    """
    with atomic_path(path, durable=durable) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> None:
    """Writes ``text`` to ``path`` atomically.

    Raises:
        OSError: the file cannot be written; ``path`` is then left as it was.
    """
    atomic_write_bytes(path, text.encode(encoding))


def write_json_atomic(path: str | Path, data, *, durable: bool = True) -> None:
    """Writes ``data`` as indented JSON to ``path`` atomically (see :func:`atomic_path` for ``durable``).

    Raises:
        TypeError: ``data`` is not JSON-serialisable; nothing is written.
        OSError: the file cannot be written; ``path`` is then left as it was.
    """
    atomic_write_bytes(path, json.dumps(data, indent=2).encode(), durable=durable)


def write_csv_atomic(path: str | Path, rows: list[dict]) -> None:
    """Writes rows of dicts as CSV to ``path`` atomically, with the union of their keys, in first-seen order, as header.

    Raises:
        OSError: the file cannot be written; ``path`` is then left as it was.
    """
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_json(path: str | Path, default=None):
    """Reads JSON, returning ``default`` when the file is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Removes the temporary files and folders that killed writers left directly in ``folder``.

    Only for a folder whose writer holds it alone (a run's trainer while it runs): a live writer's
    temporary file would go too. Returns what was removed.
    """
    removed = []
    for p in Path(folder).glob(TMP_PREFIX + "*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yields a unique temporary folder beside ``path``; on success it is renamed to ``path``.

    The files written into it are synced before the rename. On an exception the temporary folder
    is removed. A folder is never replaced once it exists: for content addressed by its name, as
    in a cache, whoever renamed first wins.

    Args:
        path: the folder to create.

    Yields:
        the temporary folder.

    Raises:
        FileExistsError: ``path`` was created by another writer meanwhile; the temporary folder is
            removed and ``path`` is left as that writer made it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=path.parent))
    try:
        yield tmp
        for f in tmp.iterdir():
            _fsync_file(f)
        try:
            os.rename(tmp, path)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise FileExistsError(errno.EEXIST, f"{path} was created by another writer") from exc
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)
