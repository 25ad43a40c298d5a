"""The one-line verdict on KD vs scratch, and the README section it links to."""

import pathlib
import re

from workbench.verdict import README_ANCHOR, kd_verdict


def test_a_win_says_by_how_much():
    assert kd_verdict(0.954, 0.881) == "Distillation beat scratch by +7.3 points (95.4% vs 88.1%)."


def test_all_labels_and_no_extra_inputs_is_named_as_the_reason():
    line = kd_verdict(0.730, 0.834, labeled_fraction=1.0, teacher_acc=0.97)
    assert line.startswith("Distillation did not beat scratch (73.0% vs 83.4%, -10.4 points)")
    assert "every label was given" in line and README_ANCHOR in line


def test_a_teacher_no_better_than_scratch_is_named_as_the_reason():
    line = kd_verdict(0.80, 0.80, labeled_fraction=0.1, teacher_acc=0.801)
    assert "teacher knows no more" in line


def test_few_labels_and_a_good_teacher_points_at_size_or_tuning():
    line = kd_verdict(0.80, 0.82, labeled_fraction=0.1, teacher_acc=0.97)
    assert "too small" in line and "every label" not in line


def test_missing_numbers_give_no_verdict():
    assert kd_verdict(None, 0.5) is None and kd_verdict(0.5, None) is None


def test_the_linked_readme_section_exists():
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    assert README_ANCHOR.split("#", 1)[1] in headings


def test_the_text_verdict_is_in_bits_per_character_where_lower_is_better():
    from workbench.verdict import text_verdict

    assert text_verdict(None, 2.0) is None and text_verdict(2.0, None) is None
    assert text_verdict(2.10, 2.25) == (
        "Distillation beat scratch: 2.100 vs 2.250 bits per character for scratch (-0.150; lower is better)."
    )
    same = text_verdict(2.30, 2.25, labeled_fraction=1.0)
    assert same.startswith("Distillation did not beat scratch: 2.300 vs 2.250") and "every block labelled" in same
    few = text_verdict(2.30, 2.25, labeled_fraction=0.1)
    assert "every block labelled" not in few and "train the teacher longer" in few
    weak = text_verdict(2.30, 2.25, labeled_fraction=0.1, teacher_bpc=2.26)
    assert "the teacher predicts the text no better" in weak
