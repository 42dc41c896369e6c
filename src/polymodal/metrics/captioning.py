"""Caption metrics matching the COCO caption evaluation code (pycocoevalcap 1.2).

All scorers take ``refs: dict[id, list[str]]`` and ``preds: dict[id, str]`` of already
tokenised captions (lowercase, tokens separated by single spaces; see :func:`tokenize`).
They reproduce pycocoevalcap's arithmetic, quirks included, so numbers are comparable with
published COCO results; the tests check agreement to 1e-6.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

Refs = Mapping[Any, Sequence[str]]
Preds = Mapping[Any, str]

# pycocoevalcap lowercases PTB output and then drops exactly these tokens. Its list holds
# "-LRB-" etc. in upper case, so the lowercased "-lrb-" bracket tokens survive: reproduced.
_DROPPED = frozenset(
    {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
)
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
# PTB splits these clitics off the word before them ("don't" -> "do n't", "dog's" -> "dog 's").
_CLITIC = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN = re.compile(
    r"(?:[a-z]\.){2,}"  # abbreviations kept whole: "p.m.", "u.s."
    r"|n't|'(?:s|re|ve|ll|d|m)\b"  # split-off clitics
    r"|\w+(?:(?:[-'.]|(?<=\d)[:,](?=\d))\w+)*"  # words, "cat-like", "3.5", "5:30", "10,000"
    r"|[()\[\]{}]"  # brackets, one per token
    r"|[^\w\s()\[\]{}]+"  # runs of other symbols: "?!", "$", "--"
)


def tokenize(caption: str) -> str:
    """PTB-like tokenizer for when Java (and the Stanford PTBTokenizer) is unavailable.

    Mirrors pycocoevalcap's PTBTokenizer pipeline: lowercase, PTB tokenisation (clitics split,
    hyphenated words and numbers kept whole, brackets as -lrb-/-rrb-), then its punctuation
    tokens dropped. Close to Stanford's output on ordinary captions, not guaranteed identical.
    """
    text = _CLITIC.sub(r" \1", caption.lower().replace("\u2019", "'"))
    tokens = (_BRACKETS.get(t, t) for t in _TOKEN.findall(text))
    # PTB turns double quotes into `` and '' before they are dropped.
    return " ".join(t for t in tokens if t not in _DROPPED and t.strip("\"'`"))


def _ngrams(words: Sequence[str], n: int) -> Counter:
    """Counts of all 1..n-grams of ``words`` (tuples as keys)."""
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _check(refs: Refs, preds: Preds) -> list:
    """The ids to score; refs and preds must cover the same ids (as pycocoevalcap asserts)."""
    if set(refs) != set(preds):
        missing, extra = set(refs) - set(preds), set(preds) - set(refs)
        raise ValueError(
            f"refs and preds need the same ids; missing preds {sorted(missing, key=str)[:5]}, "
            f"preds without refs {sorted(extra, key=str)[:5]}"
        )
    for key, captions in refs.items():
        if isinstance(captions, str) or len(captions) == 0:
            raise ValueError(f"refs[{key!r}] must be a non-empty list of captions")
    return list(preds)


def bleu_stats(refs: Refs, preds: Preds, n: int = 4) -> np.ndarray:
    """Per-caption BLEU statistics, (N, 2n + 2) float64 rows in the order of ``preds``' ids.

    Columns: clipped n-gram matches for 1..n, hypothesis n-gram counts for 1..n, hypothesis
    length, and the reference length closest to it (the shorter one on a tie). Corpus BLEU is a
    function of their column sums (:func:`bleu_from_stats`), so the BLEU of any subset of the
    captions, or of a bootstrap resample with repeats, is the sum of its rows: no n-gram is
    counted twice.
    """
    keys = _check(refs, preds)
    stats = np.zeros((len(keys), 2 * n + 2))
    for row, key in enumerate(keys):
        words = preds[key].split()
        max_ref: Counter = Counter()
        ref_lens = []
        for ref in refs[key]:
            ref_words = ref.split()
            ref_lens.append(len(ref_words))
            max_ref |= _ngrams(ref_words, n)  # elementwise max
        for gram, count in _ngrams(words, n).items():
            stats[row, len(gram) - 1] += min(max_ref[gram], count)
        stats[row, n : 2 * n] = [max(0, len(words) - k) for k in range(n)]
        stats[row, 2 * n] = len(words)
        stats[row, 2 * n + 1] = min((abs(length - len(words)), length) for length in ref_lens)[1]
    return stats


def bleu_from_stats(totals: Sequence[float] | np.ndarray) -> list[float]:
    """BLEU-1..n from the column sums of :func:`bleu_stats` (2n + 2 numbers), as pycocoevalcap's ``Bleu``.

    In Python floats, operation for operation as pycocoevalcap, so the values are bit-identical. The
    tiny/small constants (1e-15, 1e-9) are pycocoevalcap's and make a zero match give ~0.
    """
    totals = [float(t) for t in totals]
    n, odd = divmod(len(totals) - 2, 2)
    if n < 1 or odd:
        raise ValueError(f"expected 2n + 2 BLEU statistics (n >= 1), got {len(totals)}")
    tiny, small = 1e-15, 1e-9
    scores, product = [], 1.0
    for k in range(n):
        product *= (totals[k] + tiny) / (totals[n + k] + small)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (totals[2 * n] + tiny) / (totals[2 * n + 1] + small)
    if ratio < 1:
        scores = [score * math.exp(1 - 1 / ratio) for score in scores]
    return scores


def bleu(refs: Refs, preds: Preds, n: int = 4) -> list[float]:
    """Corpus BLEU-1..n as pycocoevalcap's ``Bleu`` computes it.

    Clipped n-gram counts are pooled over the corpus; the brevity penalty uses, per caption,
    the reference length closest to the hypothesis length (the shorter one on a tie).
    """
    return bleu_from_stats(bleu_stats(refs, preds, n).sum(axis=0))


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (one-row dynamic programme)."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, start=1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l_per_item(refs: Refs, preds: Preds, beta: float = 1.2) -> dict[Any, float]:
    """ROUGE-L F-score per id: max precision and max recall over references, then F_beta."""
    out = {}
    for key in _check(refs, preds):
        # pycocoevalcap splits on single spaces, so an empty caption is one empty token.
        cand = preds[key].split(" ")
        prec, rec = [], []
        for ref in refs[key]:
            ref_tokens = ref.split(" ")
            lcs = _lcs(ref_tokens, cand)
            prec.append(lcs / len(cand))
            rec.append(lcs / len(ref_tokens))
        p, r = max(prec), max(rec)
        out[key] = (1 + beta**2) * p * r / (r + beta**2 * p) if p != 0 and r != 0 else 0.0
    return out


def rouge_l(refs: Refs, preds: Preds) -> float:
    """Mean ROUGE-L (beta 1.2) over ids, as pycocoevalcap's ``Rouge``."""
    return float(np.mean(list(rouge_l_per_item(refs, preds).values())))


def cider_d_per_item(refs: Refs, preds: Preds, n: int = 4, sigma: float = 6.0) -> dict[Any, float]:
    """CIDEr-D per id exactly as pycocoevalcap's ``Cider`` (which implements CIDEr-D).

    TF-IDF n-gram vectors with document frequencies counted over the references of the
    evaluated set (so scores depend on the set), hypothesis weights clipped at the reference
    weights, a Gaussian length penalty (sigma 6) and the x10 scale. Its "length" is the
    number of bigrams of a caption, as in the reference code.
    """
    keys = _check(refs, preds)
    ref_counts = {key: [_ngrams(r.split(), n) for r in refs[key]] for key in keys}
    doc_freq: Counter = Counter()
    for counts in ref_counts.values():
        doc_freq.update(set().union(*counts))
    log_n_docs = np.log(float(len(keys)))

    def vectorise(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            vec[k][gram] = float(tf) * (log_n_docs - np.log(max(1.0, doc_freq[gram])))
            norm[k] += vec[k][gram] ** 2
            if k == 1:
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    out = {}
    for key in keys:
        vec, norm, length = vectorise(_ngrams(preds[key].split(), n))
        total = np.zeros(n)
        for counts in ref_counts[key]:
            vec_r, norm_r, length_r = vectorise(counts)
            penalty = np.e ** (-(float(length - length_r) ** 2) / (2 * sigma**2))
            for k in range(n):
                val = sum(min(w, vec_r[k].get(g, 0.0)) * vec_r[k].get(g, 0.0) for g, w in vec[k].items())
                if norm[k] != 0 and norm_r[k] != 0:
                    val /= norm[k] * norm_r[k]
                total[k] += val * penalty
        out[key] = float(np.mean(total) / len(refs[key]) * 10.0)
    return out


def cider_d(refs: Refs, preds: Preds, n: int = 4, sigma: float = 6.0) -> float:
    """Mean CIDEr-D over ids (see :func:`cider_d_per_item`)."""
    return float(np.mean(list(cider_d_per_item(refs, preds, n, sigma).values())))


def meteor_available(jar: str | os.PathLike | None = None) -> bool:
    """True when ``java`` is on PATH and a METEOR 1.5 jar can be found."""
    return shutil.which("java") is not None and _meteor_jar(jar) is not None


def _meteor_jar(jar: str | os.PathLike | None) -> Path | None:
    """The jar from the argument, ``$POLYMODAL_METEOR_JAR``, or pycocoevalcap's copy (not imported)."""
    candidates = [jar, os.environ.get("POLYMODAL_METEOR_JAR")]
    spec = find_spec("pycocoevalcap")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(list(spec.submodule_search_locations)[0]) / "meteor" / "meteor-1.5.jar")
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def meteor(refs: Refs, preds: Preds, jar: str | os.PathLike | None = None) -> float:
    """Corpus METEOR 1.5 via the Java jar, driven the way pycocoevalcap drives it.

    Needs ``java`` on PATH and the jar (argument, ``$POLYMODAL_METEOR_JAR`` or an installed
    pycocoevalcap, whose jar ships the paraphrase table). Raises RuntimeError otherwise.
    """
    jar_path = _meteor_jar(jar)
    if shutil.which("java") is None or jar_path is None:
        raise RuntimeError(
            "METEOR needs `java` on PATH and meteor-1.5.jar (pass jar=, set POLYMODAL_METEOR_JAR, "
            "or pip install pycocoevalcap); skipping METEOR is the usual fallback"
        )
    keys = _check(refs, preds)
    lines = []
    for key in keys:
        hyp = preds[key].replace("|||", "").replace("  ", " ")
        lines.append(" ||| ".join(["SCORE", " ||| ".join(refs[key]), hyp]))
    # -stdio mode: one SCORE line per segment returns stats; EVAL with all stats gives the corpus score.
    proc = subprocess.Popen(
        ["java", "-jar", "-Xmx2G", str(jar_path), "-", "-", "-stdio", "-l", "en", "-norm"],
        cwd=jar_path.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stats = []
    for line in lines:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        stats.append(proc.stdout.readline().strip())
    proc.stdin.write("EVAL ||| " + " ||| ".join(stats) + "\n")
    proc.stdin.flush()
    for _ in keys:  # per-segment scores come first, then the corpus score
        proc.stdout.readline()
    score = float(proc.stdout.readline().strip())
    proc.stdin.close()
    proc.wait()
    return score


def load_coco_refs(refs: str | os.PathLike | Mapping[str, Any]) -> dict[Any, list[str]]:
    """image_id -> raw captions from a COCO captions annotations JSON (path or loaded dict)."""
    data = json.loads(Path(refs).read_text()) if isinstance(refs, (str, os.PathLike)) else refs
    out: dict[Any, list[str]] = {}
    for i, ann in enumerate(data["annotations"]):
        if "image_id" not in ann or "caption" not in ann:
            raise ValueError(f"annotations[{i}] needs 'image_id' and 'caption'; got keys {sorted(ann)}")
        out.setdefault(ann["image_id"], []).append(ann["caption"])
    return out


def _coco_shape_error(name: str, value: object) -> TypeError:
    """The error for a non-COCO argument to :func:`score_captions` (parallel lists are the usual mistake)."""
    got = f"a {type(value).__name__}" + (
        " without 'annotations'" if name == "refs" and isinstance(value, Mapping) else ""
    )
    return TypeError(
        f"score_captions takes COCO format: refs a captions JSON path or {{'annotations': [{{'image_id', 'caption'}}, "
        f"...]}}, preds [{{'image_id', 'caption'}}, ...]; {name} is {got}"
    )


def score_captions(
    refs: str | os.PathLike | Mapping[str, Any],
    preds: Iterable[Mapping[str, Any]],
    with_meteor: bool | None = None,
) -> dict[str, float]:
    """All caption metrics for COCO-format results, over the images present in ``preds``.

    ``refs`` is a COCO captions annotations JSON (path or dict); ``preds`` is
    ``[{"image_id", "caption"}, ...]``. Captions are tokenised with :func:`tokenize`.
    METEOR is included when ``with_meteor`` is true, or when it is None and java + jar exist.
    Keys follow COCOEvalCap: Bleu_1..4, METEOR, ROUGE_L, CIDEr.
    """
    if not isinstance(refs, (str, os.PathLike)) and not (isinstance(refs, Mapping) and "annotations" in refs):
        raise _coco_shape_error("refs", refs)
    if isinstance(preds, (str, Mapping)):
        raise _coco_shape_error("preds", preds)
    all_refs = load_coco_refs(refs)
    hyps: dict[Any, str] = {}
    for i, pred in enumerate(preds):
        if not isinstance(pred, Mapping):
            raise _coco_shape_error(f"preds[{i}]", pred)
        image_id = pred.get("image_id")
        if image_id not in all_refs:
            raise ValueError(f"preds[{i}] image_id {image_id!r} has no reference captions")
        hyps[image_id] = tokenize(pred["caption"])
    tok_refs = {k: [tokenize(c) for c in all_refs[k]] for k in hyps}

    scores = {f"Bleu_{k + 1}": s for k, s in enumerate(bleu(tok_refs, hyps, 4))}
    if with_meteor is None:
        with_meteor = meteor_available()
        if not with_meteor:
            warnings.warn("METEOR skipped: it needs `java` on PATH and meteor-1.5.jar", stacklevel=2)
    if with_meteor:
        scores["METEOR"] = meteor(tok_refs, hyps)
    scores["ROUGE_L"] = rouge_l(tok_refs, hyps)
    scores["CIDEr"] = cider_d(tok_refs, hyps)
    return scores
