"""Contrastive losses across 2 real processes (gloo) against the single-process global batch.

Each rank holds half of a global batch. What must hold, and why:
- default ClipLoss: every rank computes the loss over the gathered global batch, so each rank's
  value equals the single-process value;
- ClipLoss(local_loss=True) and SigLipLoss: each rank's value differs, and their average over
  ranks equals the single-process value;
- gradients, all modes: DDP averages gradients over ranks, so the per-rank gradients averaged
  over ranks must equal the single-process gradients. For a rank's own features this means the
  rank holds ``world_size`` times the single-process gradient of its slice (the gather's
  backward sums what every rank's loss sends to it); for the shared temperature/bias it means
  the mean over ranks equals the single-process gradient.
The two processes run once per module; each test then checks one claim against its results.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from polymodal.modules.losses import LOSSES, all_gather_with_grad
from polymodal.train.trainer import exit_launched_process

WORLD = 2
PER_RANK = 4
DIM = 8
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "clip": ("clip", {}),
    "clip_local": ("clip", {"local_loss": True}),
    "clip_local_smoothed": ("clip", {"local_loss": True, "label_smoothing": 0.1}),
    "siglip": ("siglip", {}),
}


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(WORLD * PER_RANK, DIM, generator=gen, dtype=torch.float64)
    text = torch.randn(WORLD * PER_RANK, DIM, generator=gen, dtype=torch.float64)
    return image, text


def _run(name: str, kwargs: dict[str, Any], image: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
    """Loss value and gradients of one loss on (a slice of) the batch, in this process."""
    loss_fn = LOSSES.build(name, **kwargs).double()
    image = image.clone().requires_grad_(True)
    text = text.clone().requires_grad_(True)
    loss = loss_fn(image, text)
    loss.backward()
    out = {"loss": loss.detach(), "image_grad": image.grad, "text_grad": text.grad}
    for param_name, param in loss_fn.named_parameters():
        out[param_name] = param.grad
    return out


def _worker(rank: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        image, text = _global_batch()
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        results: dict[str, dict[str, torch.Tensor]] = {}
        for case, (name, kwargs) in CASES.items():
            local = _run(name, kwargs, image[rows], text[rows])
            gathered = {}
            for key, value in local.items():
                parts = [torch.empty_like(value) for _ in range(WORLD)]
                dist.all_gather(parts, value.contiguous())
                # (WORLD,) for scalars, (WORLD * PER_RANK, DIM) for feature gradients
                gathered[key] = torch.stack(parts) if value.dim() == 0 else torch.cat(parts)
            results[case] = gathered
        try:  # rank 0 holds one row fewer, as when a bad sample was dropped from its batch
            all_gather_with_grad(torch.zeros(PER_RANK - (rank == 0), DIM))
            results["uneven"] = {"error": ""}
        except ValueError as e:
            results["uneven"] = {"error": str(e)}
        if rank == 0:
            torch.save(results, out_file)
    finally:
        dist.destroy_process_group()
    # Collectives ran during backward: leave as a launched training process does, or the interpreter's
    # teardown can abort the worker (see polymodal.train.trainer.exit_launched_process).
    exit_launched_process(0)


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, torch.Tensor]]:
    tmp = tmp_path_factory.mktemp("dist")
    init_file, out_file = tmp / "init", tmp / "results.pt"
    context = mp.spawn(_worker, args=(str(init_file), str(out_file)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):  # re-raises a worker's exception
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("distributed workers did not finish within 120 s")
    return torch.load(Path(out_file), weights_only=True)


@pytest.fixture(scope="module")
def single_process() -> dict[str, dict[str, torch.Tensor]]:
    image, text = _global_batch()
    return {case: _run(name, kwargs, image, text) for case, (name, kwargs) in CASES.items()}


def test_unequal_batches_are_refused_instead_of_gathering_garbage(distributed_results) -> None:
    assert "ranks hold batches of [3, 4] rows" in distributed_results["uneven"]["error"]


def test_default_clip_value_on_every_rank_is_the_global_loss(distributed_results, single_process) -> None:
    per_rank = distributed_results["clip"]["loss"]
    expected = single_process["clip"]["loss"].expand(WORLD)
    torch.testing.assert_close(per_rank, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", ["clip_local", "clip_local_smoothed", "siglip"])
def test_rank_average_of_per_rank_losses_is_the_global_loss(distributed_results, single_process, case: str) -> None:
    per_rank = distributed_results[case]["loss"]
    assert per_rank[0] != per_rank[1], "each rank should score only its own rows"
    torch.testing.assert_close(per_rank.mean(), single_process[case]["loss"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_rank_averaged_gradients_equal_single_process_gradients(distributed_results, single_process, case: str) -> None:
    got, expected = distributed_results[case], single_process[case]
    for key in ("image_grad", "text_grad"):
        # Rank r holds rows r*B:(r+1)*B; averaging over ranks as DDP does divides by WORLD.
        torch.testing.assert_close(got[key] / WORLD, expected[key], rtol=1e-10, atol=1e-14, msg=f"{case} {key}")
    params = [k for k in expected if k.startswith("logit_")]
    assert params, "the loss should own a learnable temperature"
    for key in params:
        torch.testing.assert_close(got[key].mean(), expected[key], rtol=1e-10, atol=1e-14, msg=f"{case} {key}")


def test_local_loss_gives_the_same_gradients_as_the_full_loss(distributed_results) -> None:
    full, local = distributed_results["clip"], distributed_results["clip_local"]
    for key in ("image_grad", "text_grad"):
        torch.testing.assert_close(local[key], full[key], rtol=1e-10, atol=1e-14)
    # The temperature's gradient differs per rank (each rank's loss differs) but not on average.
    torch.testing.assert_close(local["logit_scale"].mean(), full["logit_scale"].mean(), rtol=1e-10, atol=1e-14)
