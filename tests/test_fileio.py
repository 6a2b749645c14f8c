"""Crash-safe file helpers: torn logs, folder swaps and what a kill leaves behind."""

from __future__ import annotations

import os
from pathlib import Path

from medchat.fileio import read_log_jsonl, recover_dir, replace_dir, trim_torn_tail


def test_a_torn_last_line_is_cut_so_the_next_append_starts_clean(tmp_path) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n{"step": 2, "lo')
    assert trim_torn_tail(log)
    with open(log, "a") as f:
        f.write('{"step": 2}\n')
    assert read_log_jsonl(log) == ([{"step": 1}, {"step": 2}], [])
    assert not trim_torn_tail(log)  # whole lines: nothing to cut
    assert not trim_torn_tail(tmp_path / "missing.jsonl")


def test_read_log_jsonl_notes_bad_lines_instead_of_failing(tmp_path) -> None:
    log = tmp_path / "m.jsonl"
    log.write_text('{"a": 1}\nnot json\n[1, 2]\n\n{"b": 2}\n')
    rows, notes = read_log_jsonl(log)
    assert rows == [{"a": 1}, {"b": 2}]
    assert [n.split(": ", 1)[1] for n in notes] == [
        "line 2 is not a complete JSON row (skipped)",
        "line 3 is not a complete JSON row (skipped)",
    ]


def test_replace_dir_swaps_a_folder_and_leaves_no_copy(tmp_path) -> None:
    out, tmp = tmp_path / "model", tmp_path / ".model.tmp"
    out.mkdir()
    (out / "w").write_text("old")
    tmp.mkdir()
    (tmp / "w").write_text("new")
    replace_dir(tmp, out)
    assert (out / "w").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_recover_dir_restores_a_model_a_kill_left_aside_and_drops_stale_temps(tmp_path) -> None:
    # as if killed between replace_dir's two renames: only the old copy and the new temp exist
    old = tmp_path / f".model.old-{os.getpid()}"
    old.mkdir()
    (old / "w").write_text("old")
    (tmp_path / ".model.tmp").mkdir()
    notes = recover_dir(tmp_path / "model")
    assert (tmp_path / "model" / "w").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert len(notes) == 2 and "restored" in notes[0] and "removed" in notes[1]
    assert recover_dir(tmp_path / "model") == []  # nothing left to do


def test_a_full_disk_ends_in_one_line_naming_the_file_and_leaves_nothing(
    tmp_path, monkeypatch, capsys
) -> None:
    import medchat.fileio as fileio
    from medchat.cli import main

    real_fdopen = os.fdopen

    def full_disk(fd, *args, **kwargs):  # every atomic write lands on /dev/full: ENOSPC
        os.close(fd)
        return real_fdopen(os.open("/dev/full", os.O_WRONLY), *args, **kwargs)

    monkeypatch.setattr(fileio.os, "fdopen", full_disk)
    sample = Path(fileio.__file__).parent / "resources" / "sample_qa.jsonl"
    out = tmp_path / "data"
    assert main(["data", "prepare", str(sample), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "No space left on device" in err and str(tmp_path) in err and "free some space" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no half-written data folder
