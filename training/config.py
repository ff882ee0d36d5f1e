"""The frozen config of one training run: the only way parameters reach the training code."""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from radiology import settings
from radiology.datasets import DEFAULT_FRACTIONS, DEFAULT_SEED
from radiology.fsutil import write_json_atomic
from radiology.preprocess import PreprocessSpec

COMPUTE_CHOICES = ("auto", "float32", "xla")
AUGMENT_PLACES = ("auto", "model", "host")
DISTRIBUTE_CHOICES = ("auto", "off", "data")
# VGG16 without its top has 19 layers counting its input layer, as the notebook counts them (the input holds no
# weights, so 18 and 19 both train the whole network): the one range of trainable_layers, in the CLI and the page
TRAINABLE_LAYERS = (0, 19)
ALL_LAYERS_FROM = 18  # from this many on, every VGG16 layer with weights trains
TRAINABLE_LAYERS_WHY = (
    f"{TRAINABLE_LAYERS[0]} to {TRAINABLE_LAYERS[1]}: VGG16 has {TRAINABLE_LAYERS[1]} layers counting its input "
    f"layer, so {ALL_LAYERS_FROM} or {TRAINABLE_LAYERS[1]} trains all of them; from scratch (weights none) train "
    "all, since a frozen layer keeps its random weights"
)


@dataclass(frozen=True)
class TrainConfig:
    """Every parameter of a training run.

    Attributes:
        data: the dataset folder.
        epochs: number of epochs.
        batch_size: images per batch.
        lr: Adam learning rate (amsgrad, as in the notebook).
        trainable_layers: VGG16 layers left trainable, counted from the end (notebook: 6); 0 to 19. VGG16
            has 19 layers counting its input layer, so 18 or 19 trains all of them, which training from
            scratch (weights none) needs: a frozen layer keeps its random weights.
        weights: ``imagenet``, ``none`` or a path to a weights file or ``.keras`` model.
        seed: seed of the split, shuffling, augmentation and initialisation.
        augment: horizontal flip and rotation of up to 15 degrees while training.
        augment_on: ``model`` (Keras layers), ``host`` (loader threads) or ``auto``: host on the JAX
            backend, whose RandomRotation is the bottleneck of a step (bench/bench_augment.py), else model.
        workers: loader threads feeding batches.
        fractions: train/val/test fractions when the dataset has class folders only; they must sum to 1.
        class_weights: weight the loss by inverse class frequency.
        mixed_precision: allow bfloat16 compute; used only where the device supports it and a timing at the
            start of the run shows it faster (see ``compute``).
        image_size: input side in pixels, a multiple of 32 (notebook: 224); smaller trains faster and gives a
            coarser Grad-CAM (block5_conv3 is image_size / 16 cells across).
        compute: ``auto`` times float32 with and without XLA (and bfloat16 when ``mixed_precision``) on the
            real model and batch at the start of the run and keeps the fastest; ``float32`` or ``xla`` force one.
        lr_patience: epochs without val_loss improvement before ReduceLROnPlateau halves the rate.
        runs_dir: where run folders are created, stored resolved; when empty, the one runs folder of
            :func:`radiology.settings.runs_dir`, whatever the working directory.
        cache_dir: where decoded images are cached, stored resolved; ``<runs_dir>/.cache`` when empty.
        n_boot: bootstrap resamples for the test confidence intervals.
        distribute: ``data`` trains data-parallel with ``keras.distribution.DataParallel`` over every device of
            every process (JAX backend only); ``off`` on one device; ``auto`` is data when the JAX backend sees
            more than one device. The batch size is the global one, and must be a multiple of the devices.
    """

    data: str
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-4
    trainable_layers: int = 6
    weights: str = "imagenet"
    seed: int = DEFAULT_SEED
    augment: bool = True
    augment_on: str = "auto"
    workers: int = 1
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    class_weights: bool = False
    mixed_precision: bool = False
    image_size: int = 224
    compute: str = "auto"
    lr_patience: int = 2
    runs_dir: str = ""
    cache_dir: str = ""
    n_boot: int = 1000
    distribute: str = "auto"

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr}")
        low, high = TRAINABLE_LAYERS
        if not low <= self.trainable_layers <= high:
            raise ValueError(f"trainable_layers must be {TRAINABLE_LAYERS_WHY}; got {self.trainable_layers}")
        if self.augment_on not in AUGMENT_PLACES:
            raise ValueError(f"augment_on must be 'auto', 'model' or 'host', got {self.augment_on!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.image_size < 32 or self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 and at least 32, got {self.image_size}")
        if self.compute not in COMPUTE_CHOICES:
            raise ValueError(f"compute must be one of {', '.join(COMPUTE_CHOICES)}, got {self.compute!r}")
        if self.distribute not in DISTRIBUTE_CHOICES:
            raise ValueError(f"distribute must be one of {', '.join(DISTRIBUTE_CHOICES)}, got {self.distribute!r}")
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))
        # absolute, so the launched process, which runs in the project folder, finds the same folders
        runs = Path(self.runs_dir).resolve() if self.runs_dir else settings.runs_dir()
        object.__setattr__(self, "runs_dir", str(runs))
        if self.cache_dir:
            object.__setattr__(self, "cache_dir", str(Path(self.cache_dir).resolve()))

    def warnings(self) -> list[str]:
        """What in these settings wastes a run without being an error, in plain words (empty when nothing)."""
        found = []
        if self.weights in ("none", "None") and self.trainable_layers < ALL_LAYERS_FROM:
            frozen = ALL_LAYERS_FROM - self.trainable_layers
            found.append(
                f"Training from scratch (weights none) with {self.trainable_layers} trainable layers leaves the "
                f"first {frozen} of VGG16's {ALL_LAYERS_FROM} layers frozen at their random weights: the model "
                "learns little or nothing (the loss stays where it starts and every image gets the same class). "
                f"Set trainable layers to {TRAINABLE_LAYERS[1]}."
            )
        return found

    @property
    def augment_where(self) -> str | None:
        """Where augmentation runs: ``model``, ``host``, or None when it is off."""
        if not self.augment:
            return None
        if self.augment_on != "auto":
            return self.augment_on
        import keras

        return "host" if keras.backend.backend() == "jax" else "model"

    @property
    def spec(self) -> PreprocessSpec:
        """The preprocessing the model is trained with and carries: ``image_size`` square, RGB, 1/255."""
        return PreprocessSpec(height=self.image_size, width=self.image_size)

    @property
    def resolved_cache_dir(self) -> Path:
        """The cache folder actually used."""
        return Path(self.cache_dir) if self.cache_dir else Path(self.runs_dir) / ".cache"

    def to_dict(self) -> dict:
        """Returns the config as JSON-ready data."""
        d = asdict(self)
        d["fractions"] = list(self.fractions)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Builds a config from :meth:`to_dict` output; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**data)

    def save(self, path: str | Path, *, mesh: str | None = None) -> None:
        """Writes the config as JSON, with the run's mesh in words beside the fields when given.

        ``mesh`` (``training.distribute.Mesh.describe``) is what ``distribute`` resolved to on the run's
        devices, for the reader; :meth:`load` does not read it back.
        """
        write_json_atomic(path, {**self.to_dict(), **({"mesh": mesh} if mesh else {})})

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Reads a config written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        data.pop("mesh", None)
        return cls.from_dict(data)


# fields that take one of a few values
CHOICES = {"augment_on": AUGMENT_PLACES, "compute": COMPUTE_CHOICES, "distribute": DISTRIBUTE_CHOICES}
RANGES = {"trainable_layers": TRAINABLE_LAYERS}  # fields whose range the CLI and the page show


def defaults() -> dict:
    """Every field's default, by name (``data`` has none): the one source of the CLI's and the page's defaults."""
    return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


def field_help() -> dict[str, str]:
    """Each field's description, as plain text, from the ``Attributes`` section of :class:`TrainConfig`'s docstring."""
    text = TrainConfig.__doc__.split("Attributes:", 1)[1]
    found = re.findall(r"^        (\w+): (.*?)(?=^        \w+: |\Z)", text, flags=re.M | re.S)
    plain = {name: " ".join(body.split()) for name, body in found}
    # reStructuredText markup reads badly in --help and on the page
    return {name: re.sub(r":\w+:`([^`]*)`|``([^`]*)``", lambda m: m[1] or m[2], text) for name, text in plain.items()}
