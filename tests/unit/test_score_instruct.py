"""scripts/score_instruct.py: held-out scoring that leaves out what an older set trained on."""
import importlib.util
from pathlib import Path

from llm_core.instruct_data import builtin_instructions, split_instructions
from llm_core.instruct_tune import held_out_sets

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("score_instruct", ROOT / "scripts" / "score_instruct.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_sets_training_split_is_read_with_that_commits_code():
    train, _, _ = split_instructions(builtin_instructions().entries)
    seen = _script().train_split_at("HEAD")  # a clean checkout: HEAD's set is this one
    assert seen == {(e["instruction"], e["input"]) for e in train}


def test_unseen_sets_drop_exactly_the_entries_trained_on():
    score = _script()
    data = builtin_instructions()
    whole = held_out_sets(data, 10_000, 10_000)
    train, _, _ = split_instructions(data.entries)
    trained = {(e["instruction"], e["input"]) for e in train}
    fair = score.unseen_sets(data, trained)  # a question asked twice can fall in both splits: it goes
    for key, entries in whole.items():
        assert fair[key] == [e for e in entries if (e["instruction"], e["input"]) not in trained]
    assert len(fair["doc_exact"]) > 0.9 * len(whole["doc_exact"])
    gone = whole["doc_exact"][0]
    fair = score.unseen_sets(data, {(gone["instruction"], gone["input"])})
    assert gone not in fair["doc_exact"] and len(fair["doc_exact"]) == len(whole["doc_exact"]) - 1
    assert fair["computed"] == whole["computed"] and fair["val"] == whole["val"]
