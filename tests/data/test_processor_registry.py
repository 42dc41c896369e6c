"""The processor registry refuses names the readers could never route to the processor."""

from __future__ import annotations

import pytest

from polymodal.data.processors import PROCESSORS, Processor


def make(modality: str | None) -> type[Processor]:
    attrs = {} if modality is None else {"modality": modality}
    return type("DepthProcessor", (Processor,), attrs)


def test_a_reserved_manifest_column_is_refused_and_a_new_modality_registers() -> None:
    for name in ["label", "id", "captions", "metadata"]:
        with pytest.raises(ValueError, match=rf"processor '{name}': '{name}' is a manifest column .*choose another"):
            PROCESSORS.register(name)(make(name))
        assert name not in PROCESSORS
    for modality in ["depth", None]:  # declared, or not declared
        processor = make(modality)
        PROCESSORS.register("depth")(processor)
        assert PROCESSORS.unregister("depth") is processor


def test_a_processor_registered_under_another_modality_than_its_own_is_refused() -> None:
    with pytest.raises(ValueError, match="'Depth2': DepthProcessor declares modality 'depth'; register it as 'depth'"):
        PROCESSORS.register("Depth2")(make("depth"))
    assert "Depth2" not in PROCESSORS
