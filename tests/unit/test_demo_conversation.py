"""scripts/demo_conversation.py: the scripted demo goes through llm_core.chat turn after turn."""
import importlib.util
import sys
from pathlib import Path

from llm_core import GPTConfig, build_untrained, load_model
from llm_core.chat import NO_ANSWER
from llm_core.generation import SamplingSettings

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("demo_conversation", ROOT / "scripts" / "demo_conversation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_each_message_sees_the_earlier_turns_and_sampling_repeats_with_the_seed():
    demo = _script()
    tok = load_model("pydoc-gpt").tokenizer
    cfg = GPTConfig(vocab_size=tok.n_vocab, context_length=256, emb_dim=16, n_heads=2, n_layers=1,
                    drop_rate=0.0, tie_weights=True)
    model = build_untrained(cfg, seed=1).eval()
    settings = SamplingSettings(temperature=0.7, top_k=40, max_new_tokens=6)
    turns = demo.converse(model, tok, demo.DEMO_MESSAGES, settings, seed=123)
    assert [t.message for t in turns] == list(demo.DEMO_MESSAGES)
    assert all(t.dropped_turns == 0 for t in turns)  # 256 tokens hold five short turns
    assert all(b.prompt_tokens > a.prompt_tokens for a, b in zip(turns, turns[1:]))  # history is in the prompt
    assert [t.answer for t in demo.converse(model, tok, demo.DEMO_MESSAGES, settings, seed=123)] == \
        [t.answer for t in turns]
    md = demo.markdown("tiny", turns, "tiny, sampled")
    for t in turns:
        assert f"You: {t.message}\ntiny: {t.answer or NO_ANSWER}" in md
    assert md.count("\n| ") == 1 + len(turns)  # header + one row per turn (the separator starts "|---")
