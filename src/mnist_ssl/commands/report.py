"""``mnist-ssl report``: rebuild report.md / report.html from a run folder (no training)."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="rebuild report.md / report.html from a run folder (no training)")
    p.add_argument("run_dir")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mnist_ssl.report.report import build_report

    md, html = build_report(args.run_dir)
    print(md)
    print(html)
    return 0
