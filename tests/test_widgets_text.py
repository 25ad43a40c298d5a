"""The Dashboard for language models (issue 15, item 7): text data (the built-in corpus, a .txt path or
upload), GPT-only pickers, the divergence and beta as live controls, bits per character, entropy and
samples drawn live, and "copy as code" for text (the JupyterLab test is in
test_dashboard_model_sources_browser.py)."""

import html
import re
import warnings
from pathlib import Path

import pytest
from helpers import as_list

import workbench as wb
from workbench.engine.config import KD_DIVERGENCES
from workbench.engine.events import FitStart, StepEnd
from workbench.ui.live_figure import LiveFigure
from workbench.ui.settings import Settings
from workbench.ui.widgets import TEXT_FILE, Dashboard

# A small text: ~3,000 characters give about 40 training blocks of 64, two steps an epoch.
TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog, and runs away.\n" for i in range(45))


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


def tiny(path: Path, **changes) -> Settings:
    """Settings of a run of a few seconds on ``path``: tiny GPTs, an eval every step."""
    path.write_text(TEXT, encoding="utf-8")
    values = dict(text_file=str(path), teacher="gpt:1,16", student="gpt:1,8", eval_every=1, log_every=1)
    return Settings.for_dataset("mine", **{**values, **changes})


def text(widget) -> str:
    """What an HTML widget shows: its text without tags and entities."""
    return html.unescape(re.sub(r"<[^>]+>", " ", widget.value))


def upload(dash, name, content):
    """What the browser sends when a file is picked in the text FileUpload."""
    dash.text_upload.set_state(
        {
            "value": [
                {"name": name, "type": "", "size": len(content), "content": memoryview(content), "last_modified": 0}
            ]
        }
    )


def points(fig, name) -> int:
    trace = next(t for t in fig.data if t.name == name)
    return sum(v is not None for v in as_list(trace.y))


def test_text_data_offers_gpt_sizes_only_and_swaps_the_charts(dashboards, tmp_path):
    d = dashboards(Settings.for_dataset("moons"))
    accuracy = d.accuracy_fig
    assert "shakespeare-char" in d.dataset.options and TEXT_FILE in d.dataset.options
    assert d._text_box.layout.display == "none" and d.bpc_fig is None
    (tmp_path / "mine.txt").write_text(TEXT, encoding="utf-8")
    d.text_path.value = str(tmp_path / "mine.txt")
    d.dataset.value = TEXT_FILE
    assert d.teacher.family.options == ("gpt",) and d.student.family.options == ("gpt",)
    assert (d.teacher.spec, d.student.spec) == ("gpt:2,64", "gpt:1,32")  # Settings.for_dataset's text models
    s = d.settings()
    assert s.is_text and s.text_file == str(tmp_path / "mine.txt") and s.dataset == "mine"
    assert s.divergence == "topk_kl" and s.temperature == 1.0
    assert s.optimizer == "adamw" and d.mixup.disabled and d.extra_unlabeled.disabled
    # The curve charts are new LiveFigures (complete when opened) in the old ones' places
    assert isinstance(d.bpc_fig, LiveFigure) and d.bpc_fig.comm is not None and accuracy.comm is None
    assert d._charts.children[0] is d.bpc_fig and d._charts.children[2] is d.entropy_fig
    assert [t.name for t in d.bpc_fig.data][:3] == ["student", "baseline", "teacher"]
    assert d._explorer_box.layout.display == "none" and d.samples.layout.display is None
    assert "GPT sizes" in text(d.fits)
    d.dataset.value = "moons"  # and back: the table families and values, the accuracy charts
    assert "gpt" not in d.teacher.family.options and d.teacher.spec.startswith("mlp")
    assert d._charts.children[0] is d.accuracy_fig and d.accuracy_fig.comm is not None and d.bpc_fig.comm is None
    assert d.settings().divergence == "kl" and not d.settings().is_text


def test_divergence_choices_and_beta_for_jsd_only(dashboards):
    d = dashboards(Settings.for_dataset("moons"))
    assert tuple(d.divergence.options) == KD_DIVERGENCES
    assert d.beta.layout.display == "none"
    d.divergence.value = "jsd"
    d.beta.value = 0.25
    assert d.beta.layout.display is None and "beta" in text(d.divergence_formula)
    assert (d.settings().divergence, d.settings().beta) == ("jsd", 0.25)
    assert "divergence='jsd'" in d.show_code() and "beta=0.25" in d.show_code()


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "is a binary file"),
        (b"caf\xe9 au lait " * 50, "is not UTF-8 text"),
        (b"ab", "too short"),
    ],
)
def test_a_bad_text_file_is_named_in_the_status_line(dashboards, tmp_path, content, problem):
    path = tmp_path / "mine.txt"
    path.write_bytes(content)
    d = dashboards(tiny(tmp_path / "good.txt").replace(text_file=str(path)))
    status = text(d.status)
    assert "'" + str(path) + "'" in status and problem in status, status
    assert d.distill_button.disabled and d.train_button.disabled
    assert not d.distill() and d.job is None  # nothing starts
    # an upload of the same bytes: the message names the file as uploaded, not where it is kept
    upload(d, "notes.txt", content)
    status = text(d.status)
    assert "'notes.txt'" in status and problem in status and "uploads" not in status, status
    upload(d, "good.txt", TEXT.encode())
    assert "error" not in d.status.value and not d.distill_button.disabled
    kept = Path(d.text_path.value)
    assert kept.read_text(encoding="utf-8") == TEXT and kept.parent.name == "uploads"
    assert d.settings().dataset == "good" and d.settings().text_file == str(kept)


def test_a_missing_text_file_and_no_file(dashboards, tmp_path):
    d = dashboards(Settings.for_dataset("moons"))
    d.dataset.value = TEXT_FILE
    assert d._text_box.layout.display is None
    assert "text file: none given" in text(d.status) and d.distill_button.disabled
    d.text_path.value = str(tmp_path / "nope.txt")
    assert "nope.txt" in text(d.status) and "does not exist" in text(d.status)
    (tmp_path / "ok.txt").write_text(TEXT, encoding="utf-8")
    d.text_path.value = str(tmp_path / "ok.txt")
    assert text(d.status).strip() == "ready" and not d.distill_button.disabled
    assert d.teacher.family.options == ("gpt",)


def copy_as_code_values(code: str) -> dict:
    """Run the code's data and config lines (not the training) and return its names."""
    head = code.split("\nexperiment = ")[0]
    ns: dict = {}
    exec(head, ns)  # the code a person copies; built from repr()s of the Settings
    return ns


@pytest.mark.slow
def test_the_corpus_brings_the_text_models(dashboards):
    d = dashboards(Settings.for_dataset("moons"))
    d.dataset.value = "shakespeare-char"  # (reads the corpus: a few seconds)
    assert d.teacher.family.options == ("gpt",) and (d.teacher.spec, d.student.spec) == ("gpt:2,64", "gpt:1,32")
    assert d.settings() == Settings.for_dataset("shakespeare-char", seed=d.seed.value, log_every=5)
    assert "wb.load_dataset('shakespeare-char'" in d.show_code() and "for_text(" in d.show_code()


@pytest.mark.slow
def test_a_text_run_draws_bits_per_character_entropy_and_samples(dashboards, tmp_path):
    d = dashboards(tiny(tmp_path / "mine.txt"))
    assert d.dataset.value == TEXT_FILE and d.teacher.family.options == ("gpt",)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a teacher of two steps is "no better than chance"
        assert d.distill(), d.status.value
        assert d.wait(180)
    assert d.job.status == "completed", d.status.value
    for name in ("student", "baseline"):
        assert points(d.bpc_fig, name) >= 2 and points(d.entropy_fig, name) >= 2
    assert points(d.bpc_fig, "teacher") == 2 and points(d.entropy_fig, "teacher") >= 2
    evals = [p for p in d.job.buffer.all() if p.event == "eval" and p.role == "student"]
    bpc = next(t for t in d.bpc_fig.data if t.name == "student")
    assert list(bpc.y) == pytest.approx([p.bpc for p in evals if p.split == "val"])  # drawn as logged
    shown = text(d.samples)
    assert "prompt" in shown and all(f"{role} (step" in shown for role in ("teacher", "student", "baseline"))
    last = [p for p in evals if p.sample][-1]  # the panel shows the latest sample
    assert last.sample and html.escape(last.sample) in d.samples.value and last.sample_prompt in shown
    assert "test bits per character" in text(d.status) and "scratch" in text(d.verdict)
    ns = copy_as_code_values(d.show_code())  # copy as code reproduces the text run
    s = d.settings()
    assert ns["config"] == s.config() and ns["teacher_config"] == s.teacher_config()
    assert ns["data"].spec == wb.from_text(Path(s.text_file), name="mine").spec
    assert "teacher='gpt:1,16', student='gpt:1,8'" in d.show_code()


@pytest.mark.slow
def test_the_divergence_is_a_live_control_and_a_refused_value_keeps_the_run_going(dashboards, tmp_path):
    d = dashboards(tiny(tmp_path / "mine.txt", epochs=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert d.distill(), d.status.value
        job = d.job
        while not any(isinstance(p, StepEnd) and p.role == "student" for p in job.buffer.all()):
            assert not job.done, d.status.value
            job.join(0.05)
        job.pause()
        assert job.wait_paused(30)
        d.divergence.value = "jsd"
        d.beta.value = 0.25
        d.divergence.value = "topk_kl_tail"
        d.temperature.value = 2.0  # the tail mass is known at the cached T only: refused
        refused = text(d.status)
        assert "refused" in refused and "temperature" in refused.lower(), refused
        d.divergence.value = "jsd"
        job.resume()
        assert d.wait(180)
    assert job.status == "completed", d.status.value
    steps = [p for p in job.buffer.all() if isinstance(p, StepEnd) and p.role == "student"]
    assert steps[0].divergence == "topk_kl" and steps[-1].divergence == "jsd" and steps[-1].beta == 0.25
    assert steps[-1].temperature == 1.0  # the refused T was never used
    assert any(p.controls_changed for p in steps)
    start = next(p for p in job.buffer.all() if isinstance(p, FitStart) and p.role == "student")
    assert start.config["divergence"] == "topk_kl"
