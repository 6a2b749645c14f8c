"""runs.py: one reading of `--model` values and of a SPEC, for eval, the UI and serving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medchat.errors import MedchatError
from medchat.runs import ModelSpec, describe, parse_model_args


def test_model_args_name_folders_after_themselves_and_keep_hub_ids(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-run").mkdir()
    got = parse_model_args(
        ["base=google/flan-t5-base", "my-run", "runs/lora/", "google/flan-t5-small", "odd=a=b"]
    )
    assert got == [
        ModelSpec("base", "google/flan-t5-base"),
        ModelSpec("my-run", "my-run"),  # an existing folder
        ModelSpec("lora", "runs/lora/"),  # reads as a path: named after its folder
        ModelSpec("google/flan-t5-small", "google/flan-t5-small"),  # a hub id stays whole
        ModelSpec("odd", "a=b"),
    ]
    # A NAME has no slash, so a path containing "=" is a bare SPEC.
    assert parse_model_args(["./x/a=b"]) == [ModelSpec("a=b", "./x/a=b")]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["x="], "empty SPEC"),
        (["=x"], "empty NAME"),
        (["a=x", "a=y"], "names must be unique, a given twice"),
        (["echo=x"], "'echo' is the name of an eval floor"),
        ([], "at least one --model"),
    ],
)
def test_bad_model_args_say_what_is_wrong(values: list[str], message: str) -> None:
    with pytest.raises(MedchatError, match=message):
        parse_model_args(values, reserved=("echo", "retrieve", "extract"))


def test_describe_reads_a_run_folder_and_names_what_is_missing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "prompt.txt").write_text("Q: {question}")
    info = {"method": "qlora", "base_model": "google/flan-t5-base", "quant": {"bits": 4}}
    (run / "run_info.json").write_text(json.dumps(info))
    d = describe(str(run))
    assert (d.kind, d.weights, d.base, d.template) == (
        "qlora", "google/flan-t5-base", "google/flan-t5-base", "Q: {question}"
    )  # fmt: skip
    assert d.adapter_dir == d.tokenizer_from == str(run / "adapter") and d.quantized
    assert d.quant == {"bits": 4}
    (run / "adapter").rmdir()
    with pytest.raises(MedchatError, match=r"no adapter/ folder; did this run finish"):
        describe(str(run))
    (run / "run_info.json").write_text(json.dumps({"method": "sft"}))
    with pytest.raises(MedchatError, match=r"run_info.json: needs 'method'"):
        describe(str(run))
    with pytest.raises(MedchatError, match="no such folder"):
        describe(str(tmp_path / "missing" / "run"))


def test_a_model_folder_or_hub_id_is_pretrained_with_its_own_prompt(tmp_path: Path) -> None:
    (tmp_path / "prompt.txt").write_text("Answer: {question}")
    d = describe(str(tmp_path))
    assert (d.kind, d.weights, d.template) == ("pretrained", str(tmp_path), "Answer: {question}")
    hub = describe("google/flan-t5-base")
    assert hub.kind == "pretrained" and hub.tokenizer_from == "google/flan-t5-base"
