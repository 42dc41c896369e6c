"""VQA accuracy with the official VQA answer normalisation.

Tables and rules are those of the official evaluation script,
GT-Vision-Lab/VQA ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` (VQAEval.contractions,
manualMap, articles, punct, periodStrip, commaStrip, processPunctuation,
processDigitArticle). The contraction table is copied as published, including its mix of
straight (') and curly (\u2019) apostrophes, because matching the official numbers needs it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

# Official VQAEval.contractions: apostrophe-less spelling -> contracted form.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn’t’ve",
    "couldnt’ve": "couldn’t’ve",
    "didnt": "didn’t",
    "doesnt": "doesn’t",
    "dont": "don’t",
    "hadnt": "hadn’t",
    "hadnt’ve": "hadn’t’ve",
    "hadn'tve": "hadn’t’ve",
    "hasnt": "hasn’t",
    "havent": "haven’t",
    "hed": "he’d",
    "hed’ve": "he’d’ve",
    "he’dve": "he’d’ve",
    "hes": "he’s",
    "howd": "how’d",
    "howll": "how’ll",
    "hows": "how’s",
    "Id’ve": "I’d’ve",
    "I’dve": "I’d’ve",
    "Im": "I’m",
    "Ive": "I’ve",
    "isnt": "isn’t",
    "itd": "it’d",
    "itd’ve": "it’d’ve",
    "it’dve": "it’d’ve",
    "itll": "it’ll",
    "let’s": "let’s",
    "maam": "ma’am",
    "mightnt": "mightn’t",
    "mightnt’ve": "mightn’t’ve",
    "mightn’tve": "mightn’t’ve",
    "mightve": "might’ve",
    "mustnt": "mustn’t",
    "mustve": "must’ve",
    "neednt": "needn’t",
    "notve": "not’ve",
    "oclock": "o’clock",
    "oughtnt": "oughtn’t",
    "ow’s’at": "’ow’s’at",
    "’ows’at": "’ow’s’at",
    "’ow’sat": "’ow’s’at",
    "shant": "shan’t",
    "shed’ve": "she’d’ve",
    "she’dve": "she’d’ve",
    "she’s": "she’s",
    "shouldve": "should’ve",
    "shouldnt": "shouldn’t",
    "shouldnt’ve": "shouldn’t’ve",
    "shouldn’tve": "shouldn’t’ve",
    "somebody’d": "somebodyd",
    "somebodyd’ve": "somebody’d’ve",
    "somebody’dve": "somebody’d’ve",
    "somebodyll": "somebody’ll",
    "somebodys": "somebody’s",
    "someoned": "someone’d",
    "someoned’ve": "someone’d’ve",
    "someone’dve": "someone’d’ve",
    "someonell": "someone’ll",
    "someones": "someone’s",
    "somethingd": "something’d",
    "somethingd’ve": "something’d’ve",
    "something’dve": "something’d’ve",
    "somethingll": "something’ll",
    "thats": "that’s",
    "thered": "there’d",
    "thered’ve": "there’d’ve",
    "there’dve": "there’d’ve",
    "therere": "there’re",
    "theres": "there’s",
    "theyd": "they’d",
    "theyd’ve": "they’d’ve",
    "they’dve": "they’d’ve",
    "theyll": "they’ll",
    "theyre": "they’re",
    "theyve": "they’ve",
    "twas": "’twas",
    "wasnt": "wasn’t",
    "wed’ve": "we’d’ve",
    "we’dve": "we’d’ve",
    "weve": "we've",
    "werent": "weren’t",
    "whatll": "what’ll",
    "whatre": "what’re",
    "whats": "what’s",
    "whatve": "what’ve",
    "whens": "when’s",
    "whered": "where’d",
    "wheres": "where's",
    "whereve": "where’ve",
    "whod": "who’d",
    "whod’ve": "who’d’ve",
    "who’dve": "who’d’ve",
    "wholl": "who’ll",
    "whos": "who’s",
    "whove": "who've",
    "whyll": "why’ll",
    "whyre": "why’re",
    "whys": "why’s",
    "wont": "won’t",
    "wouldve": "would’ve",
    "wouldnt": "wouldn’t",
    "wouldnt’ve": "wouldn’t’ve",
    "wouldn’tve": "wouldn’t’ve",
    "yall": "y’all",
    "yall’ll": "y’all’ll",
    "y’allll": "y’all’ll",
    "yall’d’ve": "y’all’d’ve",
    "y’alld’ve": "y’all’d’ve",
    "y’all’dve": "y’all’d’ve",
    "youd": "you’d",
    "youd’ve": "you’d’ve",
    "you’dve": "you’d’ve",
    "youll": "you’ll",
    "youre": "you’re",
    "youve": "you’ve",
}
# Official VQAEval.manualMap: number words -> digits.
NUMBER_WORDS: dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = [";", ":", "/", "'", "[", "]", '"', "(", ")", "=", "+", "\\", "_", ">", "<", "@", "`", ",", "?"]
# The official pattern, kept verbatim: "(?!<=" is a typo for a lookbehind, so it is really a
# negative lookahead for "<=" and strips every period not followed by a digit.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")


def _process_punctuation(text: str) -> str:
    """Official processPunctuation: a mark next to a space (or any digit,digit comma in the
    text) is deleted, otherwise it becomes a space ("yes/no" -> "yes no"); periods not
    followed by a digit are dropped."""
    out = text
    has_digit_comma = _COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        if (p + " " in text or " " + p in text) or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def _process_digit_article(text: str) -> str:
    """Official processDigitArticle: lowercase, number words -> digits, drop articles, expand
    contractions."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(answer: str) -> str:
    """Normalise an answer the way the official VQA evaluation normalises predictions."""
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(text))


def vqa_accuracy(pred: str, gt_answers: Sequence[str]) -> float:
    """Official VQA accuracy of one prediction against the (usually 10) human answers.

    For each annotator, min(#matches among the *other* annotators / 3, 1); averaged over
    annotators, i.e. over the 10-choose-9 subsets. Both sides are normalised with
    :func:`normalize_answer` (the official script only punctuation-strips the ground truth
    because the released annotations are already normalised; full normalisation leaves such
    answers unchanged).
    """
    if len(gt_answers) == 0:
        raise ValueError("gt_answers is empty; VQA accuracy needs the annotators' answers")
    pred_n = normalize_answer(pred)
    gts = [normalize_answer(a) for a in gt_answers]
    total_matches = sum(a == pred_n for a in gts)
    # Leaving out annotator i removes one match exactly when annotator i matched.
    accs = [min(1.0, (total_matches - (a == pred_n)) / 3.0) for a in gts]
    return sum(accs) / len(accs)


def vqa_score(
    preds: Mapping[Any, str],
    gts: Mapping[Any, Sequence[str]],
    question_types: Mapping[Any, str] | None = None,
) -> dict[str, Any]:
    """Mean VQA accuracy over questions plus a per-question-type breakdown.

    ``preds``: question id -> answer; ``gts``: question id -> list of human answers;
    ``question_types``: question id -> type (e.g. VQAv2 ``question_type`` or ``answer_type``).
    Returns ``{"overall": float, "per_type": {type: float}, "per_question": {id: float}}``,
    accuracies as fractions in [0, 1]. The per-type means use each question's full averaged
    accuracy (the official script averages only the last subset's value there, a known bug).
    """
    missing = [q for q in gts if q not in preds]
    if missing:
        raise ValueError(f"no prediction for question ids {missing[:5]} ({len(missing)} missing)")
    per_question = {q: vqa_accuracy(preds[q], answers) for q, answers in gts.items()}
    by_type: dict[str, list[float]] = defaultdict(list)
    for q, acc in per_question.items():
        if question_types is not None:
            by_type[question_types[q]].append(acc)
    overall = sum(per_question.values()) / len(per_question) if per_question else 0.0
    return {
        "overall": overall,
        "per_type": {t: sum(v) / len(v) for t, v in by_type.items()},
        "per_question": per_question,
    }
