"""Evaluation metrics as plain functions over your own predictions (numpy; torch for chunked retrieval)."""

from polymodal.metrics.bootstrap import bootstrap_ci
from polymodal.metrics.captioning import bleu, cider_d, meteor, rouge_l, score_captions, tokenize
from polymodal.metrics.classification import (
    accuracy,
    confusion_matrix,
    precision_recall_f1,
    roc_auc,
    top_k_accuracy,
)
from polymodal.metrics.regression import regression_metrics
from polymodal.metrics.retrieval import RetrievalRanks, metrics_from_ranks, retrieval_metrics, retrieval_ranks
from polymodal.metrics.vqa import normalize_answer, vqa_accuracy, vqa_score

__all__ = [
    "RetrievalRanks",
    "accuracy",
    "bleu",
    "bootstrap_ci",
    "cider_d",
    "confusion_matrix",
    "meteor",
    "metrics_from_ranks",
    "normalize_answer",
    "precision_recall_f1",
    "regression_metrics",
    "retrieval_metrics",
    "retrieval_ranks",
    "roc_auc",
    "rouge_l",
    "score_captions",
    "tokenize",
    "top_k_accuracy",
    "vqa_accuracy",
    "vqa_score",
]
