"""Small generated inputs for the tests: synthetic X-rays, encoded files, DICOMs and datasets."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("covid", "normal", "pneumonia")


def xray(seed: int = 0, size: tuple[int, int] = (96, 96), level: int = 100) -> np.ndarray:
    """A synthetic chest-X-ray-like uint8 image: two dark lung fields in a bright body, with noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.full(size, 200.0)
    for cx in (0.3, 0.7):
        lung = ((xx / w - cx) / 0.16) ** 2 + ((yy / h - 0.5) / 0.33) ** 2 < 1
        img[lung] = level
    img += rng.normal(0, 12, size)
    return np.clip(img, 0, 255).astype(np.uint8)


def png_bytes(array: np.ndarray, **save_kwargs) -> bytes:
    """Encodes an array as PNG."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **save_kwargs)
    return buf.getvalue()


def jpeg_bytes(image: Image.Image, **save_kwargs) -> bytes:
    """Encodes a Pillow image as JPEG."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **save_kwargs)
    return buf.getvalue()


def dicom_bytes(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    with_pixels: bool = True,
    patient_name: str = "Doe^Jane",
    modality: str | None = "CR",
    view_position: str | None = None,
) -> bytes:
    """Writes a minimal DICOM file (secondary capture, explicit VR little endian) with pydicom."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = patient_name
    ds.PatientID = "SECRET-123"
    if modality is not None:
        ds.Modality = modality
    if view_position is not None:
        ds.ViewPosition = view_position
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits = 16 if pixels.dtype == np.uint16 else 8
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept or 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if with_pixels:
        ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def make_dataset(root: Path, *, per_class: int = 10, size=(64, 64), splits: bool = False) -> Path:
    """Writes a small class-folders (or split-folders) dataset of synthetic PNGs whose classes differ in brightness."""
    for k, name in enumerate(CLASSES):
        folders = [root / s / name for s in ("train", "val", "test")] if splits else [root / name]
        for f in folders:
            f.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (f / f"{name}_{i}.png").write_bytes(
                    png_bytes(xray(seed=zlib.crc32(f"{f.name}{i}".encode()) + 97 * k, size=size, level=40 + 70 * k))
                )
    return root


# The original notebook's model, saved by Keras 2 (tf-keras): ``python -c KERAS2_NOTEBOOK PATH flat|nested``
# writes PATH and, beside it, two test inputs (PATH.x.npy) and Keras 2's probabilities for them (PATH.p.npy).
KERAS2_NOTEBOOK = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tf_keras as k2
flat = sys.argv[2] == "flat"
vgg = k2.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
for layer in vgg.layers[:-6]:
    layer.trainable = False
head = [k2.layers.GlobalMaxPooling2D(), k2.layers.Dense(512, activation="relu"), k2.layers.Dropout(0.5),
        k2.layers.Dense(3, activation="softmax")]
if flat:
    x = vgg.output
    for layer in head:
        x = layer(x)
    model = k2.Model(vgg.input, x)
else:
    model = k2.Sequential([vgg, *head])
model.compile(k2.optimizers.Adam(1e-4, amsgrad=True), "categorical_crossentropy")
model.save(sys.argv[1])
x = np.random.default_rng(0).integers(0, 256, (2, 224, 224)).astype("uint8")
np.save(sys.argv[1] + ".x.npy", x)
np.save(sys.argv[1] + ".p.npy", model.predict(np.repeat(x[..., None], 3, -1) / 255.0, verbose=0))
"""


def keras2_notebook_h5(path: Path, *, layout: str = "nested") -> Path:
    """Writes a genuine Keras 2 HDF5 model in the notebook's layout (VGG16 nested in a Sequential by default)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", KERAS2_NOTEBOOK, str(path), layout], check=True, timeout=300)
    return path


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def free_port() -> int:
    """A free TCP port on localhost."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, env: dict, *, log=None, timeout: float = 90):
    """Starts ``streamlit run streamlit_app.py`` on 127.0.0.1:``port`` and waits until it is healthy.

    Returns:
        the server process; the caller terminates it.

    Raises:
        RuntimeError: the server did not answer its health check in time.
    """
    import subprocess
    import sys
    import time
    import urllib.request

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "streamlit_app.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
        ],
        cwd=root,
        env=env,
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"streamlit did not answer on port {port} within {timeout:.0f} s")


# A model that reads only the top-left corner: each class is a checkerboard of another contrast there.
CORNER = 6  # the corner's side in pixels, inside the border strip that THORAX_BOX leaves on a 64-pixel image
CORNER_AMPLITUDE = (0, 30, 60)  # the checkerboard's amplitude per class


def corner_xray(label: int, seed: int = 0, size: int = 64) -> np.ndarray:
    """A smooth random film whose class is written only as a checkerboard's contrast in its top-left corner."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    img = 128 + 30 * gaussian_filter(rng.normal(0, 1, (size, size)), 4) / 0.07
    yy, xx = np.mgrid[0:CORNER, 0:CORNER]
    level = np.clip(img[:CORNER, :CORNER].mean(), 70, 185)  # room for the checkerboard on both sides
    img[:CORNER, :CORNER] = level + CORNER_AMPLITUDE[label] * np.where((yy + xx) % 2, 1, -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def corner_model(size: int = 64):
    """A Keras model that classifies by the checkerboard contrast in the top-left corner and ignores the rest.

    Its Grad-CAM layer ``conv`` detects a checkerboard everywhere; the head sees only the corner's cells.
    """
    import keras

    inp = keras.Input((size, size, 3))
    conv = keras.layers.Conv2D(2, 2, padding="same", activation="relu", name="conv")
    h = conv(inp)
    h = keras.layers.Cropping2D(((0, size - CORNER), (0, size - CORNER)))(h)
    h = keras.layers.GlobalMaxPooling2D(name="pool")(h)
    dense = keras.layers.Dense(3, activation="softmax", name="predictions")
    model = keras.Model(inp, dense(h))
    kernel = np.array([[1, -1], [-1, 1]], np.float32)[:, :, None] / 3  # the same on each of the 3 channels
    # the bias silences the faint response of a smooth background and of rounding to uint8
    conv.set_weights([np.stack([np.repeat(kernel, 3, 2), -np.repeat(kernel, 3, 2)], -1), np.full(2, -0.05, np.float32)])
    # logits -g (s - c_k)^2 without the common term, s the summed response, c_k each class's response
    centres = np.array([max(4 * a / 255 - 0.05, 0) for a in CORNER_AMPLITUDE]) * 2
    g = 10.0
    dense.set_weights([np.tile(2 * g * centres, (2, 1)).astype(np.float32), (-g * centres**2).astype(np.float32)])
    return model


def corner_loaded(size: int = 64):
    """The corner model with its metadata, as ``radiology.model.load_model`` would give it."""
    from radiology.model import LoadedModel, ModelMetadata
    from radiology.preprocess import PreprocessSpec

    spec = PreprocessSpec(height=size, width=size)
    return LoadedModel(corner_model(size), ModelMetadata(preprocess=spec, gradcam_layer="conv"), "corner.keras")


def corner_dataset(root: Path, *, per_class: int = 20, size: int = 64) -> Path:
    """A class-folders dataset of corner films with a manifest.csv: two sources, one patient per image."""
    rows = ["file,source,patient_id"]
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            seed = zlib.crc32(f"{name}{i}".encode())
            (root / name / f"{i}.png").write_bytes(png_bytes(corner_xray(k, seed, size)))
            rows.append(f"{name}/{i}.png,{'north' if i % 2 else 'south'},p-{name}-{i}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def corner_run(folder: Path, *, size: int = 64) -> Path:
    """A run folder holding the corner model, as an imported run that succeeded."""
    import json

    from radiology.model import save_model

    loaded = corner_loaded(size)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(loaded.model, folder / "model.keras", loaded.metadata)
    (folder / "status.json").write_text(json.dumps({"state": "succeeded", "kind": "imported"}))
    return folder
