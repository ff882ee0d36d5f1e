"""The input checks: cheap heuristics on the decoded image and its DICOM header, before the model."""

from __future__ import annotations

import numpy as np
from PIL import Image

from radiology.images import DicomHeader

MIN_SIDE = 100  # below this a film keeps no readable anatomy; cxr3's shorter side is 224
MAX_ASPECT = 2.5  # chest films are near square: cxr3 is within 2.3:1
MAX_COLOURFULNESS = 15.0  # Hasler-Süsstrunk: below 15 is "not colourful"; a grayscale radiograph is 0
MIN_SPREAD = 6.0  # gray-level standard deviation of the model-size image; cxr3 at least 13
MAX_BLANK = 0.45  # share of pixels within +-2 levels of the most common one (a page); above it: 0.1% of cxr3
MAX_ROUGHNESS = 0.6  # mean neighbour difference over the spread: ~1 for white noise, cxr3 at most 0.33
DETAIL_SIDE = 32
MIN_DETAIL = 0.08  # mean |Laplacian| over the spread at 32x32: smooth gradients 0-0.03, cxr3 at least 0.11
XRAY_MODALITIES = ("CR", "DX", "DR")  # computed and digital radiography ("DR" is not standard but is written)
LATERAL_VIEWS = ("LL", "RL", "LAT", "LATERAL")  # DICOM ViewPosition values of a side view


def header_reason(header: DicomHeader | None) -> str | None:
    """Why a DICOM header rules out a frontal chest X-ray: another modality, or a lateral view.

    Args:
        header: the file's header (``images.dicom_header``); None for a file that is not DICOM.

    Returns:
        the reason, such as "DICOM header says CT", or None when the header allows a frontal radiograph
        (a missing Modality or ViewPosition allows it).
    """
    if header is None:
        return None
    if header.modality is not None and header.modality not in XRAY_MODALITIES:
        return f"DICOM header says {header.modality}, not a radiograph ({'/'.join(XRAY_MODALITIES)})"
    if header.view_position in LATERAL_VIEWS:
        return f"DICOM header says view position {header.view_position}: a lateral view, not a frontal one"
    return None


def input_reason(
    shape: tuple[int, int],
    small: np.ndarray,
    *,
    colourfulness: float | None = None,
    header: DicomHeader | None = None,
) -> str | None:
    """The cheap checks on a decoded image, run before the model.

    Args:
        shape: (H, W) of the decoded image.
        small: uint8 array of shape (h, w), the image at the model's input size.
        colourfulness: of the decoded colour image (``images.decode_with_colour``); None when unknown.
        header: the DICOM header of the file (``images.dicom_header``); None when not DICOM or unknown.

    Returns:
        why the image is not a chest X-ray, or None when it passes.
    """
    told = header_reason(header)
    if told is not None:
        return told
    h, w = shape
    if min(h, w) < MIN_SIDE:
        return f"too small: {w}x{h} pixels, a chest film has at least {MIN_SIDE} on each side"
    aspect = max(h, w) / min(h, w)
    if aspect > MAX_ASPECT:
        return f"aspect ratio {aspect:.1f}:1, chest films are within {MAX_ASPECT:g}:1"
    if colourfulness is not None and colourfulness > MAX_COLOURFULNESS:
        return (
            f"colour image: colourfulness {colourfulness:.0f}, radiographs are grayscale, below {MAX_COLOURFULNESS:g}"
        )
    pixels = np.asarray(small, dtype=np.float32)
    spread = float(pixels.std())
    if spread < 0.5:
        return f"constant: gray-level spread {spread:.1f} of 255"
    # noise first: resizing averages white noise down to a small spread, but it stays rough
    roughness = float((np.abs(np.diff(pixels, axis=0)).mean() + np.abs(np.diff(pixels, axis=1)).mean()) / 2 / spread)
    if roughness > MAX_ROUGHNESS:
        return f"looks like noise: neighbouring pixels differ by {roughness:.2f}x the spread"
    if spread < MIN_SPREAD:
        return f"nearly constant: gray-level spread {spread:.1f} of 255"
    detail = _detail(small)
    if detail < MIN_DETAIL:
        return f"too smooth, like a gradient: fine detail {detail:.2f}, chest films have at least {MIN_DETAIL:g}"
    counts = np.bincount(np.asarray(small, dtype=np.uint8).ravel(), minlength=256)
    mode = int(counts.argmax())
    blank = counts[max(0, mode - 2) : mode + 3].sum() / small.size
    if blank > MAX_BLANK:
        return f"mostly blank: {blank:.0%} of the pixels have one gray level"
    return None


def _detail(small: np.ndarray) -> float:
    """Mean absolute Laplacian over the gray-level spread of a 32x32 thumbnail: ~0 for a smooth gradient."""
    t = np.asarray(Image.fromarray(np.asarray(small, np.uint8)).resize((DETAIL_SIDE,) * 2, Image.BOX), np.float32)
    laplacian = 4 * t[1:-1, 1:-1] - t[:-2, 1:-1] - t[2:, 1:-1] - t[1:-1, :-2] - t[1:-1, 2:]
    return float(np.abs(laplacian).mean() / max(float(t.std()), 1e-3))
