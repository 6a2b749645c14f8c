"""`medchat export`: merged folders answer like the adapter run; ct2 folders are verified."""

from __future__ import annotations

import json

import pytest

from medchat.cli import main
from medchat.errors import MedchatError
from medchat.fileio import sha256_file
from medchat.infer.backends import load_backend
from medchat.infer.generate import GenerationSettings
from medchat.prompts import format_prompt
from tests.conftest import requires

pytestmark = requires("peft")


@pytest.fixture(scope="module")
def questions(medquad_prepared):
    from medchat.data import load_split

    return [r["question"] for r in load_split(medquad_prepared, "test")[:12]]


def test_merged_export_answers_like_the_adapter_run(tiny_runs, tmp_path, questions):
    out = tmp_path / "merged"
    assert main(["export", str(tiny_runs["lora"]), "--format", "merged", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "prompt.txt"} <= names
    assert "adapter_config.json" not in names  # a plain model: no PEFT needed to load it
    manifest = json.loads((out / "export_manifest.json").read_text())
    assert manifest["format"] == "merged" and manifest["source_kind"] == "lora"
    assert manifest["merged_adapter"] is True
    assert manifest["files"]["model.safetensors"] == sha256_file(out / "model.safetensors")

    adapter = load_backend(str(tiny_runs["lora"]), "torch")
    merged = load_backend(str(out), "torch")
    assert merged.lm.kind == "pretrained" and not hasattr(merged.lm.model, "peft_config")
    assert merged.prompt_template == adapter.prompt_template
    settings = GenerationSettings(max_new_tokens=16)
    prompts = [format_prompt(q, adapter.prompt_template) for q in questions]
    assert [g.text for g in merged.generate(prompts, settings)] == [
        g.text for g in adapter.generate(prompts, settings)
    ]


def test_export_keeps_an_existing_folder_unless_told(tiny_runs, tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = ["export", str(tiny_runs["full"]), "--format", "merged", "--out", str(out)]
    assert main(argv) == 2
    assert (out / "keep.txt").read_text() == "mine"
    assert main([*argv, "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


@requires("ctranslate2")
def test_ct2_export_writes_a_verified_self_contained_folder(tiny_runs, tmp_path):
    out = tmp_path / "ct2"
    assert main(["export", str(tiny_runs["lora"]), "--format", "ct2", "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"model.bin", "config.json", "tokenizer.json", "prompt.txt"} <= names
    manifest = json.loads((out / "export_manifest.json").read_text())
    assert manifest["format"] == "ct2" and manifest["quantization"] == "int8"
    check = manifest["verification"]
    assert check["ok"] and check["tokens_scored"] > 10
    assert check["mean_abs_logprob_diff"] <= check["tolerance"]
    assert "ctranslate2" in manifest["versions"]
    backend = load_backend(str(out), "ct2")
    assert backend.prompt_template == (tiny_runs["lora"] / "prompt.txt").read_text()
    assert backend.generate(["what is asthma?"], GenerationSettings(max_new_tokens=4))[0].tokens


@requires("ctranslate2")
def test_ct2_export_refuses_a_conversion_that_does_not_match(tiny_runs, tmp_path, monkeypatch):
    """Without the guard (plain converter), the scores are off and nothing is written."""
    from ctranslate2.converters import TransformersConverter

    from medchat.infer import export

    monkeypatch.setattr(
        export, "_converter", lambda model_dir: TransformersConverter(str(model_dir))
    )
    out = tmp_path / "ct2"
    with pytest.raises(MedchatError, match="does not match torch"):
        export.export_ct2(str(tiny_runs["full"]), out, "float32")
    assert not out.exists()
