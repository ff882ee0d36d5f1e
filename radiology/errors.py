"""Exception types for what a user can cause. Pages catch these and show the message."""


class RadiologyError(Exception):
    """Base class of every error a user can cause and the app reports."""


class ImageDecodeError(RadiologyError):
    """A file or byte string that cannot be decoded into an X-ray image."""


class DatasetError(RadiologyError):
    """A dataset folder with an unusable layout or outside the data root."""


class ModelLoadError(RadiologyError):
    """A model file that is missing, unsafe or incompatible with this app."""


class TrainingBusyError(RadiologyError):
    """A training launch refused because another training is running."""


class EvaluationError(RadiologyError):
    """A dataset that cannot be evaluated with a model: an empty split, no readable image, unknown classes."""


class ResumeError(RadiologyError):
    """A run that cannot be resumed: still live, succeeded, or stopped before completing an epoch."""


class DistributeError(RadiologyError):
    """Distributed training that cannot run as set: the wrong backend, or a batch the devices do not divide."""
