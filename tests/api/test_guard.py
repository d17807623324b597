"""tabs/guard.py: who a visitor is, raw numbers reaching the app's checks, one-line refusals."""
import logging
import math
from types import SimpleNamespace

import gradio as gr
import pytest

from llm_core import runs
from tabs import guard
from tabs.common import check_choice, check_float, check_int, read_text_upload


def test_owner_is_the_account_when_signed_in_else_the_session():
    anonymous = SimpleNamespace(session_hash="abc", username=None, session={})
    signed_in = SimpleNamespace(session_hash="abc", username=None,
                                session={"oauth_info": {"userinfo": {"preferred_username": "ada"}}})
    other_tab = SimpleNamespace(session_hash="xyz", username=None,
                                session={"oauth_info": {"userinfo": {"preferred_username": "ada"}}})
    assert guard.owner_of(anonymous) == runs.owner_id("abc")
    assert guard.owner_of(signed_in) == guard.owner_of(other_tab) == runs.owner_id(username="ada")
    assert guard.owner_of(signed_in) != guard.owner_of(anonymous)
    assert runs.OWNER.match(guard.owner_of(None))


@pytest.mark.parametrize("payload", [math.nan, math.inf, -math.inf, "hot", None, [1], True])
def test_numbers_gradio_cannot_read_reach_the_handler_unchanged(payload):
    guard.install()
    slider = gr.Slider(0, 2, render=False)
    got = slider.preprocess(payload)
    assert got is payload or (isinstance(payload, float) and math.isnan(payload) and math.isnan(got))
    with pytest.raises(gr.Error, match="Temperature must be"):
        check_float(got, "Temperature", 0.0, 2.0)


def test_finite_numbers_still_get_gradios_bounds_and_whole_numbers_are_whole():
    guard.install()
    with pytest.raises(gr.Error, match="greater than maximum"):
        gr.Number(1, minimum=0, maximum=10, render=False).preprocess(11)
    with pytest.raises(gr.Error, match="whole number"):
        check_int(16.5, "Layers", 1, 10)
    with pytest.raises(gr.Error, match="whole number"):
        check_int(math.inf, "Layers", 1, 10)
    assert check_int(4.0, "Layers", 1, 10) == 4


def test_a_choice_outside_the_pickers_values_is_refused_and_shown_escaped():
    assert check_choice("int8", ["fp32", "int8"], "Precision") == "int8"
    with pytest.raises(gr.Error, match="Precision must be one of fp32, int8") as info:
        check_choice("<b>fp64</b>", ["fp32", "int8"], "Precision")
    assert "&lt;b&gt;" in str(info.value) and "<b>" not in str(info.value)


def test_an_uploaded_text_is_read_and_a_bad_one_refused_in_one_line(tmp_path):
    """(Deleting a refused upload, only inside Gradio's upload folder: test_hostile's test_10.)"""
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("Every effort moves you.", encoding="utf-8")
    bad.write_bytes(b"\x00\x01binary")
    assert read_text_upload(str(good)) == "Every effort moves you."
    assert read_text_upload({"path": str(good), "meta": {"_type": "gradio.FileData"}}) == "Every effort moves you."
    with pytest.raises(gr.Error, match="Cannot use this file: the file looks binary"):
        read_text_upload(str(bad))
    assert bad.exists()  # outside the upload folder: not the app's to delete
    with pytest.raises(gr.Error, match="No file uploaded"):
        read_text_upload(None)


def test_an_intended_error_is_one_log_line(caplog):
    guard.install()
    guard.log.propagate = True
    try:
        with caplog.at_level(logging.INFO, logger="llm_explorer"):
            gr.Error("The prompt is empty:\n type something.")
        messages = {r.getMessage() for r in caplog.records}
        assert messages == {"refused: The prompt is empty: type something."}   # one line, no traceback
        assert gr.Error("x").print_exception is False
    finally:
        guard.log.propagate = False
