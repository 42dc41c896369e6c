"""Every loss against a slow, obvious reference written with Python loops and ``math``."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from polymodal.modules.heads import ClassificationHead
from polymodal.modules.losses import (
    LOSSES,
    BCELoss,
    CaptionLoss,
    ClipLoss,
    CrossEntropyLoss,
    ItmLoss,
    MaskedLMLoss,
    MSELoss,
    SigLipLoss,
    mask_tokens,
    sample_hard_negatives,
)

# ---------------------------------------------------------------- slow references


def _unit_rows(x: torch.Tensor) -> list[list[float]]:
    rows = []
    for row in x.tolist():
        norm = math.sqrt(sum(v * v for v in row))
        rows.append([v / norm for v in row])
    return rows


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    log_z = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - log_z for v in row]


def _smoothed_ce(row: list[float], target: int, smoothing: float = 0.0) -> float:
    """Cross entropy of one row of logits, with PyTorch's label smoothing (eps spread over all C)."""
    logp = _log_softmax(row)
    return -(1 - smoothing) * logp[target] - smoothing / len(row) * sum(logp)


def reference_clip(image: torch.Tensor, text: torch.Tensor, scale: float, smoothing: float = 0.0) -> float:
    img, txt = _unit_rows(image), _unit_rows(text)
    n = len(img)
    i2t = sum(_smoothed_ce([scale * _dot(img[i], txt[j]) for j in range(n)], i, smoothing) for i in range(n)) / n
    t2i = sum(_smoothed_ce([scale * _dot(txt[i], img[j]) for j in range(n)], i, smoothing) for i in range(n)) / n
    return (i2t + t2i) / 2


def reference_siglip(image: torch.Tensor, text: torch.Tensor, scale: float, bias: float) -> float:
    img, txt = _unit_rows(image), _unit_rows(text)
    n = len(img)
    total = 0.0
    for i in range(n):
        for j in range(n):
            label = 1.0 if i == j else -1.0
            z = label * (scale * _dot(img[i], txt[j]) + bias)
            total += math.log1p(math.exp(-z))  # -log(sigmoid(z))
    return total / n


def _features(n: int = 6, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    text = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    return image, text


# ---------------------------------------------------------------- CLIP


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("local_loss", [False, True])
def test_clip_matches_reference(smoothing: float, local_loss: bool) -> None:
    image, text = _features()
    loss_fn = ClipLoss(label_smoothing=smoothing, local_loss=local_loss).double()
    loss = loss_fn(image, text)
    # The parameter is stored in float32, so the reference uses its exact value.
    expected = reference_clip(image.detach(), text.detach(), loss_fn.scale.item(), smoothing)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    for grad in (image.grad, text.grad, loss_fn.logit_scale.grad):
        assert grad is not None and torch.isfinite(grad).all()


def reference_clip_with_negatives(image, text, negatives, present, scale: float, smoothing: float = 0.0) -> float:  # noqa: ANN001
    """Image->text candidates: every caption, then every present negative caption; text->image as plain CLIP."""
    img, txt, neg = _unit_rows(image), _unit_rows(text), _unit_rows(negatives)
    neg = [row for row, keep in zip(neg, present.tolist()) if keep]
    n = len(img)
    i2t = sum(_smoothed_ce([scale * _dot(img[i], t) for t in txt + neg], i, smoothing) for i in range(n)) / n
    t2i = sum(_smoothed_ce([scale * _dot(txt[i], img[j]) for j in range(n)], i, smoothing) for i in range(n)) / n
    return (i2t + t2i) / 2


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("local_loss", [False, True])
def test_clip_hard_negatives_match_reference(smoothing: float, local_loss: bool) -> None:
    image, text = _features()
    negatives = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    present = torch.tensor([True, False, True, True, False, True])
    loss_fn = ClipLoss(label_smoothing=smoothing, local_loss=local_loss).double()
    loss = loss_fn(image, text, negatives, present)
    expected = reference_clip_with_negatives(
        image.detach(), text.detach(), negatives.detach(), present, loss_fn.scale.item(), smoothing
    )
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert torch.isfinite(loss) and (negatives.grad[~present] == 0).all() and (negatives.grad[present] != 0).all()
    # No negative present: exactly the plain CLIP loss.
    none = loss_fn(image, text, negatives, torch.zeros(6, dtype=torch.bool))
    assert none.item() == pytest.approx(loss_fn(image, text).item(), rel=1e-12)


def test_clip_initial_temperature_and_normalization() -> None:
    loss_fn = ClipLoss()
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    image, text = _features()
    # Features are normalised inside, so their scale does not matter.
    base = loss_fn.double()(image, text)
    assert loss_fn(image * 7.0, text * 0.1).item() == pytest.approx(base.item(), rel=1e-10)
    # Without normalisation the raw dot products are used.
    unit_image = image / image.norm(dim=1, keepdim=True)
    unit_text = text / text.norm(dim=1, keepdim=True)
    raw = ClipLoss(normalize=False).double()(unit_image, unit_text)
    assert raw.item() == pytest.approx(base.item(), rel=1e-10)


def test_clip_temperature_is_clamped_at_100() -> None:
    image, text = _features()
    loss_fn = ClipLoss().double()
    with torch.no_grad():
        loss_fn.logit_scale.fill_(math.log(1000.0))
    assert loss_fn.scale.item() == pytest.approx(100.0)
    loss = loss_fn(image, text)
    assert loss.item() == pytest.approx(reference_clip(image.detach(), text.detach(), 100.0), rel=1e-10)
    loss.backward()
    # Above the cap the clamp passes no gradient, so the temperature cannot sharpen further.
    assert loss_fn.logit_scale.grad.item() == 0.0


def test_clip_fixed_temperature_is_not_learned() -> None:
    loss_fn = ClipLoss(init_temperature=0.5, learn_temperature=False)
    assert not loss_fn.logit_scale.requires_grad
    assert loss_fn.scale.item() == pytest.approx(2.0)
    image, text = _features()
    assert loss_fn.double()(image, text).item() == pytest.approx(
        reference_clip(image.detach(), text.detach(), loss_fn.scale.item()), rel=1e-10
    )


def test_clip_rejects_unpaired_features() -> None:
    with pytest.raises(ValueError, match=r"\(4, 8\) and \(5, 8\)"):
        ClipLoss()(torch.randn(4, 8), torch.randn(5, 8))


# ---------------------------------------------------------------- SigLIP


def test_siglip_matches_reference() -> None:
    image, text = _features()
    loss_fn = SigLipLoss().double()
    assert loss_fn.logit_scale.exp().item() == pytest.approx(10.0)
    assert loss_fn.logit_bias.item() == -10.0
    loss = loss_fn(image, text)
    scale = loss_fn.logit_scale.exp().item()
    assert loss.item() == pytest.approx(reference_siglip(image.detach(), text.detach(), scale, -10.0), rel=1e-10)
    loss.backward()
    for grad in (image.grad, text.grad, loss_fn.logit_scale.grad, loss_fn.logit_bias.grad):
        assert grad is not None and torch.isfinite(grad).all()


def test_siglip_with_other_scale_and_bias() -> None:
    image, text = _features()
    loss_fn = SigLipLoss(init_scale=3.0, init_bias=0.5).double()
    expected = reference_siglip(image.detach(), text.detach(), loss_fn.logit_scale.exp().item(), 0.5)
    assert loss_fn(image, text).item() == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------- ITM


def test_hard_negatives_never_positive_and_follow_softmax() -> None:
    sim = torch.tensor([[5.0, 1.0, 2.0, 0.0], [0.5, 4.0, 0.0, 0.0], [3.0, 1.0, 6.0, 2.0], [0.0, 0.0, 1.0, 3.0]])
    gen = torch.Generator().manual_seed(0)
    draws = 3000
    counts_text = torch.zeros(4, 4)
    counts_image = torch.zeros(4, 4)
    for _ in range(draws):
        neg_text, neg_image = sample_hard_negatives(sim, generator=gen)
        counts_text[torch.arange(4), neg_text] += 1
        counts_image[torch.arange(4), neg_image] += 1
    assert counts_text.diagonal().sum() == 0 and counts_image.diagonal().sum() == 0
    for counts, scores in ((counts_text, sim), (counts_image, sim.T)):
        for i in range(4):
            others = [j for j in range(4) if j != i]
            z = sum(math.exp(scores[i, j].item()) for j in others)
            for j in others:
                expected = math.exp(scores[i, j].item()) / z
                assert counts[i, j].item() / draws == pytest.approx(expected, abs=0.03)


def test_hard_negatives_skip_rows_with_the_same_id() -> None:
    sim = torch.randn(4, 4)
    ids = torch.tensor([7, 7, 8, 8])  # two captions per image
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        neg_text, neg_image = sample_hard_negatives(sim, ids, gen)
        assert (ids[neg_text] != ids).all() and (ids[neg_image] != ids).all()
    with pytest.raises(ValueError, match="at least one negative"):
        sample_hard_negatives(sim, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="square"):
        sample_hard_negatives(torch.randn(3, 4))


def test_itm_loss_matches_reference() -> None:
    batch, dim = 5, 6
    image = torch.randn(batch, dim)
    text = torch.randn(batch, dim)
    head = ClassificationHead(2 * dim, 2)
    sim = image @ text.T / 0.07

    def pair_logits(image_idx: torch.Tensor, text_idx: torch.Tensor) -> torch.Tensor:
        return head(torch.cat([image[image_idx], text[text_idx]], dim=1))  # (N, 2)

    loss = ItmLoss()(sim, pair_logits, generator=torch.Generator().manual_seed(3))
    neg_text, neg_image = sample_hard_negatives(sim, generator=torch.Generator().manual_seed(3))

    pairs = [(i, i, 1) for i in range(batch)]
    pairs += [(i, int(neg_text[i]), 0) for i in range(batch)]
    pairs += [(int(neg_image[j]), j, 0) for j in range(batch)]
    total = 0.0
    for i, j, label in pairs:
        row = head(torch.cat([image[i], text[j]])[None])[0].tolist()
        total += _smoothed_ce(row, label)
    assert loss.item() == pytest.approx(total / len(pairs), rel=1e-5)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_itm_loss_checks_pair_logits_shape() -> None:
    with pytest.raises(ValueError, match=r"\(9, 2\)"):
        ItmLoss()(torch.randn(3, 3), lambda i, t: torch.zeros(len(i), 3))


# ---------------------------------------------------------------- masked LM

PAD, CLS, SEP, MASK, VOCAB = 0, 1, 2, 3, 1000


def _token_batch(rows: int = 64, length: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(4, VOCAB, (rows, length), generator=gen)
    lengths = torch.randint(length // 4, length + 1, (rows,), generator=gen)
    attention = torch.arange(length)[None] < lengths[:, None]  # (rows, length)
    ids[:, 0] = CLS
    ids[torch.arange(rows), lengths - 1] = SEP
    ids[~attention] = PAD
    return ids, attention


def test_mask_tokens_statistics() -> None:
    ids, attention = _token_batch()
    gen = torch.Generator().manual_seed(1)
    inputs, labels = mask_tokens(ids, attention, VOCAB, MASK, [PAD, CLS, SEP], generator=gen)
    special = (ids == PAD) | (ids == CLS) | (ids == SEP)
    candidates = attention & ~special
    selected = labels != -100

    assert not selected[~candidates].any(), "padding or special tokens were selected"
    assert torch.equal(inputs[~candidates], ids[~candidates])
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected])

    rate = selected.sum().item() / candidates.sum().item()
    assert rate == pytest.approx(0.15, abs=0.01)
    n = selected.sum().item()
    as_mask = (inputs[selected] == MASK).sum().item() / n
    unchanged = (inputs[selected] == ids[selected]).sum().item() / n
    randomised = 1 - as_mask - unchanged
    assert as_mask == pytest.approx(0.8, abs=0.02)
    assert unchanged == pytest.approx(0.1, abs=0.02)
    assert randomised == pytest.approx(0.1, abs=0.02)
    replaced = inputs[selected & (inputs != MASK) & (inputs != ids)]
    assert not torch.isin(replaced, torch.tensor([PAD, CLS, SEP, MASK])).any()


def test_mask_tokens_is_reproducible_with_a_seed() -> None:
    ids, attention = _token_batch(4, 32)
    a = mask_tokens(ids, attention, VOCAB, MASK, [PAD], generator=torch.Generator().manual_seed(5))
    b = mask_tokens(ids, attention, VOCAB, MASK, [PAD], generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_masked_lm_loss_matches_reference() -> None:
    ids, attention = _token_batch(3, 16)
    gen = torch.Generator().manual_seed(2)
    _, labels = mask_tokens(ids, attention, VOCAB, MASK, [PAD, CLS, SEP], prob=0.5, generator=gen)
    logits = torch.randn(3, 16, VOCAB, dtype=torch.float64, requires_grad=True)
    loss = MaskedLMLoss()(logits, labels)
    terms = [
        _smoothed_ce(logits[b, t].tolist(), int(labels[b, t]))
        for b in range(3)
        for t in range(16)
        if labels[b, t] != -100
    ]
    assert terms, "the test batch must contain masked tokens"
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-10)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_masked_lm_loss_is_zero_not_nan_without_masked_tokens() -> None:
    logits = torch.randn(2, 5, 11, requires_grad=True)
    loss = MaskedLMLoss()(logits, torch.full((2, 5), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


# ---------------------------------------------------------------- captioning


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_caption_loss_matches_reference_and_ignores_padding(smoothing: float) -> None:
    batch, length, vocab = 3, 7, 13
    targets = torch.randint(0, vocab, (batch, length))
    mask = torch.arange(length)[None] < torch.tensor([7, 4, 2])[:, None]  # (B, T)
    logits = torch.randn(batch, length, vocab, dtype=torch.float64, requires_grad=True)
    loss_fn = CaptionLoss(label_smoothing=smoothing)
    loss = loss_fn(logits, targets, mask)

    terms = []
    for b in range(batch):
        for t in range(length - 1):
            if mask[b, t + 1]:  # logits at t predict the token at t + 1
                terms.append(_smoothed_ce(logits[b, t].tolist(), int(targets[b, t + 1]), smoothing))
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-10)

    # Changing anything at padded positions (logits that predict padding, padded ids) changes nothing.
    noisy_logits = logits.detach().clone()
    noisy_targets = targets.clone()
    noisy_logits[1, 3:] = 50.0
    noisy_targets[~mask] = 0
    assert loss_fn(noisy_logits, noisy_targets, mask).item() == pytest.approx(loss.item(), rel=1e-12)

    loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.equal(logits.grad[1, 3:], torch.zeros_like(logits.grad[1, 3:]))


def test_caption_loss_without_shift_uses_aligned_targets() -> None:
    logits = torch.randn(2, 4, 5, dtype=torch.float64)
    targets = torch.tensor([[1, 2, 3, -100], [4, 0, -100, -100]])
    loss = CaptionLoss(shift=False)(logits, targets)
    terms = [
        _smoothed_ce(logits[b, t].tolist(), int(targets[b, t]))
        for b in range(2)
        for t in range(4)
        if targets[b, t] >= 0
    ]
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-10)


# ---------------------------------------------------------------- thin wrappers


def test_cross_entropy_with_mask_and_ignore_index() -> None:
    logits = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 3, -100, 1, 2])
    mask = torch.tensor([True, True, True, False, True])
    loss = CrossEntropyLoss()(logits, targets, mask)
    kept = [0, 1, 4]  # row 2 has no label, row 3 is masked out
    expected = sum(_smoothed_ce(logits[i].tolist(), int(targets[i])) for i in kept) / len(kept)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert torch.equal(logits.grad[2:4], torch.zeros(2, 4, dtype=torch.float64))


def test_cross_entropy_accepts_probability_targets() -> None:
    logits = torch.randn(4, 3, dtype=torch.float64)
    hard = torch.tensor([2, 0, 1, 1])
    soft = F.one_hot(hard, 3).double() * 0.7 + 0.1  # rows sum to 1
    expected = (
        sum(-sum(soft[i, c].item() * lp for c, lp in enumerate(_log_softmax(logits[i].tolist()))) for i in range(4)) / 4
    )
    assert CrossEntropyLoss()(logits, soft).item() == pytest.approx(expected, rel=1e-10)
    assert CrossEntropyLoss()(logits, F.one_hot(hard, 3).double()).item() == pytest.approx(
        CrossEntropyLoss()(logits, hard).item(), rel=1e-12
    )


def test_bce_and_mse_match_reference_with_mask() -> None:
    logits = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 2, (4, 3)).double()
    mask = torch.tensor([True, False, True, True])
    kept = [0, 2, 3]

    def bce(x: float, y: float) -> float:
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    bce_ref = sum(sum(bce(logits[i, c].item(), targets[i, c].item()) for c in range(3)) / 3 for i in kept) / 3
    mse_ref = sum(sum((logits[i, c].item() - targets[i, c].item()) ** 2 for c in range(3)) / 3 for i in kept) / 3
    assert BCELoss()(logits, targets, mask).item() == pytest.approx(bce_ref, rel=1e-10)
    assert MSELoss()(logits, targets, mask).item() == pytest.approx(mse_ref, rel=1e-10)
    assert MSELoss()(logits, targets).item() == pytest.approx(
        sum((a - b) ** 2 for a, b in zip(logits.flatten().tolist(), targets.flatten().tolist())) / 12, rel=1e-10
    )


def test_wrappers_all_masked_give_zero_with_graph_and_reject_broadcasting() -> None:
    logits = torch.randn(3, 1, requires_grad=True)
    loss = MSELoss()(logits, torch.zeros(3, 1), torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    with pytest.raises(ValueError, match=r"\(3, 1\).*\(3,\)"):
        MSELoss()(logits, torch.zeros(3))
    with pytest.raises(ValueError, match="BCELoss"):
        BCELoss()(logits, torch.zeros(3))


def test_registry_builds_every_loss() -> None:
    assert LOSSES.names() == ["bce", "caption", "clip", "cross_entropy", "itm", "masked_lm", "mse", "siglip"]
    clip = LOSSES.build("clip", local_loss=True, label_smoothing=0.1)
    assert isinstance(clip, ClipLoss) and clip.local_loss and clip.label_smoothing == 0.1
    summary = {row["name"]: row["summary"] for row in LOSSES.describe()}
    assert "InfoNCE" in summary["clip"]
