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
