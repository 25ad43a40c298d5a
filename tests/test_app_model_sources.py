"""The app's model pickers (AppTest): a teacher or student from a previous run or an uploaded
model file, the uploads folder, the refusals, and "copy as code" for each (the browser test is
test_app_model_sources_browser.py)."""

import json
import os
import re
import warnings
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest
from test_app import APP, code, stop_all_jobs, wait_done

import workbench as wb
from workbench.models.zoo import build_model
from workbench.store.export import export_model
from workbench.ui.settings import Settings, model_runs, save_model_upload

RUN = "from a previous run"
FILE = "upload a model file"
TRUST_TEXT = "Tick 'trust this file (it runs code)'"


@pytest.fixture
def at():
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    assert not app.exception
    yield app
    stop_all_jobs()


def runs_root() -> Path:
    return Path(os.environ["WORKBENCH_RUNS"])  # conftest points it at the test's temporary folder


def train(dataset="moons", teacher="mlp:8", baseline=False, teacher_epochs=5):
    """A teacher (and a student, and maybe a baseline) recorded in the runs root; the result."""
    data = wb.load_dataset(dataset)
    exp = wb.Experiment(
        data,
        teacher,
        "mlp:4",
        wb.DistillConfig(epochs=1),
        teacher_config=wb.DistillConfig(epochs=teacher_epochs),
        runs=True,
        baseline=baseline,
        cache=False,
    )
    return exp.run()


def weights_file(tmp_path, name="mine.pt", dataset="moons", hidden=(8,)):
    """A state_dict of a fresh zoo MLP for ``dataset``: the bytes a person would upload."""
    torch.manual_seed(0)
    model = build_model("mlp", wb.load_dataset(dataset), hidden=list(hidden))
    path = tmp_path / name
    torch.save(model.state_dict(), path)
    return path.read_bytes()


def program_file(tmp_path, dataset="moons", kind="export"):
    """A .pt2 (torch.export) or TorchScript .pt program of a fresh MLP for ``dataset``: its bytes."""
    torch.manual_seed(0)
    data = wb.load_dataset(dataset)
    model = build_model("mlp", data, hidden=[8]).eval()
    if kind == "export":
        return export_model(model, tuple(data.input_shape), tmp_path / "p.pt2").read_bytes()
    with warnings.catch_warnings():  # TorchScript is deprecated: the refusal is what is tested
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, data.train.x[:2]), tmp_path / "ts.pt")
    return (tmp_path / "ts.pt").read_bytes()


def use_moons(at, epochs=2):
    at.sidebar.selectbox(key="dataset").set_value("moons").run()
    at.sidebar.number_input(key="epochs").set_value(epochs).run()


def upload_model(at, role, name, content, spec=None):
    at.sidebar.radio(key=f"{role}_source").set_value(FILE).run()
    at.sidebar.file_uploader(key=f"{role}_file").set_value((name, content, "application/octet-stream")).run()
    if spec is not None:
        at.sidebar.text_input(key=f"{role}_file_spec").set_value(spec).run()


def errors(at):
    return [e.value for e in at.error]


def run_folders(role):
    return sorted(p.name for p in runs_root().glob(f"{role}-*") if (p / "config.json").is_file())


# -- the options ---------------------------------------------------------------------------------
def test_both_pickers_offer_three_sources_and_an_empty_store_gets_a_note(at):
    at.sidebar.number_input(key="epochs").set_value(7).run()
    for role in ("teacher", "student"):
        assert at.sidebar.radio(key=f"{role}_source").options == ["zoo", RUN, FILE]
        assert at.sidebar.radio(key=f"{role}_source").value == "zoo"
    at.sidebar.radio(key="teacher_source").set_value(RUN).run()
    assert not at.exception
    note = at.sidebar.info[0].value
    assert "no finished teacher runs for data 'digits-images'" in note and "upload a model file" in note
    assert not [s for s in at.sidebar.selectbox if s.key == "teacher_run"]  # a note, no empty list
    assert errors(at) and errors(at)[0].startswith("teacher: no finished teacher runs")
    assert at.button(key="run").disabled and at.sidebar.number_input(key="teacher_epochs").disabled
    assert at.sidebar.number_input(key="epochs").value == 7  # the rest of the sidebar is kept
    at.sidebar.text_input(key="student_sizes").set_value("8").run()
    at.sidebar.radio(key="student_source").set_value(FILE).run()  # the family and sizes are not drawn now
    at.sidebar.radio(key="student_source").set_value("zoo").run()
    at.sidebar.radio(key="teacher_source").set_value("zoo").run()
    assert not errors(at) and at.button(key="run").disabled is False
    assert at.sidebar.text_input(key="teacher_sizes").value == "32,64"
    assert at.sidebar.text_input(key="student_sizes").value == "8"  # kept while the file picker showed


def test_settings_outlive_a_detour_through_a_missing_csv(at):
    at.sidebar.number_input(key="epochs").set_value(7).run()
    at.sidebar.slider(key="labeled_fraction").set_value(0.3).run()
    at.sidebar.selectbox(key="dataset").set_value("upload a CSV...").run()  # no file yet: no settings drawn
    at.sidebar.selectbox(key="dataset").set_value("moons").run()
    assert at.sidebar.number_input(key="epochs").value == 7
    assert at.sidebar.slider(key="labeled_fraction").value == 0.3


def test_a_teacher_from_a_previous_run_is_listed_newest_first_and_not_retrained(at):
    older = train(teacher="mlp:8").teacher
    newer = train(teacher="mlp:16").teacher
    train(dataset="spirals")  # another dataset's teacher is not offered
    teachers_before = run_folders("teacher")
    use_moons(at)
    at.sidebar.radio(key="teacher_source").set_value(RUN).run()
    pick = at.sidebar.selectbox(key="teacher_run")
    assert pick.value == newer.run_id  # the newest is picked
    assert len(pick.options) == 2
    first, second = pick.options
    assert first.startswith("mlp:16 · test acc ") and first.endswith(f" · {newer.run_id}")
    assert second.startswith("mlp:8 · test acc ") and second.endswith(f" · {older.run_id}")
    assert f"test acc {newer.summary['test_acc']:.1%} · " in first
    assert re.search(r" · \d{4}-\d\d-\d\d \d\d:\d\d · ", first)
    assert at.sidebar.number_input(key="teacher_epochs").disabled  # a loaded teacher is not trained
    pick.set_value(older.run_id).run()
    src = code(at)
    assert f"teacher='run:{older.run_id}', student='mlp:4'" in src
    at.button(key="run").click().run()
    job = wait_done(at)
    assert job.run.status == "completed" and not at.exception
    events = job.run.buffer.all()
    assert [p.role for p in events if p.event == "fit_start"] == ["student", "baseline"]  # no teacher fit
    assert any(p.event == "step" and p.role == "student" for p in events)
    assert any("loaded and used as is, not trained here" in c.value and older.run_id in c.value for c in at.caption)
    assert run_folders("teacher") == teachers_before
    student = next(p.run_id for p in events if p.event == "fit_start" and p.role == "student")
    assert json.loads((runs_root() / student / "config.json").read_text())["teacher_run_id"] == older.run_id
    # copy as code reproduces it: the same teacher, loaded and not trained
    namespace = {}
    exec(compile(src, "<copy as code>", "exec"), namespace)
    result = namespace["result"]
    assert result.teacher is None and result.student.status == "completed"
    assert namespace["experiment"].loaded["teacher"].source == f"run:{older.run_id}"
    assert run_folders("teacher") == teachers_before


def test_a_student_from_a_previous_run_lists_student_and_baseline_runs(at):
    result = train(baseline=True)
    use_moons(at)
    at.sidebar.radio(key="student_source").set_value(RUN).run()
    pick = at.sidebar.selectbox(key="student_run")
    listed = {option.split(" · ")[-1] for option in pick.options}
    assert listed == {result.student.run_id, result.baseline.run_id}  # not the teacher's run
    assert f"student='run:{pick.value}'" in code(at)
    assert not errors(at) and at.button(key="run").disabled is False


# -- uploaded files --------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:teacher. val accuracy")  # the uploaded teacher is a fresh model
def test_an_uploaded_weights_file_is_kept_under_a_generated_name_and_runs(at, tmp_path):
    use_moons(at)
    upload_model(at, "teacher", "../../my teacher.pt", weights_file(tmp_path), spec="mlp:8")
    assert not at.exception and not errors(at), errors(at)
    saved = re.search(r"teacher='([^']+)'", code(at)).group(1)
    path = Path(saved)
    assert path.parent == (runs_root() / "uploads").resolve()
    assert re.fullmatch(r"teacher-[0-9a-f]{24}\.pt", path.name)  # generated, never the person's name
    assert path.read_bytes() == (tmp_path / "mine.pt").read_bytes()
    spec = json.loads(path.with_suffix(".spec.json").read_text())
    assert (spec["family"], spec["hidden"], spec["input_shape"], spec["num_classes"]) == ("mlp", [8], [2], 2)
    assert not list(tmp_path.parent.rglob("my teacher.pt"))
    at.button(key="run").click().run()
    job = wait_done(at)
    assert job.run.status == "completed"
    assert not any(p.role == "teacher" for p in job.run.buffer.all() if p.event == "fit_start")
    assert any("from ../../my teacher.pt" in c.value and "not trained here" in c.value for c in at.caption)


def test_a_weights_file_needs_its_spec_and_a_mismatch_names_the_file(at, tmp_path):
    use_moons(at, epochs=9)
    upload_model(at, "student", "mine.pt", weights_file(tmp_path))
    assert "student file's zoo spec: empty; expected the zoo spec" in errors(at)[0]
    assert at.button(key="run").disabled
    at.sidebar.text_input(key="student_file_spec").set_value("mlp:32").run()  # not the file's model
    message = errors(at)[0]
    assert message.startswith("student: 'mine.pt' (uploaded) does not fit the model") and "wrong size" in message
    assert "data 'moons': inputs of shape (2,), 2 classes" in message
    assert at.sidebar.number_input(key="epochs").value == 9 and at.button(key="run").disabled
    at.sidebar.text_input(key="student_file_spec").set_value("mlp:8").run()
    assert not errors(at) and at.button(key="run").disabled is False


@pytest.mark.parametrize(
    "dataset,expected",
    [
        ("spirals", "outputs logits of shape (2, 3) for a batch of 2, but data 'moons' needs (2, 2) (2 classes"),
        ("digits", "does not accept the inputs of data 'moons' (a batch of shape (2, 2)"),
    ],
)
def test_an_incompatible_file_is_named_with_what_the_data_needs_and_nothing_is_lost(at, tmp_path, dataset, expected):
    use_moons(at, epochs=11)
    at.sidebar.select_slider(key="temperature").set_value(3.0).run()
    upload_model(at, "teacher", "other.pt2", program_file(tmp_path, dataset))
    at.sidebar.checkbox(key="teacher_trusted").check().run()
    assert not at.exception
    message = errors(at)[0]
    assert message.startswith("teacher: 'other.pt2' (uploaded)") and expected in message, message
    assert "expected a teacher trained on this data" in message
    assert at.button(key="run").disabled
    assert at.sidebar.number_input(key="epochs").value == 11
    assert at.sidebar.select_slider(key="temperature").value == 3.0
    assert at.sidebar.selectbox(key="dataset").value == "moons"


@pytest.mark.parametrize(
    "name,kind,what",
    [("p.pt2", "export", "a torch.export program (.pt2)"), ("ts.pt", "torchscript", "a TorchScript program")],
)
def test_a_file_that_runs_code_is_refused_until_trusted(at, tmp_path, name, kind, what):
    use_moons(at)
    upload_model(at, "teacher", name, program_file(tmp_path, kind=kind))
    assert not at.exception
    message = errors(at)[0]
    assert message.startswith(f"teacher file: '{name}' is {what}: loading it runs code stored in the file; refused")
    assert TRUST_TEXT in message and at.button(key="run").disabled
    assert not [t for t in at.sidebar.text_input if t.key == "teacher_file_spec"]  # a program needs no spec
    assert not list((runs_root() / "uploads").glob("*"))  # refused before it is kept
    at.sidebar.checkbox(key="teacher_trusted").check().run()
    assert not errors(at), errors(at)
    assert at.button(key="run").disabled is False
    assert "config=config, teacher_config=teacher_config, trusted=True)" in code(at)
    at.sidebar.checkbox(key="teacher_trusted").uncheck().run()
    assert TRUST_TEXT in errors(at)[0] and at.button(key="run").disabled
    assert not [e for e in at.expander if e.label == "Copy as code"]  # no code for settings that cannot run


def test_a_pickled_module_is_refused_by_the_weights_only_loader(at, tmp_path):
    use_moons(at)
    torch.save(build_model("mlp", wb.load_dataset("moons"), hidden=[8]), tmp_path / "whole.pt")  # a pickle
    upload_model(at, "teacher", "whole.pt", (tmp_path / "whole.pt").read_bytes(), spec="mlp:8")
    at.sidebar.checkbox(key="teacher_trusted").check().run()  # trust is for programs: a pickle stays refused
    assert not at.exception
    message = errors(at)[0]
    assert message.startswith("teacher: 'whole.pt' (uploaded) holds objects other than tensors"), message
    assert "(torch.nn.modules.container.Sequential); refused to load it" in message
    assert at.button(key="run").disabled


def test_the_trust_box_does_not_trust_a_weights_file(at, tmp_path):
    use_moons(at)
    upload_model(at, "teacher", "mine.pt", weights_file(tmp_path), spec="mlp:8")
    at.sidebar.checkbox(key="teacher_trusted").check().run()
    assert not errors(at) and "trusted=True" not in code(at)  # nothing in the file runs: no trust asked


# -- a reload or second viewer shows the job's sources ---------------------------------------------
def test_a_second_session_shows_the_jobs_run_and_file(at, tmp_path):
    teacher = train().teacher
    use_moons(at, epochs=1)
    at.sidebar.radio(key="teacher_source").set_value(RUN).run()
    upload_model(at, "student", "small.pt", weights_file(tmp_path, hidden=(4,)), spec="mlp:4")
    src = code(at)
    at.button(key="run").click().run()
    job = wait_done(at)
    assert job.run.status == "completed"
    other = AppTest.from_file(APP, default_timeout=60)
    other.query_params["job"] = job.job_id
    other.run()
    assert not other.exception and not errors(other), errors(other)
    sb = other.sidebar
    assert sb.radio(key="teacher_source").value == RUN and sb.selectbox(key="teacher_run").value == teacher.run_id
    assert sb.radio(key="student_source").value == FILE
    assert any("small.pt (the job's file)" in c.value for c in sb.caption)
    assert sb.checkbox(key="student_trusted").value is False  # weights run no code: nothing to trust
    assert code(other) == src


# -- the helpers behind the pickers ----------------------------------------------------------------
def test_model_runs_offers_only_finished_runs_of_the_role_and_data():
    result = train(baseline=True)
    teacher = result.teacher.run_id
    assert [r.run_id for r in model_runs("moons", "teacher")] == [teacher]
    assert {r.run_id for r in model_runs("moons", "student")} == {result.student.run_id, result.baseline.run_id}
    assert model_runs("spirals", "teacher") == [] and model_runs("moons", "teacher", num_classes=3) == []
    assert model_runs("moons", "teacher", input_shape=(40,)) == []
    (runs_root() / teacher / "summary.json").unlink()  # a run that never finished (killed)
    (runs_root() / teacher / "status.json").unlink()
    assert model_runs("moons", "teacher") == []
    with pytest.raises(ValueError, match="role: 'baseline' is invalid; valid: teacher, student"):
        model_runs("moons", "baseline")


def test_save_model_upload_generates_the_name_and_refuses_other_types():
    spec = {"family": "mlp", "input_shape": [2], "num_classes": 2, "hidden": [8], "dropout": 0.0}
    one = save_model_upload(b"weights", "/etc/passwd.pt", "teacher", spec)
    assert one == save_model_upload(b"weights", "other.pt", "teacher", spec)  # the same upload: one file
    assert one.parent == (runs_root() / "uploads").resolve() and one.read_bytes() == b"weights"
    assert json.loads(one.with_suffix(".spec.json").read_text()) == spec
    assert save_model_upload(b"weights", "x.pt", "teacher", {**spec, "hidden": [16]}) != one
    with pytest.raises(ValueError, match=r"teacher file: 'notes\.txt' has the extension '\.txt'; expected one of"):
        save_model_upload(b"x", "notes.txt", "teacher")
    with pytest.raises(ValueError, match="role: 'boss' is invalid"):
        save_model_upload(b"x", "x.pt", "boss")


def test_settings_take_runs_and_files_and_name_what_is_wrong(tmp_path):
    s = Settings(dataset="moons", teacher="run:teacher-1", student=str(tmp_path / "s.pt"), trusted=True)
    src = s.to_code()
    assert f"teacher='run:teacher-1', student={str(tmp_path / 's.pt')!r}" in src
    assert "teacher_config=teacher_config, trusted=True)" in src
    assert "trusted" not in Settings(dataset="moons").to_code()
    for kwargs, message in [
        ({"teacher": "run:../escape"}, "teacher: 'run:../escape' is not a valid 'run:ID'; the id must be"),
        ({"student": ""}, "student: '' is invalid; expected a zoo spec like 'mlp:16', 'run:ID' or a model file"),
        ({"trusted": "yes"}, "trusted: 'yes' is invalid; expected True or False"),
    ]:
        with pytest.raises(ValueError) as e:
            Settings(**kwargs)
        assert message in str(e.value), (kwargs, str(e.value))
