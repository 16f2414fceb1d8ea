"""Extract stage: dump the bundled breast-cancer data as if pulled from a messy source system."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.datasets import load_breast_cancer


def snake_case(name: str) -> str:
    """`mean concave points` -> `mean_concave_points`, so columns are safe identifiers."""
    return re.sub(r"\W+", "_", name.strip().lower()).strip("_")


def extract(missing_fraction: float = 0.02, seed: int = 0) -> pd.DataFrame:
    """Return features + `target`, with a seeded fraction of feature cells blanked out.

    The blanks simulate gaps in a real source, giving the imputer something to do.
    """
    df = load_breast_cancer(as_frame=True).frame.rename(columns=snake_case)
    features = [column for column in df.columns if column != "target"]
    mask = np.random.default_rng(seed).random((len(df), len(features))) < missing_fraction
    df[features] = df[features].mask(mask)
    return df


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    params = yaml.safe_load(args.params.read_text()).get("extract", {})
    df = extract(params.get("missing_fraction", 0.02), params.get("seed", 0))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.output, index=False, lineterminator="\n")


if __name__ == "__main__":
    main()
