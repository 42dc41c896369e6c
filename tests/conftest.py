import os

import pytest
import torch

# Two pytest-xdist workers share two cores: one torch thread each avoids oversubscription (in the processes the
# tests start, too). fp32 wherever a precision is "auto", so the tests compute the same on every CPU; the tests of
# the choice itself fake the hardware and clear this.
torch.set_num_threads(1)
os.environ.setdefault("POLYMODAL_THREADS", "1")
os.environ.setdefault("POLYMODAL_PRECISION", "fp32")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN202
    """What polymodal caches between runs (fit's feature store, exports) goes to a temporary folder, not
    ~/.cache; a test that wants another sets its own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POLYMODAL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture
def fresh_fixed_samples():  # noqa: ANN201
    """The export's fixed samples made anew in this test, and forgotten after it (one that fakes a missing library
    must not leave "no sample" to the tests after it)."""
    from polymodal.export.towers import _built_sample

    _built_sample.cache_clear()
    yield
    _built_sample.cache_clear()


def _tiny(kind: str, factory: pytest.TempPathFactory):  # noqa: ANN202
    from tests.tiny_models import save_tiny_model

    return save_tiny_model(kind, factory.mktemp(kind) / "model")


@pytest.fixture(scope="session")
def tiny_dual_encoder_dir(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A saved, untrained 32 px shapes-clip DualEncoder with tokenizer and preprocessing."""
    return _tiny("dual_encoder", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_captioner_dir(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return _tiny("captioner", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_vqa_dir(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A saved classifying VQA model with answers.json (answers: tests.tiny_models.ANSWERS)."""
    return _tiny("vqa", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_diffusion_dir(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A saved, untrained 32 px text-to-image diffusion model (DiffusionGenerator)."""
    return _tiny("diffusion", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_gan_dir(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A saved, untrained 32 px conditional GAN (AdversarialGenerator)."""
    return _tiny("gan", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_diffusion(tiny_diffusion_dir):  # noqa: ANN001, ANN201
    """``polymodal.load`` of ``tiny_diffusion_dir`` (generation keeps no state, so tests share it)."""
    import polymodal

    return polymodal.load(tiny_diffusion_dir)


@pytest.fixture(scope="session")
def tiny_gan(tiny_gan_dir):  # noqa: ANN001, ANN201
    """``polymodal.load`` of ``tiny_gan_dir``."""
    import polymodal

    return polymodal.load(tiny_gan_dir)
