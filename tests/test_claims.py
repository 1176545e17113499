"""scripts/check_claims.py: the results tables of README.md and docs/ are the numbers of their files."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "check_claims.py"
README_ROW = "| infonce | 99.00 ± 0.41 |"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=REPO)


def edited_readme(tmp_path, old, new):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.count(old) == 1, f"the README no longer has exactly one {old!r}; update this test"
    path = tmp_path / "README.md"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def test_every_cited_table_of_readme_and_docs_matches_its_file():
    result = run()
    assert result.returncode == 0, result.stdout + result.stderr
    checked = [line for line in result.stdout.splitlines() if line.startswith("ok ")]
    assert any(line.startswith("ok README.md:") for line in checked), result.stdout
    assert any(line.startswith("ok docs/results.md:") for line in checked), result.stdout


def test_one_number_changed_by_hand_fails_and_names_the_cell(tmp_path):
    readme = edited_readme(tmp_path, README_ROW, "| infonce | 99.07 ± 0.41 |")
    result = run("--root", REPO, readme)
    assert result.returncode == 1
    assert "row 'infonce', column 'fine-tune %': expected 99.00 ± 0.41, found 99.07 ± 0.41" in result.stdout


def test_a_changed_verdict_fails(tmp_path):
    readme = edited_readme(tmp_path, "| 98.67 | yes (+0.33) / yes |", "| 98.67 | yes (+0.43) / yes |")
    result = run("--root", REPO, readme)
    assert result.returncode == 1
    assert "row 'infonce'" in result.stdout and "+0.33" in result.stdout


def test_a_readme_results_table_without_a_claims_comment_fails(tmp_path):
    readme = edited_readme(tmp_path, "<!-- claims: kind=reproduce", "<!-- not a claim: kind=reproduce")
    result = run("--root", REPO, readme)
    assert result.returncode == 1
    assert "a results table without a claims comment" in result.stdout


def test_a_cited_file_that_does_not_exist_is_bad_input(tmp_path):
    readme = edited_readme(tmp_path, "reproduce5_elastic_metrics.json ensemble", "no_such_metrics.json ensemble")
    result = run("--root", REPO, readme)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"{readme}:{_table_line(readme)}: cited file docs/measurements/no_such_metrics.json does not exist"
    ]


def test_a_row_the_file_does_not_know_fails(tmp_path):
    readme = edited_readme(tmp_path, README_ROW, "| simclr | 99.00 ± 0.41 |")
    result = run("--root", REPO, readme)
    assert result.returncode == 1
    assert "row 'simclr' names no method" in result.stdout


def _table_line(path):
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("| method | fine-tune %"):
            return number
    raise AssertionError("no results table")


def test_a_figure_changed_in_a_paragraph_fails(tmp_path):
    readme = edited_readme(tmp_path, "(InfoNCE +0.13, Video MAE", "(InfoNCE +0.23, Video MAE")
    result = run("--root", REPO, readme)
    assert result.returncode == 1
    assert "diff(infonce,supervised)=+0.13: the paragraph does not show +0.13" in result.stdout


def test_a_figure_claimed_wrongly_in_its_comment_fails(tmp_path):
    readme = edited_readme(tmp_path, "mean(supervised,10)=67.7", "mean(supervised,10)=67.9")
    result = run("--root", REPO, readme)
    assert result.returncode == 1
    assert "figure mean(supervised,10): expected 67.7, found 67.9" in result.stdout


def test_a_knob_row_is_matched_by_its_settings(tmp_path):
    results = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    old = "| `model.patch_size=7` (16 patches instead of 49) | 94.20 ± 2.36 |"
    assert results.count(old) == 1
    doc = tmp_path / "results.md"
    new = "| `model.patch_size=7` (16 patches instead of 49) | 95.20 ± 2.36 |"
    doc.write_text(results.replace(old, new), encoding="utf-8")
    result = run("--root", REPO, doc)
    assert result.returncode == 1
    expected = "row '`model.patch_size=7` (16 patches instead of 49)', column 'MAE %': expected 94.20 ± 2.36"
    assert expected in result.stdout
