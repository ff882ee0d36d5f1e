"""Bring your own model: a ``.keras`` or Keras 2 HDF5 file registered as a run of kind ``imported``.

An import checks the bytes (a Keras zip or an HDF5 file, complete), loads them through the safe
path of :func:`radiology.model.load_model` (safe mode, Lambda layers refused, output count checked
against the class names), and saves the model with its metadata as the run's ``model.keras``, so
the class order travels with the weights like for a trained run. Everything is written into a
hidden staging folder in the runs folder that is renamed into place at the end: a refused or
failed import leaves no run folder behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from radiology import CLASS_NAMES
from radiology.errors import ModelLoadError
from radiology.fsutil import atomic_write_bytes, read_json, write_csv_atomic, write_json_atomic
from radiology.jobs import new_id, now
from radiology.model import METADATA_ENTRY, load_model, read_checkpoint_state, save_model
from radiology.registry import Run, load_run
from radiology.settings import runs_dir as default_runs_dir

IMPORT_FILE = "import.json"
KIND = "imported"
MAX_UPLOAD_MB = 300  # the notebook's best_model.h5: 60 MB, 168 MB with the optimizer state ModelCheckpoint keeps
ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
STAGING_PREFIX = ".import-"
STALE_STAGING_S = 3600


@dataclass(frozen=True)
class ModelFileInfo:
    """What a model file says about itself before it is loaded.

    Attributes:
        format: ``keras`` (a zip) or ``h5``.
        class_names: class names in output order: the file's own, or the notebook's when it has none.
        has_metadata: whether the file carries this app's metadata.
    """

    format: str
    class_names: tuple[str, ...]
    has_metadata: bool


def sniff_format(head: bytes, filename: str) -> str:
    """The model format from a file's first bytes: ``keras`` or ``h5``.

    Raises:
        ModelLoadError: the bytes are neither a Keras zip nor an HDF5 file.
    """
    if head.startswith(ZIP_MAGIC):
        return "keras"
    if head.startswith(HDF5_MAGIC):
        return "h5"
    raise ModelLoadError(
        f"{filename} is not a model file: expected a .keras file (a zip) or a Keras 2 HDF5 file (.h5), "
        f"but it starts with {head[:8]!r}"
    )


def _truncated(filename: str, size: int, exc: Exception) -> ModelLoadError:
    return ModelLoadError(f"{filename} is truncated or damaged ({size} bytes): {exc}")


def _read_metadata(fileobj, fmt: str, filename: str, size: int) -> dict | None:
    """This app's metadata from a complete model file, or None; checks that the file is whole."""
    if fmt == "keras":
        try:
            with zipfile.ZipFile(fileobj) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise zipfile.BadZipFile(f"entry {bad} fails its checksum")
                raw = zf.read(METADATA_ENTRY) if METADATA_ENTRY in zf.namelist() else None
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise _truncated(filename, size, exc) from exc
    else:
        import h5py

        try:
            with h5py.File(fileobj, "r") as f:
                raw = f.attrs.get(METADATA_ENTRY)
        except (OSError, ValueError) as exc:
            raise _truncated(filename, size, exc) from exc
    if raw is None:
        return None
    try:
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError as exc:
        raise ModelLoadError(f"{filename} carries unreadable metadata ({METADATA_ENTRY}): {exc}") from exc


def describe(data: bytes, filename: str) -> ModelFileInfo:
    """Reads a model file's format and class order from its bytes, in memory, without loading the model.

    Args:
        data: the file's bytes.
        filename: its name, for messages.

    Raises:
        ModelLoadError: not a model file, or a truncated one.
    """
    fmt = sniff_format(data[:8], filename)
    meta = _read_metadata(io.BytesIO(data), fmt, filename, len(data))
    names = tuple((meta or {}).get("class_names") or CLASS_NAMES)
    return ModelFileInfo(fmt, names, meta is not None)


def parse_class_order(text: str | Sequence[str]) -> tuple[str, ...]:
    """Class names in output order from ``"a,b,c"`` (or a sequence), stripped and lower-cased.

    Raises:
        ModelLoadError: a name is empty or repeated.
    """
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(p.strip().lower() for p in parts)
    if len(names) < 2 or not all(names):
        raise ModelLoadError(f"class order needs at least two non-empty names separated by commas, got {text!r}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ModelLoadError(f"class order names {', '.join(repeated)} more than once: {text!r}")
    return names


def _sweep_stale_staging(runs_dir: Path) -> None:
    """Removes staging folders left by an import that was killed, once they are an hour old."""
    for d in runs_dir.glob(f"{STAGING_PREFIX}*"):
        try:
            if d.is_dir() and time.time() - d.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            continue


def import_model(
    source: str | Path | bytes,
    *,
    filename: str | None = None,
    runs_dir: str | Path | None = None,
    name: str | None = None,
    class_names: str | Sequence[str] | None = None,
    max_bytes: int | None = MAX_UPLOAD_MB * 1024 * 1024,
) -> Run:
    """Registers a model file as a succeeded run of kind ``imported``.

    The run folder holds the original bytes (``source.keras`` or ``source.h5``), the model saved with
    its metadata (``model.keras``, carrying the class order), ``import.json`` (original file name,
    SHA-256, size, class order and where it came from, the warnings raised while loading),
    ``config.json`` (the training config the file carries, if any), ``history.csv`` when the file is a training
    checkpoint (``last.keras``) that carries its run's history, and ``status.json``.

    Args:
        source: a file path, or the file's bytes (an upload).
        filename: the original file name; required with bytes, the path's name by default.
        runs_dir: the runs folder; ``$RADIOLOGY_RUNS_DIR`` or ``runs`` by default.
        name: a short human name; the file's stem by default.
        class_names: class names in output order (a sequence or ``"a,b,c"``), replacing the file's own
            or the assumed notebook order.
        max_bytes: the largest file accepted, or None for no limit.

    Returns:
        the new run.

    Raises:
        ModelLoadError: the file is too large, not a model, truncated, unsafe (Lambda layers), or its
            output count does not match the class names. No run folder is left behind.
    """
    if isinstance(source, bytes):
        if not filename:
            raise ValueError("filename is required when importing bytes")
        data = source
    else:
        path = Path(source)
        filename = filename or path.name
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        if max_bytes is not None and path.stat().st_size > max_bytes:
            raise ModelLoadError(_too_large(filename, path.stat().st_size, max_bytes))
        data = path.read_bytes()
    if max_bytes is not None and len(data) > max_bytes:
        raise ModelLoadError(_too_large(filename, len(data), max_bytes))
    info = describe(data, filename)  # not a model, or truncated: refused before anything is written
    order = parse_class_order(class_names) if class_names is not None else None

    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    runs_dir.mkdir(parents=True, exist_ok=True)
    _sweep_stale_staging(runs_dir)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=runs_dir))
    try:
        source_path = staging / f"source.{info.format}"
        atomic_write_bytes(source_path, data)
        try:
            loaded = load_model(source_path, class_names=order)
        except ModelLoadError as exc:  # name the user's file, not the staged copy
            raise ModelLoadError(str(exc).replace(source_path.name, filename)) from exc
        meta = loaded.metadata
        meta.name = name or (meta.name if info.has_metadata and meta.name else Path(filename).stem)
        warnings = [w.replace(source_path.name, filename) for w in loaded.warnings]
        save_model(loaded.model, staging / "model.keras", meta, weights_dtype=meta.weights_dtype)
        checkpoint = _checkpoint_state(source_path) if info.format == "keras" else {}
        if checkpoint.get("history"):  # a training checkpoint (last.keras) says how far its run had gone
            write_csv_atomic(staging / "history.csv", checkpoint["history"])
        stamp = now()
        record = {
            "kind": KIND,
            "name": meta.name,
            "source_file": filename,
            "format": info.format,
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_bytes": len(data),
            "imported": stamp,
            "class_names": list(meta.class_names),
            "class_order": _order_origin(info, order),
            "gradcam_layer": meta.gradcam_layer,
            "checkpoint_epoch": checkpoint.get("epoch"),
            "warnings": warnings,
        }
        write_json_atomic(staging / IMPORT_FILE, record)
        write_json_atomic(staging / "config.json", meta.train_config)
        write_json_atomic(
            staging / "status.json",
            {"state": "succeeded", "kind": KIND, "pid": None, "started": stamp, "ended": stamp, "updated": stamp},
        )
        run_dir = runs_dir / new_id()
        os.rename(staging, run_dir)  # the run appears whole or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_run(run_dir)


def _checkpoint_state(path: Path) -> dict:
    """The training state a ``.keras`` training checkpoint carries (epoch, history…), or {} for a plain model."""
    try:
        return read_checkpoint_state(path)
    except ModelLoadError:
        return {}


def _too_large(filename: str, size: int, max_bytes: int) -> str:
    return f"{filename} is {size / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB limit for model files"


def _order_origin(info: ModelFileInfo, order: tuple[str, ...] | None) -> str:
    if order is not None:
        return "set on import"
    return "from the file's metadata" if info.has_metadata else "assumed: the notebook's alphabetical order"


def import_record(run: Run) -> dict | None:
    """The import record (``import.json``) of an imported run, or None for a trained run."""
    return read_json(run.dir / IMPORT_FILE)
