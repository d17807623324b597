"""scripts/probe_prompts.py: the measures behind the tabs' quoted prompts and answers."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("probe_prompts", ROOT / "scripts" / "probe_prompts.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_repetition_counts_word_trigrams_seen_before():
    probe = _script()
    assert probe.repetition("a list of values and a dict of keys") == 0.0
    # "the list of" six times: 16 trigrams, of which all but the first three repeat
    assert probe.repetition("the list of " * 6) == 13 / 16
    assert probe.repetition("two words") == 0.0


def test_blank_share_is_the_share_of_empty_lines():
    probe = _script()
    assert probe.blank_share("one line") == 0.0
    assert probe.blank_share("text\n\n\n") == 3 / 4
    assert probe.blank_share("a\n  \nb") == 1 / 3


def test_the_chat_probe_answers_every_example_with_the_shipped_model(capsys):
    from tabs import chat as chat_tab
    probe = _script()
    probe.probe_chat("pydoc-gpt-instruct")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(chat_tab.GOOD_EXAMPLES) + len(chat_tab.BAD_EXAMPLES)
    assert lines[0].startswith(f"[good] {chat_tab.GOOD_EXAMPLES[0][0]} | ")
    assert all(" -> '" in line or ' -> "' in line for line in lines)
