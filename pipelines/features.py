"""Feature contract shared by training and inference, so both see identical inputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

TARGET = "target"

_MEASURES = [
    "radius",
    "texture",
    "perimeter",
    "area",
    "smoothness",
    "compactness",
    "concavity",
    "concave_points",
    "symmetry",
    "fractal_dimension",
]

# Column order is part of the contract: the fitted model expects exactly this layout.
FEATURES: list[str] = (
    [f"mean_{m}" for m in _MEASURES] + [f"{m}_error" for m in _MEASURES] + [f"worst_{m}" for m in _MEASURES]
)


def clean(df: pd.DataFrame) -> pd.DataFrame:
    """Validate, type and order columns; keep `target` only if present, drop extras.

    Missing values are kept: imputation is learned from the training split only.
    """
    missing = [column for column in FEATURES if column not in df.columns]
    if missing:
        raise ValueError(f"input is missing required feature columns: {', '.join(missing)}")
    columns = FEATURES + ([TARGET] if TARGET in df.columns else [])
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    for column in columns:
        try:
            out[column] = pd.to_numeric(df[column].to_numpy(), errors="raise").astype(float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {column!r} is not numeric: {exc}") from exc
    if TARGET in out.columns:
        if out[TARGET].isna().any():
            raise ValueError(f"column {TARGET!r} contains missing values")
        out[TARGET] = out[TARGET].astype(int)
    return out


def build_preprocessor(params: Mapping[str, Any]) -> Pipeline:
    """Impute then scale; fitted inside the model pipeline so it only learns from train."""
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy=params.get("imputer_strategy", "median"))),
            ("scale", StandardScaler()),
        ]
    )
