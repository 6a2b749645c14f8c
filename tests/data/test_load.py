"""Loaders: every format reads into the same record shape, with the right counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medchat.data.clean import clean_records, deduplicate
from medchat.data.load import detect_format, load_source, parse_tags
from tests.conftest import KAGGLE_TRAIN, MEDQUAD_TGZ, requires
from tests.data.conftest import make_tgz

FIELDS = ["id", "question", "answer", "source", "url", "focus", "qtype", "doc_id", "tags"]


def test_parse_tags_handles_multiline_numpy_repr_and_empty() -> None:
    assert parse_tags("['a b' 'c'\n 'd-e']") == ["a b", "c", "d-e"]
    assert parse_tags("['']") == []
    assert parse_tags('["it\'s"]') == ["it's"]
    assert parse_tags("") == []


def test_kaggle_tiny_keeps_positives_and_counts_negatives(kaggle_tiny: Path) -> None:
    loaded = load_source(str(kaggle_tiny))
    assert loaded.format == "kaggle"
    assert loaded.counts == {"rows_in_source": 5, "skipped_at_load": {"negative_label": 1}}
    assert len(loaded.records) == 4
    first = loaded.records[0]
    assert list(first) == FIELDS
    assert first["tags"] == ["headache", "exercise", "dehydration"]
    assert loaded.records[2]["tags"] == []
    assert first["id"].startswith("kaggle-")
    assert len({r["id"] for r in loaded.records}) == 4


def test_kaggle_real_file(shared_data: Path) -> None:
    loaded = load_source(str(KAGGLE_TRAIN))
    assert loaded.format == "kaggle"
    assert len(loaded.records) == 137
    assert loaded.counts["skipped_at_load"] == {"negative_label": 136}
    assert loaded.counts["rows_in_source"] == 273
    # Every tag list parsed from the numpy-style strings, some of which span lines.
    assert all(isinstance(r["tags"], list) for r in loaded.records)
    assert any(len(r["tags"]) > 1 for r in loaded.records)


def test_medquad_tiny_folder(tiny_medquad: Path) -> None:
    loaded = load_source(str(tiny_medquad))
    assert loaded.format == "medquad"
    assert loaded.counts["rows_in_source"] == 10
    assert loaded.counts["skipped_at_load"] == {"empty_answer": {"2_GARD_QA": 1}}
    assert loaded.counts["documents_by_layout"] == {"Document": 4, "doc": 1}
    assert len(loaded.records) == 9
    gard = loaded.records[0]
    assert gard["id"] == "2_GARD_QA/0000001/1"
    assert gard["doc_id"] == "2_GARD_QA/0000001"
    assert gard["focus"] == "Aicardi Syndrome"
    assert gard["qtype"] == "information"
    assert gard["url"] == "https://example.org/0000001"
    assert gard["answer"] == "A rare disorder & more."  # the XML entity, decoded by the parser
    legacy = loaded.records[-1]
    assert (legacy["id"], legacy["source"], legacy["focus"]) == (
        "6_NINDS_QA/0000007/1",
        "NINDS",
        "Holmes-Adie",
    )


def test_medquad_tar_gz_streams_same_records_as_folder(tiny_medquad: Path, tmp_path: Path) -> None:
    archive = make_tgz(tiny_medquad, tmp_path / "MedQuAD.tar.gz")
    from_tar = load_source(str(archive))
    from_folder = load_source(str(tiny_medquad))
    assert from_tar.records == from_folder.records
    assert from_tar.counts == from_folder.counts
    assert not (tmp_path / "MedQuAD.tar").exists()


def test_medquad_real_archive_counts(shared_data: Path) -> None:
    loaded = load_source(str(MEDQUAD_TGZ))
    counts = loaded.counts
    assert counts["documents"] == 11274
    # 16,407 answered pairs in the <Document>/<DiseaseFile> layout (as the data README counts)
    # plus 16 in the four old-layout NINDS files.
    assert counts["answered_by_layout"] == {"Document": 16402, "DiseaseFile": 5, "doc": 16}
    assert len(loaded.records) == 16423
    empty = counts["skipped_at_load"]["empty_answer"]
    assert empty["10_MPlus_ADAM_QA"] == 17348 and empty["2_GARD_QA"] == 5
    assert len({r["id"] for r in loaded.records}) == len(loaded.records)
    assert all(r["url"] and r["doc_id"] for r in loaded.records)
    # The data README's figures: without the old-layout files and without merging split
    # answers, exact deduplication leaves 16,359 of 16,407.
    legacy = {f"6_NINDS_QA/{n}" for n in ("0000007", "0000018", "0000182", "0000244")}
    readme_rows = [r for r in loaded.records if r["doc_id"] not in legacy]
    cleaned, dropped = clean_records(readme_rows, 5, 2)
    assert len(cleaned) == 16407 and not any(dropped.values())
    assert len(deduplicate(cleaned)[0]) == 16359


def test_generic_csv_finds_columns_by_name_and_keeps_metadata(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text(
        "Question,Answer,url,extra\nwhat is gout,a kind of arthritis,https://x.org/gout,1\n",
        encoding="utf-8",
    )
    loaded = load_source(str(path))
    assert loaded.format == "csv"
    (row,) = loaded.records
    assert (row["question"], row["answer"], row["url"]) == (
        "what is gout",
        "a kind of arthritis",
        "https://x.org/gout",
    )
    assert row["source"] == "csv" and row["id"].startswith("csv-")


def test_generic_csv_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text("prompt,response\nwhat is gout,a kind of arthritis\n", encoding="utf-8")
    loaded = load_source(str(path), "csv", question_col="prompt", answer_col="response")
    assert [(r["question"], r["answer"]) for r in loaded.records] == [
        ("what is gout", "a kind of arthritis")
    ]


def test_jsonl_with_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    rows = [
        {"q": "what is gout", "a": "arthritis", "focus": "Gout"},
        {"q": "how is gout treated", "a": "with drugs", "qtype": "treatment"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    loaded = load_source(str(path), question_col="q", answer_col="a")
    assert loaded.format == "jsonl"
    assert [r["question"] for r in loaded.records] == ["what is gout", "how is gout treated"]
    assert loaded.records[0]["focus"] == "Gout"
    assert loaded.records[1]["qtype"] == "treatment"
    assert loaded.counts["columns"] == {"question": "q", "answer": "a"}


@requires("datasets")
def test_hf_source_through_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake_load_dataset(name: str) -> datasets.DatasetDict:
        calls.append(name)
        return datasets.DatasetDict(
            {
                "train": datasets.Dataset.from_list([{"input": "what is gout", "output": "x y"}]),
                "test": datasets.Dataset.from_list([{"input": "what is flu", "output": "a virus"}]),
            }
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = load_source("hf:org/medqa", question_col="input", answer_col="output")
    assert calls == ["org/medqa"]
    assert loaded.format == "hf"
    # Every split is read (sorted by name), since prepare makes its own split.
    assert [r["question"] for r in loaded.records] == ["what is flu", "what is gout"]
    assert {r["source"] for r in loaded.records} == {"hf:org/medqa"}
    assert loaded.source_sha256 and len(loaded.source_sha256) == 64


@requires("datasets")
def test_hf_kaggle_shaped_dataset_keeps_label_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    rows = [
        {
            "short_question": "what is gout",
            "short_answer": "arthritis",
            "tags": "['x']",
            "label": 1.0,
        },
        {"short_question": "what is gout", "short_answer": "a car", "tags": "['']", "label": -1.0},
    ]
    monkeypatch.setattr(
        datasets,
        "load_dataset",
        lambda name: datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}),
    )
    loaded = load_source("hf:someone/medical-chatbot")
    assert [r["answer"] for r in loaded.records] == ["arthritis"]
    assert loaded.records[0]["tags"] == ["x"]
    assert loaded.counts["skipped_at_load"] == {"negative_label": 1}


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.jsonl", "{}", "jsonl"),
        ("a.csv", "short_question,short_answer,tags,label\nq,a,[],1\n", "kaggle"),
        ("a.csv", "question,answer\nq,a\n", "csv"),
        ("a.tar.gz", "", "medquad"),
        ("one.xml", "", "medquad"),
    ],
)
def test_detect_format(tmp_path: Path, name: str, content: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert detect_format(path) == expected
