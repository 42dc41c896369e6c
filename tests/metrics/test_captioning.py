import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pycocoevalcap")
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from polymodal.metrics import bleu, cider_d, rouge_l, score_captions, tokenize
from polymodal.metrics.captioning import bleu_from_stats, bleu_stats, cider_d_per_item, meteor_available

VOCAB = [
    "a",
    "an",
    "the",
    "dog",
    "cat",
    "man",
    "woman",
    "sits",
    "on",
    "red",
    "blue",
    "table",
    "street",
    "with",
    "ball",
    "runs",
    "near",
    "park",
]


def _random_corpus(seed: int, n_images: int = 60) -> tuple[dict, dict]:
    """Random tokenised captions; a small vocabulary so n-grams overlap at every order."""
    rng = np.random.default_rng(seed)

    def caption(lo: int, hi: int) -> str:
        return " ".join(rng.choice(VOCAB, rng.integers(lo, hi)))

    refs = {f"img{i}": [caption(3, 12) for _ in range(rng.integers(1, 6))] for i in range(n_images)}
    preds = {key: caption(1, 14) for key in refs}
    # Predictions copying a reference exercise the high-precision end of every metric.
    for key in list(refs)[:5]:
        preds[key] = refs[key][0]
    return refs, preds


def _coco_format(refs: dict, preds: dict) -> tuple[dict, dict]:
    return refs, {key: [caption] for key, caption in preds.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bleu_matches_pycocoevalcap(seed: int) -> None:
    refs, preds = _random_corpus(seed)
    expected, _ = Bleu(4).compute_score(*_coco_format(refs, preds), verbose=0)
    np.testing.assert_allclose(bleu(refs, preds, n=4), expected, rtol=0, atol=1e-6)
    assert 0.0 < expected[3] < expected[0] < 1.0  # a non-degenerate comparison


def test_bleu_brevity_penalty_and_zero_matches_match_pycocoevalcap() -> None:
    # Short hypotheses (brevity penalty) and one with no 4-gram match at all (smoothing constants).
    refs = {1: ["a dog runs in the park", "the dog is running"], 2: ["a red ball on the table"]}
    preds = {1: "dog", 2: "ball red"}
    expected, _ = Bleu(4).compute_score(*_coco_format(refs, preds), verbose=0)
    np.testing.assert_allclose(bleu(refs, preds), expected, rtol=0, atol=1e-6)
    # An empty prediction and an empty reference string among others.
    refs, preds = (
        {1: ["a dog runs", ""], 2: ["a red ball"], 3: ["the cat"]},
        {1: "a dog runs", 2: "", 3: "the cat sits"},
    )
    expected, _ = Bleu(4).compute_score(*_coco_format(refs, preds), verbose=0)
    np.testing.assert_allclose(bleu(refs, preds), expected, rtol=0, atol=1e-6)


def test_bleu_of_a_resample_from_summed_statistics_matches_pycocoevalcap() -> None:
    """What the bootstrap CI relies on: a resample's BLEU (repeats included) is the sum of its rows."""
    refs, preds = _random_corpus(3, n_images=30)
    keys = list(preds)
    stats = bleu_stats(refs, preds, 4)
    rng = np.random.default_rng(0)
    for _ in range(3):
        idx = rng.integers(0, len(keys), len(keys))
        assert len(set(idx.tolist())) < len(idx)  # repeats present: each must count again
        resampled_refs = {j: refs[keys[i]] for j, i in enumerate(idx)}
        resampled_preds = {j: [preds[keys[i]]] for j, i in enumerate(idx)}
        expected, _ = Bleu(4).compute_score(resampled_refs, resampled_preds, verbose=0)
        np.testing.assert_allclose(bleu_from_stats(stats[idx].sum(axis=0)), expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="2n \\+ 2 BLEU statistics"):
        bleu_from_stats(stats.sum(axis=0)[:-1])


@pytest.mark.parametrize("seed", [0, 1])
def test_rouge_l_matches_pycocoevalcap(seed: int) -> None:
    refs, preds = _random_corpus(seed)
    expected, _ = Rouge().compute_score(*_coco_format(refs, preds))
    assert rouge_l(refs, preds) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cider_d_matches_pycocoevalcap(seed: int) -> None:
    refs, preds = _random_corpus(seed)
    expected, per_item = Cider().compute_score(*_coco_format(refs, preds))
    assert cider_d(refs, preds) == pytest.approx(expected, abs=1e-6)
    np.testing.assert_allclose(list(cider_d_per_item(refs, preds).values()), per_item, rtol=0, atol=1e-6)
    assert expected > 0.1


def test_tokenize_lowercases_splits_clitics_and_drops_punctuation() -> None:
    assert tokenize("A Dog's ball, on the TABLE.") == "a dog 's ball on the table"
    # "?!" is not in pycocoevalcap's drop list, so PTB output keeps it; "--" is dropped.
    assert tokenize("I don't  know -- really?!") == "i do n't know really ?!"
    assert tokenize("A cat-like toy at 5:30 p.m. (red)") == "a cat-like toy at 5:30 p.m. -lrb- red -rrb-"
    assert tokenize("  ") == ""


# Captions on which the Java PTBTokenizer (pycocoevalcap pipeline) and tokenize() agree.
# Known difference: PTB's abbreviation list keeps "st." whole; tokenize() does not.
PTB_CASES = [
    "A man riding a wave on top of a surfboard.",
    "A Dog's ball, on the TABLE.",
    "I don't  know -- really?!",
    "Two men (one in red) play frisbee.",
    "Two dogs [brown] play {outside}",
    "A cat-like toy sits on a 3.5-inch shelf.",
    "People aren't walking; they're running!",
    'The "best" pizza\'s crust',
    "a man at 5:30 p.m. with $20",
    "It's a 10,000-piece puzzle!!",
    "Woman's hat... and a U.S. flag",
    "a 2x4 board & 50% off",
    "kids' toys on the floor",
]


@pytest.mark.skipif(shutil.which("java") is None, reason="the PTBTokenizer needs java on PATH")
def test_tokenize_matches_java_ptb_tokenizer() -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    expected = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(PTB_CASES)})
    assert [tokenize(c) for c in PTB_CASES] == [expected[i][0] for i in range(len(PTB_CASES))]


def test_score_captions_reads_coco_json(tmp_path: Path) -> None:
    refs, preds = _random_corpus(3, n_images=10)
    ids = {key: i for i, key in enumerate(refs)}
    annotations = [
        {"image_id": ids[k], "id": j, "caption": c.capitalize() + "."}
        for k, caps in refs.items()
        for j, c in enumerate(caps)
    ]
    path = tmp_path / "captions_val.json"
    path.write_text(json.dumps({"annotations": annotations}))
    results = [{"image_id": ids[k], "caption": c.upper()} for k, c in preds.items()]

    scores = score_captions(path, results, with_meteor=False)

    by_id_refs = {ids[k]: v for k, v in refs.items()}
    by_id_preds = {ids[k]: v for k, v in preds.items()}
    assert set(scores) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}
    assert scores["CIDEr"] == pytest.approx(Cider().compute_score(*_coco_format(by_id_refs, by_id_preds))[0])
    assert scores["Bleu_4"] == pytest.approx(bleu(by_id_refs, by_id_preds)[3])


def test_score_captions_names_unknown_image() -> None:
    with pytest.raises(ValueError, match=r"preds\[1\] image_id 99 has no reference"):
        score_captions(
            {"annotations": [{"image_id": 1, "caption": "a dog"}]},
            [{"image_id": 1, "caption": "a dog"}, {"image_id": 99, "caption": "x"}],
        )


def test_mismatched_ids_are_reported() -> None:
    with pytest.raises(ValueError, match="missing preds"):
        bleu({1: ["a"], 2: ["b"]}, {1: "a"})


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs java on PATH; skipped without it")
def test_meteor_matches_pycocoevalcap() -> None:
    from pycocoevalcap.meteor.meteor import Meteor

    from polymodal.metrics import meteor

    assert meteor_available()
    refs, preds = _random_corpus(0, n_images=20)
    expected, _ = Meteor().compute_score(*_coco_format(refs, preds))
    assert meteor(refs, preds) == pytest.approx(expected, abs=1e-6)


def test_without_java_meteor_is_skipped_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from polymodal.metrics import captioning, meteor

    monkeypatch.setattr(captioning.shutil, "which", lambda name: None)
    data = {"annotations": [{"image_id": 1, "caption": "a dog"}]}
    with pytest.warns(UserWarning, match="METEOR skipped: it needs `java`"):
        scores = score_captions(data, [{"image_id": 1, "caption": "a dog"}])
    assert "METEOR" not in scores and scores["CIDEr"] == 0.0  # one image: idf is log(1) = 0
    with pytest.raises(RuntimeError, match="METEOR needs `java` on PATH"):
        meteor({1: ["a dog"]}, {1: "a dog"})
