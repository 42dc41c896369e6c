"""AdamW parameter groups and the learning-rate schedule.

Weight decay is not applied to norms, biases, embeddings and temperatures: decaying them
hurts (a decayed LayerNorm gain or CLIP temperature drifts towards zero for no benefit).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import torch
from torch import nn

NORM_MODULES = (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Matrices a module registers under its own name that are tables of learned vectors (position, type and
# modality embeddings, a CLS token, a learned stand-in for a missing modality), not maps between features.
TABLE_NAME_PARTS = ("embed", "token", "missing", "node_type")


def _is_layer_weight(leaf: str) -> bool:
    """A layer's weight matrix: ``weight``, an RNN's ``weight_ih_l0``, attention's ``in_proj_weight``, a
    parametrised ``original0``."""
    return (
        leaf == "weight"
        or leaf.startswith("weight_")
        or leaf.endswith("_weight")
        or re.fullmatch(r"original\d+", leaf) is not None
    )


def _no_decay(name: str, param: nn.Parameter, owners: list[nn.Module]) -> bool:
    """Whether ``param`` (called ``name``, held by ``owners``: more than one when tied) is exempt from decay."""
    if param.ndim < 2:  # biases, norm gains, scalar temperatures
        return True
    if any(isinstance(m, NORM_MODULES) for m in owners):  # a tied output layer keeps its embedding's exemption
        return True
    *path, leaf = name.lower().split(".")
    if not _is_layer_weight(leaf):
        return any(part in leaf for part in TABLE_NAME_PARTS)
    # Whole names, not substrings: a convolutional stem called ``patch_embed`` is a layer and decays (as in timm
    # and open_clip). A Linear named as an embedding holds token vectors (tied to an output layer elsewhere).
    return (
        bool(path) and any(isinstance(m, nn.Linear) for m in owners) and path[-1].endswith(("embedding", "embeddings"))
    )


def param_groups(modules: Iterable[tuple[str, nn.Module, float]], weight_decay: float) -> list[dict]:
    """One decay and one no-decay group per (prefix, module, lr) entry; frozen params skipped.

    Several entries give per-tower learning rates (e.g. a pretrained text tower at 1e-5 and a
    new image tower at 1e-3). A parameter shared by two entries goes to the first.
    """
    seen: set[int] = set()
    groups: list[dict] = []
    for prefix, root, lr in modules:
        owners: dict[int, list[nn.Module]] = {}
        for mod in root.modules():
            for p in mod.parameters(recurse=False):
                owners.setdefault(id(p), []).append(mod)
        decay, no_decay = [], []
        for name, p in root.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if _no_decay(name, p, owners.get(id(p), [])) else decay).append(p)
        if decay:
            groups.append({"params": decay, "weight_decay": weight_decay, "lr": lr, "name": f"{prefix}.decay"})
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0, "lr": lr, "name": f"{prefix}.no_decay"})
    return groups


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 to each group's lr, then cosine decay to ``min_ratio`` * lr."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(1.0, progress)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
