"""A model config's components are checked against their builders when the config is parsed, not at build time."""

from __future__ import annotations

import pytest

from polymodal.config import ConfigError
from polymodal.models import build_model, parse_model_config
from tests.models.test_models import CONFIGS, LSTM, TEXT


def error(config: dict) -> str:
    with pytest.raises(ConfigError) as e:
        parse_model_config(config)
    return str(e.value)


def test_the_first_line_names_what_was_validated() -> None:
    msg = error(dict(CONFIGS["fusion_classifier"], fusion={"name": "concatt"}))
    assert msg.startswith("<config>: invalid model config (1 error(s))\n") and "NoneType" not in msg


def test_a_misspelt_fusion_parameter_fails_at_parse_time_naming_the_field() -> None:
    msg = error(dict(CONFIGS["fusion_classifier"], fusion={"name": "concat", "params": {"hiden_dim": 3}}))
    assert (
        "  fusion_classifier.fusion.params: unknown hiden_dim (did you mean hidden_dim?); "
        "its parameters: dropout, hidden_dim, missing"
    ) in msg.splitlines()
    # Parameters that fit still build, and a builder taking **kwargs (hf_text) takes any name.
    cfg = dict(CONFIGS["fusion_classifier"], fusion={"name": "concat", "params": {"hidden_dim": 8}})
    assert build_model(parse_model_config(cfg)).fusion.output_dim == 16
    hf = {"name": "hf_text", "params": {"path": "pretrained:minilm", "anything": 1}}
    config = parse_model_config(dict(CONFIGS["embedding"], encoders={**CONFIGS["embedding"]["encoders"], "text": hf}))
    assert config.encoders["text"].params["anything"] == 1


def test_misspelt_encoder_and_head_parameters_name_their_fields() -> None:
    text = dict(TEXT, params={**TEXT["params"], "widht": 8})
    config = dict(
        CONFIGS["fusion_classifier"], encoders={"text": text}, head={"name": "classification", "params": {"hiden": 3}}
    )
    msg = error(config)
    assert "fusion_classifier.encoders.text.params: unknown widht (did you mean width?); its parameters:" in msg
    assert "fusion_classifier.head.params: unknown hiden (did you mean hidden?); its parameters: dropout, hidden" in msg
    qa = dict(CONFIGS["question_answering"], fusion={"name": "cross_attention", "params": {"head": 2}})
    assert "question_answering.fusion.params: unknown head (did you mean heads?)" in error(qa)


def test_a_parameter_the_model_passes_itself_is_refused() -> None:
    msg = error(
        dict(
            CONFIGS["fusion_classifier"],
            fusion={"name": "concat", "params": {"output_dim": 3}},
            head={"name": "classification", "params": {"num_classes": 3}},
        )
    )
    assert "fusion.params: unknown output_dim (the model sets it)" in msg
    assert "head.params: unknown num_classes (the model sets it)" in msg


def test_an_unknown_component_hints_at_an_unimported_plugin() -> None:
    msg = error(dict(CONFIGS["fusion_classifier"], encoders={"depth": {"name": "depth_cnn"}}, fusion={"name": "max"}))
    hint = "(a plugin's? import the module that registers it before loading; CLI: set POLYMODAL_PLUGINS=module); "
    hint += "allowed: "
    assert f"fusion_classifier.encoders.depth: unknown encoder 'depth_cnn' {hint}" in msg
    assert f"fusion_classifier.fusion: unknown fusion 'max' {hint}" in msg
    decoder = error(dict(CONFIGS["captioner_lstm"], decoder=dict(LSTM, name="gru")))
    assert (
        f"captioner.decoder.name: unknown decoder 'gru' {hint}lstm, transformer\n" in decoder + "\n"
    )  # no (got 'gru')
