"""TrackFusion: text tokens read when what they name changed, through a clip's space-time cells."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from polymodal.modules.encoders.base import EncoderOutput
from polymodal.modules.fusion import FUSIONS, TrackFusion
from polymodal.modules.losses.grounding import grounding_loss

FRAMES, CELLS, WIDTH = 4, 4, 8
DIMS = {"text": WIDTH, "video": WIDTH, "audio": 6}


def clip_features(tokens: Tensor, frame_mask: Tensor | None = None) -> EncoderOutput:
    """Space-time tokens (B, T, cells, D) as a video tower returns them: time-major, one mask entry per cell."""
    b, t, c, d = tokens.shape
    mask = None if frame_mask is None else frame_mask.repeat_interleave(c, dim=1)
    flat = tokens.reshape(b, t * c, d)
    return EncoderOutput(flat, flat.mean(1), mask, cells_per_frame=c)


def build(**kwargs) -> TrackFusion:
    torch.manual_seed(0)
    return FUSIONS.build("track", input_dims=DIMS, output_dim=5, query="text", dim=16, heads=2, **kwargs).eval()


def features(batch: int = 3, frames: int = FRAMES) -> dict[str, EncoderOutput]:
    g = torch.Generator().manual_seed(1)
    words = torch.randn(batch, 5, WIDTH, generator=g)
    return {
        "text": EncoderOutput(words, words.mean(1), torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] * 5])),
        "video": clip_features(torch.randn(batch, frames, CELLS, WIDTH, generator=g)),
        "audio": EncoderOutput(torch.randn(batch, 2, 6, generator=g), torch.randn(batch, 6, generator=g)),
    }


def present(batch: int = 3) -> dict[str, Tensor]:
    return {m: torch.ones(batch, dtype=torch.bool) for m in DIMS}


def test_padding_frames_and_absent_clips_change_nothing() -> None:
    fusion = build()
    feats = features()
    frame_mask = torch.tensor([[True] * 4, [True, True, False, False], [True] * 4])
    video = feats["video"].tokens.view(3, FRAMES, CELLS, WIDTH)
    out = fusion({**feats, "video": clip_features(video, frame_mask)}, present()).pooled
    garbage = video.clone()
    garbage[1, 2:] = 1e4  # the padding frames of clip 1
    again = fusion({**feats, "video": clip_features(garbage, frame_mask)}, present()).pooled
    torch.testing.assert_close(out, again)
    # A clip that is absent gives the same output as a batch without clips at all.
    no_clip = {**present(), "video": torch.tensor([True, False, True])}
    garbage[1] = float("nan")
    absent = fusion({**feats, "video": clip_features(garbage)}, no_clip).pooled
    without = fusion({"text": feats["text"], "audio": feats["audio"]}, present()).pooled
    torch.testing.assert_close(absent[1], without[1])
    assert torch.isfinite(absent).all()


def test_the_track_reaches_the_output_and_gets_gradients() -> None:
    fusion = build().train()
    feats = features()
    out = fusion(feats, present())
    out.pooled.pow(2).sum().backward()
    for name in ("match_query.0.weight", "match_key.0.weight", "reading.weight", "track_mlp.0.0.weight"):
        grad = dict(fusion.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_clip_without_cells_or_too_long_is_refused() -> None:
    fusion = build(max_frames=4)
    feats = features()
    flat = feats["video"]
    with pytest.raises(ValueError, match="temporal: space_time"):
        fusion({**feats, "video": EncoderOutput(flat.tokens, flat.pooled)}, present())
    with pytest.raises(ValueError, match="raise max_frames"):
        fusion({**feats, "video": clip_features(torch.randn(3, 6, CELLS, WIDTH))}, present())
    with pytest.raises(ValueError, match="track must be one of.*fusion.params.track"):
        FUSIONS.build("track", input_dims=DIMS, output_dim=5, query="text", track="text")


def test_training_returns_the_grounding_loss_and_inference_does_not() -> None:
    feats = features()
    fusion = build().train()
    out = fusion(feats, present())
    assert set(out.losses) == {"grounding"} and out.losses["grounding"] > 0
    out.losses["grounding"].backward()
    assert fusion.match_query[0].weight.grad.abs().sum() > 0 and fusion.match_key[0].weight.grad.abs().sum() > 0
    assert fusion.eval()(feats, present()).losses == {}
    assert build(grounding_weight=0.0).train()(feats, present()).losses == {}
    half = build(grounding_weight=0.5).train()(feats, present()).losses["grounding"]
    torch.testing.assert_close(half, 0.5 * out.losses["grounding"].detach())
    with pytest.raises(ValueError, match="grounding_weight"):
        build(grounding_weight=-1.0)


def test_grounding_leaves_out_rows_without_a_clip_and_duplicate_clips() -> None:
    fusion = build().train()
    feats = features()
    no_clip = {**present(), "video": torch.tensor([True, True, False])}
    two_rows = {m: _rows(f, 2) for m, f in feats.items()}
    expected = fusion(two_rows, present(2)).losses["grounding"]
    torch.testing.assert_close(fusion(feats, no_clip).losses["grounding"], expected)
    # Rows 0 and 2 hold the same clip (two statements about it): neither is the other's negative.
    video = feats["video"].tokens.view(3, FRAMES, CELLS, WIDTH).clone()
    video[2] = video[0]
    same = {**feats, "video": clip_features(video)}
    inputs = fusion.gather(same, present())
    streams = fusion.project(inputs)
    queries, keys = fusion.match_query(streams["text"]), fusion.match_key(streams["video"])
    pairs = torch.tensor([[False, False, True], [False, False, False], [True, False, False]])
    expected = grounding_loss(queries, inputs["text"].mask, keys, inputs["video"].mask, pairs)
    torch.testing.assert_close(fusion(same, present()).losses["grounding"], expected)
    unmasked = grounding_loss(queries, inputs["text"].mask, keys, inputs["video"].mask)
    assert not torch.allclose(unmasked, expected)


def _rows(f: EncoderOutput, n: int) -> EncoderOutput:
    return EncoderOutput(
        f.tokens[:n], f.pooled[:n], None if f.mask is None else f.mask[:n], cells_per_frame=f.cells_per_frame
    )


def _which_changed_first(n: int, g: torch.Generator) -> tuple[dict[str, EncoderOutput], Tensor]:
    """Two of four identities sit in two cells; one changes at frame 1, the other at frame 3. The text names one of
    them (as its identity, one token), and the label says whether it changed first: only who, where and when
    together answer it."""
    ids = torch.stack([torch.randperm(4, generator=g)[:2] for _ in range(n)])  # (n, 2)
    cells = torch.stack([torch.randperm(CELLS, generator=g)[:2] for _ in range(n)])
    first = torch.randint(2, (n,), generator=g)  # which of the two changes at frame 1
    asked = torch.randint(2, (n,), generator=g)
    video = torch.zeros(n, FRAMES, CELLS, WIDTH)
    rows = torch.arange(n)
    for k in range(2):
        video[rows, :, cells[:, k], ids[:, k]] = 1.0  # identity, visible in every frame
        when = torch.where(first == k, 1, 3)
        video[rows, when, cells[:, k], 4 + ids[:, k] % 4] += 1.0  # the change, at its frame
    words = torch.zeros(n, 2, WIDTH)
    words[rows, 0, ids[rows, asked]] = 1.0
    mask = torch.tensor([[True, False]]).expand(n, 2)
    audio = torch.zeros(n, 1, 6)
    return (
        {
            "text": EncoderOutput(words, words[:, 0], mask),
            "video": clip_features(video),
            "audio": EncoderOutput(audio, audio[:, 0]),
        },
        (asked == first).float(),
    )


def test_learns_which_named_thing_changed_first() -> None:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    fusion = FUSIONS.build("track", input_dims=DIMS, output_dim=16, query="text", dim=32, heads=2, layers=1)
    head = nn.Linear(16, 1)
    opt = torch.optim.AdamW([*fusion.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(250):
        feats, label = _which_changed_first(64, g)
        out = fusion(feats, present(64))
        loss = nn.functional.binary_cross_entropy_with_logits(head(out.pooled)[:, 0], label) + out.losses["grounding"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    feats, label = _which_changed_first(500, g)
    with torch.no_grad():
        accuracy = ((head(fusion.eval()(feats, present(500)).pooled)[:, 0] > 0).float() == label).float().mean()
    assert accuracy > 0.9


class _Tower(nn.Module):
    """Passes precomputed features through as a tower's output (the inputs are the features)."""

    def __init__(self, output_dim: int) -> None:
        super().__init__()
        self.output_dim = output_dim

    def forward(self, x: EncoderOutput, mask: Tensor | None = None) -> EncoderOutput:
        return x


def test_the_classification_objective_adds_the_fusions_grounding_loss() -> None:
    from polymodal.data.collate import Batch
    from polymodal.models.fusion_classifier import FusionClassifier
    from polymodal.train.objectives import ClassificationObjective

    feats = features()
    model = FusionClassifier({m: _Tower(d) for m, d in DIMS.items()}, build().train(), nn.Linear(5, 2))
    inputs = {m: (f, None) for m, f in feats.items()}
    labels = torch.tensor([0, 1, 1])
    batch = Batch(ids=list("abc"), inputs=inputs, present=present(), labels=labels, label_present=present()["text"])
    parts = ClassificationObjective()(model, batch)
    auxiliary: dict[str, Tensor] = {}
    logits = model(inputs, present(), auxiliary=auxiliary)
    torch.testing.assert_close(parts["grounding"], auxiliary["grounding"])
    torch.testing.assert_close(parts["loss"], nn.functional.cross_entropy(logits, labels) + auxiliary["grounding"])
    assert model.eval()(inputs, present()).shape == (3, 2)
