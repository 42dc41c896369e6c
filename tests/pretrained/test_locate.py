"""Missing pretrained packages give an error that says how to install them."""

from __future__ import annotations

import importlib.util

import pytest

from polymodal.pretrained import locate


@pytest.fixture
def nothing_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    hidden = {locate.EFFICIENTNET_PACKAGE, locate.MINILM_PACKAGE}
    monkeypatch.setattr(locate.importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))


def _loaders():  # type: ignore[no-untyped-def]
    from polymodal.backends.conse import ConSEBackend
    from polymodal.pretrained.imagenet import load_efficientnet_lite0
    from polymodal.pretrained.minilm import MiniLM

    return {
        "efficientnet": (load_efficientnet_lite0, locate.EFFICIENTNET_PACKAGE),
        "minilm": (MiniLM.load, locate.MINILM_PACKAGE),
        "conse": (ConSEBackend.load, locate.EFFICIENTNET_PACKAGE),
    }


@pytest.mark.parametrize("which", ["efficientnet", "minilm", "conse"])
def test_missing_package_names_the_extra(nothing_installed, which):
    load, package = _loaders()[which]
    with pytest.raises(locate.PretrainedNotInstalled) as err:
        load()
    assert "pip install 'polymodal[pretrained]'" in str(err.value)
    assert package in str(err.value)
    assert isinstance(err.value, ImportError)


def test_incomplete_package_names_the_missing_file(monkeypatch, tmp_path):
    monkeypatch.setattr(locate, "find_package_dir", lambda package: tmp_path)
    with pytest.raises(locate.PretrainedNotInstalled, match="efficientnet-lite0-57934424.pth.*reinstall"):
        locate.efficientnet_lite0_weights()
