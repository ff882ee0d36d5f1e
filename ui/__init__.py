"""App-side glue that needs Streamlit: settings, cached loaders and widgets shared by the pages.

The pages import this package; the library (``radiology``, ``training``) never imports Streamlit.

The package has one module per concept: ``navigation`` (the pages and their header), ``models`` (the model
cache: cached loaders, explanations, file views), ``datasets`` (dataset widgets), ``imports`` (the model
import panel), ``forms`` (widget values that last the session), ``weights`` (the ImageNet weights panel),
``gate`` (the out-of-distribution gate panel and its background fit) and ``trust`` (a trust audit shown on
the Evaluation page). Everything the pages use is
re-exported here, so a page reads ``ui.X``.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

from radiology.settings import data_root, runs_dir  # noqa: E402  (the pages' settings)
from ui.datasets import (  # noqa: E402
    dataset_key,
    dataset_overlap,
    dataset_picker,
    dataset_report,
    report_image_size,
    run_data_root,
    show_validation,
    source_report,
)
from ui.forms import remembered  # noqa: E402
from ui.gate import gate_panel  # noqa: E402
from ui.imports import import_messages, import_model_panel  # noqa: E402
from ui.models import (  # noqa: E402
    DISPLAY_SIDE,
    SESSION_CACHE_AGE_S,
    SESSION_CACHE_BYTES,
    RunModel,
    _file_view,
    _load,
    active_model,
    cached_device,
    cached_device_count,
    explain_cached,
    file_view,
    file_view_plain,
    load_run_model,
    thumbnail_uri,
    upload_thumbnail,
)
from ui.navigation import PAGES, navigation, page_header  # noqa: E402
from ui.trust import show_audit  # noqa: E402
from ui.weights import imagenet_panel  # noqa: E402

__all__ = [
    "DISPLAY_SIDE",
    "PAGES",
    "SESSION_CACHE_AGE_S",
    "SESSION_CACHE_BYTES",
    "RunModel",
    "_file_view",
    "_load",
    "active_model",
    "cached_device",
    "cached_device_count",
    "data_root",
    "dataset_key",
    "dataset_overlap",
    "dataset_picker",
    "dataset_report",
    "report_image_size",
    "explain_cached",
    "file_view",
    "file_view_plain",
    "gate_panel",
    "imagenet_panel",
    "import_messages",
    "import_model_panel",
    "load_run_model",
    "navigation",
    "page_header",
    "remembered",
    "run_data_root",
    "runs_dir",
    "show_audit",
    "show_validation",
    "source_report",
    "thumbnail_uri",
    "upload_thumbnail",
]
