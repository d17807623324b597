"""Stage 7 · the generation playground in a real browser: streaming, steps, branching, stop."""
import re

from playwright.sync_api import expect

from tests.conftest import open_tab

# Records how many generated tokens the output showed after each DOM update.
WATCH_JS = """() => {
  window.__genCounts = [];
  const box = document.querySelector('#gen-output-html');
  new MutationObserver(() => window.__genCounts.push(box.querySelectorAll('.gen-tok').length))
    .observe(box, {childList: true, subtree: true, characterData: true});
}"""


def set_knobs(page, prompt, temperature="0.8", max_new="40", cache=True):
    page.locator("#gen-prompt textarea").fill(prompt)
    for elem, value in (("#gen-temperature", temperature), ("#gen-max-new", max_new)):
        box = page.locator(f"{elem} input[type=number]")
        box.fill(value)
        box.press("Enter")
    if not cache:
        page.locator("#gen-cache input").uncheck()
    page.locator("#gen-stop-eot input").uncheck()  # a fixed length, whatever the model says


def test_streams_text_and_shows_the_step_chart(page):
    open_tab(page, "tab-generate")
    set_knobs(page, "<i>Every effort</i> moves you", max_new="40")
    page.evaluate(WATCH_JS)
    page.locator("#gen-run").click()
    stats = page.locator("#gen-stats")
    expect(stats).to_contain_text("40 tokens", timeout=60_000)
    expect(stats).to_contain_text("tokens/s")
    out = page.locator("#gen-output-html")
    expect(out.locator(".gen-tok")).to_have_count(40)
    counts = page.evaluate("window.__genCounts")
    assert any(0 < c < 40 for c in counts), counts      # text arrived while it was being generated
    expect(out).to_contain_text("<i>Every effort</i>")  # the prompt is shown as text, not markup
    assert out.locator("i").count() == 0

    # Click the third token: its step is selected and charted.
    out.locator('[data-step="2"]').click()
    expect(page.locator("#gen-step-detail")).to_contain_text("Step 3")
    expect(page.locator("#gen-step input[type=number]")).to_have_value("3")
    chart = page.locator("#gen-step-chart")
    expect(chart).to_contain_text("Step 3")
    expect(chart.locator(".js-plotly-plot .bars").first).to_be_attached(timeout=30_000)
    expect(page.locator("#gen-entropy .js-plotly-plot .trace").first).to_be_attached(timeout=30_000)
    expect(out.locator(".gen-sel")).to_have_count(1)


def test_branch_from_an_alternative(page):
    open_tab(page, "tab-generate")
    set_knobs(page, "The for statement", temperature="0", max_new="12")
    page.locator("#gen-run").click()
    expect(page.locator("#gen-stats")).to_contain_text("12 tokens", timeout=60_000)
    page.locator('#gen-output-html [data-step="4"]').click()
    expect(page.locator("#gen-step-detail")).to_contain_text("Step 5")
    page.locator("#gen-branch-choice label").nth(1).click()
    page.locator("#gen-branch").click()
    expect(page.locator("#gen-stats")).to_contain_text("Branched at step 5", timeout=60_000)
    expect(page.locator("#gen-output-html .gen-tok.gen-forced")).to_have_count(1)
    expect(page.locator("#gen-output-html .gen-tok")).to_have_count(12)


def test_stop_button_ends_a_long_run(page):
    open_tab(page, "tab-generate")
    set_knobs(page, "Once", max_new="256", cache=False)
    page.locator("#gen-run").click()
    out = page.locator("#gen-output-html .gen-tok")
    expect(out.first).to_be_attached(timeout=60_000)
    # a plain DOM click: no waiting for the streaming page to settle first
    page.evaluate("document.querySelector('#gen-stop').click()")
    stats = page.locator("#gen-stats")
    expect(stats).to_contain_text("stopped by you", timeout=30_000)
    n = int(re.search(r"stopped by you after (\d+) tokens", stats.inner_text()).group(1))
    assert 0 < n < 256
    expect(out).to_have_count(n)
    expect(page.locator("#gen-step-detail")).to_contain_text("Step 1")  # the partial run is inspectable
    # From here on, record every redraw of the output; then make a round trip to the server (select
    # the last step): whatever the cancelled run still had in flight would have arrived before it.
    page.evaluate(WATCH_JS)
    out.nth(n - 1).click()
    expect(page.locator("#gen-step-detail")).to_contain_text(f"Step {n}")
    expect(page.locator("#gen-output-html .gen-sel")).to_have_count(1)
    after_stop = page.evaluate("window.__genCounts")
    assert after_stop and set(after_stop) == {n}, after_stop      # redrawn, never with more tokens
    expect(out).to_have_count(n)


def test_temperature_plot_is_there_on_first_open(page):
    open_tab(page, "tab-generate")
    page.locator("#gen-temp-acc").get_by_text("Temperature: the book's plot").click()
    expect(page.locator("#gen-temp-note")).to_contain_text("forward")
    expect(page.locator("#gen-temp-plot .js-plotly-plot")).to_be_attached(timeout=30_000)
