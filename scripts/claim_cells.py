"""The tables and paragraphs of a document that cite a measurement, and how a number shown
in a cell is compared with the file's (scripts/check_claims.py says how to cite a file)."""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# First words of a row label that name a raw-pixel baseline or the ensemble, as the files call them.
ROW_ALIASES = (
    ("ensemble", "ensemble"),
    ("rbf svm", "svm"),
    ("1-nn", "knn"),
    ("logistic regression", "logreg"),
)

COMMENT = re.compile(r"<!--\s*claims:(.*?)-->")
NUMBER = r"[+-]?\d+(?:,\d{3})*(?:\.\d+)?"
MEAN_STD = re.compile(rf"^\s*({NUMBER})(?:\s*±\s*({NUMBER}))?")


class BadInput(Exception):
    """A claims comment or a cited file that cannot be checked at all (exit 2)."""


@dataclass
class Table:
    doc: str
    line: int  # 1-based line of the header row
    header: list[str]
    rows: list[list[str]]
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""  # the paragraph a kind=numbers comment stands above

    @property
    def name(self) -> str:
        if not self.header:
            return "paragraph " + repr(self.text[:50] + ("..." if len(self.text) > 50 else ""))
        return "table '" + " | ".join(self.header[:3]) + (" | ..." if len(self.header) > 3 else "") + "'"


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    cells: int = 0

    def wrong(self, table: Table, row: str, column: str, expected: str, found: str) -> None:
        cell = f"row '{row}', column '{column}'" if table.header else f"figure {row}"
        self.errors.append(f"{table.doc}:{table.line}: {table.name}, {cell}: expected {expected}, found {found}")

    def unknown(self, table: Table, what: str) -> None:
        self.errors.append(f"{table.doc}:{table.line}: {table.name}: {what}")


# --- reading documents --------------------------------------------------------------------


def _split_row(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _is_separator(cells: list[str]) -> bool:
    return all(re.fullmatch(r":?-{3,}:?", c) for c in cells)


def read_tables(path: Path, doc: str) -> tuple[list[Table], list[Table]]:
    """(tables with a claims comment, tables without one), outside fenced code blocks."""
    lines = path.read_text(encoding="utf-8").splitlines()
    cited: list[Table] = []
    plain: list[Table] = []
    pending: tuple[int, dict[str, str]] | None = None
    numbers: list[tuple[int, dict[str, str]]] = []
    in_code = False
    i = 0
    while i < len(lines):
        text = lines[i]
        if text.lstrip().startswith("```"):
            in_code = not in_code
            i += 1
            continue
        if in_code:
            i += 1
            continue
        match = COMMENT.search(text)
        if match:
            if pending:
                raise BadInput(f"{doc}:{pending[0]}: claims comment not followed by a table")
            options = _options(match.group(1), f"{doc}:{i + 1}")
            if options["kind"] == "numbers":
                numbers.append((i + 1, options))
            else:
                pending = (i + 1, options)
            i += 1
            continue
        if numbers and text.strip():
            start = i
            while i < len(lines) and lines[i].strip() and not lines[i].lstrip().startswith(("|", "```", "<!--")):
                i += 1
            paragraph = " ".join(line.strip() for line in lines[start:i])
            if not paragraph:
                raise BadInput(f"{doc}:{numbers[0][0]}: kind=numbers comment not followed by a paragraph")
            cited.extend(Table(doc, line, [], [], options, paragraph) for line, options in numbers)
            numbers = []
            continue
        if text.lstrip().startswith("|"):
            start = i
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(_split_row(lines[i]))
                i += 1
            if len(block) < 2 or not _is_separator(block[1]):
                continue
            table = Table(doc, start + 1, block[0], block[2:], pending[1] if pending else {})
            (cited if pending else plain).append(table)
            pending = None
            continue
        if pending and text.strip():
            raise BadInput(f"{doc}:{pending[0]}: claims comment not followed by a table")
        i += 1
    if pending or numbers:
        line = pending[0] if pending else numbers[0][0]
        raise BadInput(f"{doc}:{line}: claims comment not followed by a {'table' if pending else 'paragraph'}")
    return cited, plain


def _options(text: str, where: str) -> dict[str, str]:
    options = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if not sep or not value:
            raise BadInput(f"{where}: claims comment: expected key=value, found {token!r}")
        options[key] = value
    for key in ("kind", "file"):
        if key not in options:
            raise BadInput(f"{where}: claims comment has no {key}=")
    return options


def load_json(root: Path, rel: str, where: str) -> Any:
    path = root / rel
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{where}: cited file {rel} does not exist") from None
    except (OSError, ValueError) as err:
        raise BadInput(f"{where}: cited file {rel} is not readable JSON ({err})") from None


# --- reading and comparing cells ----------------------------------------------------------


def clean(cell: str) -> str:
    return cell.replace("**", "").replace("`", "").strip()


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def holds(shown: str, value: float) -> bool:
    """Is `shown` the rounding of `value` at the precision it is written with?"""
    return abs(_num(shown) - value) <= 0.5 * 10 ** -_decimals(shown) + 1e-9


def fmt(value: float, like: str, signed: bool = False) -> str:
    d = _decimals(like)
    return f"{value:+.{d}f}" if signed else f"{value:.{d}f}"


def _per_seed_list(cell: str) -> list[str] | None:
    """The numbers of a parenthesised list '(98.33, 99.00, 98.67)', or None if there is none."""
    for group in re.findall(r"\(([^()]*)\)", cell):
        parts = [p.strip() for p in group.split(",")]
        if len(parts) > 1 and all(re.fullmatch(NUMBER, p) for p in parts):
            return parts
    return None


def check_stat(
    report: Report, table: Table, row: str, column: str, cell: str, values: list[float], signed: bool = False
) -> None:
    """A cell 'mean', 'mean ± std', optionally followed by '(v1, v2, ...)' per seed."""
    text = clean(cell)
    if text in ("-", "") or not re.search(r"\d", text):
        return  # no number, no claim: '(same encoders)'
    if not values:
        report.wrong(table, row, column, "no value (the file has none)", cell)
        return
    match = MEAN_STD.match(text)
    if not match:
        report.wrong(table, row, column, "a number", cell)
        return
    report.cells += 1
    mean = statistics.fmean(values)
    shown_mean, shown_std = match.group(1), match.group(2)
    expected = fmt(mean, shown_mean, signed)
    ok = holds(shown_mean, mean)
    if shown_std is not None:
        if len(values) < 2:
            report.wrong(table, row, column, f"{expected} (one seed, no std)", cell)
            return
        std = statistics.stdev(values)
        expected += f" ± {fmt(std, shown_std)}"
        ok = ok and holds(shown_std, std)
    if not ok:
        report.wrong(table, row, column, expected, cell)
    per_seed = _per_seed_list(text[match.end():])
    if per_seed is not None:
        if len(per_seed) != len(values):
            report.wrong(table, row, column, f"{len(values)} per-seed values", f"{len(per_seed)} in {cell!r}")
        elif not all(holds(s, v) for s, v in zip(per_seed, values)):
            expected = ", ".join(fmt(v, s, signed) for s, v in zip(per_seed, values))
            report.wrong(table, row, column, "per seed " + expected, cell)


def row_key(label: str, methods: set[str]) -> str | None:
    text = clean(label).lower()
    for prefix, key in ROW_ALIASES:
        if text.startswith(prefix):
            return key
    word = re.match(r"[a-z][a-z0-9-]*", text)
    return word.group(0) if word and word.group(0) in methods else None


def pct(x: float) -> float:
    return 100.0 * x


def unchecked_columns(table: Table) -> list[str]:
    return [c.replace("_", " ").lower() for c in table.options.get("unchecked", "").split(",") if c]


def check_per_seed(report: Report, table: Table, row: str, column: str, cell: str, values: list[float]) -> None:
    """A 'per seed' cell: '98.33, 97.67, 96.67' must be the values, seed by seed."""
    text = clean(cell)
    if text == "-":
        return
    shown = [p.strip() for p in text.split(",")]
    report.cells += 1
    if len(shown) != len(values) or not all(re.fullmatch(NUMBER, s) and holds(s, v) for s, v in zip(shown, values)):
        report.wrong(table, row, column, ", ".join(f"{v:.2f}" for v in values), cell)
