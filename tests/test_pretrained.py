"""Tests of radiology.pretrained: where the ImageNet weights are looked for, whether they can be had, a copy saved."""

import hashlib
import urllib.error

import pytest

from radiology import pretrained
from radiology.errors import ModelLoadError

FAKE = b"not really the VGG16 weights, but their stand-in with a known MD5"


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras home, a machine without network, and the stand-in file's MD5 as the one Keras expects."""
    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(pretrained, "can_download", lambda **_: False)
    monkeypatch.setattr(pretrained, "IMAGENET_MD5", hashlib.md5(FAKE).hexdigest())
    return home


def test_the_weights_are_looked_for_in_the_keras_home(keras_home):
    """The file is looked for in $KERAS_HOME/models, where keras.utils.get_file puts it."""
    assert pretrained.imagenet_path() == keras_home / "models" / pretrained.IMAGENET_FILE


def test_offline_without_the_file_says_so_and_names_both_ways_out(keras_home):
    """Neither cached nor downloadable: not usable, and the message names the file, where it goes, weights none
    and the upload."""
    found = pretrained.availability()
    assert (found.cached, found.downloadable, found.usable) == (False, False, False)
    message = found.message()
    assert "not in the Keras cache" in message and "cannot be downloaded" in message
    assert "weights none" in message and "upload it on the Training page" in message
    assert str(keras_home / "models") in message and pretrained.IMAGENET_FILE in message
    with pytest.raises(ModelLoadError, match="cannot be downloaded"):
        pretrained.require_weights("imagenet")
    pretrained.require_weights("none")  # nothing to fetch


def test_an_uploaded_copy_is_checked_and_saved_where_keras_looks(keras_home):
    """Bytes with another MD5 are refused, naming both hashes; the right file is saved where Keras looks, and
    counts as cached from then on."""
    with pytest.raises(
        ModelLoadError, match=r"this is not vgg16_weights_tf_dim_ordering_tf_kernels_notop\.h5: its MD5"
    ):
        pretrained.install_imagenet(b"something else")
    assert not pretrained.imagenet_path().exists()
    path = pretrained.install_imagenet(FAKE)
    assert path == keras_home / "models" / pretrained.IMAGENET_FILE and path.read_bytes() == FAKE
    found = pretrained.availability()
    assert found.cached and found.usable and "are in the Keras cache" in found.message()
    pretrained.require_weights("imagenet")


def test_no_network_reads_as_not_downloadable(monkeypatch):
    """A failing name resolution or connection reads as False, not an exception."""

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(pretrained.urllib.request, "urlopen", offline)
    assert pretrained.can_download(timeout=0.1) is False


def test_a_failed_download_is_a_model_load_error_not_kerass_bare_exception(keras_home, monkeypatch):
    """Keras turns a failed download into a bare Exception ("URL fetch failure"); building the model from
    ImageNet raises a ModelLoadError that says what to do instead."""
    import keras

    from radiology.model import build_model

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -2]")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(ModelLoadError, match="weights none") as caught:
        build_model(weights="imagenet")
    assert "URL fetch failure" in str(caught.value)


def test_launch_and_estimate_refuse_offline_imagenet_before_anything_starts(keras_home, tmp_path):
    """Launch and estimate from ImageNet, offline and without the file, raise the clear message and leave no
    run folder and no estimate record."""
    from training import launch
    from training.config import TrainConfig
    from training.estimate import estimate_path

    config = TrainConfig(data=str(tmp_path / "data"), runs_dir=str(tmp_path / "runs"))
    with pytest.raises(ModelLoadError, match="Train from scratch with weights none"):
        launch.launch(config)
    with pytest.raises(ModelLoadError, match="Train from scratch with weights none"):
        launch.estimate(config)
    assert not (tmp_path / "runs").exists() or not [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert not estimate_path(config).exists()


def test_training_cli_refuses_offline_imagenet_in_one_error_line(keras_home, tmp_path, capsys):
    """python -m training from ImageNet, offline and without the file, prints one 'error:' line and exits 1
    before making a run folder."""
    from tests.factories import make_dataset
    from training.__main__ import main

    data = make_dataset(tmp_path / "data", per_class=3)
    assert main(["--data", str(data), "--runs-dir", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: The ImageNet weights are not in the Keras cache") and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()
