"""One line that says whether distillation beat training from scratch, and why when it did not.

Both UIs and the CLI show it at the end of a run; it is plain text (no UI package), so tests
and notebooks reach it too.
"""

from __future__ import annotations

README_ANCHOR = "README.md#when-distillation-does-not-beat-scratch"


def kd_verdict(
    student_acc: float | None,
    scratch_acc: float | None,
    *,
    labeled_fraction: float = 1.0,
    teacher_acc: float | None = None,
    extra_unlabeled: int = 0,
    mixup: bool = False,
    margin: float = 0.0,
) -> str | None:
    """A one-line verdict on the student vs the scratch baseline (test accuracies in [0, 1]).

    Returns None when either accuracy is missing. When the student is at or below scratch
    (within ``margin``), the line says the likely reason: every label given and no extra inputs
    (the labels already carry what the teacher knows), or a teacher no better than scratch.
    """
    if student_acc is None or scratch_acc is None:
        return None
    gain = 100.0 * (student_acc - scratch_acc)
    if gain > 100.0 * margin:
        return (
            f"Distillation beat scratch by {gain:+.1f} points ({100 * student_acc:.1f}% vs {100 * scratch_acc:.1f}%)."
        )
    head = (
        f"Distillation did not beat scratch ({100 * student_acc:.1f}% vs {100 * scratch_acc:.1f}%, {gain:+.1f} points)"
    )
    if teacher_acc is not None and teacher_acc <= scratch_acc + 0.005:
        why = "the teacher knows no more than the student learns from the labels alone"
    elif labeled_fraction >= 1.0 and not extra_unlabeled and not mixup:
        why = (
            "every label was given and the teacher saw no inputs beyond them, so its soft labels add "
            "little; try a labeled fraction of 0.1, extra unlabeled inputs or mixup"
        )
    else:
        why = "the student may be too small to follow the teacher, or T and the weights need tuning"
    return f"{head}: {why}. See {README_ANCHOR}."


def text_verdict(
    student_bpc: float | None,
    scratch_bpc: float | None,
    *,
    labeled_fraction: float = 1.0,
    teacher_bpc: float | None = None,
) -> str | None:
    """The same verdict for a language model, in test bits per character (lower is better).

    Returns None when either number is missing; when the student is not better, says the likely reason.
    """
    if student_bpc is None or scratch_bpc is None:
        return None
    line = (
        f"{student_bpc:.3f} vs {scratch_bpc:.3f} bits per character for scratch "
        f"({student_bpc - scratch_bpc:+.3f}; lower is better)"
    )
    if student_bpc < scratch_bpc:
        return f"Distillation beat scratch: {line}."
    if teacher_bpc is not None and teacher_bpc >= scratch_bpc - 0.005:
        why = "the teacher predicts the text no better than the student learns it from the labels alone"
    elif labeled_fraction >= 1.0:
        why = (
            "with every block labelled the student sees the same text either way; KD pays most when the "
            "teacher covers text the labels do not (a lower labeled fraction), or over a longer run"
        )
    else:
        why = "a short run or a weak teacher; train the teacher longer, or give the student more steps"
    return f"Distillation did not beat scratch: {line}: {why}."
