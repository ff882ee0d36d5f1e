"""Tests for radiology.cache: decode once, then load from the cache without decoding."""

import numpy as np

import radiology.cache as cache
from radiology.preprocess import PreprocessSpec
from tests.factories import make_dataset


def test_second_load_comes_from_cache_without_decoding(tmp_path, monkeypatch):
    """The second call returns the same arrays from the cache and never calls the decoder."""
    make_dataset(tmp_path / "d", per_class=3)
    (tmp_path / "d" / "covid" / "bad.png").write_bytes(b"garbage")
    paths = sorted(str(p) for p in (tmp_path / "d").rglob("*.png"))
    spec = PreprocessSpec(height=32, width=32)
    first, cached = cache.load_or_decode(paths, spec, tmp_path / "cache")
    assert not cached and first.pixels.shape == (10, 32, 32)
    assert first.ok.sum() == 9 and "not an image" in next(iter(first.errors.values()))

    def boom(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache, "decode_image", boom)
    second, cached = cache.load_or_decode(paths, spec, tmp_path / "cache")
    assert cached and np.array_equal(np.asarray(second.pixels), first.pixels)
    assert second.errors == first.errors and np.array_equal(second.phash, first.phash)
    shuffled, cached = cache.load_or_decode(paths[::-1], spec, tmp_path / "cache")  # another split order
    assert cached and shuffled.index() == first.index()


def test_cache_key_changes_with_files_and_spec(tmp_path):
    """Touching a file or changing the spec changes the cache key."""
    make_dataset(tmp_path, per_class=1)
    paths = sorted(str(p) for p in tmp_path.rglob("*.png"))
    k = cache.cache_key(paths, PreprocessSpec())
    assert k != cache.cache_key(paths, PreprocessSpec(height=100))
    with open(paths[0], "ab") as fh:
        fh.write(b"\0")
    assert k != cache.cache_key(paths, PreprocessSpec())


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    """A cache entry with a broken meta file is decoded again, not trusted."""
    make_dataset(tmp_path / "d", per_class=1)
    paths = sorted(str(p) for p in (tmp_path / "d").rglob("*.png"))
    spec = PreprocessSpec(height=16, width=16)
    cache.load_or_decode(paths, spec, tmp_path / "c")
    (tmp_path / "c" / cache.cache_key(paths, spec) / "meta.json").write_text("{broken")
    decoded, cached = cache.load_or_decode(paths, spec, tmp_path / "c")
    assert not cached and decoded.ok.all()


def test_perceptual_hash_is_robust_to_small_changes():
    """The hash changes by few bits under a brightness shift and resizing, by many for another image."""
    from PIL import Image

    from tests.factories import xray

    def bits(a, b):
        return int(np.unpackbits(a ^ b).sum())

    img = xray(0, size=(128, 128))
    h = cache.perceptual_hash(img)
    brighter = np.clip(img.astype(int) + 10, 0, 255).astype(np.uint8)
    resized = np.asarray(Image.fromarray(img).resize((300, 300)))
    assert h.shape == (32,) and h.dtype == np.uint8
    assert bits(h, cache.perceptual_hash(brighter)) <= 8
    assert bits(h, cache.perceptual_hash(resized)) <= 8
    assert bits(h, cache.perceptual_hash(np.rot90(img).copy())) > 40


def test_second_writer_of_the_same_key_uses_the_first_entry(tmp_path, monkeypatch):
    """When another process writes the same entry between this one's decode and rename, this one uses it."""
    make_dataset(tmp_path / "d", per_class=2)
    paths = sorted(str(p) for p in (tmp_path / "d").rglob("*.png"))
    spec = PreprocessSpec(height=16, width=16)
    entry = tmp_path / "c" / cache.cache_key(paths, spec)
    real_decode = cache.decode_files

    def decode_then_lose_the_race(*a, **k):
        decoded = real_decode(*a, **k)
        cache._write_entry(entry, real_decode(*a, **k))  # the other process renames its entry first
        return decoded

    monkeypatch.setattr(cache, "decode_files", decode_then_lose_the_race)
    decoded, cached = cache.load_or_decode(paths, spec, tmp_path / "c")
    assert not cached and decoded.ok.all()
    assert [p.name for p in (tmp_path / "c").iterdir()] == [entry.name]  # no temporary folder left
    monkeypatch.setattr(cache, "decode_files", real_decode)
    again, cached = cache.load_or_decode(paths, spec, tmp_path / "c")
    assert cached and np.array_equal(np.asarray(again.pixels), decoded.pixels)


def test_cache_is_bounded_by_bytes_least_recently_used_first(tmp_path):
    """Past the byte bound, the entries used least recently are deleted; reading an entry marks it used; the
    entry just written stays even when it alone is over the bound; other folders are left alone."""
    import os

    make_dataset(tmp_path / "d", per_class=3)
    paths = sorted(str(p) for p in (tmp_path / "d").rglob("*.png"))
    root = tmp_path / "cache"
    (root / "compute").mkdir(parents=True)
    sizes = [32, 64, 96]
    for i, side in enumerate(sizes):
        cache.load_or_decode(paths, PreprocessSpec(height=side, width=side), root, max_bytes=10**9)
        entry = root / cache.cache_key(paths, PreprocessSpec(height=side, width=side))
        os.utime(entry / "meta.json", ns=(10**18 + i, 10**18 + i))  # written in this order
    entries = {side: root / cache.cache_key(paths, PreprocessSpec(height=side, width=side)) for side in sizes}
    cache.load_or_decode(paths, PreprocessSpec(height=32, width=32), root)  # 32 px is now the most recently used
    size = {side: sum(f.stat().st_size for f in e.iterdir()) for side, e in entries.items()}
    new = PreprocessSpec(height=128, width=128)
    cache.load_or_decode(paths, new, root, max_bytes=size[32] + 2 * size[96])  # 128 px needs less than 2x 96 px
    kept = {side for side, e in entries.items() if e.exists()}
    assert kept == {32} and (root / cache.cache_key(paths, new)).is_dir() and (root / "compute").is_dir()
    cache.load_or_decode(paths, PreprocessSpec(height=160, width=160), root, max_bytes=1)
    assert [d.name for d in root.iterdir() if d.name != "compute"] == [cache.cache_key(paths, PreprocessSpec(160, 160))]


def test_arrays_keep_readable_samples_of_known_classes_in_order(tmp_path):
    """arrays() gives the pixels and class indices of the readable samples whose label is known, in sample order."""
    from radiology.datasets import Sample

    make_dataset(tmp_path / "d", per_class=2)
    (tmp_path / "d" / "covid" / "bad.png").write_bytes(b"garbage")
    paths = sorted(str(p) for p in (tmp_path / "d").rglob("*.png"))
    decoded, _ = cache.load_or_decode(paths, PreprocessSpec(height=32, width=32), None)
    samples = [Sample(p, p.split("/")[-2]) for p in reversed(paths)]
    pixels, labels = decoded.arrays(samples, ("normal", "covid"))
    wanted = [s for s in samples if s.label in ("normal", "covid") and "bad" not in s.path]
    assert pixels.shape == (len(wanted), 32, 32) and pixels.dtype == np.uint8
    assert labels.dtype == np.int32 and list(labels) == [("normal", "covid").index(s.label) for s in wanted]
    index = decoded.index()
    assert np.array_equal(pixels[0], decoded.pixels[index[wanted[0].path]])
    kept, _ = decoded.readable(samples)
    assert len(kept) == len(samples) - 1
