"""Tests for the requirements files: the app's file covers every import and holds no test tool."""

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL = {"radiology", "training", "ui", "tests", "bench"}
# import name -> distribution name, where the two differ
OTHER_BACKENDS = {"jax", "torch"}
DISTRIBUTIONS = {
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "tf_keras_vis": "tf-keras-vis",
    "tf_keras": "tf-keras",
}
TEST_ONLY = {"pytest", "pytest-timeout", "playwright", "ruff", "tf-keras"}


def _requirements(name: str) -> tuple[set[str], list[str]]:
    """Distribution names and ``-r`` includes of one requirements file."""
    names, includes = set(), []
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r"):
            includes.append(line[2:].strip())
        elif line:
            names.add(re.split(r"[=<>!~;\[ ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names, includes


def _third_party_imports(paths: list[Path]) -> set[str]:
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name not in LOCAL}


def _distribution(module: str) -> str:
    return DISTRIBUTIONS.get(module, module).lower().replace("_", "-")


def _app_sources() -> list[Path]:
    return [
        *(ROOT / "radiology").rglob("*.py"),  # with the ood package
        *(ROOT / "training").glob("*.py"),
        *(ROOT / "pages").glob("*.py"),
        *(ROOT / "ui").glob("*.py"),
        ROOT / "streamlit_app.py",
    ]


def test_app_requirements_cover_every_import():
    """Every third-party module imported by radiology/, training/, pages/ and ui/ is in requirements.txt."""
    names, _ = _requirements("requirements.txt")
    # other Keras backends are imported only when a run uses them (jax comes with requirements-gpu.txt)
    imports = _third_party_imports(_app_sources()) - OTHER_BACKENDS
    assert {"scipy", "tensorflow", "keras", "pydicom"} <= imports
    missing = set()
    for module in imports:
        wanted = _distribution(module)
        # tensorflow-cpu provides the tensorflow module on Linux x86_64, tensorflow elsewhere
        if module == "tensorflow":
            if not {"tensorflow", "tensorflow-cpu"} <= names:
                missing.add(module)
        elif wanted not in names:
            missing.add(module)
    assert not missing, f"imported but not in requirements.txt: {sorted(missing)}"


def test_app_requirements_hold_no_test_tools():
    """requirements.txt installs no test or lint tool, and not tf-keras, which pulls in a second TensorFlow."""
    names, includes = _requirements("requirements.txt")
    assert not names & TEST_ONLY, f"test-only packages in requirements.txt: {sorted(names & TEST_ONLY)}"
    assert not includes


def test_dev_requirements_add_the_test_stack():
    """requirements-dev.txt includes the app's file and every package the tests import."""
    names, includes = _requirements("requirements-dev.txt")
    assert includes == ["requirements.txt"]
    app, _ = _requirements("requirements.txt")
    assert TEST_ONLY <= names
    imports = _third_party_imports(list((ROOT / "tests").glob("*.py")))
    missing = {m for m in imports if _distribution(m) not in names | app}
    assert not missing, f"imported by the tests but in neither requirements file: {sorted(missing)}"
