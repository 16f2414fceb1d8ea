"""Shape of tabular datasets (rows, columns) for the dataset snapshot, with the stdlib only."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

DELIMITERS = {".csv": ",", ".tsv": "\t"}


@dataclass(frozen=True)
class Shape:
    rows: int
    columns: list[str]


def shape(path: Path) -> Shape | None:
    """Rows (excluding the header) and column names of a CSV/TSV file; None for anything else."""
    delimiter = DELIMITERS.get(path.suffix.lower())
    if delimiter is None or not path.is_file():
        return None
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return Shape(0, [])
            rows = sum(1 for _ in reader)
    except (UnicodeDecodeError, csv.Error):
        return None
    return Shape(rows, header)


def read_table(path: Path) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows of a CSV/TSV file as text (None for anything else): what a verifier compares."""
    delimiter = DELIMITERS.get(path.suffix.lower())
    if delimiter is None or not path.is_file():
        return None
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(reader, None)
            return (header or [], list(reader))
    except (UnicodeDecodeError, csv.Error):
        return None


def write_table(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """A CSV/TSV file from text cells, as `read_table` gives them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=DELIMITERS.get(path.suffix.lower(), ","), lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
