"""Prepare stage: clean the raw table and split it into train/validation/test CSVs."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml
from sklearn.model_selection import train_test_split

if __package__:
    from . import features
else:  # run as `python pipelines/<script>.py`: the script's directory is sys.path[0]
    import features


def split(df: pd.DataFrame, test_size: float, validation_size: float, seed: int) -> dict[str, pd.DataFrame]:
    """Stratified split; both sizes are fractions of the whole table."""
    rest, test = train_test_split(df, test_size=test_size, stratify=df[features.TARGET], random_state=seed)
    train, validation = train_test_split(
        rest,
        test_size=validation_size / (1 - test_size),
        stratify=rest[features.TARGET],
        random_state=seed,
    )
    return {"train": train, "validation": validation, "test": test}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    params = yaml.safe_load(args.params.read_text()).get("prepare", {})
    df = features.clean(pd.read_csv(args.input))
    splits = split(
        df,
        test_size=params.get("test_size", 0.2),
        validation_size=params.get("validation_size", 0.2),
        seed=params.get("seed", 42),
    )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name, part in splits.items():
        part.to_csv(args.output_dir / f"{name}.csv", index=False, lineterminator="\n")


if __name__ == "__main__":
    main()
