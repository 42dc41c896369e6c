"""Fusion modules: combine per-modality encoder outputs into one representation.

Every module is built as ``FUSIONS.build(name, input_dims={...}, output_dim=D, **options)``
and handles missing modalities (see ``base.py``), so swapping fusion is one config value.
The registered builders are the classes themselves: their ``__init__`` signature is the one
place the options and defaults are written.
"""

import inspect
from collections.abc import Callable

from polymodal.modules.fusion.attention import AttentionFusion, CoAttentionFusion, CrossAttentionFusion
from polymodal.modules.fusion.base import Fusion, FusionOutput
from polymodal.modules.fusion.concat import ConcatFusion
from polymodal.modules.fusion.film import FiLMFusion
from polymodal.modules.fusion.gmu import GatedMultimodalUnit
from polymodal.modules.fusion.graph import GraphFusion
from polymodal.modules.fusion.late import LateFusion
from polymodal.modules.fusion.product import BilinearFusion, ProductFusion
from polymodal.modules.fusion.track import TrackFusion
from polymodal.modules.fusion.weighted import WeightedSumFusion
from polymodal.registry import Registry


def _check_fusion(name: str, builder: Callable[..., Fusion]) -> None:
    """A fusion module is built with ``input_dims`` and ``output_dim`` (the model passes them): refuse, at
    registration, a builder that cannot take them, instead of a TypeError when a model is built."""
    try:
        parameters = inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return  # no signature to read (a C builder): checked when built
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    missing = [arg for arg in ("input_dims", "output_dim") if arg not in parameters and not takes_any]
    if missing:
        raise TypeError(
            f"fusion {name!r}: {getattr(builder, '__name__', builder)} must take {' and '.join(missing)} (the model "
            "passes input_dims, modality -> feature width, and output_dim; see polymodal.modules.fusion.base)"
        )


FUSIONS: Registry[type[Fusion]] = Registry("fusion", _check_fusion)
FUSIONS.register("concat")(ConcatFusion)
FUSIONS.register("late")(LateFusion)
FUSIONS.register("weighted_sum")(WeightedSumFusion)
FUSIONS.register("product")(ProductFusion)
FUSIONS.register("bilinear")(BilinearFusion)
FUSIONS.register("gmu")(GatedMultimodalUnit)
FUSIONS.register("cross_attention")(CrossAttentionFusion)
FUSIONS.register("co_attention")(CoAttentionFusion)
FUSIONS.register("graph")(GraphFusion)
FUSIONS.register("film")(FiLMFusion)
FUSIONS.register("track")(TrackFusion)

__all__ = [
    "FUSIONS",
    "AttentionFusion",
    "BilinearFusion",
    "CoAttentionFusion",
    "ConcatFusion",
    "CrossAttentionFusion",
    "FiLMFusion",
    "Fusion",
    "FusionOutput",
    "GatedMultimodalUnit",
    "GraphFusion",
    "LateFusion",
    "ProductFusion",
    "TrackFusion",
    "WeightedSumFusion",
]
