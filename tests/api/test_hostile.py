"""The app as a hostile visitor meets it (issue 12): each finding is a test, then a generated
sweep of bad inputs over every named endpoint. The server runs as its own process, public
(LLM_EXPLORER_PUBLIC=1), so its log can be read: bad input must give a clear message, never a
traceback in the log, and a normal call afterwards must still give the right answer.

Each test starts the app in a subprocess (about 20 s), so the module is marked slow."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import tabs.attention as A
import tabs.embeddings as E
import tabs.finetune as F
import tabs.sampler as S
from tests.local_server import free_port, wait_for_app

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TEXT = ("Every effort moves you toward the sunlit terraces of the hills. " * 40).strip()

# What a message must not look like: Gradio's generic preprocessing error, a traceback, or a
# bare exception name from the app's own catch-all.
UNCLEAR = re.compile(r"Could not (pre|post)process|Traceback|^(TypeError|AttributeError|KeyError|ValueError|"
                     r"RuntimeError|IndexError|OSError|RecursionError|UnicodeEncodeError|OverflowError)\b")


def start_server(home: Path, log: Path, public: bool = True, extra_env: dict | None = None):
    port = free_port()
    env = dict(os.environ, LLM_EXPLORER_HOME=str(home), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               LLM_EXPLORER_PUBLIC="1" if public else "0", PYTHONUNBUFFERED="1", **(extra_env or {}))
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_app(url, 120, proc)
    except Exception:
        proc.kill()
        raise RuntimeError("the app did not start:\n" + log.read_text()[-3000:]) from None
    return proc, url


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("hostile-home")
    log = home / "server.log"
    proc, url = start_server(home, log)
    yield url, log, home
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def visitor(server):
    return Client(server[0], verbose=False)


def _message(call) -> str | None:
    """None when the call succeeded, else the message the visitor saw (AppError only)."""
    try:
        call()
        return None
    except AppError as exc:
        return str(exc)


def upload(url: str, path: Path) -> str:
    """POST a file to Gradio's upload route as any visitor can; returns where the server put it."""
    import httpx

    with path.open("rb") as fh:
        r = httpx.post(url + "gradio_api/upload", files={"files": (path.name, fh)}, timeout=60)
    r.raise_for_status()
    return r.json()[0]


def raw_call(url: str, api_name: str, args: list) -> tuple[str, str]:
    """Call an endpoint over plain HTTP, as a script would: the body may carry NaN and
    Infinity literals (gradio_client refuses to send them). Returns (event, data) of the end."""
    import httpx

    body = json.dumps({"data": args}, allow_nan=True)
    r = httpx.post(f"{url}gradio_api/call{api_name}", content=body,
                   headers={"Content-Type": "application/json"}, timeout=60)
    if r.status_code != 200:
        return "http", r.text
    event_id = r.json()["event_id"]
    event = data = ""
    with httpx.stream("GET", f"{url}gradio_api/call{api_name}/{event_id}", timeout=300) as stream:
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data = line.removeprefix("data:").strip()
                if event in ("complete", "error"):
                    break
    return event, data


def raw_message(url: str, api_name: str, args: list) -> str | None:
    """None when the call succeeded, else the error message shown."""
    event, data = raw_call(url, api_name, args)
    if event == "complete":
        return None
    try:
        parsed = json.loads(data)
    except ValueError:
        return data or event
    if isinstance(parsed, dict):
        return str(parsed.get("error") or parsed.get("message") or parsed.get("detail") or parsed)
    return str(parsed)


def load(c: Client, name) -> str | None:
    """The model the header switched to, or None when it refused (and kept the current one)."""
    loaded = c.predict(name, api_name="/load_model")[1]
    return loaded if isinstance(loaded, str) else None


def tracebacks(log: Path) -> list[str]:
    text = log.read_text(errors="replace")
    return [chunk[:1500] for chunk in text.split("Traceback (most recent call last)")[1:]]


# ---------------------------------------------------------------- the findings, one by one

def test_1_a_huge_config_upload_is_refused_and_the_server_answers_on(server, visitor):
    url, log, home = server
    cfg = {"format": "llm-explorer", "tokenizer": {"kind": "gpt2"},
           "model": {"vocab_size": 16, "context_length": 4, "emb_dim": 8, "n_heads": 1, "n_layers": 1_000_000}}
    f = home / "config.json"
    f.write_text(json.dumps(cfg))
    folder = str(Path(upload(url, f)).parent)
    assert load(visitor, folder) is None   # refused: typed folders are not public
    assert "refused: Typed folders are not available" in log.read_text()
    assert load(visitor, "untrained:tiny") == "untrained:tiny"


def test_1_the_same_config_on_a_private_server_is_refused_by_size(client, tmp_path):
    folder = tmp_path / "huge"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "format": "llm-explorer", "tokenizer": {"kind": "gpt2"},
        "model": {"vocab_size": 16, "context_length": 4, "emb_dim": 8, "n_heads": 1, "n_layers": 1_000_000}}))
    from llm_core import budget
    held = budget.held_bytes()
    import app
    with pytest.raises(Exception, match="n_layers is 1,000,000; this app handles at most 128"):
        app.load_model(str(folder))
    assert budget.held_bytes() <= held


def test_2_presets_too_large_are_refused_with_size_and_limit(tmp_path):
    log = tmp_path / "server.log"
    proc, url = start_server(tmp_path, log, extra_env={"LLM_EXPLORER_MAX_PARAMS": "200000000"})
    try:
        c = Client(url, verbose=False)
        info = c.view_api(return_format="dict", print_info=False)
        assert info["named_endpoints"]["/load_model"]
        assert load(c, "untrained:gpt2-xl") is None   # refused, with a warning
        assert "1,638M parameters" in log.read_text() and "limit is 200M" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(30)
    assert not tracebacks(log)


def test_2_the_embeddings_twin_counts_against_the_budget():
    from llm_core import budget, load_model
    from tabs import embeddings as E

    bundle = load_model("untrained:tiny")
    E._twins.clear()
    before = budget.held_bytes()
    twin = E._untrained_twin(bundle)
    assert budget.held_bytes() - before == sum(p.numel() * 4 for p in twin.parameters())
    E._twins.clear()


def _train_briefly(c: Client):
    from tests.api.test_pretrain import _args  # the same cheap run the Pretrain tests use
    c.predict(*_args(), api_name="/pretrain")


def test_3_saved_runs_are_private(server):
    url, log, home = server
    alice, bob = Client(url, verbose=False), Client(url, verbose=False)
    _train_briefly(alice)
    alice.predict("runA", False, api_name="/pretrain_save")
    _train_briefly(bob)
    bob.predict("runA", True, api_name="/pretrain_save")       # his own runA, not hers
    saved = sorted(p.parent.parent.name for p in (home / "checkpoints").glob("*/runA/config.json"))
    assert len(saved) == 2 and saved[0] != saved[1]
    alices = [f"saved:{o}/runA" for o in saved if load(alice, f"saved:{o}/runA")]
    bobs = [f"saved:{o}/runA" for o in saved if load(bob, f"saved:{o}/runA")]
    assert len(alices) == len(bobs) == 1 and alices != bobs   # each loads only their own
    assert "not one of your saved runs" in log.read_text()


def test_4_typed_folders_get_one_answer_whatever_exists(server, visitor):
    url, log, home = server
    start = log.read_text().count("Typed folders are not available")
    for name in ("/root", "/no/such/folder", "~", str(home), "/etc", "../../etc"):
        assert load(visitor, name) is None
    assert log.read_text().count("Typed folders are not available") - start == 6
    msg = _message(lambda: visitor.predict("/etc", E.ACTIVE, "one, two", 5,
                                           api_name="/embedding_compare"))
    assert msg and "Typed folders are not available" in msg


@pytest.mark.parametrize("name", ["x" * 1_000_000, 123, ["x"], "a b/c d", "\u202eevil", "<img src=x>"])
def test_5_bad_model_names_are_messages(server, visitor, name):
    """The header keeps the current model and warns; the wording is checked in tests/unit/test_budget.py."""
    msg = _message(lambda: load(visitor, name))
    assert msg is None or not UNCLEAR.search(msg)
    assert load(visitor, "pydoc-gpt") == "pydoc-gpt"
    assert not tracebacks(server[1])


def test_6_deeply_nested_json_is_refused(server, visitor, tmp_path):
    f = tmp_path / "deep.json"
    f.write_text("[" * 50_000 + "]" * 50_000)
    msg = _message(lambda: visitor.predict(F.TASK_INS, F.DS_INS_UPLOAD, handle_file(str(f)),
                                           api_name="/finetune_preview_data"))
    assert msg and "nested too deeply" in msg


@pytest.mark.parametrize("endpoint, args, position, bad, expect", [
    ("/sample_windows", [S.SRC_TEXT, TEXT, None, None, S.TOK_GPT2, 8, 4, 2, False, 123, True, 1, 1], 6,
     math.nan, "Stride"),
    ("/generate", ["Every effort moves you", 1.0, 0, 1.0, 4, 123, True, True, "pydoc-gpt", "fp32"], 1, "hot", "Temperature"),
    ("/generate", ["Every effort moves you", 1.0, 0, 1.0, 4, 123, True, True, "pydoc-gpt", "fp32"], 4, math.inf, "new tokens"),
    ("/attention", ["Every effort moves you", 0, 0, 0, A.STATISTICS[0], 6, 0], 1, -math.inf, "Layer"),
])
def test_7_numbers_are_checked_by_the_app(server, endpoint, args, position, bad, expect):
    args = list(args)
    args[position] = bad
    msg = raw_message(server[0], endpoint, args)
    assert msg and expect.lower() in msg.lower() and not UNCLEAR.search(msg)


def test_8_chat_shows_text_as_typed_and_answers_none(visitor):
    from tabs.chat import PlainChatbot

    bot = PlainChatbot(render=False)
    shown = bot.postprocess([{"role": "user", "content": "<h1>hi</h1> <b>x</b> <img src=x onerror=alert(1)>"}])
    text = shown.model_dump()[0]["content"][0]["text"]
    assert "<" not in text and "&lt;h1&gt;" in text
    back = bot.preprocess(shown)
    assert back[0]["content"][0]["text"] == "<h1>hi</h1> <b>x</b> <img src=x onerror=alert(1)>"
    msg = _message(lambda: visitor.predict(None, "shipped instruct model", "", False, 0.0, 0, 1.0, 4, 123,
                                           api_name="/chat"))
    assert msg is None or ("empty" in msg and not UNCLEAR.search(msg))


def test_9_a_full_fine_tune_adapter_loads_back(visitor, tmp_path):
    from llm_core import load_model
    from llm_core.finetune import FinetuneSettings, finetune
    from llm_core.instruct_data import builtin_instructions

    bundle = load_model("pydoc-gpt")
    settings = FinetuneSettings(task="instruction", method="full", max_steps=1, batch_size=2, eval_interval=1,
                                eval_batches=1, seed=1)
    result = None
    for ev in finetune(bundle.model, bundle.tokenizer, builtin_instructions(), settings, base_name="pydoc-gpt"):
        result = ev.result or result
    path = result.save_adapter(tmp_path / "full.safetensors")
    assert path.stat().st_size > 5 * 2**20    # larger than the old 5 MB upload limit
    assert load(visitor, "pydoc-gpt") == "pydoc-gpt"
    out = visitor.predict(handle_file(str(path)), api_name="/finetune_load_adapter")
    assert "full" in out.lower()


def test_10_refused_uploads_are_deleted_and_the_cache_is_bounded(server, visitor, tmp_path):
    import app

    assert app.DELETE_CACHE[1] <= 3600
    f = tmp_path / "binary.txt"
    f.write_bytes(b"\x00\x01\x02" * 100)
    url, log, home = server
    uploaded = upload(url, f)
    as_file = {"path": uploaded, "meta": {"_type": "gradio.FileData"}}
    msg = _message(lambda: visitor.predict(S.SRC_UPLOAD, "", as_file, None, S.TOK_GPT2, 8, 4, 2, False, 123, True,
                                           1, 1, api_name="/sample_windows"))
    assert msg and not UNCLEAR.search(msg)
    assert not Path(uploaded).exists()


def test_11_errors_are_one_line_and_one_visitor_cannot_fill_the_queue(server):
    url, log, home = server
    flood = Client(url, verbose=False)
    jobs = [flood.submit("Every effort moves you " * 50, 1.0, 0, 1.0, 64, 1, False, True, api_name="/generate")
            for _ in range(24)]
    refused = 0
    for job in jobs:
        try:
            job.result(timeout=300)
        except Exception as exc:  # gradio_client says "Queue is full"; the server said why
            refused += type(exc).__name__ == "QueueError"
    assert refused >= 24 - 8
    assert "refused: visitor has 8 requests in flight" in log.read_text()
    assert load(Client(url, verbose=False), "pydoc-gpt") == "pydoc-gpt"   # others are served
    assert not tracebacks(log)


# ---------------------------------------------------------------- the generated sweep

NAN, INF = float("nan"), float("inf")
BAD = {
    "text": ["", "x" * 1_000_000, "😀🔥" * 400, "\u202eRTL \u05e9\u05dc\u05d5\u05dd\u202c \u0627\u0644", "lone \ud800 surrogate",
             "<img src=x onerror=alert(1)><script>alert(1)</script><h1>big</h1>", "/etc/passwd",
             "../../../../etc/shadow", "<|endoftext|>" * 40, None, 123, ["x"], {"a": 1}, "\x00\x01\x1b[31m"],
    "number": [NAN, INF, -INF, "hot", None, 1e308, -1e308, 2**63, "", True, [1], "1e9", 0.5, -1],
    "choice": ["/etc", "", None, "x" * 100_000, 123, ["x"], "<b>x</b>", "~", "\ud800", {"x": 1}],
    "check": ["yes", None, 2, "<b>", [True]],
    "file": [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, "/etc/passwd", 123,
             {"path": "../../secret.txt", "meta": {"_type": "gradio.FileData"}}, ["x"]],
    "group": [["nope"], None, "q", [123], [["q"]]],
}
KIND = {"Textbox": "text", "Messagebox": "text", "Number": "number", "Slider": "number", "Dropdown": "choice",
        "Radio": "choice", "Checkbox": "check", "File": "file", "Checkboxgroup": "group"}
# Cheap normal values where the defaults would train or generate for long.
NORMAL = {
    "/sample_windows": {"text": TEXT},
    "/embeddings": {"n_points": 500},
    "/train_bpe": {"n_merges": 20},
    "/pretrain_preview": {"corpus": "Paste text", "pasted": TEXT, "tok_choice": "GPT-2 BPE (50,257 tokens)",
                          "size": "custom", "layers": 1, "heads": 2, "dims": 16, "context": 16, "batch_size": 2},
    "/pretrain": {"corpus": "Paste text", "pasted": TEXT, "tok_choice": "GPT-2 BPE (50,257 tokens)", "size": "custom",
                  "layers": 1, "heads": 2, "dims": 16, "context": 16, "batch_size": 2, "steps": 2, "warmup": 0,
                  "eval_interval": 1},
    "/pretrain_save": {"name": "sweep-run", "overwrite": True},
    "/pretrain_compare_gpt2": {"corpus": "Paste text", "pasted": TEXT},
    "/generate": {"max_new_tokens": 3, "temperature": 0.0},
    "/generate_compare": {"max_new_tokens": 3},
    "/generate_speed": {"max_new_tokens": 3},
    "/finetune": {"steps": 1, "eval_interval": 1, "batch": 2, "max_length": 32},
    "/chat": {"message": "Reverse the following word.", "input_text": "python", "max_new_tokens": 3},
}
DETERMINISTIC = ["/tokenize", "/sample_windows", "/parameter_counts", "/attention_toy", "/generate"]
ANSWER_PARTS = {"/generate": (1, 3)}  # the text and the per-step candidates, not the timings


def _normal_args(api: dict) -> dict[str, tuple[list, list[str]]]:
    out = {}
    for name, info in api["named_endpoints"].items():
        params = info["parameters"]
        values = [NORMAL.get(name, {}).get(p["parameter_name"], p.get("parameter_default")) for p in params]
        out[name] = (values, [KIND.get(p["component"], "text") for p in params])
    return out


# Endpoints whose normal call trains or generates: fewer bad values per parameter there.
HEAVY = {"/finetune", "/pretrain", "/pretrain_preview", "/chat", "/generate_compare"}


def sweep_cases(api: dict) -> list[tuple[str, int, object, list]]:
    """(endpoint, position, bad value, arguments) for every parameter of every named endpoint,
    bad values drawn in turn from the kind's list so every value is used."""
    cases, turn = [], {k: 0 for k in BAD}
    for name, (values, kinds) in _normal_args(api).items():
        for i, kind in enumerate(kinds):
            for _ in range(1 if name in HEAVY else 3):
                bad = BAD[kind][turn[kind] % len(BAD[kind])]
                turn[kind] += 1
                args = list(values)
                args[i] = bad
                cases.append((name, i, bad, args))
    return cases


def _normal_answer(url: str, name: str, args: list):
    event, data = raw_call(url, name, args)
    assert event == "complete", (name, data[:500])
    parsed = json.loads(data)
    if name in ANSWER_PARTS:
        text = json.dumps([parsed[i] for i in ANSWER_PARTS[name]], default=str)
        return parsed[1], re.findall(r'"token_id": (\d+)', text), re.findall(r'"p": ([\d.e-]+)', text)
    return json.dumps(parsed, sort_keys=True, default=str)


@pytest.mark.slow
def test_sweep_of_bad_inputs_over_every_endpoint(server, visitor):
    url, log, home = server
    api = visitor.view_api(return_format="dict", print_info=False)
    normal = _normal_args(api)
    assert len(normal) >= 30
    before = {name: _normal_answer(url, name, normal[name][0]) for name in DETERMINISTIC}
    cases = sweep_cases(api)
    assert len(cases) >= 300, len(cases)
    unclear = []
    for name, i, bad, args in cases:
        msg = raw_message(url, name, args)
        if msg is not None and (not msg.strip() or UNCLEAR.search(msg)):
            unclear.append((name, i, repr(bad)[:40], msg[:200]))
    for name in ("/pretrain_stop", "/finetune_stop"):
        raw_message(url, name, [])
    assert not unclear, unclear
    assert not tracebacks(log), tracebacks(log)[:2]
    after = {name: _normal_answer(url, name, normal[name][0]) for name in DETERMINISTIC}
    assert after == before
