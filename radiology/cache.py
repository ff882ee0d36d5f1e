"""The decode cache: every image of a dataset decoded once, resized, and kept as a uint8 array file.

The cache is keyed by the file list (paths, sizes, modification times) and the preprocessing spec,
so neither a second epoch nor a second run decodes again. Alongside the pixels it keeps what
validation needs: which files were unreadable and why, the original sizes, and content hashes.

Every other image size, and every change to one file, makes a new full entry (about 400 MB for 8,000
images at 224 px), so the cache is bounded by bytes on disk (``settings.cache_max_bytes``, 4 GiB by
default): after an entry is written, the least recently used entries are deleted until the cache fits.
Reading an entry marks it used. The in-memory ``radiology.lru`` cache does not fit here: these entries
live on disk, shared by processes, and are mapped into memory rather than held.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiology import settings
from radiology.errors import ImageDecodeError
from radiology.fsutil import atomic_folder
from radiology.images import decode_image, read_bytes
from radiology.preprocess import PreprocessSpec, resize

CACHE_VERSION = 2
HASH_BYTES = 32
ENTRY_NAME = re.compile(r"[0-9a-f]{24}")  # a cache_key(); other folders beside the entries are left alone


@dataclass
class DecodedImages:
    """Decoded, resized images of a list of files, in the order of that list.

    Attributes:
        paths: the files, as strings.
        pixels: uint8 array of shape (N, H, W); zeros where a file was unreadable.
        ok: bool array of shape (N,), False for unreadable files.
        errors: the decode error per unreadable file path.
        sizes: int array of shape (N, 2) with each original (height, width); zeros when unreadable.
        sha256: hex digest of each file's bytes.
        phash: uint8 array of shape (N, 32), the 256-bit perceptual hash of each image.
    """

    paths: list[str]
    pixels: np.ndarray
    ok: np.ndarray
    errors: dict[str, str]
    sizes: np.ndarray
    sha256: list[str]
    phash: np.ndarray

    def index(self) -> dict[str, int]:
        """Maps each path to its row."""
        return {p: i for i, p in enumerate(self.paths)}

    def readable(self, samples) -> tuple[list, np.ndarray]:
        """The readable ones of ``samples`` (``datasets.Sample``) and their pixels, uint8 array of shape (N, H, W)."""
        index = self.index()
        kept = [s for s in samples if self.ok[index[s.path]]]
        return kept, np.asarray(self.pixels[[index[s.path] for s in kept]])

    def arrays(self, samples, class_names) -> tuple[np.ndarray, np.ndarray]:
        """The readable samples whose label is one of ``class_names``, as model inputs and targets.

        Returns:
            uint8 array of shape (N, H, W) and their class indices, int32 array of shape (N,).
        """
        names = list(class_names)
        kept, pixels = self.readable([s for s in samples if s.label in names])
        return pixels, np.array([names.index(s.label) for s in kept], dtype=np.int32)


def perceptual_hash(gray: np.ndarray) -> np.ndarray:
    """A 256-bit perceptual hash: signs of the 16x16 lowest DCT frequencies of a 64x64 thumbnail.

    Chest X-rays all look alike at 8x8, so the common 64-bit hashes call unrelated films
    duplicates; 256 bits separate them (unrelated films of cxr3 differ in 40 or more bits) while
    re-encoding, resizing or a brightness shift changes a few bits.

    Args:
        gray: uint8 array of shape (H, W).

    Returns:
        uint8 array of shape (32,), the packed bits.
    """
    from PIL import Image
    from scipy.fft import dctn

    small = np.asarray(Image.fromarray(gray).resize((64, 64), Image.BILINEAR), dtype=np.float64)
    low = dctn(small, norm="ortho")[:16, :16].ravel()
    return np.packbits(low > np.median(low[1:]))


def _decode_one(path: str, spec: PreprocessSpec):
    try:
        data = read_bytes(path)
        gray = decode_image(data)
    except ImageDecodeError as exc:
        return None, str(exc), (0, 0), "", None
    sha = hashlib.sha256(data).hexdigest()
    return resize(gray, spec), None, gray.shape, sha, perceptual_hash(gray)


def decode_files(paths: list[str], spec: PreprocessSpec, *, workers: int | None = None, progress=None) -> DecodedImages:
    """Decodes and resizes files in worker threads; unreadable files are recorded, not fatal.

    Args:
        paths: the image files.
        spec: the preprocessing spec giving the size.
        workers: number of threads; defaults to the CPU count.
        progress: optional callable ``progress(done, total)``.

    Returns:
        the decoded images.
    """
    n = len(paths)
    pixels = np.zeros((n, spec.height, spec.width), dtype=np.uint8)
    ok = np.zeros(n, dtype=bool)
    sizes = np.zeros((n, 2), dtype=np.int64)
    phash = np.zeros((n, HASH_BYTES), dtype=np.uint8)
    sha: list[str] = [""] * n
    errors: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = pool.map(lambda p: _decode_one(p, spec), paths, chunksize=16)
        for i, (img, err, size, digest, h) in enumerate(results):
            if err is None:
                pixels[i], ok[i] = img, True
                sizes[i], phash[i] = size, h
            else:
                errors[paths[i]] = err
            sha[i] = digest
            if progress and (i % 64 == 0 or i == n - 1):
                progress(i + 1, n)
    return DecodedImages(list(paths), pixels, ok, errors, sizes, sha, phash)


def cache_key(paths: list[str], spec: PreprocessSpec) -> str:
    """A hash of the file list (with sizes and modification times) and the preprocessing spec."""
    h = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "spec": spec.to_dict()}, sort_keys=True).encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:24]


def load_or_decode(
    paths: list[str], spec: PreprocessSpec, cache_dir: str | Path | None, *, progress=None, max_bytes: int | None = None
) -> tuple[DecodedImages, bool]:
    """Returns the decoded images of ``paths``, from the cache when it holds them.

    Args:
        paths: the image files.
        spec: the preprocessing spec.
        cache_dir: folder of the cache, or None to decode without caching.
        progress: optional callable ``progress(done, total)`` while decoding.
        max_bytes: the most bytes the cache keeps after a new entry (default ``settings.cache_max_bytes()``).

    Returns:
        the decoded images in sorted path order (find a file's row with ``index()``), and whether they
        came from the cache.
    """
    paths = sorted(set(paths))  # one entry per file set, whatever the split order; look rows up by index()
    if cache_dir is None:
        return decode_files(paths, spec, progress=progress), False
    entry = Path(cache_dir) / cache_key(paths, spec)
    if (entry / "meta.json").is_file():
        try:
            decoded = _read_entry(entry, paths)
            _mark_used(entry)
            return decoded, True
        except (OSError, ValueError, KeyError):
            shutil.rmtree(entry, ignore_errors=True)  # a damaged entry is rebuilt, never trusted
    decoded = decode_files(paths, spec, progress=progress)
    _write_entry(entry, decoded)
    evict(Path(cache_dir), max_bytes=settings.cache_max_bytes() if max_bytes is None else max_bytes, keep=entry)
    return decoded, False


def _mark_used(entry: Path) -> None:
    try:
        os.utime(entry / "meta.json")
    except OSError:
        pass  # a read-only cache still serves; it just cannot order its entries


def _entry_bytes(entry: Path) -> int:
    return sum(f.stat().st_size for f in entry.iterdir() if f.is_file())


def evict(cache_dir: Path, *, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Deletes the least recently used entries until the cache holds at most ``max_bytes``.

    Args:
        cache_dir: the cache folder; only entry folders (named by :func:`cache_key`) are counted or deleted.
        max_bytes: the bound.
        keep: an entry that stays whatever its size (the one just written).

    Returns:
        the entries deleted, least recently used first.
    """
    entries = []
    for d in cache_dir.iterdir():
        try:
            if ENTRY_NAME.fullmatch(d.name) and d.is_dir():
                entries.append(((d / "meta.json").stat().st_mtime_ns, d, _entry_bytes(d)))
        except OSError:
            continue  # an entry another process deleted or is writing
    total = sum(size for _, _, size in entries)
    deleted = []
    for _, d, size in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if keep is not None and d == keep:
            continue
        shutil.rmtree(d, ignore_errors=True)  # a reader holding its pixels mapped keeps them until it closes
        total -= size
        deleted.append(d)
    return deleted


def _write_entry(entry: Path, d: DecodedImages) -> None:
    # a killed writer leaves only a .tmp- folder, never a half entry
    try:
        with atomic_folder(entry) as tmp:
            np.save(tmp / "pixels.npy", d.pixels)
            np.savez(tmp / "arrays.npz", ok=d.ok, sizes=d.sizes, phash=d.phash)
            meta = {"paths": d.paths, "errors": d.errors, "sha256": d.sha256}
            (tmp / "meta.json").write_text(json.dumps(meta))
    except FileExistsError:
        pass  # another process decoded the same files first; its entry holds the same content


def _read_entry(entry: Path, paths: list[str]) -> DecodedImages:
    meta = json.loads((entry / "meta.json").read_text())
    if meta["paths"] != list(paths):
        raise ValueError("cache entry lists other files")
    arrays = np.load(entry / "arrays.npz")
    pixels = np.load(entry / "pixels.npy", mmap_mode="r")
    return DecodedImages(
        meta["paths"], pixels, arrays["ok"], meta["errors"], arrays["sizes"], meta["sha256"], arrays["phash"]
    )
