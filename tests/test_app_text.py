"""The app for language models (issue 15, item 7) through AppTest: text data (the built-in corpus and
an uploaded .txt), GPT-only pickers, text defaults, the divergence and beta in Settings, in "copy as
code" and as live controls. The browser test is test_app_text_browser.py."""

import ast
import os

import pytest
from helpers import plotly_spec
from streamlit.testing.v1 import AppTest
from test_app import APP, code, job_of, stop_all_jobs, wait_done, wait_for

from workbench import DistillConfig
from workbench.engine.config import KD_DIVERGENCES
from workbench.ui.settings import Settings

# A small text: ~6,000 characters give 84 training blocks of 64, a few steps an epoch.
TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog, and runs away.\n" for i in range(90))


@pytest.fixture
def at():
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    assert not app.exception
    yield app
    stop_all_jobs()


def upload_text(at, content, name="mine.txt"):
    at.sidebar.selectbox(key="dataset").set_value("upload a .txt file...").run()
    at.sidebar.file_uploader(key="txt").set_value((name, content, "text/plain")).run()


def student_steps(job):
    return [p for p in job.run.buffer.all() if p.event == "step" and p.role == "student"]


# -- Settings ----------------------------------------------------------------------------------------
def test_text_settings_train_with_the_text_config():
    s = Settings.for_dataset("shakespeare-char")
    assert (s.teacher, s.student, s.is_text) == ("gpt:2,64", "gpt:1,32", True)
    # DistillConfig.for_text's values, with the Settings' own alpha preset (0.5) and log_every (5)
    assert s.config() == DistillConfig.for_text(alpha=0.5, log_every=5)
    assert s.teacher_config() == DistillConfig.for_text(w_ce=1.0, w_kd=0.0, log_every=5)
    jsd = s.replace(divergence="jsd", beta=0.25, eval_every=20)
    assert (jsd.config().divergence, jsd.config().beta, jsd.config().eval_every) == ("jsd", 0.25, 20)
    assert not Settings.for_dataset("moons").is_text and Settings.for_dataset("moons").config().divergence == "kl"
    with pytest.raises(ValueError, match="valid: .*shakespeare-char"):  # text is among the built-in datasets
        Settings(dataset="nope")
    upload = Settings.for_dataset("mine", text_file="mine.txt")
    assert upload.is_text and upload.teacher == "gpt:2,64" and upload.config().optimizer == "adamw"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"dataset": "nope"}, "dataset: 'nope' is not a built-in dataset; valid: digits"),
        ({"divergence": "kld"}, "divergence: 'kld' is invalid; valid: kl, reverse_kl, jsd"),
        ({"divergence": "jsd", "beta": 1.5}, "beta: 1.5 is invalid; expected a number in [0, 1]"),
        ({"csv": "a.csv", "target": "y", "text_file": "a.txt"}, "csv, text_file: 'a.csv', 'a.txt'; give one"),
        ({"text_file": ""}, "text_file: '' is invalid; expected a non-empty string"),
        ({"dataset": "shakespeare-char", "mixup": True}, "mixup: True is invalid with text data"),
        ({"dataset": "shakespeare-char", "extra_unlabeled": 5}, "extra_unlabeled: 5 is invalid with text data"),
    ],
)
def test_bad_text_settings_name_the_field(kwargs, message):
    with pytest.raises(ValueError) as e:
        Settings(**kwargs)
    assert message in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "settings",
    [
        Settings.for_dataset("shakespeare-char", divergence="jsd", beta=0.3, eval_every=20, temperature=2.0),
        Settings.for_dataset("mine", text_file="mine.txt", epochs=3, labeled_fraction=0.1),
        Settings.for_dataset("moons", divergence="reverse_kl"),
    ],
    ids=["corpus", "upload", "table"],
)
def test_copy_as_code_builds_the_same_configs(settings, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text(TEXT, encoding="utf-8")
    src = settings.to_code()
    assert f"divergence={settings.divergence!r}" in src
    assert ("wb.DistillConfig.for_text(" in src) == settings.is_text
    ns = {}
    exec(src.split("experiment =")[0], ns)  # the data and config part, run for real
    assert ns["config"] == settings.config() and ns["teacher_config"] == settings.teacher_config()
    assert ns["data"].spec["tokenizer"] if settings.is_text else ns["data"].name == "moons"


def test_a_hostile_text_file_name_stays_a_string_in_the_code():
    name = "x'); import os; os.system('echo pwned') #.txt"
    src = Settings.for_dataset("x", text_file=name).to_code()
    calls = [
        n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "from_text"
    ]
    assert len(calls) == 1 and calls[0].args[0].value == name
    assert "os.system" not in {getattr(n.func, "attr", "") for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Call)}


# -- the sidebar ---------------------------------------------------------------------------------
def test_the_corpus_brings_gpt_sizes_and_the_text_defaults_and_back(at):

    assert "gpt" not in at.sidebar.selectbox(key="teacher_family").options  # tables and images: no GPT
    options = at.sidebar.selectbox(key="dataset").options
    assert options.index("shakespeare-char") == options.index("upload a CSV...") + 1
    assert options[options.index("shakespeare-char") + 1] == "upload a .txt file..."
    at.sidebar.selectbox(key="dataset").set_value("shakespeare-char").run()
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="teacher_family").options == ["gpt"] and at.sidebar.selectbox(
        key="student_family"
    ).options == ["gpt"]
    assert (at.sidebar.text_input(key="teacher_sizes").value, at.sidebar.text_input(key="student_sizes").value) == (
        "2,64",
        "1,32",
    )
    assert (
        at.sidebar.select_slider(key="temperature").value == 1.0
        and at.sidebar.selectbox(key="divergence").value == "topk_kl"
    )
    assert at.sidebar.number_input(key="epochs").value == 1 and at.sidebar.number_input(key="teacher_epochs").value == 1
    assert at.sidebar.selectbox(key="batch").value == 32 and at.sidebar.select_slider(key="lr").value == 2e-3
    assert at.sidebar.slider(key="labeled_fraction").value == 1.0 and at.sidebar.checkbox(key="mixup").disabled
    src = code(at)
    assert "data = wb.load_dataset('shakespeare-char', seed=0)" in src
    assert "config = wb.DistillConfig.for_text(epochs=1, temperature=1.0, alpha=0.5" in src
    assert "teacher='gpt:2,64', student='gpt:1,32'" in src
    at.sidebar.select_slider(key="lr").set_value(1e-3).run()  # a value the person set is kept across the switch
    at.sidebar.selectbox(key="dataset").set_value("moons").run()
    assert (
        at.sidebar.selectbox(key="teacher_family").options == ["mlp"]
        and at.sidebar.text_input(key="teacher_sizes").value == "64,64"
    )
    assert (
        at.sidebar.select_slider(key="temperature").value == 8.0
        and at.sidebar.selectbox(key="divergence").value == "kl"
    )
    assert at.sidebar.number_input(key="epochs").value == 50 and at.sidebar.select_slider(key="lr").value == 1e-3
    assert "wb.DistillConfig(epochs=50" in code(at)


def test_the_divergence_and_beta_are_in_the_sidebar_and_the_code(at):

    assert at.sidebar.selectbox(key="divergence").options == list(KD_DIVERGENCES)
    assert not [s for s in at.sidebar.slider if s.key == "beta"]  # beta only for jsd
    at.sidebar.selectbox(key="divergence").set_value("jsd").run()
    at.sidebar.slider(key="beta").set_value(0.3).run()
    assert "divergence='jsd', beta=0.3" in code(at)
    assert any("beta KL(p \\|\\| M)" in c.value for c in at.sidebar.caption)  # the formula under the picker
    at.sidebar.selectbox(key="divergence").set_value("reverse_kl").run()
    src = code(at)
    assert "divergence='reverse_kl'" in src and "beta" not in src


def test_bad_gpt_sizes_are_refused_by_name(at):
    at.sidebar.selectbox(key="dataset").set_value("shakespeare-char").run()
    at.sidebar.text_input(key="teacher_sizes").set_value("2,30").run()  # 30 is no multiple of 4 heads
    assert "teacher sizes: '2,30' is invalid" in at.error[0].value and "multiple of n\\_head=4" in at.error[0].value
    assert at.button(key="run").disabled
    at.sidebar.text_input(key="teacher_sizes").set_value("40,64").run()
    assert "teacher sizes: '40,64' is too big for this app" in at.error[0].value
    at.sidebar.text_input(key="teacher_sizes").set_value("2,64").run()
    assert not at.error and at.button(key="run").disabled is False


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "is empty"),
        (b"  \n\n ", "is empty"),
        (b"PK\x03\x04" + bytes(range(256)), "binary"),
        (b"some text\x00with a NUL byte" * 20, "binary"),
        (b"too short for one block", "too short"),
        ("caf\xe9 au lait ".encode("latin-1") * 100, "not utf-8"),
    ],
    ids=["empty", "blank", "zip", "nul", "short", "latin1"],
)
def test_bad_text_uploads_show_a_message_not_a_traceback(at, content, message):
    upload_text(at, content)
    assert not at.exception
    assert at.error and "mine.txt" in at.error[0].value and message in at.error[0].value.lower(), at.error
    assert "/tmp" not in at.error[0].value and "upload.txt" not in at.error[0].value  # names the file, not our copy
    assert at.button(key="run").disabled


def test_a_text_upload_says_what_it_holds_and_runs_as_code(at):
    upload_text(at, TEXT.encode())
    assert not at.exception and not at.error
    assert any(f"mine.txt: {len(TEXT):,} characters" in c.value for c in at.sidebar.caption)
    assert at.sidebar.selectbox(key="teacher_family").options == ["gpt"]
    src = code(at)
    assert "data = wb.from_text('mine.txt', name='mine')" in src and "wb.DistillConfig.for_text(" in src


# -- live controls ---------------------------------------------------------------------------------
def test_the_divergence_beta_and_t_steer_a_running_text_job(at):
    upload_text(at, TEXT.encode())
    at.sidebar.number_input(key="epochs").set_value(3000).run()
    at.button(key="run").click().run()
    job = job_of(at)
    wait_for(lambda: len(student_steps(job)) >= 2, "student steps")
    # paused, the job cannot end while the page reruns below (on a busy CI machine it once did: its controls
    # were no longer steered and no refusal was shown); a paused job takes live controls like a running one
    job.run.pause()
    assert job.run.controls.current.divergence == "topk_kl"
    at.sidebar.select_slider(key="temperature").set_value(2.0).run()  # the default: T is live
    assert not at.error and job.run.controls.current.temperature == 2.0
    at.sidebar.select_slider(key="temperature").set_value(1.0).run()
    at.sidebar.selectbox(key="divergence").set_value("topk_kl_tail").run()
    assert job.run.controls.current.divergence == "topk_kl_tail"
    # the tail's record holds T=1 only: the page says so and the job keeps T=1
    at.sidebar.select_slider(key="temperature").set_value(2.0).run()
    assert any("temperature: 2.0 cannot be used with divergence 'topk_kl_tail'" in e.value for e in at.error)
    assert job.run.controls.current.temperature == 1.0
    at.sidebar.selectbox(key="divergence").set_value("jsd").run()
    assert not at.exception
    w = job.run.controls.current
    assert (w.divergence, w.temperature) == ("jsd", 2.0)  # the T shown in the sidebar goes along now
    at.sidebar.slider(key="beta").set_value(0.2).run()
    assert job.run.controls.current.beta == 0.2
    job.run.resume()
    wait_for(
        lambda: any(p.controls_changed and p.divergence == "jsd" and p.beta == 0.2 for p in student_steps(job)),
        "a step with the new divergence and beta",
    )
    job.run.stop()
    assert job.run.join(60)


# -- a whole run -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_short_text_run_draws_bits_per_character_samples_and_results(at):
    upload_text(at, TEXT.encode())
    at.sidebar.number_input(key="epochs").set_value(6).run()
    at.button(key="run").click().run()
    job = wait_done(at, timeout=300)
    assert job.run.status == "completed" and not at.exception
    assert [m.label for m in at.metric] == [f"{r} test bits per character" for r in ("teacher", "student", "baseline")]
    charts = {
        plotly_spec(c.proto.spec)["layout"]["title"]["text"]: plotly_spec(c.proto.spec) for c in at.get("plotly_chart")
    }
    bpc = {t["name"]: t for t in charts["val bits per character"]["data"]}
    evals = [p for p in job.run.buffer.all() if p.event == "eval" and p.role == "student" and p.split == "val"]
    assert len(evals) >= 3 and bpc["student"]["y"] == [p.bpc for p in evals]
    assert len(bpc["baseline"]["x"]) >= 3 and bpc["teacher"]["y"][0] == evals[-1].teacher_bpc
    assert "val entropy of the next character" in charts
    samples = [c.value for c in at.code]
    assert evals[-1].sample in samples and evals[-1].sample_prompt in samples
    assert os.environ["WORKBENCH_RUNS"]  # the runs went to the test's folder (conftest)


def test_jobs_choose_their_torch_threads(monkeypatch):
    from workbench.ui.jobs import job_threads

    monkeypatch.delenv("WORKBENCH_TORCH_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert job_threads() == 1  # a core is left to the page and the browser
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert job_threads() == 1
    monkeypatch.setenv("WORKBENCH_TORCH_THREADS", "3")
    assert job_threads() == 3
    monkeypatch.setenv("WORKBENCH_TORCH_THREADS", "many")
    with pytest.raises(ValueError, match="WORKBENCH_TORCH_THREADS: 'many' is invalid; expected a whole number >= 1"):
        job_threads()
