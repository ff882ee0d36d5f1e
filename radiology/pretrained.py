"""VGG16's ImageNet weights: where Keras keeps them, whether they are there or can be fetched, and a copy
brought by hand.

Keras downloads ``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`` on first use into its cache,
``$KERAS_HOME/models/`` or ``~/.keras/models/``, and checks it against its MD5. Offline, a run that
starts from ImageNet fails deep inside Keras with a bare ``Exception`` ("URL fetch failure"); this module
lets the app and the command line say so before anything starts, and lets the user place the file where
Keras looks.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from radiology.errors import ModelLoadError
from radiology.fsutil import atomic_write_bytes

IMAGENET_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/vgg16/{IMAGENET_FILE}"
IMAGENET_MD5 = "6d6bbae143d832006294945121d1f1fc"  # the hash keras.applications.vgg16 checks the file against
PROBE_TIMEOUT_S = 3.0


def keras_home() -> Path:
    """Keras' own folder: ``$KERAS_HOME``, else ``~/.keras`` (``/tmp/.keras`` when the home folder is not writable)."""
    home = os.environ.get("KERAS_HOME")
    if home:
        return Path(home)
    user = os.path.expanduser("~")
    return Path(user if os.access(user, os.W_OK) else "/tmp") / ".keras"


def keras_cache_dir() -> Path:
    """The folder Keras downloads into, as ``keras.utils.get_file`` picks it: :func:`keras_home`, or
    ``/tmp/.keras`` when that folder is not writable (or missing; Keras makes it when it is imported)."""
    home = keras_home()
    return home if os.access(home, os.W_OK) else Path("/tmp") / ".keras"


def imagenet_path() -> Path:
    """Where Keras looks for the ImageNet weights file."""
    return keras_cache_dir() / "models" / IMAGENET_FILE


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def imagenet_cached() -> bool:
    """Whether the weights file is in the Keras cache and whole (Keras would download a file with another MD5 again)."""
    path = imagenet_path()
    try:
        return _md5(path) == IMAGENET_MD5
    except OSError:
        return False


def can_download(*, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the weights' download address answers now (a HEAD request of at most ``timeout`` seconds)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(IMAGENET_URL, method="HEAD"), timeout=timeout) as answer:
            return answer.status < 400
    except (urllib.error.URLError, OSError, ValueError):  # no network, no name resolution, refused, timed out
        return False


@dataclass(frozen=True)
class Availability:
    """Whether a run can start from the ImageNet weights here.

    Attributes:
        cached: the file is in the Keras cache.
        downloadable: its download address answers; None when not asked (the file is cached).
        path: where Keras looks for the file.
    """

    cached: bool
    downloadable: bool | None
    path: Path

    @property
    def usable(self) -> bool:
        """Whether a run starting from ImageNet gets its weights."""
        return self.cached or bool(self.downloadable)

    def message(self) -> str:
        """The state in one sentence; when unusable, the two ways out."""
        if self.cached:
            return f"The ImageNet weights are in the Keras cache ({self.path})."
        if self.downloadable:
            return (
                f"The ImageNet weights are not cached yet: Keras downloads them (about 59 MB) into {self.path.parent}."
            )
        return (
            f"The ImageNet weights are not in the Keras cache ({self.path}) and cannot be downloaded from "
            f"{IMAGENET_URL.split('/')[2]} (no network?). Train from scratch with weights none, or bring "
            f"{IMAGENET_FILE} from a machine that has it and upload it on the Training page, or copy it to "
            f"{self.path.parent}."
        )


def availability(*, timeout: float = PROBE_TIMEOUT_S) -> Availability:
    """Whether the ImageNet weights are cached, and, when they are not, whether they can be downloaded."""
    cached = imagenet_cached()
    return Availability(cached, None if cached else can_download(timeout=timeout), imagenet_path())


def require_weights(weights: str | None) -> None:
    """Checks, before a run or estimate starts, that its initial weights can be had.

    Only ``imagenet`` is checked here; a run folder or weights file is checked where it is loaded.

    Raises:
        ModelLoadError: ``weights`` is ``imagenet`` and the file is neither cached nor downloadable.
    """
    if weights != "imagenet":
        return
    found = availability()
    if not found.usable:
        raise ModelLoadError(found.message())


def install_imagenet(data: bytes) -> Path:
    """Saves a copy of the ImageNet weights file where Keras looks for it; returns the path.

    Raises:
        ModelLoadError: the bytes are not that file (their MD5 differs from the one Keras checks).
        OSError: the cache folder cannot be written.
    """
    digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if digest != IMAGENET_MD5:
        raise ModelLoadError(
            f"this is not {IMAGENET_FILE}: its MD5 is {digest}, and Keras expects {IMAGENET_MD5} "
            f"({len(data) / 1e6:.1f} MB uploaded; the file is about 59 MB)"
        )
    try:
        keras_home().mkdir(parents=True, exist_ok=True)  # as importing Keras does, so that Keras looks there too
    except OSError:
        pass  # then Keras looks in /tmp/.keras, and so does imagenet_path()
    path = imagenet_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


def fetch_imagenet() -> Path:
    """The ImageNet weights file in the Keras cache, downloaded first when it is missing.

    Raises:
        ModelLoadError: it is not cached and the download failed.
    """
    import keras

    try:
        return Path(keras.utils.get_file(IMAGENET_FILE, IMAGENET_URL, cache_subdir="models", file_hash=IMAGENET_MD5))
    except Exception as exc:  # Keras turns a failed download into a bare Exception ("URL fetch failure ...")
        found = Availability(False, False, imagenet_path())
        raise ModelLoadError(f"{found.message()} ({exc})") from exc
