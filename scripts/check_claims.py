"""Recompute the numbers of the tables and paragraphs of README.md and docs/*.md that cite a file.

    python scripts/check_claims.py [--root REPO] [DOC ...]

DOC defaults to README.md and every docs/*.md under REPO (default: the repository this
script lives in). Cited files are read relative to REPO, so a test can check an edited copy
of a document against the real measurements. Prints one ``ok`` line per table checked, one
line per wrong cell (document, line, table, row, column, expected, found), and exits 0 when
every cell holds, 1 when one does not, 2 on bad input (a cited file missing or unreadable,
an unknown kind, a comment that is not followed by a table), with one line on stderr.

How to tie a table to its file (this is how to add one)
--------------------------------------------------------
1. Keep the measurement: copy the run's ``metrics.json`` (or the label-efficiency
   ``results.json``, the ensemble script's ``--json``) to ``docs/measurements/NAME.json``.
2. Put one HTML comment on the line above the table (blank lines may separate them; one
   line, invisible on GitHub), and name the file in the visible text near the table too:

       <!-- claims: kind=reproduce file=docs/measurements/NAME.json -->
       | method | fine-tune % | min | with TTA % | ... |

3. Run ``python scripts/check_claims.py``: it prints ``ok`` for the table, or one line per
   cell that is not what the file gives. ``tests/test_claims.py`` runs it with the suite.

``kind`` says how to read the file (the list below), ``file`` is the measurement, relative
to the repository root; some kinds take more files. Rows are recognised by their first
cell, columns by their header, so a new row or column of a known shape needs nothing but
the comment. A row or column the kind does not know is an error (exit 1), never skipped in
silence: extend ROW_ALIASES or the kind's columns below instead. A cell that is ``-``, or
has no digit, claims nothing. Numbers are compared at the precision the cell shows (98.53
must be the two-decimal rounding of the file's mean); ``**`` and backticks are ignored.

Options of the kinds that read reproduce metrics: ``file[TEXT]=PATH`` (rows whose first
cell contains TEXT, ``_`` for a space, read PATH instead; the first match wins),
``method=M`` (rows whose first cell names no method are method M),
``unchecked=COLUMN[,COLUMN]`` (header prefixes, ``_`` for a space, of columns the file
cannot check, such as wall times from other logs; the ``ok`` line names them).

Figures in a paragraph are tied the same way, with kind=numbers right above the paragraph.
In README.md every table with a ``%`` in its header must carry a claims comment (a new
results table without one fails); in docs/*.md only the tables that carry one are checked.

Kinds
-----
reproduce    file = a ``mnist-ssl reproduce`` metrics.json (``runs`` and ``baselines``,
             one entry per method and seed); optional ``ensemble=`` the JSON written by
             ``scripts/ensemble_predictions.py --json`` for the same run folder (its
             per-method accuracies must equal the metrics file's).
             Rows: a method name first (``mae (zero-masking)``), ``ensemble ...``,
             ``RBF SVM``, ``1-NN``, ``logistic regression``.
             Columns: ``fine-tune %`` (mean ± sample std over the file's seeds; a
             parenthesised list of as many numbers as seeds is checked seed by seed, and a
             header ``(seeds 5, 6, 7)`` must name the file's seeds), ``min``, ``with TTA %``,
             ``linear probe %``, ``kNN % (k=5)`` (k must match), ``source document %`` or
             ``document %`` (the source document's figures, DOCUMENT_FIGURES), and the
             verdict column (header with ``met?`` or ``at or above``; cells like
             ``yes (+0.33) / yes``, ``**no (-0.47) / no (-0.13)**``,
             ``missed by 0.34 / **met**``: plain / TTA mean against the document's figure).
label-efficiency
             file = a ``mnist-ssl label-efficiency`` results JSON (``rows`` and
             ``baselines``). Rows: methods and the raw-pixel baselines. Columns ``k=N``
             or ``all ...``: ``mean ± std (probe P)`` of the fine-tuned accuracy over the
             seeds at that k, the probe mean in brackets; ``(3 seeds)`` in the header must
             match the file.
le-budget    file = the JSON of ``scripts/le_pretraining_budget.py`` (per method a default
             and a longer pretraining, per-seed fine-tune and probe accuracies, and the
             no-pretraining and SVM accuracies of the same seeds); optional ``extra=A,B``:
             label-efficiency JSONs of further pretraining budgets at the same k and seeds.
             Rows: method (first word) + the ``pretraining epochs`` cell; ``supervised``
             and ``RBF SVM`` rows. Columns: ``pretraining epochs``, ``fine-tune %``,
             ``probe %``, ``margin over no pretraining (per seed)`` and ``against the RBF
             SVM (per seed)`` (mean and per-seed differences in points).
knobs        file = a JSON of one-change-at-a-time runs (``configs``: name -> ``set``, the
             ``--set`` items, and ``results``: per method ``accuracy`` and ``tta`` per seed, or
             one method's, named by ``method=``); ``n_test=300`` snaps values stored at
             0.01 % back to correct/300; ``defaults=`` a reproduce metrics.json for the row
             without changes when the file has none. Rows: the ``key=value`` settings in
             backticks in the first cell (none: the defaults). Columns: ``MAE %``,
             ``supervised with TTA %``, ``fine-tune %`` and ``with TTA %`` (of ``method=``),
             ``per seed``.
paired       base = the runs without a change, file = with it (reproduce metrics.json);
             ``base2=``/``file2=`` a second pair (comma-separated lists: each row takes the
             first file that has its method). Columns ``... A → B`` (the two means,
             optionally ``5-9:`` naming the seeds) and ``paired (w/t/l)`` after each
             (``+0.67 (5/0/0)``: mean difference and wins/ties/losses over the seeds both
             sides have).
numbers      Figures in prose: the comment stands above a paragraph (several may be stacked)
             and lists ``NAME(ARGS)=VALUE`` items; each VALUE must be the file's figure at
             the precision written, and must appear in the paragraph as written (a signed
             VALUE with its sign), so the claim cannot drift from the text:
               <!-- claims: kind=numbers file=A.json file2=B.json mean(infonce)=98.73 diff(infonce,infonce@2)=+0.53 -->
             ``METHOD@2`` is the method in ``file2`` (paired by seed). Reproduce metrics:
             mean, std, min, tta, tta_std, probe, knn, errors (METHOD: test images wrong
             over all seeds); diff, diff_std, wins, ties, losses (METHOD, OTHER: paired
             by seed).
             Label-efficiency JSON: mean, std, probe, knn (frozen weighted kNN), semi (METHOD, K);
             diff (METHOD, OTHER, K).
             le_pretraining_budget.py JSON: mean, std, probe, margin, vs_svm (METHOD,
             EPOCHS); mean, std (supervised or svm). benchmarks/results JSON of
             bench_reproduce.py: wall(), run_time(), pss_gb(), total(METHOD); of
             bench_threads.py: slowdown(OBJECTIVE), tail_slowdown(OBJECTIVE).
probe        file = a ``mnist-ssl probe --out`` JSON (``file[TEXT]=PATH``: rows whose first
             cell contains TEXT read PATH). Rows name a pooling (``cls``, ``mean``,
             ``cls+mean``, ``last4``, or ``pixels``) and an encoder (``pretrained``, ``random init``)
             in their first three cells; columns ``linear probe %``, ``kNN %``,
             ``weighted kNN %`` (the accuracies) and ``dim``.
printed-le   file = a markdown file of label-efficiency tables as the command printed them
             (no per-row JSON kept): each cell must equal the printed ``mean ± std (probe)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from claim_cells import BadInput, Report, read_tables, unchecked_columns
from claim_kinds import KINDS

REPO = Path(__file__).resolve().parent.parent


def check(root: Path, docs: list[Path]) -> tuple[Report, list[str]]:
    report = Report()
    done = []
    for path in docs:
        doc = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        cited, plain = read_tables(path, doc)
        if path.name == "README.md":
            for table in plain:
                if any("%" in h for h in table.header):
                    report.unknown(table, "a results table without a claims comment (see scripts/check_claims.py)")
        for table in cited:
            kind = table.options["kind"]
            if kind not in KINDS:
                raise BadInput(f"{doc}:{table.line}: unknown claims kind {kind!r} (known: {', '.join(KINDS)})")
            before_errors, before_cells = len(report.errors), report.cells
            KINDS[kind](table, root, report)
            if len(report.errors) == before_errors:
                shape = f"{len(table.rows)} rows" if table.header else "a paragraph"
                done.append(f"ok {doc}:{table.line} ({kind}, {table.options['file']}): "
                            f"{shape}, {report.cells - before_cells} numbers"
                            + "".join(f"; column '{c}' not checked" for c in unchecked_columns(table)))
    return report, done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=REPO, help="repository root the cited files are read from")
    parser.add_argument("docs", nargs="*", type=Path, help="documents to check (default: README.md, docs/*.md)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    docs = [p.resolve() for p in args.docs] or [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    try:
        for path in docs:
            if not path.is_file():
                raise BadInput(f"{path}: no such document")
        report, done = check(root, docs)
    except BadInput as err:
        print(err, file=sys.stderr)
        return 2
    for line in done:
        print(line)
    for line in report.errors:
        print(line)
    if report.errors:
        print(f"{len(report.errors)} claim(s) do not match their files", file=sys.stderr)
        return 1
    print(f"{len(done)} tables and paragraphs, {report.cells} numbers: every one matches its file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
