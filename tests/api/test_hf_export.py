"""Export (Hugging Face format) and Push to the Hub through the API, in Pretrain and Fine-tune."""
import json
import zipfile
from pathlib import Path

import pytest
import torch
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from safetensors import safe_open

import tabs.finetune as F
import tabs.pretrain as P
from llm_core import export_hf, load_model

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

TEXT = "Every effort moves you toward the sunlit terraces of the palace. " * 120


def _unzip(archive: str, into: Path) -> Path:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(into)
        top = {Path(n).parts[0] for n in zf.namelist()}
    assert len(top) == 1
    return into / top.pop()


def test_pretrain_export_and_offline_push(client, tmp_path):
    from gradio_client import Client

    fresh = Client(client.src, verbose=False)  # a session that has trained nothing
    with pytest.raises(AppError, match="train one first"):
        fresh.predict(api_name="/pretrain_export_hf")
    list(client.submit(P.CORPUS_PASTE, None, TEXT, P.TOK_GPT2, "custom", 1, 2, 16, 16, 8, 4, 3e-3, 2, True, 4, 1,
                       "Every effort", "steps", False, 0.5, api_name="/pretrain"))
    archive, message = client.predict(api_name="/pretrain_export_hf")
    assert "Exported" in message and "model.safetensors" in message
    folder = _unzip(archive, tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert hf.config.n_embd == 16 and tok("Every effort")["input_ids"] == [6109, 3626]
    assert "steps" in (folder / "README.md").read_text()
    with pytest.raises(AppError, match="token"):
        client.predict("someone/model", "", False, api_name="/pretrain_push_to_hub")
    msg = client.predict("someone/model", "hf_not_a_real_token", False, api_name="/pretrain_push_to_hub")
    assert msg.startswith("Not pushed: the Hugging Face Hub cannot be reached") and "kept" in msg


def test_finetune_download_is_a_peft_adapter_that_peft_opens(client, tmp_path):
    csv = tmp_path / "easy.csv"
    csv.write_text("text,label\n" + "".join(f"{w} {w} {w},{c}\n" for i in range(24)
                                             for w, c in [("red", "colour"), ("cat", "animal")]))
    outputs = list(client.submit(F.TASK_CLS, F.DS_CLS_UPLOAD, handle_file(str(csv)), F.M_LORA, 4, 8, ["q", "v"],
                                 1, 2, 8, 3e-3, 1, 1, 64, False, False, 0.5, api_name="/finetune"))
    download = outputs[-1][7]
    with zipfile.ZipFile(download) as zf:
        names = {Path(n).name for n in zf.namelist()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    archive, message = client.predict(api_name="/finetune_export_hf")
    adapter = _unzip(archive, tmp_path / "a")
    bundle = load_model(None)  # the base the run used: the app's default model
    base_dir = export_hf(bundle, tmp_path / "base")
    base = transformers.GPT2ForSequenceClassification.from_pretrained(base_dir, num_labels=2)
    tuned = peft.PeftModel.from_pretrained(base, adapter).eval()
    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as f:
        labels = json.loads(f.metadata()["extra"])["labels"]  # our facts ride in the header
    ids = torch.tensor([bundle.tokenizer.encode("red red red<|endoftext|>")])
    with torch.no_grad():
        probs = tuned(ids).logits.softmax(-1)[0].tolist()
    shown = client.predict("red red red", api_name="/finetune_classify")
    shown = {c["label"]: c["confidence"] for c in shown["confidences"]}
    assert [shown[lab] for lab in labels] == pytest.approx(probs, abs=1e-4)
    msg = client.predict(handle_file(download), api_name="/finetune_load_adapter")
    assert "Loaded a **lora** adapter (classification)" in msg
    msg = client.predict("someone/adapter", "hf_x", False, api_name="/finetune_push_to_hub")
    assert msg.startswith("Not pushed:")


def test_load_adapter_refuses_bad_zips_with_one_clear_message(client, tmp_path):
    empty = tmp_path / "notes.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("notes/readme.txt", "not an adapter")
    with pytest.raises(AppError, match="no adapter_model.safetensors found"):
        client.predict(handle_file(str(empty)), api_name="/finetune_load_adapter")
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("a/adapter_config.json", json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2}))
        zf.writestr("a/adapter_model.safetensors", b"\x00" * 32)
    with pytest.raises(AppError, match="not a readable safetensors file"):
        client.predict(handle_file(str(broken)), api_name="/finetune_load_adapter")
    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"PK but not really")
    with pytest.raises(AppError, match="not a readable zip"):
        client.predict(handle_file(str(not_zip)), api_name="/finetune_load_adapter")
