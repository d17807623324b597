"""LLM Explorer's computing core (no UI imports).

Public facade::

    import llm_core
    bundle = llm_core.load_model("pydoc-gpt")         # built-in, "gpt2", a Hub id or a directory
    ids = bundle.tokenizer.encode("Every effort moves you")
    logits = bundle.model(torch.tensor([ids]))        # [1, T, vocab]
    llm_core.export_hf(bundle, "out/pydoc-gpt")        # Hugging Face's GPT-2 layout
"""
from .config import GPT_CONFIG_124M, PRESETS, GPTConfig
from .model import GPTModel, KVCache, Trace, build_untrained
from .registry import ModelBundle, ModelLoadError, default_model_name, load_model, model_choices
from .export import export_hf
from .tokenizers import SimpleTokenizerV1, SimpleTokenizerV2, gpt2_tokenizer

__all__ = [
    "GPTConfig", "GPT_CONFIG_124M", "PRESETS", "GPTModel", "KVCache", "Trace", "build_untrained",
    "ModelBundle", "ModelLoadError", "load_model", "default_model_name", "model_choices",
    "SimpleTokenizerV1", "SimpleTokenizerV2", "gpt2_tokenizer", "export_hf",
]
