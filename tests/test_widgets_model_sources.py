"""The Dashboard's model pickers: a teacher or student from a previous run or a model file (a
path or an upload), the refusals, a distill from a loaded teacher that trains no teacher, and
"copy as code" for each (the JupyterLab test is test_dashboard_model_sources_browser.py)."""

import html
import json
import os
import re
import warnings
from pathlib import Path

import pytest
import torch

import workbench as wb
from workbench.engine.events import EvalEnd, FitEnd, FitStart, StepEnd
from workbench.models.zoo import build_model
from workbench.store.export import export_model
from workbench.ui.settings import Settings, model_runs
from workbench.ui.widgets import FROM_FILE, FROM_RUN, SOURCES, TRUST, ZOO, Dashboard

MOONS = {"dataset": "moons", "teacher": "mlp:16", "student": "mlp:4"}


@pytest.fixture
def dashboards():
    """Dashboards made by a test, closed (their jobs stopped and joined) after it."""
    made = []

    def make(*args, **kwargs):
        made.append(Dashboard(*args, **kwargs))
        return made[-1]

    yield make
    for d in made:
        d.close()


def runs_root() -> Path:
    return Path(os.environ["WORKBENCH_RUNS"])  # conftest points it at the test's temporary folder


def train(dataset="moons", teacher="mlp:8", baseline=False, teacher_epochs=2):
    """A teacher (and a student, and maybe a baseline) recorded in the runs root; the result."""
    return wb.Experiment(
        wb.load_dataset(dataset),
        teacher,
        "mlp:4",
        wb.DistillConfig(epochs=1),
        teacher_config=wb.DistillConfig(epochs=teacher_epochs),
        runs=True,
        baseline=baseline,
        cache=False,
    ).run()


def weights_file(folder, name="mine.pt", dataset="moons", hidden=(8,), spec=False):
    """A state_dict of a fresh zoo MLP for ``dataset`` (and its spec.json beside it when ``spec``)."""
    torch.manual_seed(0)
    model = build_model("mlp", wb.load_dataset(dataset), hidden=list(hidden))
    path = Path(folder) / name
    torch.save(model.state_dict(), path)
    if spec:
        path.with_suffix(".spec.json").write_text(json.dumps(dict(model.spec)))
    return path


def upload(picker, name, content):
    """What the browser sends when a file is picked in the FileUpload."""
    picker.upload.set_state(
        {
            "value": [
                {"name": name, "type": "", "size": len(content), "content": memoryview(content), "last_modified": 0}
            ]
        }
    )


def text(widget):
    """What an HTML widget shows: its text without tags and entities."""
    return html.unescape(re.sub(r"<[^>]+>", "", widget.value))


def status(d):
    return text(d.status)


def events(d, kind):
    return [p for p in d.job.buffer.all() if isinstance(p, kind)]


def run_folders(role):
    return sorted(p.name for p in runs_root().glob(f"{role}-*") if (p / "config.json").is_file())


# -- the options -------------------------------------------------------------------------------------
def test_both_pickers_offer_three_sources_and_an_empty_store_is_a_note_and_a_disabled_distill(dashboards):
    d = dashboards(Settings(**MOONS, epochs=7, temperature=2.0))
    for picker in (d.teacher, d.student):
        assert picker.source.options == SOURCES == (ZOO, FROM_RUN, FROM_FILE) and picker.source.value == ZOO
        assert picker.run.layout.display == "none" and picker._file_box.layout.display == "none"
    assert not d.distill_button.disabled and "ready" in d.status.value
    d.student.sizes.value = "8"
    d.teacher.source.value = FROM_RUN
    assert d.teacher.run.options == () and d.teacher._zoo_box.layout.display == "none"
    note = f"teacher: no finished teacher runs for data 'moons' in {str(runs_root())!r} yet"
    assert status(d).startswith(note) and "or pick a model file" in status(d)
    assert note in text(d.teacher.note)
    assert d.distill_button.disabled and d.train_button.disabled and d.teacher_epochs.disabled
    assert not d.distill() and d.job is None  # refused from Python too, with the reason
    assert status(d).startswith(note)
    assert (d.epochs.value, d.temperature.value, d.student.spec) == (7, 2.0, "mlp:8")  # nothing else lost
    d.teacher.source.value = ZOO
    assert not d.distill_button.disabled and not d.train_button.disabled and "ready" in d.status.value
    assert d.teacher.spec == "mlp:16" and d.settings() == Settings(
        **{**MOONS, "student": "mlp:8"}, epochs=7, teacher_epochs=7, temperature=2.0
    )


def test_the_run_lists_follow_the_dataset_and_the_role(dashboards):
    older, newer = train(teacher="mlp:8"), train(teacher="mlp:16", baseline=True)
    spirals = train(dataset="spirals")
    d = dashboards(Settings(**MOONS, epochs=2))
    d.teacher.source.value = FROM_RUN
    expected = model_runs("moons", "teacher")
    assert [r.run_id for r in expected] == [newer.teacher.run_id, older.teacher.run_id]  # newest first
    assert list(d.teacher.run.options) == [(r.label, r.run_id) for r in expected]
    assert d.teacher.run.value == newer.teacher.run_id and d.teacher.spec == f"run:{newer.teacher.run_id}"
    assert d.teacher.run.options[0][0].startswith("mlp:16 · test acc ")
    assert "mlp:16 from run" in text(d.teacher.note) and "used as is, not trained here" in text(d.teacher.note)
    d.student.source.value = FROM_RUN  # students and baselines, not teachers
    assert {v for _, v in d.student.run.options} == {
        older.student.run_id,
        newer.student.run_id,
        newer.baseline.run_id,
    }
    d.dataset.value = "spirals"  # the lists follow the dataset
    assert [v for _, v in d.teacher.run.options] == [spirals.teacher.run_id]
    assert [v for _, v in d.student.run.options] == [spirals.student.run_id]
    assert not d.distill_button.disabled
    d.dataset.value = "digits"
    assert d.teacher.run.options == () and d.distill_button.disabled
    assert status(d).startswith("teacher: no finished teacher runs for data 'digits'")
    d.dataset.value = "moons"
    assert d.teacher.run.value == newer.teacher.run_id and not d.distill_button.disabled
    d.teacher.run.value = older.teacher.run_id
    assert d.settings().teacher == f"run:{older.teacher.run_id}"


# -- a teacher from a previous run ---------------------------------------------------------------------
def test_a_distill_from_a_previous_runs_teacher_trains_no_teacher_and_draws(dashboards):
    trained = train(teacher="mlp:16", teacher_epochs=5)
    teacher_id = trained.teacher.run_id
    teachers_before = run_folders("teacher")
    d = dashboards(Settings(**MOONS, epochs=3, log_every=1), runs=True)
    d.teacher.source.value = FROM_RUN
    assert d.teacher.run.value == teacher_id
    assert not d.train_teacher() and "used as is, not trained here" in status(d)  # nothing to train here
    assert d.job is None
    assert d.distill()
    assert "teacher loaded: mlp:16 from run " in status(d) and teacher_id in status(d)
    assert d.wait(120) and d.job.status == "completed"
    assert [p.role for p in events(d, FitStart)] == ["student", "baseline"]  # no teacher fit at all
    assert not [p for p in events(d, StepEnd) if p.role == "teacher"]
    assert [(p.role, p.status) for p in events(d, FitEnd)] == [("student", "completed"), ("baseline", "completed")]
    assert "distill done" in status(d) and f"teacher loaded: mlp:16 from run {teacher_id}" in status(d)
    # the teacher used is the run's, as saved: its weights, and the accuracy the charts show for it
    saved = torch.load(runs_root() / teacher_id / "model.pt", weights_only=True)
    used = d.experiment.teacher.state_dict()
    assert saved.keys() == used.keys() and all(torch.equal(saved[k], used[k]) for k in saved)
    val = d.experiment.data.val
    with torch.no_grad():
        teacher_acc = (d.experiment.teacher.eval()(val.x).argmax(1) == val.y).float().mean().item()
    student_evals = [p for p in events(d, EvalEnd) if p.role == "student" and p.split == "val"]
    assert student_evals and all(p.teacher_acc == pytest.approx(teacher_acc) for p in student_evals)
    curves = {t.name: t for t in d.accuracy_fig.data}
    assert list(curves["student"].x) == [p.step for p in student_evals]
    assert len(curves["baseline"].x) > 0 and curves["teacher"].y[0] == pytest.approx(teacher_acc)
    # recorded: the student names its teacher's run, and no teacher run was added
    assert run_folders("teacher") == teachers_before
    student = next(p.run_id for p in events(d, FitStart) if p.role == "student")
    assert json.loads((runs_root() / student / "config.json").read_text())["teacher_run_id"] == teacher_id


def test_copy_as_code_writes_the_run_and_round_trips(dashboards):
    trained = train(teacher="mlp:16")
    teacher_id = trained.teacher.run_id
    d = dashboards(Settings(**MOONS, epochs=2))
    d.teacher.source.value = FROM_RUN
    code = d.show_code()
    assert f"teacher='run:{teacher_id}', student='mlp:4'" in code and "trusted" not in code
    assert code == d.settings().to_code()
    teachers_before = run_folders("teacher")
    namespace = {}
    exec(compile(code, "<copy as code>", "exec"), namespace)
    result = namespace["result"]
    assert result.teacher is None and result.student.status == "completed"  # loaded, not trained
    assert namespace["experiment"].loaded["teacher"].source == f"run:{teacher_id}"
    assert run_folders("teacher") == teachers_before
    # and a Dashboard given those settings shows the same pick
    again = dashboards(d.settings())
    assert again.teacher.source.value == FROM_RUN and again.teacher.run.value == teacher_id
    assert again.settings() == d.settings()


# -- model files -------------------------------------------------------------------------------------
def test_a_weights_file_by_path_with_or_without_its_spec(dashboards, tmp_path):
    d = dashboards(Settings(**MOONS, epochs=2))
    d.teacher.source.value = FROM_FILE
    assert d.distill_button.disabled and status(d).startswith("teacher: give a model file's path or upload one")
    bare = weights_file(tmp_path, "bare.pt")
    d.teacher.path.value = str(bare)
    assert f"{str(bare)!r} has no spec next to it" in status(d) and d.distill_button.disabled
    assert not d.teacher.file_spec.layout.display  # a weights file: the zoo spec box shows
    d.teacher.file_spec.value = "mlp:8"  # the zoo model it was saved from: a copy is kept with its spec
    assert not d.distill_button.disabled and "ready" in d.status.value
    kept = Path(d.settings().teacher)
    assert kept.parent == (runs_root() / "uploads").resolve() and kept.read_bytes() == bare.read_bytes()
    spec = json.loads(kept.with_suffix(".spec.json").read_text())
    assert (spec["family"], spec["hidden"], spec["input_shape"], spec["num_classes"]) == ("mlp", [8], [2], 2)
    assert "mlp:8" in text(d.teacher.note)
    d.teacher.file_spec.value = "mlp:32"  # not the model that saved the weights
    assert d.distill_button.disabled and status(d).startswith("teacher: ") and str(bare) in status(d)
    d.teacher.file_spec.value = "mlp:8,x"
    assert status(d).startswith("teacher file's zoo spec: ") and "mlp:8,x" in status(d)
    # a weights file with its spec.json beside it is loaded where it is, and copied as its path
    beside = weights_file(tmp_path, "beside.pt", spec=True)
    d.teacher.file_spec.value = ""
    d.teacher.path.value = str(beside)
    assert not d.distill_button.disabled and d.settings().teacher == str(beside)
    assert f"teacher={str(beside)!r}" in d.show_code()
    assert d.settings().trusted is False


@pytest.mark.filterwarnings("ignore:teacher. val accuracy")  # the uploaded teacher is a fresh model
def test_an_upload_is_kept_under_the_runs_root_and_messages_name_it(dashboards, tmp_path):
    d = dashboards(Settings(**MOONS, epochs=2, log_every=1))
    d.teacher.source.value = FROM_FILE
    content = weights_file(tmp_path).read_bytes()
    upload(d.teacher, "my teacher.pt", content)
    assert status(d).startswith("teacher file's zoo spec: empty") and "'my teacher.pt'" in status(d)
    d.teacher.file_spec.value = "mlp:16"  # the wrong model: the message names the uploaded file
    assert "'my teacher.pt'" in status(d) and "uploads" not in status(d)
    d.teacher.file_spec.value = "mlp:8"
    assert not d.distill_button.disabled
    kept = Path(d.teacher.path.value)  # the path box shows where the upload is kept
    assert kept.parent == (runs_root() / "uploads").resolve() and kept.name.startswith("teacher-")
    assert kept.read_bytes() == content and d.settings().teacher == str(kept)
    assert "from my teacher.pt" in text(d.teacher.note)
    assert d.distill() and d.wait(120) and d.job.status == "completed"
    assert [p.role for p in events(d, FitStart)] == ["student", "baseline"]
    assert "teacher loaded: " in status(d) and "my teacher.pt" in status(d)
    d.teacher.path.value = str(tmp_path / "gone.pt")  # a typed path replaces the upload
    assert f"{str(tmp_path / 'gone.pt')!r} does not exist" in status(d)


def program_file(folder, kind):
    """A .pt2 (torch.export) or TorchScript (.pt) program of a fresh moons MLP."""
    torch.manual_seed(0)
    data = wb.load_dataset("moons")
    model = build_model("mlp", data, hidden=[8]).eval()
    if kind == "export":
        return export_model(model, tuple(data.input_shape), Path(folder) / "program.pt2")
    with warnings.catch_warnings():  # TorchScript is deprecated: the refusal is what is tested
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, data.train.x[:2]), Path(folder) / "script.pt")
    return Path(folder) / "script.pt"


def test_programs_are_refused_unless_trusted_and_the_code_says_trusted(dashboards, tmp_path):
    d = dashboards(Settings(**MOONS, epochs=2))
    d.teacher.source.value = FROM_FILE
    pt2 = program_file(tmp_path, "export")
    d.teacher.path.value = str(pt2)
    refusal = (
        f"teacher: {str(pt2)!r} is a torch.export program (.pt2): loading it runs code stored in the file; refused"
    )
    assert status(d).startswith(refusal) and TRUST in status(d)
    assert d.distill_button.disabled and d.teacher.file_spec.layout.display == "none"
    d.teacher.trust.value = True
    assert not d.distill_button.disabled, status(d)
    assert d.settings().trusted is True and d.settings().teacher == str(pt2)
    assert d.show_code().rstrip().splitlines()[-3].endswith("trusted=True)")
    d.teacher.trust.value = False
    assert d.distill_button.disabled
    # an uploaded TorchScript archive named .pt is a program too: refused without the box
    d.student.source.value = FROM_FILE
    upload(d.student, "script.pt", program_file(tmp_path, "script").read_bytes())
    assert "'script.pt' is a TorchScript program" in text(d.student.note)
    assert not list((runs_root() / "uploads").glob("student-*"))  # nothing kept before it is trusted


def test_an_incompatible_file_names_the_file_and_what_the_data_needs_and_keeps_the_rest(dashboards, tmp_path):
    d = dashboards(Settings(**MOONS, epochs=9, temperature=8.0, labeled_fraction=0.5))
    digits = weights_file(tmp_path, "digits_teacher.pt", dataset="digits", hidden=(8,), spec=True)
    d.teacher.source.value = FROM_FILE
    d.teacher.path.value = str(digits)
    text = status(d)
    assert text.startswith(f"teacher: {str(digits)!r} was built for inputs of shape (64,)")
    assert "data 'moons' has inputs of shape (2,)" in text and "2 classes" in text
    assert d.distill_button.disabled and not d.distill() and d.job is None
    assert (d.epochs.value, d.temperature.value, d.labeled_fraction.value) == (9, 8.0, 0.5)
    assert d.student.spec == "mlp:4" and d.dataset.value == "moons"
    d.dataset.value = "digits"  # the same file fits digits: checked again when the data changes
    assert not d.distill_button.disabled and "ready" in d.status.value
    assert d.settings().teacher == str(digits)


def test_a_student_from_a_file_is_fine_tuned_from_its_weights(dashboards, tmp_path):
    d = dashboards(Settings(**MOONS, epochs=1, teacher_epochs=1, log_every=1))
    start = weights_file(tmp_path, "student.pt", hidden=(4,), spec=True)
    d.student.source.value = FROM_FILE
    d.student.path.value = str(start)
    assert not d.distill_button.disabled and "fine-tuned from these weights" in text(d.student.note)
    assert not d.train_button.disabled  # the teacher is still a zoo model, trained here
    assert d.distill() and d.wait(120) and d.job.status == "completed"
    assert [p.role for p in events(d, FitStart)] == ["teacher", "student", "baseline"]
    saved = torch.load(start, weights_only=True)
    assert d.experiment.loaded["student"].source == str(start)
    student = next(p for p in events(d, FitStart) if p.role == "student")
    assert student.student_params == sum(v.numel() for v in saved.values())
    tuned = d.experiment.student.state_dict()
    assert saved.keys() == tuned.keys() and not all(torch.equal(saved[k], tuned[k]) for k in saved)
