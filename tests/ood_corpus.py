"""Images that are not frontal chest X-rays, made from what installed packages ship; nothing is downloaded.

Every item is an encoded file (PNG, JPEG or DICOM bytes), so the gate is tested through the same
decoding as an upload. Groups whose package is not installed are empty; scikit-image and matplotlib
are development requirements.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

MIN_DICOM_SIDE = 64  # pydicom's 16x16 and 3x3 fixtures would only test the size check


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def colour_photographs() -> list[tuple[str, bytes]]:
    """scikit-learn's two sample photographs, and the colour photographs bundled with scikit-image and matplotlib."""
    from sklearn.datasets import load_sample_images

    items = [(f"sklearn-{i}.jpg", _jpeg(Image.fromarray(a))) for i, a in enumerate(load_sample_images().images)]
    for path in _skimage_files("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"):
        items.append((f"skimage-{path.name}", path.read_bytes()))
    for path in _skimage_files("hubble_deep_field.jpg", "ihc.png", "retina.jpg", "color.png"):
        items.append((f"skimage-{path.name}", path.read_bytes()))
    for path in _matplotlib_files("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
        items.append((f"matplotlib-{path.name}", path.read_bytes()))
    return items


def gray_photographs() -> list[tuple[str, bytes]]:
    """Grayscale photographs: scikit-image's gray ones, and the colour photographs converted to gray."""
    items = []
    for path in _skimage_files(
        "camera.png", "moon.png", "coins.png", "brick.png", "grass.png", "gravel.png", "clock_motion.png", "cell.png"
    ):
        items.append((f"skimage-{path.name}", path.read_bytes()))
    for name, data in colour_photographs():
        gray = Image.open(io.BytesIO(data)).convert("L")
        items.append((f"gray-{name.rsplit('.', 1)[0]}.png", _png(np.asarray(gray))))
    return items


def other_modalities() -> dict[str, list[tuple[str, bytes]]]:
    """pydicom's bundled test files with CT, MR, ultrasound, nuclear medicine and secondary-capture images.

    Only files shipped in the wheel are read (never ``get_testdata_file``, which may download); files
    with identical pixels are kept once, and files under ``MIN_DICOM_SIDE`` pixels are left out.
    Mammography is not bundled. matplotlib's MR slice ``s1045.ima`` joins the MR group.
    """
    groups: dict[str, list[tuple[str, bytes]]] = {"CT": [], "MR": [], "US": [], "NM": [], "SC/OT": []}
    try:
        import pydicom
        import pydicom.data
    except ImportError:
        return groups
    seen = set()
    folder = Path(pydicom.data.__file__).parent / "test_files"
    for path in sorted(folder.rglob("*.dcm")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path)
                pixels = ds.pixel_array
            except Exception:  # pydicom fixtures include deliberately broken files
                continue
        modality = str(getattr(ds, "Modality", "") or "OT")
        group = {"OT": "SC/OT", "SEG": "CT"}.get(modality, modality)
        if group not in groups or min(int(ds.Rows), int(ds.Columns)) < MIN_DICOM_SIDE:
            continue
        digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
        if digest in seen or not _decodes(path):
            continue
        seen.add(digest)
        groups[group].append((f"pydicom-{path.name}", path.read_bytes()))
    for path in _matplotlib_files("s1045.ima.gz"):
        slice_ = np.frombuffer(gzip.decompress(path.read_bytes()), np.uint16).reshape(256, 256)
        groups["MR"].append(("matplotlib-s1045.png", _png((slice_ / max(int(slice_.max()), 1) * 255).astype(np.uint8))))
    return groups


def documents() -> list[tuple[str, bytes]]:
    """Rendered text pages, a table, a form and a dark-mode screenshot, plus scikit-image's scanned page and text."""
    rng = np.random.default_rng(0)
    words = "the patient was seen in clinic today report findings impression chest radiograph normal lungs".split()
    items = []
    for k, (size, fg, bg) in enumerate(
        [(14, 0, 255), (18, 0, 255), (11, 30, 245), (24, 0, 255), (16, 235, 30), (13, 60, 225)]
    ):
        page = Image.new("L", (850, 1100), bg)
        draw = ImageDraw.Draw(page)
        font = ImageFont.load_default(size=size)
        y = 60
        while y < 1040:
            line = " ".join(rng.choice(words, size=rng.integers(4, 12)))
            draw.text((60, y), line.capitalize() + ".", fill=fg, font=font)
            y += int(size * 1.6)
            if rng.random() < 0.1:
                y += size * 2  # paragraph
        if k == 2:  # a table
            for r in range(12):
                draw.line((60, 200 + r * 40, 790, 200 + r * 40), fill=fg, width=2)
            for c in range(5):
                draw.line((60 + c * 182, 200, 60 + c * 182, 640), fill=fg, width=2)
        if k == 5:  # a form with boxes
            for r in range(8):
                draw.rectangle((420, 120 + r * 110, 790, 170 + r * 110), outline=fg, width=3)
        items.append((f"document-{k}.png", _png(np.asarray(page))))
    for path in _skimage_files("page.png", "text.png"):
        items.append((f"skimage-{path.name}", path.read_bytes()))
    return items


def synthetic() -> dict[str, list[tuple[str, bytes]]]:
    """Gradients, noise and flat images at sizes a user might upload."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:512, 0:512] / 511.0
    gradients = {
        "horizontal": xx,
        "vertical": yy,
        "diagonal": (xx + yy) / 2,
        "radial": np.clip(np.hypot(xx - 0.5, yy - 0.5) * 1.4, 0, 1),
        "sine": (np.sin(xx * 12) + 1) / 2,
        "checkerboard": ((xx * 8).astype(int) + (yy * 8).astype(int)) % 2,
    }
    noise = {
        "uniform": rng.random((512, 512)),
        "gaussian": np.clip(rng.normal(0.5, 0.15, (400, 400)), 0, 1),
        "salt-pepper": (rng.random((300, 300)) > 0.5).astype(float),
        "uniform-large": rng.random((1024, 1024)),
        "gaussian-small": np.clip(rng.normal(0.5, 0.2, (224, 224)), 0, 1),
    }
    flat = {"black": 0.0, "white": 1.0, "gray": 0.5, "dark-gray": 0.2, "nearly-flat": None}
    out: dict[str, list[tuple[str, bytes]]] = {"gradients": [], "noise": [], "flat": []}
    for name, a in gradients.items():
        out["gradients"].append((f"gradient-{name}.png", _png((a * 255).astype(np.uint8))))
    for name, a in noise.items():
        out["noise"].append((f"noise-{name}.png", _png((a * 255).astype(np.uint8))))
    for name, v in flat.items():
        a = np.full((512, 512), v) if v is not None else 0.5 + rng.normal(0, 0.004, (512, 512))
        out["flat"].append((f"flat-{name}.png", _png((np.clip(a, 0, 1) * 255).astype(np.uint8))))
    return out


def xray_variants(xrays: list[tuple[str, np.ndarray]]) -> dict[str, list[tuple[str, bytes]]]:
    """Each X-ray rotated by 90 degrees, upside down, and as a tiny crop of its top-left corner (1/8 of each side).

    Args:
        xrays: (name, uint8 array of shape (H, W)) pairs.
    """
    out: dict[str, list[tuple[str, bytes]]] = {"xray rotated 90": [], "xray upside down": [], "xray corner crop": []}
    for name, gray in xrays:
        h, w = gray.shape
        out["xray rotated 90"].append((f"rot90-{name}.png", _png(np.rot90(gray).copy())))
        out["xray upside down"].append((f"flipud-{name}.png", _png(gray[::-1].copy())))
        out["xray corner crop"].append((f"corner-{name}.png", _png(gray[: max(h // 8, 1), : max(w // 8, 1)].copy())))
    return out


def corpus(xrays: list[tuple[str, np.ndarray]] = ()) -> dict[str, list[tuple[str, bytes]]]:
    """Every group of the corpus by name; empty groups are left out."""
    groups = {
        "colour photographs": colour_photographs(),
        "gray photographs": gray_photographs(),
        **{f"DICOM {k}": v for k, v in other_modalities().items()},
        "documents": documents(),
        **synthetic(),
        **xray_variants(list(xrays)),
    }
    return {k: v for k, v in groups.items() if v}


def _decodes(path: Path) -> bool:
    """Whether the app decodes the file at all; one it refuses never reaches the gate."""
    from radiology.errors import ImageDecodeError
    from radiology.images import decode_image

    try:
        decode_image(path)
    except ImageDecodeError:
        return False
    return True


def _skimage_files(*names: str) -> list[Path]:
    try:
        import skimage
    except ImportError:
        return []
    folder = Path(skimage.__file__).parent / "data"  # the images bundled in the wheel; others need pooch
    return [folder / n for n in names if (folder / n).is_file()]


def _matplotlib_files(*names: str) -> list[Path]:
    try:
        import matplotlib
    except ImportError:
        return []
    folder = Path(matplotlib.get_data_path()) / "sample_data"
    return [folder / n for n in names if (folder / n).is_file()]
