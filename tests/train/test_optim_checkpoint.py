import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from polymodal.train.checkpoint import list_checkpoints, load_checkpoint, prune_checkpoints, save_checkpoint
from polymodal.train.optim import cosine_with_warmup, param_groups


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.linear = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(self.embed(x))).sum() * self.logit_scale


def test_param_groups_no_decay_on_norm_bias_embedding_temperature() -> None:
    model = Tiny()
    groups = param_groups([("model", model, 1e-3)], weight_decay=0.1)
    by_name = {g["name"]: {id(p) for p in g["params"]} for g in groups}
    assert by_name["model.decay"] == {id(model.linear.weight)}
    assert by_name["model.no_decay"] == {
        id(model.embed.weight),
        id(model.linear.bias),
        id(model.norm.weight),
        id(model.norm.bias),
        id(model.logit_scale),
    }
    assert all(id(p) not in s for s in by_name.values() for p in model.frozen.parameters())


class Stem(nn.Module):
    """Names that only look like embeddings: a convolutional stem decays, a position table does not."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 4, 3)
        self.position_embedding = nn.Parameter(torch.zeros(5, 4))
        self.post_proj = nn.Linear(4, 4, bias=False)
        self.attn = nn.MultiheadAttention(4, 2, bias=False)  # in_proj_weight: a layer's weight under another name
        self.rnn = nn.GRU(4, 4, bias=False)  # weight_ih_l0, weight_hh_l0
        self.tokens = nn.Embedding(7, 4)
        self.lm_head = nn.Linear(4, 7, bias=False)
        self.lm_head.weight = self.tokens.weight  # tied: still the embedding


def test_no_decay_matches_names_not_substrings() -> None:
    model = Stem()
    groups = {g["name"]: {id(p) for p in g["params"]} for g in param_groups([("m", model, 1e-3)], weight_decay=0.1)}
    decayed = [
        model.patch_embed.weight,
        model.post_proj.weight,
        model.attn.in_proj_weight,
        model.attn.out_proj.weight,
        model.rnn.weight_ih_l0,
        model.rnn.weight_hh_l0,
    ]
    assert groups["m.decay"] == {id(p) for p in decayed}
    assert groups["m.no_decay"] == {id(model.position_embedding), id(model.patch_embed.bias), id(model.tokens.weight)}


def test_per_tower_learning_rates() -> None:
    model = Tiny()
    groups = param_groups([("embed", model.embed, 1e-5), ("rest", model, 1e-3)], weight_decay=0.1)
    lr = {g["name"]: g["lr"] for g in groups}
    assert lr["embed.no_decay"] == 1e-5 and lr["rest.decay"] == 1e-3
    # The embedding is not listed twice.
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert len(all_ids) == len(set(all_ids))


def test_cosine_with_warmup_matches_formula() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine_with_warmup(opt, warmup_steps=4, total_steps=14)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert lrs[14] == pytest.approx(0.0, abs=1e-12) and lrs[15] == pytest.approx(0.0, abs=1e-12)


def test_checkpoint_round_trip_restores_everything(tmp_path: Path) -> None:
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = cosine_with_warmup(opt, 2, 10)
    for _ in range(3):
        model(torch.tensor([1, 2])).backward()
        opt.step(), sched.step(), opt.zero_grad()
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    path = save_checkpoint(tmp_path, 3, model, opt, sched, meta={"data_position": 17})
    expected = (torch.rand(3), random.random(), np.random.rand())

    model2 = Tiny()
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    sched2 = cosine_with_warmup(opt2, 2, 10)
    torch.manual_seed(99), random.seed(99), np.random.seed(99)
    meta = load_checkpoint(path, model2, opt2, sched2)
    assert meta == {"step": 3, "data_position": 17}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert sched2.state_dict()["last_epoch"] == 3
    assert torch.equal(opt.state_dict()["state"][1]["exp_avg"], opt2.state_dict()["state"][1]["exp_avg"])
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], got[0]) and expected[1:] == got[1:]


def test_partial_checkpoint_is_ignored_and_prune_keeps_last_and_best(tmp_path: Path) -> None:
    model = Tiny()
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model)
    (tmp_path / ".checkpoint-00000005.abc").mkdir()  # what a kill mid-write leaves
    (tmp_path / "checkpoint-00000006").mkdir()  # no meta.json: incomplete
    assert [c.step for c in list_checkpoints(tmp_path)] == [1, 2, 3, 4]
    prune_checkpoints(tmp_path, keep_last=2, keep={1})
    assert [c.step for c in list_checkpoints(tmp_path)] == [1, 3, 4]


def test_load_checkpoint_rejects_other_model(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 1, Tiny())
    with pytest.raises(ValueError, match="do not match the model"):
        load_checkpoint(path, nn.Linear(4, 4))
