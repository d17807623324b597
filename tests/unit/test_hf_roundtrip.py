"""Round trips with Hugging Face's libraries: ours → transformers/tokenizers, transformers → ours,
our checkpoint by Hub id from a Hub-layout cache, and clear refusals of bad model folders."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from llm_core import GPTConfig, build_untrained, export_hf, load_model
from llm_core.bpe import train_bpe
from llm_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, tokenizer_to_json
from llm_core.registry import ModelBundle, ModelLoadError, cached_models, forget

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


def long_text() -> str:
    """Varied text: this project's own source, unicode, whitespace runs, special-token literals."""
    import llm_core.bpe as src

    parts = [open(src.__file__, encoding="utf-8").read()[:12000],
             "Grüße aus Köln — naïve café, «quotes», ﬁ ligature, Ελληνικά, русский, 日本語のテキスト, 한국어",
             "emoji 🎉🎉🎉 👩‍👩‍👧 flags 🇫🇷 and math ∑ x² ≤ ∞", "tabs\t\tand\u00a0nbsp  \n\n\n   trailing   ",
             "<|endoftext|>a new document<|endoftext|><|endoftext|>", "it's they'll we've I'm you'd 12345 3.14159",
             "x" * 300, " " * 50 + "\r\n\r\n", "CamelCaseIdentifiers snake_case_names __dunder__ ->=>"]
    return "\n".join(parts * 2)


def _bundle(model, tok, name="test-model", meta=None):
    return ModelBundle(name, model.eval(), tok, model.cfg, "untrained", meta or {})


def _logits_close(ours, hf, ids, tol=1e-4):
    with torch.no_grad():
        return (ours(ids) - hf(ids).logits).abs().max().item() <= tol


def _check_export(tmp_path, bundle, text):
    out = export_hf(bundle, tmp_path / "export")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "gpt2" and cfg["architectures"] == ["GPT2LMHeadModel"]
    for f in ("model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (out / f).is_file(), f
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    raw = tokenizers.Tokenizer.from_file(str(out / "tokenizer.json"))
    ours = bundle.tokenizer.encode(text)
    assert len(ours) > 3000
    assert raw.encode(text).ids == ours
    assert hf_tok(text)["input_ids"] == ours
    assert hf_tok.decode(ours) == text
    ids = torch.tensor([ours[: bundle.config.context_length]])
    assert _logits_close(bundle.model, hf, ids)
    again = load_model(str(out))  # and back: the export is also our checkpoint
    assert again.tokenizer.encode(text) == ours
    with torch.no_grad():
        assert torch.allclose(again.model(ids), bundle.model(ids), atol=1e-6)
    forget(str(out))
    return out


def test_our_bpe_model_exports_to_transformers_with_identical_ids_and_logits(tmp_path):
    bundle = load_model("pydoc-gpt")  # the shipped 4,096-token BPE, untied head, no q/k/v bias
    out = _check_export(tmp_path, bundle, long_text())
    card = (out / "README.md").read_text()
    assert "license:" in card and "validation loss" in card and "pydoc" in card


def test_gpt2_tokenizer_model_exports_to_transformers(tmp_path):
    cfg = GPTConfig(vocab_size=50257, context_length=64, emb_dim=32, n_heads=2, n_layers=2, qkv_bias=True,
                    tie_weights=True, drop_rate=0.0)
    from llm_core import gpt2_tokenizer

    out = _check_export(tmp_path, _bundle(build_untrained(cfg, seed=3), gpt2_tokenizer()), long_text())
    assert (out / "vocab.json").is_file() and (out / "merges.txt").is_file()
    assert "lm_head.weight" not in load_file(str(out / "model.safetensors"))  # tied: stored once


def test_freshly_trained_bpe_with_tied_head_round_trips(tmp_path):
    text = long_text()
    tok = train_bpe(text, vocab_size=600).to_tokenizer("fresh")
    cfg = GPTConfig(vocab_size=tok.n_vocab, context_length=48, emb_dim=24, n_heads=3, n_layers=2,
                    qkv_bias=True, tie_weights=True, drop_rate=0.0)
    _check_export(tmp_path, _bundle(build_untrained(cfg, seed=4), tok), text)


def test_untied_transformers_model_loads_with_its_own_head(tmp_path):
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=50257, n_layer=2, n_head=2, n_embd=32, n_positions=40, tie_word_embeddings=False)).eval()
    with torch.no_grad():
        hf.lm_head.weight.normal_()  # clearly different from the embedding
    hf.save_pretrained(tmp_path)
    assert "lm_head.weight" in load_file(str(tmp_path / "model.safetensors"))
    bundle = load_model(str(tmp_path))
    assert not bundle.config.tie_weights
    ids = torch.tensor([bundle.tokenizer.encode("Every effort moves you toward the sunlit terraces")])
    assert _logits_close(bundle.model, hf, ids)
    forget(str(tmp_path))


def _hf_trained_tokenizer(text: str, size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return tok


def test_model_with_its_own_vocabulary_uses_the_tokenizer_saved_beside_it(tmp_path):
    text = long_text()
    hf_tok = _hf_trained_tokenizer(text, 700)
    torch.manual_seed(2)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=hf_tok.get_vocab_size(), n_layer=2, n_head=2, n_embd=32, n_positions=64)).eval()
    hf.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="no tokenizer is saved beside it"):
        load_model(str(tmp_path))
    hf_tok.save(str(tmp_path / "tokenizer.json"))
    bundle = load_model(str(tmp_path))
    assert bundle.tokenizer.encode(text) == hf_tok.encode(text).ids
    assert bundle.tokenizer.decode(hf_tok.encode(text).ids) == text
    ids = torch.tensor([hf_tok.encode(text).ids[:64]])
    assert _logits_close(bundle.model, hf, ids)
    forget(str(tmp_path))


def test_our_checkpoint_loads_by_hub_id_from_a_hub_layout_cache(tmp_path, monkeypatch):
    """What `push` uploads, as `snapshot_download` would have cached it: no network is asked."""
    import huggingface_hub.constants as hub_constants

    text = long_text()
    tok = train_bpe(text, vocab_size=400).to_tokenizer("hub-bpe")
    cfg = GPTConfig(vocab_size=tok.n_vocab, context_length=32, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
    model = build_untrained(cfg, seed=9)
    repo = "someone/tiny-from-llm-explorer"
    repo_dir = tmp_path / "hub" / ("models--" + repo.replace("/", "--"))
    save_checkpoint(repo_dir / "snapshots" / ("a" * 40), model, tok, {"name": "tiny", "steps": 7})
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("llm_core.checkpoint.hub_reachable", lambda *a, **k: pytest.fail("asked the network"))
    forget(repo)
    try:
        bundle = load_model(repo)
        assert bundle.source == "hub" and bundle.meta["steps"] == 7 and bundle.tokenizer.name == "hub-bpe"
        assert bundle.tokenizer.encode(text) == tok.encode(text)
        ids = torch.tensor([tok.encode(text)[:32]])
        with torch.no_grad():
            assert torch.equal(bundle.model(ids), model(ids))
    finally:
        forget(repo)


def test_old_private_format_still_loads(tmp_path):
    tok = train_bpe(long_text(), vocab_size=300).to_tokenizer("old-bpe")
    cfg = GPTConfig(vocab_size=tok.n_vocab, context_length=16, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
    model = build_untrained(cfg, seed=1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer_to_json(tok)))
    (tmp_path / "config.json").write_text(json.dumps({"format": "llm-explorer", "model": cfg.to_dict(),
                                                      "tokenizer": {"kind": "bpe", "file": "tokenizer.json"},
                                                      "meta": {"steps": 3}}))
    loaded, tok2, meta = load_checkpoint(tmp_path)
    assert meta["steps"] == 3 and tok2.encode(long_text()) == tok.encode(long_text())
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))


def test_shipped_models_are_in_the_hugging_face_layout():
    from llm_core.registry import BUILTIN_DIR

    for name in ("pydoc-gpt", "pydoc-gpt-instruct"):
        d = BUILTIN_DIR / name
        assert json.loads((d / "config.json").read_text())["model_type"] == "gpt2"
        tokenizers.Tokenizer.from_file(str(d / "tokenizer.json"))  # the real tokenizers format


# ---------------------------------------------------------------- bad input

def _tiny_hf(tmp_path, **cfg):
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=50257, n_layer=1, n_head=2, n_embd=16, n_positions=16, **cfg))
    hf.save_pretrained(tmp_path)
    return hf


@pytest.mark.parametrize("case, message", [
    ("not a model", "not a model folder"),
    ("llama", "GPT-2-architecture models only"),
    ("shapes", "does not match config.json"),
    ("damaged", "not a readable safetensors file"),
    ("untied without head", "no lm_head.weight"),
    ("bad json", "not valid JSON"),
])
def test_bad_model_folders_get_one_clear_message_and_the_cache_is_unchanged(tmp_path, case, message):
    load_model("untrained:tiny")
    before = cached_models()
    if case == "not a model":
        (tmp_path / "notes.txt").write_text("hello")
    else:
        _tiny_hf(tmp_path)
        cfg = json.loads((tmp_path / "config.json").read_text())
        if case == "llama":
            cfg.update(model_type="llama", architectures=["LlamaForCausalLM"])
        elif case == "shapes":
            cfg["n_embd"] = 32
        elif case == "untied without head":
            cfg["tie_word_embeddings"] = False
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        if case == "damaged":
            (tmp_path / "model.safetensors").write_bytes(b"\x00" * 100)
        if case == "bad json":
            (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=message) as info:
        load_model(str(tmp_path))
    assert "\n" not in str(info.value)
    assert cached_models() == before


def test_checkpoint_error_for_a_tokenizer_that_is_not_byte_level(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    _tiny_hf(tmp_path)
    wordlevel = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    wordlevel.pre_tokenizer = pre_tokenizers.Whitespace()
    wordlevel.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(CheckpointError, match="byte-level BPE"):
        load_checkpoint(tmp_path)


# ---------------------------------------------------------------- the CLI and the Hub

def test_export_cli_writes_the_folder_and_an_offline_push_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    from llm_core import export

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    rc = export.main(["pydoc-gpt", str(tmp_path / "out"), "--push-to-hub", "someone/pydoc-gpt"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "cannot be reached" in err[0] and str(tmp_path / "out") in err[0]
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "TRAINING.md").is_file()
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "out")("The list")["input_ids"] == \
        load_model("pydoc-gpt").tokenizer.encode("The list")


def test_push_needs_a_repo_id_and_a_token(tmp_path, monkeypatch):
    from llm_core.export import HubPushError, push_to_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("llm_core.export.resolve_token", lambda token: (token or "").strip() or None)
    with pytest.raises(HubPushError, match="USER/NAME"):
        push_to_hub(tmp_path, "no-slash", token="x")
    with pytest.raises(HubPushError, match="no Hugging Face token"):
        push_to_hub(tmp_path, "a/b", token="")


def test_push_uploads_with_huggingface_hub_when_reachable(tmp_path, monkeypatch):
    """The upload API is called with the folder and repo (the Hub itself replaced by a recorder)."""
    import huggingface_hub

    from llm_core.export import push_to_hub

    calls = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("llm_core.export.hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kw: calls.append(("create", repo_id, kw))
                        or f"https://huggingface.co/{repo_id}")
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: calls.append(("upload", kw)))
    url = push_to_hub(tmp_path, "someone/model", token="hf_x")
    assert url.endswith("someone/model")
    assert calls[0][0] == "create" and calls[0][2]["exist_ok"] and calls[0][2]["token"] == "hf_x"
    assert calls[1][1]["folder_path"] == str(tmp_path) and calls[1][1]["repo_id"] == "someone/model"


def test_old_checkpoints_convert_in_place_only_when_identical(tmp_path):
    from llm_core.checkpoint import convert_old_checkpoint

    tok = train_bpe(long_text(), vocab_size=300).to_tokenizer("old-bpe")
    cfg = GPTConfig(vocab_size=tok.n_vocab, context_length=16, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
    model = build_untrained(cfg, seed=1)
    old = tmp_path / "old"
    old.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(old / "model.safetensors"))
    (old / "tokenizer.json").write_text(json.dumps(tokenizer_to_json(tok)))
    (old / "TRAINING.md").write_text("how it was trained")
    (old / "config.json").write_text(json.dumps({"format": "llm-explorer", "model": cfg.to_dict(),
                                                 "tokenizer": {"kind": "bpe", "file": "tokenizer.json"},
                                                 "meta": {"steps": 3}}))
    convert_old_checkpoint(old)
    assert json.loads((old / "config.json").read_text())["model_type"] == "gpt2"
    assert (old / "TRAINING.md").read_text() == "how it was trained"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    loaded, tok2, meta = load_checkpoint(old)
    assert meta["steps"] == 3 and tok2.name == "old-bpe" and tok2.encode(long_text()) == tok.encode(long_text())
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))
    with pytest.raises(CheckpointError, match="not in the old format"):
        convert_old_checkpoint(old)


# ---------------------------------------------------------------- LoRA adapters ↔ peft

peft = pytest.importorskip("peft")


def _base(tmp_path, tie=False, seed=11):
    """A small model of ours with its own BPE, exported as the base peft builds on."""
    tok = train_bpe(long_text(), vocab_size=320).to_tokenizer("peft-bpe")
    cfg = GPTConfig(vocab_size=tok.n_vocab, context_length=32, emb_dim=24, n_heads=2, n_layers=2,
                    qkv_bias=True, tie_weights=tie, drop_rate=0.0)
    bundle = _bundle(build_untrained(cfg, seed=seed), tok, name=f"peft-base-{seed}")
    base_dir = export_hf(bundle, tmp_path / f"base-{seed}")
    return bundle, base_dir


def _tuned(bundle, targets, rank=3, alpha=5.0, num_classes=None, scaling="alpha/rank"):
    from llm_core.finetune import FinetuneSettings, adapter_info, prepare_model
    from llm_core.lora import model_fingerprint

    settings = FinetuneSettings(task="classification" if num_classes else "instruction", method="lora",
                                rank=rank, alpha=alpha, targets=targets, lora_scaling=scaling)
    model = prepare_model(bundle.model, settings, num_classes=num_classes, device="cpu").eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # B starts at zero; give every update (and a new head's bias) real values
        for name, p in model.named_parameters():
            if name.endswith("lora.B") or name == "out_head.bias":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    skip = ("out_head",) if num_classes else ()  # as finetune() computes it
    info = adapter_info(bundle.name, model_fingerprint(bundle.model, skip=skip), settings, num_classes,
                        {"task": settings.task, "labels": [f"c{i}" for i in range(num_classes or 0)]})
    return model, info


@pytest.mark.parametrize("targets, tie, scaling", [(("all",), True, "alpha/rank"), (("q", "v", "ff_out"), False, "alpha"),
                                                   (("k",), False, "alpha/rank")])
def test_our_lora_adapter_opens_in_peft_with_equal_logits(tmp_path, targets, tie, scaling):
    from llm_core.peft_format import load_peft_adapter, save_peft_adapter

    bundle, base_dir = _base(tmp_path, tie=tie)
    model, info = _tuned(bundle, targets, scaling=scaling)  # the book's scale (× alpha) travels too
    adapter_dir = save_peft_adapter(tmp_path / "adapter", model, info)
    assert sorted(p.name for p in adapter_dir.iterdir()) == ["README.md", "adapter_config.json",
                                                            "adapter_model.safetensors"]
    hf = peft.PeftModel.from_pretrained(transformers.GPT2LMHeadModel.from_pretrained(base_dir), adapter_dir).eval()
    ids = torch.tensor([bundle.tokenizer.encode(long_text())[:32]])
    with torch.no_grad():
        ours = model(ids)
        assert (ours - bundle.model(ids)).abs().max() > 1e-2  # the adapter changes something
        assert (hf(ids).logits - ours).abs().max().item() <= 1e-4
    again, info2 = load_peft_adapter(adapter_dir, bundle.model)  # and back, exactly
    assert info2.rank == info.rank and info2.targets == info.targets
    with torch.no_grad():
        assert (again(ids) - ours).abs().max().item() <= 1e-5


def test_classification_adapter_travels_as_gpt2_for_sequence_classification(tmp_path):
    from llm_core.finetune import classification_logits
    from llm_core.peft_format import load_peft_adapter, save_peft_adapter

    bundle, base_dir = _base(tmp_path)
    model, info = _tuned(bundle, ("attention",), num_classes=3)
    adapter_dir = save_peft_adapter(tmp_path / "cls", model, info)
    base = transformers.GPT2ForSequenceClassification.from_pretrained(base_dir, num_labels=3)
    hf = peft.PeftModel.from_pretrained(base, adapter_dir).eval()
    ids = torch.tensor([bundle.tokenizer.encode("Return the number of items.<|endoftext|>")])
    last = torch.tensor([ids.shape[1] - 1])
    with torch.no_grad():
        ours = classification_logits(model, ids, last)
        assert (hf(ids).logits - ours).abs().max().item() <= 1e-4
        again, info2 = load_peft_adapter(adapter_dir, bundle.model)
        assert info2.head_classes == 3 and info2.extra["labels"] == ["c0", "c1", "c2"]
        assert (classification_logits(again, ids, last) - ours).abs().max().item() <= 1e-5


def test_an_adapter_peft_wrote_for_gpt2_loads_into_ours(tmp_path):
    from llm_core.peft_format import load_peft_adapter

    bundle, base_dir = _base(tmp_path)
    torch.manual_seed(3)
    config = peft.LoraConfig(r=4, lora_alpha=12, target_modules=["c_attn", "mlp.c_proj", "lm_head"],
                             fan_in_fan_out=True, lora_dropout=0.0, layers_to_transform=None,
                             rank_pattern={"mlp.c_proj": 2}, alpha_pattern={"mlp.c_proj": 7})
    hf = peft.get_peft_model(transformers.GPT2LMHeadModel.from_pretrained(base_dir), config)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "lora_B" in name:
                p.normal_()
    hf.save_pretrained(tmp_path / "from-peft")
    ours, info = load_peft_adapter(tmp_path / "from-peft", bundle.model, base_name=bundle.name)
    assert set(info.targets) == {"q", "k", "v", "ff_out", "head"}
    ids = torch.tensor([bundle.tokenizer.encode(long_text())[100:132]])
    with torch.no_grad():
        assert (ours(ids) - hf.eval()(ids).logits).abs().max().item() <= 1e-4


def test_adapter_for_another_base_is_refused(tmp_path):
    from llm_core.lora import LoRAError
    from llm_core.export import zip_folder
    from llm_core.peft_format import load_peft_adapter, save_peft_adapter

    bundle, _ = _base(tmp_path, seed=11)
    other, other_dir = _base(tmp_path, seed=12)
    model, info = _tuned(bundle, ("attention",))
    adapter_dir = save_peft_adapter(tmp_path / "adapter", model, info)
    with pytest.raises(LoRAError, match="trained on 'peft-base-11'"):
        load_peft_adapter(zip_folder(adapter_dir, tmp_path / "adapter.zip"), other.model)
    wide = GPTConfig(vocab_size=bundle.config.vocab_size, context_length=32, emb_dim=32, n_heads=2, n_layers=2)
    hf = peft.get_peft_model(transformers.GPT2LMHeadModel.from_pretrained(other_dir),
                             peft.LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    hf.save_pretrained(tmp_path / "p")
    with pytest.raises(LoRAError, match="another base model"):
        load_peft_adapter(tmp_path / "p", build_untrained(wide))


@pytest.mark.parametrize("method", ["last-block", "full"])
def test_whole_weight_fine_tunes_export_as_models(tmp_path, method):
    from llm_core.export import export_finetuned
    from llm_core.finetune import FinetuneSettings, adapter_info, classification_logits, prepare_model

    bundle, _ = _base(tmp_path)
    settings = FinetuneSettings(task="classification", method=method)
    model = prepare_model(bundle.model, settings, num_classes=2, device="cpu").eval()
    with torch.no_grad():
        model.out_head.bias.copy_(torch.tensor([0.7, -0.3]))
        model.trf_blocks[-1].ff.layers[0].weight.mul_(1.5)
    info = adapter_info(bundle.name, "", settings, 2, {"task": "classification", "labels": ["ham", "spam"]})
    out = export_finetuned(model, bundle.tokenizer, info, tmp_path / "classifier")
    hf = transformers.GPT2ForSequenceClassification.from_pretrained(out).eval()
    assert hf.config.id2label == {0: "ham", 1: "spam"}
    ids = torch.tensor([bundle.tokenizer.encode("Return the number of items.<|endoftext|>")])
    with torch.no_grad():
        ours = classification_logits(model, ids, torch.tensor([ids.shape[1] - 1]))
        assert (hf(ids).logits - ours).abs().max().item() <= 1e-4
    with pytest.raises(ModelLoadError, match="text classifier"):
        load_model(str(out))
    settings = FinetuneSettings(task="instruction", method=method)
    model = prepare_model(bundle.model, settings, device="cpu").eval()
    with torch.no_grad():
        model.trf_blocks[0].att.W_value.weight.mul_(-1)
    out = export_finetuned(model, bundle.tokenizer, adapter_info(bundle.name, "", settings, None, {}),
                           tmp_path / "tuned")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert (hf(ids).logits - model(ids)).abs().max().item() <= 1e-4


@pytest.mark.slow
def test_finetune_cli_out_dir_writes_a_peft_adapter(tmp_path, capsys):
    from llm_core import finetune
    from llm_core.peft_format import load_peft_adapter

    data = tmp_path / "data.csv"
    data.write_text("text,label\n" + "".join(f"item number {i} is fine,{'ham' if i % 2 else 'spam'}\n"
                                             for i in range(40)))
    finetune.main(["--model", "pydoc-gpt", "--task", "classification", "--data", str(data), "--rank", "2",
                   "--alpha", "4", "--targets", "attention", "--steps", "2", "--batch-size", "4",
                   "--eval-interval", "2", "--eval-batches", "1", "--out", str(tmp_path / "adapter")])
    out = tmp_path / "adapter"
    assert json.loads((out / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    base = load_model("pydoc-gpt")
    model, info = load_peft_adapter(out, base.model)
    assert info.head_classes == 2 and sorted(info.extra["labels"]) == ["ham", "spam"]
    with pytest.raises(SystemExit, match="needs --out DIR"):
        finetune.main(["--push-to-hub", "a/b", "--out", str(tmp_path / "x.safetensors")])


@pytest.mark.slow
def test_pretrain_cli_writes_the_hugging_face_layout_and_reports_an_offline_push(tmp_path, monkeypatch, capsys):
    from llm_core.pretrain import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(long_text(), encoding="utf-8")
    out = tmp_path / "ckpt"
    rc = main(["--text-file", str(corpus), "--vocab-size", "300", "--layers", "1", "--heads", "2", "--emb-dim", "16",
               "--context", "16", "--steps", "4", "--batch-size", "2", "--warmup", "1", "--eval-interval", "2",
               "--eval-batches", "1", "--out", str(out), "--push-to-hub", "someone/tiny"])
    err = capsys.readouterr().err
    assert rc == 1 and "push:" in err and ("cannot be reached" in err or "no Hugging Face token" in err)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    ours, tok, _ = load_checkpoint(out)
    ids = tok.encode(long_text()[:2000])
    assert hf_tok(long_text()[:2000])["input_ids"] == ids
    assert _logits_close(ours, hf, torch.tensor([ids[:16]]))


def test_a_lora_model_exports_merged_like_any_other(tmp_path):
    bundle, _ = _base(tmp_path)
    model, _ = _tuned(bundle, ("attention", "feed-forward"))
    out = export_hf(_bundle(model, bundle.tokenizer, name="merged"), tmp_path / "merged")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([bundle.tokenizer.encode(long_text())[:32]])
    with torch.no_grad():
        assert (model(ids) - bundle.model(ids)).abs().max() > 1e-2
    assert _logits_close(model, hf, ids)
    from llm_core.lora import lora_layers

    assert all(not layer.merged for layer in lora_layers(model).values())  # the original is left alone


def test_model_cards_name_a_license_the_hub_accepts():
    from llm_core.registry import BUILTIN_DIR

    for name in ("pydoc-gpt", "pydoc-gpt-instruct"):
        card = (BUILTIN_DIR / name / "README.md").read_text()
        front = card.split("---")[1]
        assert "license: mit" in front and "Python Software Foundation" in card
    meta = load_model("pydoc-gpt-instruct").meta
    card = (BUILTIN_DIR / "pydoc-gpt-instruct" / "README.md").read_text()
    assert f"| training seconds | {meta['train_seconds']:.4g} |" in card  # not the measuring around it


@pytest.mark.slow
def test_hub_id_loads_from_a_fake_hf_home_in_a_fresh_process(tmp_path):
    """The same with HF_HOME pointing at a Hub-layout cache, as huggingface_hub reads it at import."""
    import os
    import subprocess
    import sys

    tok = train_bpe(long_text(), vocab_size=300).to_tokenizer("home-bpe")
    cfg = GPTConfig(vocab_size=tok.n_vocab, context_length=16, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0)
    repo_dir = tmp_path / "home" / "hub" / "models--someone--home-model"
    save_checkpoint(repo_dir / "snapshots" / ("b" * 40), build_untrained(cfg, seed=2), tok, {"steps": 5})
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("b" * 40)
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    code = ("import llm_core; b = llm_core.load_model('someone/home-model'); "
            "print(b.source, b.meta['steps'], b.tokenizer.name, b.config.vocab_size)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["hub", "5", "home-bpe", str(tok.n_vocab)]


@pytest.mark.parametrize("dtype,torch_dtype,tag", [("fp16", torch.float16, "F16"), ("bf16", torch.bfloat16, "BF16")])
def test_half_precision_storage_loads_as_fp32_and_opens_in_transformers(tmp_path, dtype, torch_dtype, tag):
    from safetensors import safe_open

    text = long_text()
    tok = train_bpe(text, vocab_size=400).to_tokenizer("half")
    cfg = GPTConfig(vocab_size=tok.n_vocab, context_length=32, emb_dim=32, n_heads=2, n_layers=2,
                    qkv_bias=True, tie_weights=True, drop_rate=0.0)
    model = build_untrained(cfg, seed=5).eval()
    full, half = save_checkpoint(tmp_path / "fp32", model, tok), save_checkpoint(tmp_path / dtype, model, tok, dtype=dtype)
    with safe_open(str(half / "model.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {tag}
    ratio = (half / "model.safetensors").stat().st_size / (full / "model.safetensors").stat().st_size
    assert 0.45 < ratio < 0.55
    assert json.loads((half / "config.json").read_text())["torch_dtype"] == {"fp16": "float16", "bf16": "bfloat16"}[dtype]
    again = load_model(str(half))
    for (name, p), q in zip(model.named_parameters(), again.model.parameters()):
        assert q.dtype == torch.float32, name
        assert torch.equal(q, p.detach().to(torch_dtype).float()), name  # the stored rounding, nothing else
    ids = torch.tensor([tok.encode(text)[:cfg.context_length]])
    hf = transformers.AutoModelForCausalLM.from_pretrained(half, dtype=torch.float32).eval()
    assert next(hf.parameters()).dtype == torch.float32
    assert _logits_close(again.model, hf, ids)
    forget(str(half))


def test_export_cli_stores_half_precision_weights(tmp_path, capsys):
    from llm_core import export

    assert export.main(["pydoc-gpt", str(tmp_path / "half"), "--dtype", "fp16"]) == 0
    size = (tmp_path / "half" / "model.safetensors").stat().st_size
    assert size < 0.55 * (Path("assets/models/pydoc-gpt") / "model.safetensors").stat().st_size
    again = load_model(str(tmp_path / "half"))
    ids = torch.tensor([again.tokenizer.encode("The list of the")])
    with torch.no_grad():
        assert (again.model(ids) - load_model("pydoc-gpt").model(ids)).abs().max().item() < 0.05
    forget(str(tmp_path / "half"))


@pytest.mark.slow
def test_pretrain_save_dtype_fp16_writes_half_weights_that_load_as_fp32(tmp_path):
    from safetensors import safe_open

    from llm_core.pretrain import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(long_text(), encoding="utf-8")
    out = tmp_path / "ckpt"
    main(["--text-file", str(corpus), "--vocab-size", "300", "--layers", "1", "--heads", "2", "--emb-dim", "16",
          "--context", "16", "--steps", "2", "--batch-size", "2", "--warmup", "1", "--eval-interval", "2",
          "--eval-batches", "1", "--out", str(out), "--save-dtype", "fp16"])
    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    model, _, _ = load_checkpoint(out)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
