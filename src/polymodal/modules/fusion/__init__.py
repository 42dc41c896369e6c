"""Fusion modules: combine per-modality encoder outputs into one representation.

Every module is built as ``FUSIONS.build(name, input_dims={...}, output_dim=D, **options)``
and handles missing modalities (see ``base.py``), so swapping fusion is one config value.
The registered builders are the classes themselves: their ``__init__`` signature is the one
place the options and defaults are written.
"""

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

FUSIONS: Registry[type[Fusion]] = Registry("fusion")
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
