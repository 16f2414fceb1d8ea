"""Model template: `train` fits, `infer` applies; one script so both share one contract."""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

if __package__:
    from . import features
else:  # run as `python pipelines/<script>.py`: the script's directory is sys.path[0]
    import features


def build_model(params: Mapping[str, Any]) -> Pipeline:
    """Preprocessing lives inside the model so inference reuses what was fitted on train.

    The default solver, SAG, fits with its own loops rather than BLAS calls, so the fitted model is
    bit-identical whichever BLAS kernel the machine picks (lbfgs, liblinear and the Newton solvers
    are not: their pickles differ in the last bits between CPUs).
    """
    return Pipeline(
        [
            ("preprocess", features.build_preprocessor(params)),
            (
                "classifier",
                LogisticRegression(
                    C=params.get("C", 1.0),
                    solver=params.get("solver", "sag"),
                    max_iter=params.get("max_iter", 1000),
                    random_state=params.get("seed", 42),
                ),
            ),
        ]
    )


def train(train_path: Path, output_path: Path, params: Mapping[str, Any]) -> Pipeline:
    """Fit on the train split and pickle the whole pipeline."""
    df = features.clean(pd.read_csv(train_path))
    model = build_model(params)
    with threadpool_limits(limits=1):  # single-threaded BLAS keeps the fit bit-for-bit repeatable
        model.fit(df[features.FEATURES], df[features.TARGET])
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with output_path.open("wb") as fh:
        pickle.dump(model, fh, protocol=5)
    return model


def load_model(model_path: Path) -> Pipeline:
    """Unpickle a model written by `train` (only load files you trust)."""
    with model_path.open("rb") as fh:
        return pickle.load(fh)


def predict(model: Pipeline, df: pd.DataFrame) -> pd.DataFrame:
    """One row per input row, in input order: class label and P(class 1)."""
    X = features.clean(df)[features.FEATURES]
    return pd.DataFrame(
        {
            "prediction": model.predict(X).astype(int),
            "probability": model.predict_proba(X)[:, 1],
        }
    )


def infer(model_path: Path, input_path: Path, output_path: Path) -> pd.DataFrame:
    """Score a CSV file with a pickled model and write the predictions CSV."""
    predictions = predict(load_model(model_path), pd.read_csv(input_path))
    output_path.parent.mkdir(parents=True, exist_ok=True)
    predictions.to_csv(output_path, index=False, lineterminator="\n")
    return predictions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train_cmd = commands.add_parser("train", help="fit the model on a prepared train split")
    train_cmd.add_argument("--train", type=Path, required=True)
    train_cmd.add_argument("--params", type=Path, default=Path("params.yaml"))
    train_cmd.add_argument("--output", type=Path, required=True)

    infer_cmd = commands.add_parser("infer", help="score a CSV with a trained model")
    infer_cmd.add_argument("--model", type=Path, required=True)
    infer_cmd.add_argument("--input", type=Path, required=True)
    infer_cmd.add_argument("--output", type=Path, required=True)

    args = parser.parse_args(argv)
    if args.command == "train":
        params = yaml.safe_load(args.params.read_text()).get("train", {})
        train(args.train, args.output, params)
    else:
        infer(args.model, args.input, args.output)


if __name__ == "__main__":
    main()
