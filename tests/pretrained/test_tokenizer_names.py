"""TextTokenizer.load takes ``pretrained:NAME`` as the hf towers do: polymodal.pretrained registers the scheme with the
data layer (which imports nothing above it)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from polymodal.data.text import TextTokenizer, train_tokenizer
from polymodal.pretrained import locate
from polymodal.registry import PATH_SCHEMES


def test_the_data_layer_alone_knows_no_names_and_pretrained_registers_its_own() -> None:
    code = (
        "import sys\n"
        "from polymodal.data.text import TextTokenizer\nfrom polymodal.registry import PATH_SCHEMES\n"
        "assert 'polymodal.pretrained' not in sys.modules and 'pretrained' not in PATH_SCHEMES\n"
        "import polymodal.pretrained\n"
        "assert 'pretrained' in PATH_SCHEMES\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "pretrained" in PATH_SCHEMES


def test_a_pretrained_name_loads_the_packaged_tokenizer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    train_tokenizer(["a red circle", "a blue square"], vocab_size=20).save(tmp_path)
    monkeypatch.setitem(locate.PRETRAINED_DIRS, "tiny", lambda: tmp_path)
    named = TextTokenizer.load("pretrained:tiny")
    assert named.encode("a blue circle", 8) == TextTokenizer.load(tmp_path).encode("a blue circle", 8)
    with pytest.raises(ValueError, match="pretrained:nope: unknown pretrained name; known: pretrained:minilm"):
        TextTokenizer.load("pretrained:nope")


def test_an_unregistered_scheme_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"^nowhere:minilm: no such tokenizer directory \(no 'nowhere' path"):
        TextTokenizer.load("nowhere:minilm")
    with pytest.raises(FileNotFoundError, match=r"missing: no such tokenizer directory$"):
        TextTokenizer.load(tmp_path / "missing")


@pytest.mark.skipif(importlib.util.find_spec(locate.MINILM_PACKAGE) is None, reason="the MiniLM package is missing")
def test_minilm_by_name() -> None:
    tokenizer = TextTokenizer.load("pretrained:minilm")
    assert tokenizer.vocab_size == 30522 and tokenizer.encode("hello world", 16) == [101, 7592, 2088, 102]
