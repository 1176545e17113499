"""scripts/check_claims.py: the cited tables and figures of README.md and docs/ are the numbers of their files.

The behaviour tests write small documents that cite kept measurement files (those never change),
so they hold whatever README's tables become; two tests run on the real README and docs.
"""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "check_claims.py"
METRICS = "docs/measurements/reproduce5_elastic_metrics.json"  # the 2026-11-27 headline job

TABLE = f"""# Results

<!-- claims: kind=reproduce file={METRICS} -->
| method | fine-tune % | min | with TTA % | source document % | met? (plain / TTA) |
|---|---|---|---|---|---|
| mae (zero-masking) | 98.53 ± 0.90 | 97.67 | 98.87 ± 0.61 | 99.00 | **missed by 0.47 / by 0.13** |
| infonce | 99.00 ± 0.41 | 98.67 | 99.00 ± 0.75 | 98.67 | yes (+0.33) / yes |
| RBF SVM, raw pixels | 97.67 ± 0.78 | 97.00 | - | - | - |

<!-- claims: kind=numbers file={METRICS} diff(infonce,supervised)=+0.13 errors(mae)=22 -->
Against the ViT from scratch InfoNCE gains +0.13 points; MAE gets 22 test images wrong.
"""


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=REPO)


def check(tmp_path, text, name="results.md"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path, run("--root", REPO, path)


def edited(old, new, text=TABLE):
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_every_cited_table_and_figure_of_readme_and_docs_matches_its_file():
    result = run()
    assert result.returncode == 0, result.stdout + result.stderr
    checked = [line for line in result.stdout.splitlines() if line.startswith("ok ")]
    assert any(line.startswith("ok README.md:") for line in checked), result.stdout
    assert any(line.startswith("ok docs/results.md:") for line in checked), result.stdout


def test_one_number_of_the_readme_changed_by_hand_fails(tmp_path):
    """The first mean ± std of README's first cited table, one digit up: the script names the cell."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("<!-- claims:") and "kind=numbers" not in line)
    header_at = next(i for i in range(start, len(lines)) if lines[i].startswith("|"))
    header = [c.strip() for c in lines[header_at].strip("|").split("|")]
    row_at = header_at + 2
    cells = [c.strip() for c in lines[row_at].strip("|").split("|")]
    column = next(i for i, c in enumerate(cells) if re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", c))
    shown = cells[column]
    changed = shown[:4] + str((int(shown[4]) + 1) % 10) + shown[5:]
    cells[column] = changed
    lines[row_at] = "| " + " | ".join(cells) + " |"
    _, result = check(tmp_path, "\n".join(lines) + "\n", "README.md")
    assert result.returncode == 1
    assert f"row '{cells[0]}', column '{header[column]}': expected {shown}, found {changed}" in result.stdout


def test_a_document_whose_numbers_are_those_of_its_files_passes(tmp_path):
    _, result = check(tmp_path, TABLE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 tables and paragraphs" in result.stdout


def test_a_changed_mean_fails_and_names_table_row_column_expected_and_found(tmp_path):
    path, result = check(tmp_path, edited("| infonce | 99.00 ± 0.41 |", "| infonce | 99.07 ± 0.41 |"))
    assert result.returncode == 1
    assert (f"{path}:4: table 'method | fine-tune % | min | ...', row 'infonce', column 'fine-tune %': "
            "expected 99.00 ± 0.41, found 99.07 ± 0.41") in result.stdout


def test_a_changed_verdict_fails(tmp_path):
    _, result = check(tmp_path, edited("yes (+0.33) / yes", "yes (+0.43) / yes"))
    assert result.returncode == 1
    assert "row 'infonce', column 'met? (plain / TTA)': expected plain: +0.33" in result.stdout
    _, result = check(tmp_path, edited("**missed by 0.47 / by 0.13**", "missed by 0.47 / met"))
    assert result.returncode == 1
    assert "expected TTA: missed (-0.13)" in result.stdout


def test_a_row_the_file_does_not_know_fails(tmp_path):
    _, result = check(tmp_path, edited("| infonce | 99.00", "| simclr | 99.00"))
    assert result.returncode == 1
    assert "row 'simclr' names no method" in result.stdout


def test_a_figure_changed_in_a_paragraph_or_its_comment_fails(tmp_path):
    _, result = check(tmp_path, edited("InfoNCE gains +0.13 points", "InfoNCE gains +0.23 points"))
    assert result.returncode == 1
    assert "diff(infonce,supervised)=+0.13: the paragraph does not show +0.13" in result.stdout
    _, result = check(tmp_path, edited("errors(mae)=22 -->", "errors(mae)=23 -->"))
    assert result.returncode == 1
    assert "figure errors(mae): expected 22, found 23" in result.stdout


def test_a_readme_results_table_without_a_claims_comment_fails(tmp_path):
    text = edited(f"<!-- claims: kind=reproduce file={METRICS} -->\n", "")
    _, result = check(tmp_path, text, "README.md")
    assert result.returncode == 1
    assert "a results table without a claims comment" in result.stdout


def test_a_cited_file_that_does_not_exist_is_bad_input(tmp_path):
    path, result = check(tmp_path, edited(f"kind=reproduce file={METRICS}", "kind=reproduce file=docs/no_such.json"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"{path}:4: cited file docs/no_such.json does not exist"]


def test_a_knob_row_is_matched_by_its_settings(tmp_path):
    knobs = """<!-- claims: kind=knobs file=docs/measurements/mae_supervised_15_15_knobs.json n_test=300 -->
| change at 15 + 15 | MAE % | supervised with TTA % |
|---|---|---|
| none | 95.67 ± 1.37 | 97.80 ± 1.32 |
| `model.patch_size=7` | 94.20 ± 2.36 | 95.87 ± 0.38 |
"""
    _, result = check(tmp_path, knobs)
    assert result.returncode == 0, result.stdout
    _, result = check(tmp_path, edited("| 94.20 ± 2.36 |", "| 95.20 ± 2.36 |", knobs))
    assert result.returncode == 1
    assert "row '`model.patch_size=7`', column 'MAE %': expected 94.20 ± 2.36, found 95.20 ± 2.36" in result.stdout


PROBE = """<!-- claims: kind=probe file=docs/measurements/probe_fashion_infonce_s6_all_labels.json file[dino]=docs/measurements/probe_fashion_dino_s6_all_labels.json -->
| checkpoint | features | encoder | dim | linear probe % | kNN % | weighted kNN % |
|---|---|---|---|---|---|---|
| InfoNCE | cls | pretrained | 64 | 79.77 | 74.54 | 74.81 |
| InfoNCE | cls | random init | 64 | 78.80 | 74.90 | 74.74 |
| DINO | cls+mean | pretrained | 128 | 82.67 | 75.13 | 75.31 |
"""


def test_a_probe_table_is_checked_cell_by_cell(tmp_path):
    _, result = check(tmp_path, PROBE)
    assert result.returncode == 0 and "9 numbers" in result.stdout, result.stdout + result.stderr
    _, result = check(tmp_path, PROBE.replace("| 82.67 |", "| 82.76 |"))
    assert result.returncode == 1 and "expected 82.67, found 82.76" in result.stdout + result.stderr
    _, result = check(tmp_path, PROBE.replace("| DINO | cls+mean | pretrained", "| DINO | max | pretrained"))
    assert result.returncode == 1 and "names no pooling" in result.stdout + result.stderr
