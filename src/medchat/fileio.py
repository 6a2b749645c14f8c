"""Small file helpers: hashing, JSON/JSONL, and writes that never leave half a file behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from medchat.errors import MedchatError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` via a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        # mkstemp makes 0600 files; give the file the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a failed write() names no file
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


def dumps_json(obj: Any) -> str:
    """Stable, human-readable JSON (sorted keys so equal inputs give equal bytes)."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, dumps_json(obj))


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line, atomically; keys keep their insertion order."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    atomic_write_text(path, text)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file; a bad line raises MedchatError naming the file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise MedchatError(f"{path}: line {lineno} is not valid JSON ({e.msg})") from None
    return rows


def read_log_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Read a JSONL log that a killed process may have torn: rows that parse, and one note per
    line that did not (file and line), instead of an error that would lose the whole log."""
    rows, notes = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict):
                rows.append(row)
            else:
                notes.append(f"{path}: line {lineno} is not a complete JSON row (skipped)")
    return rows, notes


def trim_torn_tail(path: str | Path) -> bool:
    """Cut a last line with no newline (a write cut short by kill -9), so the next append starts
    on a line of its own instead of gluing onto half a row. True when something was cut."""
    path = Path(path)
    if not path.is_file():
        return False
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    keep = data[: data.rfind(b"\n") + 1]
    with open(path, "r+b") as f:
        f.truncate(len(keep))
    return True


def replace_dir(tmp: str | Path, out: str | Path) -> None:
    """Move the finished folder `tmp` to `out`, replacing any old one without a moment where a
    crash leaves neither: the old one is renamed aside first and deleted last (a kill between the
    two renames leaves `.NAME.old-PID`, which `recover_dir` puts back)."""
    tmp, out = Path(tmp), Path(out)
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def recover_dir(out: str | Path) -> list[str]:
    """Clean up after a crash inside `out`'s parent: restore `out` from an `.old-*` copy if only
    that is left, and remove stale `.NAME.tmp*` / `.NAME.old-*` folders. Returns one note each."""
    out = Path(out)
    notes = []
    olds = sorted(out.parent.glob(f".{out.name}.old-*"))
    if not out.exists() and olds:
        os.replace(olds[-1], out)
        notes.append(f"{out}: restored from {olds[-1].name} (a run was killed while replacing it)")
        olds = olds[:-1]
    for stale in olds + sorted(out.parent.glob(f".{out.name}.tmp*")):
        shutil.rmtree(stale, ignore_errors=True)
        notes.append(f"{stale}: removed (left by a run that was killed)")
    return notes


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `out`; on success it replaces `out`, on failure it vanishes.

    So a failed run never leaves a half-written output folder, and an existing one is only
    replaced when the user said `--overwrite`.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise MedchatError(f"{out}: already exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, out)
