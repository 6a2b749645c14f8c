"""Bad input: one clear line naming the file and row, exit status 2, and no output folder."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from medchat.cli import main
from tests.data.conftest import TINY_MEDQUAD, medquad_xml


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def tar_with(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


BAD_UTF8 = b"question,answer\nwhat is gout,fine\nwhat is flu,caf\xe9 au lait\n"
BAD_OFFSET = BAD_UTF8.index(b"\xe9")
GOOD_XML = medquad_xml(*TINY_MEDQUAD["3_GHR_QA/0000002.xml"]).encode()

# name -> (make the source under tmp, extra CLI args, fragments the message must contain)
CASES: dict[str, tuple[Callable[[Path], Path], list[str], list[str]]] = {
    "missing file": (lambda d: d / "nope.csv", [], ["nope.csv", "no such file"]),
    "empty file": (lambda d: write(d / "empty.csv", ""), [], ["empty.csv", "file is empty"]),
    "kaggle column missing": (
        lambda d: write(d / "k.csv", "short_question,short_answer,tags\nwhat is x,y,['']\n"),
        [],
        ["k.csv", "missing column(s) label", "columns present: short_question, short_answer, tags"],
    ),
    "question column missing": (
        lambda d: write(d / "g.csv", "prompt,response\nwhat is gout,arthritis\n"),
        [],
        ["g.csv", "no question column named 'question'", "columns present: prompt, response"],
    ),
    "named column missing": (
        lambda d: write(d / "g.jsonl", '{"q": "what is gout", "a": "arthritis"}\n'),
        ["--question-col", "q", "--answer-col", "answer_text"],
        ["g.jsonl", "no answer column 'answer_text'", "columns present: q, a", "--answer-col"],
    ),
    "non-utf8 bytes": (
        lambda d: write(d / "latin1.csv", BAD_UTF8),
        [],
        ["latin1.csv", f"line 3 (byte offset {BAD_OFFSET})", "UTF-8"],
    ),
    "unclosed quote": (
        lambda d: write(
            d / "q.csv", 'question,answer\nwhat is gout,ok\n"what is flu,no end\nx,y\n'
        ),
        [],
        ["q.csv", "record starting at line 3", "unclosed"],
    ),
    "ragged row": (
        lambda d: write(d / "r.csv", "question,answer\nwhat is gout,ok\nwhat is flu,ok,extra\n"),
        [],
        ["r.csv", "line 3 has 3 fields", "header has 2"],
    ),
    "label not plus or minus one": (
        lambda d: write(
            d / "lab.csv",
            "short_question,short_answer,tags,label\n"
            "what is gout,arthritis,\"['a'\n 'b']\",1.0\n"
            "what is flu,a virus,['x'],2.0\n",
        ),
        [],
        ["lab.csv", "line 4: label '2.0' is not 1 or -1"],
    ),
    "bad jsonl line": (
        lambda d: write(d / "b.jsonl", '{"question": "what is gout", "answer": "x"}\n{oops\n'),
        [],
        ["b.jsonl", "line 2 is not valid JSON"],
    ),
    "xml that is not medquad": (
        lambda d: write(d / "site" / "page.xml", "<html><body>hi</body></html>").parent,
        [],
        ["page.xml", "not a MedQuAD document (root <html>"],
    ),
    "truncated xml": (
        lambda d: (
            write(
                d / "mq" / "3_GHR_QA" / "0000002.xml", GOOD_XML[: len(GOOD_XML) // 2]
            ).parent.parent
        ),
        [],
        ["0000002.xml", "XML is truncated or malformed"],
    ),
    "truncated xml inside the archive": (
        lambda d: tar_with(d / "mq.tar.gz", {"MedQuAD/3_GHR_QA/0000002.xml": GOOD_XML[:200]}),
        [],
        ["mq.tar.gz:MedQuAD/3_GHR_QA/0000002.xml", "truncated or malformed"],
    ),
    "archive with no xml": (
        lambda d: tar_with(d / "none.tar.gz", {"MedQuAD/readme.txt": b"hello"}),
        [],
        ["none.tar.gz", "contains no .xml files"],
    ),
    "truncated archive": (
        lambda d: write(
            d / "cut.tar.gz",
            gzip.compress(b"x" * 5000)[:40],
        ),
        [],
        ["cut.tar.gz", "not a readable tar archive or truncated"],
    ),
    "folder with no xml": (
        lambda d: write(d / "emptydir" / "notes.txt", "x").parent,
        [],
        ["emptydir", "contains no .xml files"],
    ),
    "bad fractions": (
        lambda d: write(d / "ok.csv", "question,answer\nwhat is gout,arthritis\n"),
        ["--val-frac", "0.6", "--test-frac", "0.5"],
        ["--val-frac + --test-frac", "sum < 1"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_clear_line_and_no_output(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, extra, fragments = CASES[case]
    source = make(tmp_path)
    out = tmp_path / "out" / "data"
    assert main(["data", "prepare", str(source), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_existing_out_without_overwrite_is_left_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path / "ok.csv", "question,answer\nwhat is gout,arthritis\n")
    out = tmp_path / "data"
    write(out / "mine.txt", "keep me")
    assert main(["data", "prepare", str(source), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "already exists" in err and "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_stats_on_a_folder_without_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "stats", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "run `medchat data prepare" in err
