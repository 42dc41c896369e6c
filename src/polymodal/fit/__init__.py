"""``polymodal fit``: a classifier or regressor from a user's table (CSV, JSONL, Parquet or class folders).

Columns are detected by content (image, audio, video paths; text; categorical; numeric), featurized by the offline
pretrained towers (locked), and a small search over fusion modules and heads picks a network on a validation split
within a time limit. :class:`TablePredictor` saves, loads and predicts.
"""

from polymodal.fit.columns import COLUMN_KINDS, PROBLEMS, ColumnInfo, Problem, describe_column, detect_problem
from polymodal.fit.predictor import ColumnMismatchError, Predictions, TablePredictor, is_fit_dir, plan_inputs
from polymodal.fit.table import Table, read_table, rows_table

__all__ = [
    "COLUMN_KINDS",
    "PROBLEMS",
    "ColumnInfo",
    "ColumnMismatchError",
    "Predictions",
    "Problem",
    "Table",
    "TablePredictor",
    "describe_column",
    "detect_problem",
    "is_fit_dir",
    "plan_inputs",
    "read_table",
    "rows_table",
]
