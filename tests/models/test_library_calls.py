"""Calls a hand-written training loop makes: build_model from a plain dict, and the generate methods' explicit
options (a wrong name fails at the call, every option reaches the decoding function)."""

from __future__ import annotations

import inspect

import pytest
import torch

from polymodal.config import ConfigError
from polymodal.models import Captioner, EmbeddingModel, QuestionAnswerer, build_model, parse_model_config
from polymodal.modules.heads import generation
from tests.models.test_models import CONFIGS, inputs


def test_build_model_takes_a_plain_mapping_and_validates_it() -> None:
    from_dict = build_model(CONFIGS["embedding"])
    assert isinstance(from_dict, EmbeddingModel) and from_dict.config == parse_model_config(CONFIGS["embedding"])
    config = parse_model_config(CONFIGS["embedding"])
    assert build_model(config).config is config  # a validated config is used as it is
    with pytest.raises(ConfigError, match="embedding.embed_dm: unknown key"):
        build_model({**CONFIGS["embedding"], "embed_dm": 8})
    with pytest.raises(ConfigError, match="model config needs a 'kind'"):
        build_model({"encoders": CONFIGS["embedding"]["encoders"]})


# The options generation.generate takes besides what the model supplies (decoder, memory, memory_mask).
OPTIONS = {
    name: p.default
    for name, p in inspect.signature(generation.generate).parameters.items()
    if name not in ("decoder", "memory", "memory_mask")
}


@pytest.mark.parametrize("method", [Captioner.generate, QuestionAnswerer.generate])
def test_generate_names_every_option_of_the_decoding_function(method) -> None:  # noqa: ANN001
    params = inspect.signature(method).parameters
    keyword_only = {name: p.default for name, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert keyword_only == OPTIONS
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())


@pytest.mark.parametrize("kind", ["captioner", "question_answering_generate"])
def test_generate_forwards_its_options_and_refuses_unknown_ones(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model(CONFIGS[kind]).eval()
    images, ids, mask = inputs()
    batch = {"image": (images, None), "text": (ids, mask)}
    with pytest.raises(TypeError, match="generate\\(\\) got an unexpected keyword argument 'max_length'"):
        model.generate(batch, max_length=5)  # HF's name: refused at the call, not inside the decoding function

    seen: dict[str, object] = {}

    def spy(decoder, memory, memory_mask=None, **options):  # noqa: ANN001, ANN003, ANN202
        seen.update(options)
        return torch.zeros(memory.shape[0], 1, dtype=torch.long), torch.zeros(memory.shape[0])

    monkeypatch.setattr(type(model).__module__ + ".generate", spy)
    chosen = {
        "strategy": "sample",
        "max_new_tokens": 3,
        "num_beams": 2,
        "length_penalty": 0.5,
        "top_k": 5,
        "top_p": 0.9,
        "temperature": 0.7,
        "generator": torch.Generator().manual_seed(0),
        "use_cache": False,
    }
    assert chosen.keys() == OPTIONS.keys()
    model.generate(batch, **chosen)
    assert seen == chosen


def test_generate_still_decodes_with_its_defaults() -> None:
    model = build_model(CONFIGS["captioner"]).eval()
    images, _, _ = inputs()
    with torch.no_grad():
        greedy = model.generate({"image": (images, None)}, max_new_tokens=4)
        one_beam = model.generate({"image": (images, None)}, strategy="beam", num_beams=1, max_new_tokens=4)
    assert greedy.shape[0] == images.shape[0] and greedy.shape[1] <= 4
    assert torch.equal(greedy, one_beam)  # one beam is greedy decoding
