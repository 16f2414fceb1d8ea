"""CSV/TSV tables with the stdlib only: their shape for dataset snapshots, their cells for a verifier."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

DELIMITERS = {".csv": ",", ".tsv": "\t"}
T = TypeVar("T")


@dataclass(frozen=True)
class Shape:
    rows: int
    columns: list[str]


def shape(path: Path) -> Shape | None:
    """Rows (excluding the header) and column names of a CSV/TSV file; None for anything else."""

    def count(reader: Iterator[list[str]]) -> Shape:
        header = next(reader, None)
        return Shape(0, []) if header is None else Shape(sum(1 for _ in reader), header)

    return _read(path, count)


def read_table(path: Path) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows of a CSV/TSV file as text (None for anything else): what a verifier compares."""

    def everything(reader: Iterator[list[str]]) -> tuple[list[str], list[list[str]]]:
        return next(reader, None) or [], list(reader)

    return _read(path, everything)


def _read(path: Path, consume: Callable[[Iterator[list[str]]], T]) -> T | None:
    delimiter = DELIMITERS.get(path.suffix.lower())
    if delimiter is None or not path.is_file():
        return None
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return consume(csv.reader(handle, delimiter=delimiter))
    except (UnicodeDecodeError, csv.Error):
        return None


def write_table(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """A CSV/TSV file from text cells, as `read_table` gives them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=DELIMITERS.get(path.suffix.lower(), ","), lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def csv_bytes(records: list[dict[str, object]]) -> bytes:
    """JSON rows as CSV: the columns in the order they first appear, a missing cell empty."""
    import io

    columns = list(dict.fromkeys(key for record in records for key in record))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue().encode("utf-8")


def csv_records(path: Path) -> list[dict[str, object]]:
    """A CSV file's rows as objects, numbers as numbers (what a JSON caller expects back)."""
    found = read_table(path)
    if found is None:
        return []
    header, rows = found
    return [dict(zip(header, (_number(cell) for cell in row), strict=False)) for row in rows]


def _number(cell: str) -> object:
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            continue
    return cell
