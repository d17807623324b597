"""Shared fixtures: the app launched once in-process, a gradio_client, a Chromium page."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.local_server import free_port, wait_for_app  # noqa: E402

# Tests never touch the user's real cache or the network.
os.environ.setdefault("LLM_EXPLORER_HOME", tempfile.mkdtemp(prefix="llm-explorer-test-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# An empty Hugging Face cache: the app's default would be GPT-2 wherever the real cache holds it.
os.environ.setdefault("HF_HUB_CACHE", os.path.join(os.environ["LLM_EXPLORER_HOME"], "hf-hub"))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(os.environ["LLM_EXPLORER_HOME"], "tiktoken"))

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


@pytest.fixture(scope="session")
def app_url():
    """The whole app on the embedded default model, served on a free local port."""
    import app

    demo = app.build_demo()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                quiet=True, **app.launch_kwargs())
    url = f"http://127.0.0.1:{port}/"
    wait_for_app(url, 60)
    yield url
    demo.close()


@pytest.fixture(scope="session")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def blank_page(browser):
    """A page in a browser context of its own (a first visit's), not yet on the app: for links."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    yield pg
    context.close()


@pytest.fixture
def page(blank_page, app_url):
    """A fresh page on the app, loaded and ready."""
    blank_page.goto(app_url)
    blank_page.wait_for_selector("#model-summary", state="visible")
    return blank_page


def open_tab(page, elem_id: str):
    """Click a stage's tab button (Gradio gives it the id '<elem_id>-button')."""
    page.locator(f"#{elem_id}-button").click()
    page.wait_for_selector(f"#{elem_id}", state="visible")


def start_pretraining(page, steps: int, eval_every: int):
    """Pretrain tab: a pasted corpus, the GPT-2 tokenizer and ``steps`` steps, then Start."""
    page.locator("#pt-corpus").get_by_role("radio", name="Paste text").check()
    page.locator("#pt-pasted textarea").fill("The cat sat on the mat and looked at the hat. " * 150)
    page.locator("#pt-tokenizer").get_by_role("radio", name="GPT-2 BPE (50,257 tokens)").check()
    page.locator("#pt-steps input").fill(str(steps))
    page.locator("#pt-eval input").fill(str(eval_every))
    page.locator("#pt-start").click()
