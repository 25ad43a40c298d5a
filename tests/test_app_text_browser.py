"""The Streamlit app in a real Chromium distilling a language model: an uploaded .txt, tiny GPTs, the
bits-per-character curves filled live and the samples panel drawn (issue 15, item 7)."""

import re

import pytest
from browser import launch_chromium, screenshot, serve_streamlit
from test_app_browser import button, no_exception, set_epochs, sidebar

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600)]

TEXT = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog, and runs away.\n" for i in range(90))
# Points per trace name of the chart whose title says "bits per character" (plotly keeps data on its div).
BPC_POINTS = """() => {
  const gd = [...document.querySelectorAll('.js-plotly-plot')]
    .find(g => ((g.layout || {}).title || {}).text && g.layout.title.text.includes('bits per character'));
  return gd ? Object.fromEntries((gd._fullData || gd.data).map(t => [t.name, (t.x || []).length])) : {};
}"""


def test_a_text_distillation_fills_the_bpc_curves_and_the_samples(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    corpus = tmp_path / "fox.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    env = {"WORKBENCH_CACHE": str(tmp_path / "cache"), "WORKBENCH_RUNS": str(tmp_path / "runs")}
    with serve_streamlit("app.py", env=env, timeout=90) as url, sync_playwright() as pw:
        context = launch_chromium(pw)
        try:
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(url)
            page.get_by_role("heading", name="Knowledge distillation, live").wait_for()
            sidebar(page).get_by_test_id("stSelectbox").filter(has_text="dataset").first.click()
            page.get_by_role("option", name="upload a .txt file...", exact=True).click()
            sidebar(page).locator("input[type=file]").set_input_files(str(corpus))
            sidebar(page).get_by_text(f"fox.txt: {len(TEXT):,} characters").wait_for(timeout=30_000)
            # GPT sizes, once the rerun that takes the upload has redrawn the pickers (under load it lags the caption)
            expect(sidebar(page).get_by_role("textbox", name="teacher sizes")).to_have_value("2,64", timeout=60_000)
            set_epochs(page, 6)  # ~20 student steps with an evaluation every 2: a run of seconds
            button(page, "Run").click()
            try:
                page.get_by_text(re.compile(r"^completed — ")).wait_for(timeout=240_000)
            except Exception:
                screenshot(page, "app_text_not_completed")  # what the page showed instead
                raise
            points = page.evaluate(BPC_POINTS)
            assert points["student"] >= 3 and points["baseline"] >= 3 and points["teacher"] == 2, points
            samples = page.locator(".st-key-samples")
            text = samples.inner_text()
            for role in ("teacher", "student", "baseline"):
                assert re.search(rf"{role} \((step \d+|once)\)", text), text
            codes = [c.strip() for c in samples.locator("[data-testid='stCode']").all_inner_texts()]
            assert len(codes) == 4 and all(codes), codes  # the prompt, then three samples
            assert codes[0] in TEXT  # the prompt is the start of the validation text
            page.get_by_text("student test bits per character").wait_for()
            no_exception(page)
            screenshot(page, "app_text_done")
        finally:
            context.close()
