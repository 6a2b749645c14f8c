"""The prepare stage end to end: files, manifest, determinism, reading back, the summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medchat.cli import main
from medchat.data import PrepareOptions, load_split, read_manifest
from medchat.data.prepare import prepare
from medchat.errors import MedchatError
from medchat.fileio import sha256_file
from tests.conftest import KAGGLE_TRAIN, MEDQUAD_TGZ

OUTPUTS = ["manifest.json", "test.jsonl", "train.jsonl", "validation.jsonl"]


def test_tiny_medquad_counts_and_rows(tiny_medquad: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    manifest = prepare(str(tiny_medquad), out)
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS
    counts = manifest["counts"]
    assert counts["rows_in_source"] == 10
    assert counts["skipped_at_load"] == {"empty_answer": {"2_GARD_QA": 1}}
    assert counts["read"] == 9
    assert counts["merged_split_answers"] == 1
    assert counts["duplicates_removed"] == 1
    assert counts["deduplicated"] == 7
    assert sum(counts["splits"].values()) == 7
    # Aicardi (GARD + GHR, one condition), Achondroplasia, Hypochondroplasia, Holmes-Adie.
    assert manifest["split"]["groups"] == 4
    rows = {r["id"]: r for s in ("train", "validation", "test") for r in load_split(out, s)}
    assert rows["3_GHR_QA/0000001/2"]["answer"] == "Part one. Part two."
    assert "3_GHR_QA/0000001/3" not in rows
    assert rows["3_GHR_QA/0000001/1"]["answer"] == "A disorder of brain growth."
    assert "3_GHR_QA/0000003/1" not in rows  # the exact duplicate of 0000002's second pair


def test_manifest_records_hashes_options_and_counts(kaggle_tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    prepare(str(kaggle_tiny), out, PrepareOptions(seed=7, val_frac=0.2, test_frac=0.2))
    manifest = read_manifest(out)
    assert manifest["format"] == "kaggle"
    assert manifest["seed"] == 7
    assert manifest["options"]["val_frac"] == 0.2
    assert manifest["source"] == {"path": str(kaggle_tiny), "sha256": sha256_file(kaggle_tiny)}
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(out / name)
        assert entry["rows"] == len(load_split(out, name.removesuffix(".jsonl")))
    counts = manifest["counts"]
    assert counts["skipped_at_load"] == {"negative_label": 1}
    assert counts["dropped"]["short_question"] == 1
    assert counts["duplicates_removed"] == 1
    assert counts["deduplicated"] == 2
    assert manifest["split"]["shared_keys"] == {"question": 0, "focus": 0, "document": 0}


def test_same_inputs_and_seed_give_byte_identical_outputs(
    shared_data: Path, tmp_path: Path
) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    prepare(str(KAGGLE_TRAIN), a)
    prepare(str(KAGGLE_TRAIN), b)
    prepare(str(KAGGLE_TRAIN), c, PrepareOptions(seed=43))
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "test.jsonl").read_bytes() != (c / "test.jsonl").read_bytes()


def test_real_kaggle_file_keeps_137_and_drops_136(shared_data: Path, tmp_path: Path) -> None:
    counts = prepare(str(KAGGLE_TRAIN), tmp_path / "data")["counts"]
    assert counts["read"] == 137
    assert counts["skipped_at_load"] == {"negative_label": 136}
    assert counts["deduplicated"] == 137
    assert counts["splits"] == {"train": 123, "validation": 7, "test": 7}


def test_real_medquad_manifest(real_medquad_prepared: Path) -> None:
    manifest = read_manifest(real_medquad_prepared)
    counts = manifest["counts"]
    assert counts["read"] == 16423
    assert counts["merged_split_answers"] == 481
    assert counts["duplicates_removed"] == 9
    assert counts["deduplicated"] == 15933
    assert manifest["source"]["sha256"] == sha256_file(MEDQUAD_TGZ)
    assert manifest["split"]["shared_keys"] == {"question": 0, "focus": 0, "document": 0}
    row = load_split(real_medquad_prepared, "test")[0]
    assert set(row) >= {"id", "question", "answer", "source", "url", "focus", "qtype", "doc_id"}
    assert row["url"].startswith("http")


def test_overwrite_replaces_a_prepared_folder_only(kaggle_tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    prepare(str(kaggle_tiny), out)
    prepare(str(kaggle_tiny), out, PrepareOptions(seed=1), overwrite=True)
    assert read_manifest(out)["seed"] == 1
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(MedchatError, match="not a folder written by"):
        prepare(str(kaggle_tiny), foreign, overwrite=True)
    assert (foreign / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_read_manifest_and_load_split_explain_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(MedchatError, match="run `medchat data prepare"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(MedchatError, match=r"manifest\.json.*not valid JSON.*medchat data prepare"):
        load_split(tmp_path, "train")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "csv"}), encoding="utf-8")
    with pytest.raises(MedchatError, match="lacks counts, files"):
        read_manifest(tmp_path)


def test_load_split_refuses_an_edited_file(kaggle_tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    prepare(str(kaggle_tiny), out, PrepareOptions(val_frac=0.4, test_frac=0.4))
    with (out / "train.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"id": "x", "question": "q", "answer": "a"}\n')
    with pytest.raises(MedchatError, match="changed since it was prepared"):
        load_split(out, "train")
    with pytest.raises(MedchatError, match="unknown split"):
        load_split(out, "dev")


def test_cli_prepare_then_stats_print_the_summary(
    kaggle_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "data"
    assert main(["data", "prepare", str(kaggle_tiny), "--out", str(out), "--seed", "3"]) == 0
    first = capsys.readouterr().err
    assert read_manifest(out)["seed"] == 3
    assert main(["data", "stats", str(out), "--max-target-length", "4"]) == 0
    again = capsys.readouterr().err
    for text in ("rows in source", "negative_label", "split: test", "p50", "p99"):
        assert text in first and text in again
    # No tokenizer can be had offline here: the summary says it fell back to words.
    assert "not available offline" in first
    # Both answers (5 and 8 words) are longer than 4 words.
    assert "answers longer than 4 whitespace words: 100.0%" in again


@pytest.mark.filterwarnings("ignore")
def test_stats_with_a_local_tokenizer_counts_tokens(
    kaggle_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    words = "what causes a headache after running dehydration and overexertion drink water"
    vocab = {w: i for i, w in enumerate(["[UNK]", *sorted(set(words.split()))])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    fast.save_pretrained(tmp_path / "tok")
    out = tmp_path / "data"
    prepare(str(kaggle_tiny), out)
    capsys.readouterr()
    argv = ["data", "stats", str(out), "--tokenizer", str(tmp_path / "tok")]
    assert main([*argv, "--max-target-length", "6"]) == 0
    err = capsys.readouterr().err
    assert f"tokenizer: {tmp_path / 'tok'}" in err
    assert "not available offline" not in err
    # Answers are 5 and 8 tokens (one per word, no end token in this tokenizer): one is over 6.
    assert "answers longer than 6 tokens: 50.0%" in err


def test_eval_only_puts_every_cleaned_row_in_test_and_eval_runs_on_it(
    tiny_runs, tmp_path: Path, capsys
) -> None:
    """A benchmark brought as it is: cleaned and deduplicated like any source, every row in
    test.jsonl, the manifest says so, and `medchat eval` needs no train rows."""
    import json

    from medchat.cli import main

    source = tmp_path / "bench.jsonl"
    rows = [
        {"question": f"What is condition number {i}?", "answer": f"Condition {i} is a thing."}
        for i in range(30)
    ]
    rows.append(dict(rows[0]))  # a duplicate: dropped as in any preparation
    rows.append({"question": "?", "answer": "too short a question"})  # cleaned away
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = tmp_path / "data"
    assert main(["data", "prepare", str(source), "--out", str(data), "--eval-only"]) == 0
    assert "eval-only: every row is in test.jsonl" in capsys.readouterr().err
    manifest = read_manifest(data)
    assert manifest["options"]["eval_only"] is True
    assert manifest["counts"]["splits"] == {"train": 0, "validation": 0, "test": 30}
    assert len(load_split(data, "test")) == 30 and load_split(data, "train") == []

    out = tmp_path / "eval"
    argv = ["eval", "--data", str(data), "--model", f"full={tiny_runs['full']}", "--out", str(out)]
    assert main([*argv, "--limit", "8", "--max-new-tokens", "4"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["n"] == 8


def test_eval_only_ignores_the_split_fractions() -> None:
    assert PrepareOptions(eval_only=True, val_frac=0.5, test_frac=0.5).eval_only
    with pytest.raises(MedchatError, match="must leave rows for training"):
        PrepareOptions(val_frac=0.5, test_frac=0.5)
