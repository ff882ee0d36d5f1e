"""Packs a stratified subset of a dataset as JPEG bytes in one .npz, small enough to carry to a GPU machine.

    python -m bench.pack_data --out .device/cxr3-pack.npz --per-class 1200 [--data ../shared/data/cxr3]

The images are re-encoded at quality 85 and 224 px; nothing derived from them is ever committed.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import CXR3


def pack(data: str, out: str, per_class: int, seed: int = 0) -> Path:
    """Writes ``out`` with arrays ``jpeg`` (object bytes), ``label`` and ``name``; returns its path."""
    from radiology.datasets import discover
    from radiology.images import decode_image
    from radiology.preprocess import PreprocessSpec, resize

    ds = discover(data)
    rng = np.random.default_rng(seed)
    blobs, labels, names = [], [], []
    for label in ds.class_names:
        samples = [s for s in ds.samples() if s.label == label]
        for i in rng.permutation(len(samples))[:per_class]:
            gray = resize(decode_image(samples[i].path), PreprocessSpec())
            buf = io.BytesIO()
            Image.fromarray(gray).save(buf, format="JPEG", quality=85)
            blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
            labels.append(label)
            names.append(Path(samples[i].path).name)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, jpeg=np.array(blobs, dtype=object), label=np.array(labels), name=np.array(names))
    return out


def unpack(packed: str, folder: str | Path) -> Path:
    """Writes the packed images as class folders of JPEG files under ``folder``; returns it."""
    folder = Path(folder)
    z = np.load(packed, allow_pickle=True)
    for blob, label, name in zip(z["jpeg"], z["label"], z["name"]):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        (folder / str(label) / str(name)).write_bytes(bytes(blob))
    return folder


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default=str(CXR3))
    p.add_argument("--out", required=True)
    p.add_argument("--per-class", type=int, default=1200)
    args = p.parse_args()
    path = pack(args.data, args.out, args.per_class)
    print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB")
