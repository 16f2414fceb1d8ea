"""Evaluate stage: score the model on the validation and test splits and write metrics JSON."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
from sklearn.pipeline import Pipeline

if __package__:
    from . import features
else:  # run as `python pipelines/<script>.py`: the script's directory is sys.path[0]
    import features

SPLITS = ("validation", "test")


def score(model: Pipeline, df: pd.DataFrame) -> dict[str, float]:
    """Binary metrics for class 1, rounded so the JSON is stable and diff-friendly."""
    df = features.clean(df)
    X, y = df[features.FEATURES], df[features.TARGET]
    predicted = model.predict(X)
    probability = model.predict_proba(X)[:, 1]
    metrics = {
        "accuracy": accuracy_score(y, predicted),
        "f1": f1_score(y, predicted),
        "precision": precision_score(y, predicted),
        "recall": recall_score(y, predicted),
        "roc_auc": roc_auc_score(y, probability),
    }
    return {name: round(float(value), 6) for name, value in metrics.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)

    with args.model.open("rb") as fh:
        model = pickle.load(fh)
    metrics = {name: score(model, pd.read_csv(args.data_dir / f"{name}.csv")) for name in SPLITS}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
