"""Chapter 7 data: the book's prompt and collate, built-in sets, book downloads, uploads."""
import io
import json
import zipfile
from collections import Counter

import pytest
import torch

from llm_core import instruct_data as d
from llm_core.registry import load_model
from llm_core.tokenizers import gpt2_tokenizer

BOOK_ENTRY = {"instruction": "Identify the correct spelling of the following word.",
              "input": "Ocassion", "output": "The correct spelling is 'Occasion.'"}


def test_format_input_matches_the_book_character_for_character():
    expected = ("Below is an instruction that describes a task. Write a response that appropriately "
                "completes the request.\n\n### Instruction:\nIdentify the correct spelling of the following "
                "word.\n\n### Input:\nOcassion")
    assert d.format_input(BOOK_ENTRY) == expected
    assert d.format_input(BOOK_ENTRY) + d.format_response(BOOK_ENTRY) == (
        expected + "\n\n### Response:\nThe correct spelling is 'Occasion.'")
    no_input = dict(BOOK_ENTRY, input="")
    assert d.format_input(no_input) == expected.split("\n\n### Input:")[0]
    assert "### Input" not in d.format_input({"instruction": "x", "output": "y"})


def test_book_toy_collate():
    batch = [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]]
    inputs, targets = d.custom_collate_fn(batch)
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, 50256, 50256, 50256], [7, 8, 9, 50256, 50256]]
    assert targets.tolist() == [[1, 2, 3, 4, 50256], [6, 50256, -100, -100, -100], [8, 9, 50256, -100, -100]]
    assert inputs.dtype == torch.long
    short_in, short_tg = d.custom_collate_fn(batch, allowed_max_length=3)
    assert short_in.tolist() == [[0, 1, 2], [5, 6, 50256], [7, 8, 9]]
    assert short_tg.tolist() == [[1, 2, 3], [6, 50256, -100], [8, 9, 50256]]


def test_collate_prompt_masking_ignores_the_prompt_targets():
    # prompt of 3 tokens (10, 11, 12), response (13, 14)
    inputs, targets = d.custom_collate_fn([[10, 11, 12, 13, 14], [20, 21]], pad_token_id=0,
                                          prompt_lengths=[3, 1])
    assert inputs.tolist() == [[10, 11, 12, 13, 14], [20, 21, 0, 0, 0]]
    assert targets.tolist() == [[-100, -100, 13, 14, 0], [21, 0, -100, -100, -100]]


def test_instruction_dataset_and_collate():
    tok = gpt2_tokenizer()
    data = [BOOK_ENTRY, {"instruction": "Say <|endoftext|>", "input": "", "output": "ok"}]
    ds = d.InstructionDataset(data, tok)
    ids, plen = ds[0]
    assert tok.decode(ids) == d.format_input(BOOK_ENTRY) + d.format_response(BOOK_ENTRY)
    assert tok.decode(ids[:plen]) == d.format_input(BOOK_ENTRY)
    assert tok.eot_id not in ds[1][0]  # a literal in user text stays text
    inputs, targets = d.instruction_collate(tok.eot_id, 1024, mask_prompt=True)([ds[0], ds[1]])
    assert inputs.shape == targets.shape
    assert (targets[0, :plen - 1] == -100).all() and targets[0, plen - 1] != -100


def test_split_instructions_book_sizes():
    train, test, val = d.split_instructions(list(range(1100)))
    assert (len(train), len(test), len(val)) == (935, 110, 55)
    assert train[-1] == 934 and test[0] == 935 and val[0] == 1045


def test_extract_response():
    prompt = d.format_input(BOOK_ENTRY)
    assert d.extract_response(prompt + "\n\n### Response:\nOccasion<|endoftext|>", prompt) == "Occasion"
    assert d.extract_response("blah ### Response: yes", "x") == "yes"


@pytest.mark.slow
def test_builtin_classification_is_balanced_and_labels_are_facts():
    data = d.builtin_classification()
    assert len(data) >= 1000
    counts = data.class_counts()
    assert counts["function"] == counts["class"] == len(data) // 2
    assert len(set(data.texts)) == len(data.texts)
    docs = d.stdlib_docs()
    firsts = {0: set(), 1: set()}
    for label, items in ((0, docs["functions"]), (1, docs["classes"])):
        for item in items:
            firsts[label].add(" ".join(item["doc"].strip().split("\n\n")[0].split()))
    for text, y in list(zip(data.texts, data.labels))[:200]:
        # the text starts a docstring of the labelled kind, and of no docstring of the other kind
        assert any(f.startswith(text) for f in firsts[y])
    split = d.split_classification(data)
    sizes = [len(split[k]) for k in ("train", "val", "test")]
    assert sum(sizes) == len(data) and sizes[0] == int(0.7 * len(data))
    assert not set(split["train"]) & set(split["val"])


@pytest.mark.slow
def test_builtin_instructions_size_and_computed_answers():
    data = d.builtin_instructions()
    assert len(data) >= 2000
    kinds = data.extra["kinds"]
    assert kinds["computed"] >= 1000 and kinds["documentation"] >= 1000
    assert data.entries == d.builtin_instructions().entries  # deterministic
    seen = set()
    for e in data.entries:
        assert set(e) >= {"instruction", "input", "output"} and e["output"]
        ins, inp, out = e["instruction"], e["input"], e["output"]
        if ins == "Reverse the following word.":
            assert out == inp[::-1]
        elif ins == "What is the sum of the numbers?":
            assert int(out) == sum(int(x) for x in inp.split(","))
        elif ins == "Add the two numbers.":
            a, b = inp.split(" and ")
            assert int(out) == int(a) + int(b)
        elif ins == "Sort the numbers in ascending order.":
            assert [int(x) for x in out.split(",")] == sorted(int(x) for x in inp.split(","))
        elif ins == "Is the word a palindrome? Answer yes or no.":
            assert out == ("yes" if inp == inp[::-1] else "no")
            seen.add(out)
        elif ins.startswith("What does the Python function textwrap.dedent()"):
            import textwrap
            assert out.split()[:3] == textwrap.dedent.__doc__.split()[:3]
    assert seen == {"yes", "no"}


def _zip_with(rows: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(d.SMS_SPAM_MEMBER, rows)
    return buf.getvalue()


def test_sms_parse_balance_and_split():
    lines = [f"ham\thello number {i}" for i in range(60)] + [f"spam\tWIN {i} prizes" for i in range(20)]
    rows = d.parse_sms_spam(_zip_with("\n".join(lines) + "\n"))
    assert len(rows) == 80
    data = d.balance_and_split_sms(rows)
    assert data.class_counts() == {"ham": 20, "spam": 20}
    assert [len(data.splits[k]) for k in ("train", "val", "test")] == [28, 4, 8]
    assert all(("WIN" in t) == (y == 1) for t, y in zip(data.texts, data.labels))
    with pytest.raises(d.DatasetError):
        d.parse_sms_spam(b"not a zip")


def test_book_sets_unavailable_offline_with_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(d, "CACHE_DIR", tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LLM_EXPLORER_ALLOW_DOWNLOADS", raising=False)
    for got in (d.sms_spam(), d.book_instruction_data()):
        assert isinstance(got, d.Unavailable) and "offline" in got.reason


def test_download_failure_is_a_reason_not_an_exception():
    got = d.download_bytes("http://127.0.0.1:1/nothing", timeout=2)
    assert isinstance(got, str) and got


def test_cached_download_checks_its_hash(monkeypatch, tmp_path):
    monkeypatch.setattr(d, "CACHE_DIR", tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entries = [{"instruction": f"i{n}", "input": "", "output": "o"} for n in range(d.INSTRUCTION_DATA_ENTRIES)]
    d._store("instruction-data.json", json.dumps(entries).encode())
    got = d.book_instruction_data()
    assert isinstance(got, d.InstructionData) and len(got) == 1100
    (tmp_path / "instruction-data.json").write_text("[]")  # tampered: hash no longer matches
    assert isinstance(d.book_instruction_data(), d.Unavailable)


# ---------------------------------------------------------------- uploads

def _csv(rows):
    return ("\n".join(rows) + "\n").encode()


def test_csv_upload_good():
    rows = ["label,text,extra"] + [f"{'pos' if i % 2 else 'neg'},\"text, number {i}\",x" for i in range(12)]
    data = d.parse_classification_csv(_csv(rows))
    assert data.label_names == ["neg", "pos"] and len(data) == 12
    assert data.texts[1] == "text, number 1" and data.labels[1] == 1


@pytest.mark.parametrize("payload,match", [
    (b"", "empty"),
    (b"\xff\xfe\x00\x01binary\x00", "binary|UTF-8"),
    ("text,label\ncaf\xe9,a\n".encode("latin-1"), "UTF-8"),
    (_csv(["words,category"] + ["a,b"] * 12), "text' and 'label'"),
    (_csv(["text,label"] + [f"t{i},same" for i in range(12)]), "only one class"),
    (_csv(["text,label", "a,x", "b,y", "c,x"]), "at least 10"),
    (_csv(["text,label"] + [f"t{i},{i % 2}" for i in range(12)] + ["lonely"]), "column"),
    (_csv(["text,label"] + [f"t{i},{i % 2}" for i in range(12)] + [",1"]), "empty text"),
    (_csv(["text,label"] + [f"t{i},{i}" for i in range(30)]), "different labels"),
])
def test_csv_upload_bad(payload, match):
    with pytest.raises(d.DatasetError, match=match):
        d.parse_classification_csv(payload)


def test_json_upload_good_and_input_optional():
    entries = [{"instruction": f"Do {i}", "output": str(i)} for i in range(10)]
    data = d.load_instruction_upload(json.dumps(entries).encode())
    assert len(data) == 10 and data.entries[0] == {"instruction": "Do 0", "input": "", "output": "0"}


@pytest.mark.parametrize("payload,match", [
    (b"{not json", "not valid JSON"),
    (json.dumps({"instruction": "x"}).encode(), "list of objects"),
    (json.dumps([["x"]] * 10).encode(), "not an object"),
    (json.dumps([{"instruction": "x"}] * 10).encode(), "'output'"),
    (json.dumps([{"instruction": 3, "output": "y"}] * 10).encode(), "must be a string"),
    (json.dumps([{"instruction": " ", "output": "y"}] * 10).encode(), "empty instruction"),
    (json.dumps([{"instruction": "x", "output": "y"}] * 3).encode(), "at least 10"),
    ("[]".encode("utf-16"), "UTF-8|binary"),
])
def test_json_upload_bad(payload, match):
    with pytest.raises(d.DatasetError, match=match):
        d.load_instruction_upload(payload)


def test_builtin_instructions_answer_what_a_demo_audience_asks_first():
    data = d.builtin_instructions()
    assistant = [e for e in data.entries if e.get("kind") == "assistant"]
    assert data.extra["kinds"]["assistant"] == len(assistant) >= 150
    by_q = {e["instruction"]: e["output"] for e in assistant}
    assert "Python's documentation" in by_q["Hello!"]
    assert "program, not a person" in by_q["Who are you?"]
    assert "cannot answer that reliably" in by_q["What is the capital of France?"]
    assert len(by_q) == len(assistant)  # every phrasing once


def test_assistant_entries_are_not_scored_as_computed_tasks():
    from llm_core.instruct_tune import held_out_sets

    sets = held_out_sets(d.builtin_instructions(), n_computed=10_000, n_doc=10)
    assert sets["assistant"] and all(e.get("kind") == "assistant" for e in sets["assistant"])
    assert not any(e.get("kind") == "assistant" for e in sets["computed"])


def test_chat_instruction_gives_the_chat_tabs_prompt():
    from llm_core.chat import chat_prompt_text

    turns = [("Hello!", "Hello! I am a model."), ("How do I sort a list?", "Use sorted(items).")]
    entry = {"instruction": d.chat_instruction(turns, "And in reverse order?"), "input": ""}
    assert d.format_input(entry) + d.RESPONSE_HEADER == chat_prompt_text(turns, "And in reverse order?")
    assert d.chat_instruction([], "Hi") == "Hi"


def test_builtins_and_methods_are_asked_as_a_beginner_asks():
    entries = {e["instruction"]: e for e in d.builtin_instructions().entries}
    assert entries["What does len() do?"]["output"] == "Return the number of items in a container."
    assert entries["What does the sorted() function do?"]["output"].startswith("Return a new list")
    assert entries["What does the list.sort() method do?"]["output"].startswith("Sort the list")
    assert entries["What does str.split() do?"]["output"].startswith("Return a list of the substrings")
    assert entries["List the parameters of builtins.sorted()."]["output"] == "iterable, key, reverse"
    assert not any(i.startswith("List the parameters of builtins.max(") for i in entries)  # no text signature


def test_howtos_and_follow_ups_need_the_earlier_turn():
    entries = {e["instruction"]: e for e in d.builtin_instructions().entries}
    sort = entries["How do I sort a list in Python?"]
    assert "sorted(items)" in sort["output"] and sort["kind"] == "assistant"
    follow = entries[d.chat_instruction([("How do I sort a list in Python?", sort["output"])], "And in reverse order?")]
    assert "reverse=True" in follow["output"]
    assert "And in reverse order?" not in entries  # a follow-up alone means nothing: never asked alone


def test_conversations_end_in_a_written_answer_and_fit_the_context():
    data = d.builtin_instructions()
    assistant = [e for e in data.entries if e.get("kind") == "assistant"]
    singles = {e["instruction"]: e["output"] for e in assistant if d.RESPONSE_HEADER not in e["instruction"]}
    convs = [e for e in assistant if d.RESPONSE_HEADER in e["instruction"]]
    follow_ups = {f + "?": a for _, _, pairs in d._HOWTOS for questions, a in pairs for f in questions}
    assert len(convs) >= d.CONVERSATION_ENTRIES
    turns = Counter(e["instruction"].count(d.RESPONSE_HEADER) + 1 for e in convs)
    assert set(turns) == {2, 3, 4} and min(turns.values()) >= 50
    tok = load_model("pydoc-gpt").tokenizer  # the shipped chat model's: its 256-token context holds each whole
    for e in convs:
        *earlier, last = e["instruction"].split("\n\n### Instruction:\n")
        assert len(e["instruction"]) + len(e["output"]) <= d.CONVERSATION_MAX_CHARS
        assert len(tok.encode_ordinary(d.format_input(e) + d.format_response(e))) + 1 <= 256
        for turn in earlier:  # a question asked alone, or a how-to's follow-up (after its how-to)
            question, answer = turn.split(d.RESPONSE_HEADER)
            assert singles.get(question, follow_ups.get(question)) == answer
        if last in singles:  # a conversation ending in a question asked alone too gets the same answer
            assert singles[last] == e["output"]


def test_follow_ups_are_also_asked_after_unrelated_turns_and_their_how_to():
    entries = d.builtin_instructions().entries
    howto_answers = {answer: {a for fq, a in follow_ups} for _, answer, follow_ups in d._HOWTOS if follow_ups}
    long_follow_ups = []
    for e in entries:
        turns = e["instruction"].split("\n\n### Instruction:\n")
        if len(turns) < 3:
            continue
        _, previous_answer = turns[-2].split(d.RESPONSE_HEADER)
        if e["output"] in howto_answers.get(previous_answer, ()):
            long_follow_ups.append(e)
    # at least the constant's worth, each with one or two unrelated turns before the how-to
    assert len(long_follow_ups) >= d.FOLLOW_UP_CONVERSATIONS
    assert {e["instruction"].count(d.RESPONSE_HEADER) + 1 for e in long_follow_ups} == {3, 4}
    sort = "Use sorted(items) to get a new sorted list, or items.sort() to sort the list in place."
    reverse = [e for e in long_follow_ups if sort in e["instruction"] and "reverse=True" in e["output"]]
    assert reverse, "the demo's sort / reverse follow-up is among them"


def test_conversations_also_go_on_after_a_follow_up_with_an_unrelated_message():
    entries = d.builtin_instructions().entries
    follow_answers = {a for _, _, follow_ups in d._HOWTOS for _, a in follow_ups}
    singles = {e["instruction"]: e["output"] for e in entries
               if e.get("kind") == "assistant" and d.RESPONSE_HEADER not in e["instruction"]}
    going_on = []
    for e in entries:
        *earlier, last = e["instruction"].split("\n\n### Instruction:\n")
        if earlier and earlier[-1].split(d.RESPONSE_HEADER)[1] in follow_answers:
            assert singles[last] == e["output"] and e["output"] not in follow_answers
            going_on.append(e)
    assert len(going_on) >= d.FOLLOW_UP_CONVERSATIONS
    declined = singles["What is the capital of France?"]
    assert any(e["output"] == declined for e in going_on), "an off-topic question after a follow-up is declined"


def test_written_answers_fit_the_chat_tabs_default_answer_length():
    tok = load_model("pydoc-gpt").tokenizer
    outputs = {e["output"] for e in d.builtin_instructions().entries if e.get("kind") == "assistant"}
    longest = max(outputs, key=lambda o: len(tok.encode_ordinary(o)))
    assert len(tok.encode_ordinary(longest)) <= 48, longest
