"""The packaged weights register from polymodal.pretrained (above modules), and polymodal.models guarantees it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from polymodal.modules.encoders import ENCODERS
from polymodal.pretrained import locate
from polymodal.registry import resolve_path


def test_modules_alone_know_nothing_pretrained_and_models_registers_it():
    code = (
        "import sys\n"
        "from polymodal.modules.encoders import ENCODERS\n"
        "from polymodal.registry import PATH_SCHEMES\n"
        "assert 'polymodal.pretrained' not in sys.modules and 'efficientnet_lite0_imagenet' not in ENCODERS\n"
        "import polymodal.models\n"
        "assert 'efficientnet_lite0_imagenet' in ENCODERS and 'pretrained' in PATH_SCHEMES\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_hf_builders_resolve_pretrained_names(monkeypatch, tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    transformers.BertModel(config).save_pretrained(tmp_path)
    monkeypatch.setitem(locate.PRETRAINED_DIRS, "tiny", lambda: tmp_path)
    assert resolve_path("pretrained:tiny") == tmp_path and resolve_path(tmp_path) == tmp_path
    assert ENCODERS.build("hf_text", path="pretrained:tiny").output_dim == 16
    with pytest.raises(ValueError, match="pretrained:nope: unknown pretrained name; known: pretrained:minilm"):
        resolve_path("pretrained:nope")
