import threading

from tabs import session_store
from tabs.session_store import SessionStore, session_key


def test_one_expiry_rule_and_one_run_per_session(monkeypatch):
    store = SessionStore(ttl_s=10, max_sessions=2)
    assert store.begin("a", "finetune") and not store.begin("a", "pretrain")
    store.end("a")
    assert store.begin("a", "pretrain")
    store.end("a")
    store.add_run("a", {"n": 1})
    store.set_trained("a", {"model": "m"})
    assert store.runs("a") == [{"n": 1}] and store.trained("a") == {"model": "m"} and store.runs("b") == []
    now = session_store.time.time()
    monkeypatch.setattr(session_store.time, "time", lambda: now + 60)
    assert store.runs("a") == [] and store.trained("a") is None  # both expired together
    store.add_run("c", {"n": 3})
    store.add_run("d", {"n": 4})
    assert store.runs("c") == [{"n": 3}]
    assert len(store._data) == 2


def test_a_running_session_is_neither_expired_nor_evicted(monkeypatch):
    store = SessionStore(ttl_s=10, max_sessions=1)
    stop = threading.Event()
    assert store.begin("a", "pretrain", stop)
    now = session_store.time.time()
    monkeypatch.setattr(session_store.time, "time", lambda: now + 60)
    store.runs("b")
    assert store.stop_request("a", "pretrain") is stop
    assert store.stop_request("a", "finetune") is None  # the other tab's Stop leaves this run alone
    store.end("a")
    assert store.stop_request("a", "pretrain") is None


def test_session_key():
    class Request:
        session_hash = "abc"
    assert session_key(Request()) == "abc" and session_key(None) == "api"


def test_begin_training_claims_the_session_and_the_server_slot_and_end_gives_both_back():
    import gradio as gr
    import pytest

    from tabs.common import TRAINING_SLOT, begin_training, end_training
    from tabs.session_store import SESSIONS

    stop = begin_training("visitor-a", "pretrain")
    try:
        assert SESSIONS.stop_request("visitor-a", "pretrain") is stop and TRAINING_SLOT.locked()
        with pytest.raises(gr.Error, match="run of yours"):  # the same visitor, the other tab
            begin_training("visitor-a", "finetune")
        with pytest.raises(gr.Error, match="Another training run"):  # another visitor: the slot is taken
            begin_training("visitor-b", "finetune")
        assert SESSIONS.stop_request("visitor-b", "finetune") is None  # the refused claim left nothing behind
    finally:
        end_training("visitor-a")
    assert not TRAINING_SLOT.locked() and SESSIONS.stop_request("visitor-a", "pretrain") is None
    begin_training("visitor-b", "finetune")  # free again for anyone
    end_training("visitor-b")
