"""Read Q&A sources into plain records: Kaggle CSV, MedQuAD XML, generic CSV/JSONL, hf:org/name.

Loaders only parse; cleaning, deduplication and splitting happen later on the records. Every
problem in a user's file raises MedchatError naming the file, the line or field, and what to do.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import re
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple
from xml.etree import ElementTree as ET

from medchat.errors import MedchatError
from medchat.fileio import sha256_file

log = logging.getLogger(__name__)

FORMATS = ("auto", "kaggle", "medquad", "csv", "jsonl")
KAGGLE_COLUMNS = ("short_question", "short_answer", "label")
# Optional per-row metadata carried over from generic CSV/JSONL/hf rows when the columns exist.
EXTRA_COLUMNS = ("url", "focus", "qtype")
_TAG = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"")


@dataclass
class Loaded:
    """What a loader read: records plus what it skipped and a fingerprint of the source."""

    format: str
    records: list[dict[str, Any]]
    source_sha256: str | None
    counts: dict[str, Any] = field(default_factory=dict)


def load_source(
    source: str,
    fmt: str = "auto",
    question_col: str | None = None,
    answer_col: str | None = None,
) -> Loaded:
    """Read `source` in format `fmt` (auto-detected when "auto") into records."""
    if source.startswith("hf:"):
        return load_hf(source[3:], question_col, answer_col)
    path = Path(source)
    if not path.exists():
        raise MedchatError(f"{path}: no such file or folder; check the path")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "medquad":
        return load_medquad(path)
    if path.is_dir():
        raise MedchatError(f"{path}: is a folder; --format {fmt} needs a file")
    if fmt == "kaggle":
        return load_kaggle(path)
    if fmt == "csv":
        return load_table(path, "csv", read_csv_rows(path)[1], question_col, answer_col)
    if fmt == "jsonl":
        return load_table(path, "jsonl", read_jsonl_rows(path), question_col, answer_col)
    raise MedchatError(f"{path}: unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def detect_format(path: Path) -> str:
    """Guess the format from the path and, for CSV, from its header."""
    name = path.name.lower()
    if path.is_dir() or name.endswith((".tar.gz", ".tgz", ".tar", ".xml")):
        return "medquad"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".csv"):
        header = read_csv_rows(path)[0]
        return "kaggle" if {"short_question", "short_answer"} <= set(header) else "csv"
    raise MedchatError(
        f"{path}: cannot tell the format from the file name; pass --format kaggle|medquad|csv|jsonl"
    )


def record_id(prefix: str, question: str, answer: str) -> str:
    """A stable id for rows without one of their own: a hash of the pair's text."""
    digest = hashlib.sha256(f"{question}\x1f{answer}".encode()).hexdigest()
    return f"{prefix}-{digest[:16]}"


def make_record(rid: str, question: str, answer: str, source: str, **meta: Any) -> dict[str, Any]:
    """A record with the fixed set of fields every output row carries (None where unknown)."""
    return {
        "id": rid,
        "question": question,
        "answer": answer,
        "source": source,
        "url": meta.get("url"),
        "focus": meta.get("focus"),
        "qtype": meta.get("qtype"),
        "doc_id": meta.get("doc_id"),
        "tags": meta.get("tags"),
    }


# ----------------------------------------------------------------------------- text files


def read_text(path: Path) -> str:
    """Read a whole file as strict UTF-8; bad bytes raise an error with line and byte offset."""
    data = path.read_bytes()
    if not data.strip():
        raise MedchatError(f"{path}: file is empty; point at a file with a header and rows")
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = skip + e.start
        line = data.count(b"\n", 0, offset) + 1
        raise MedchatError(
            f"{path}: line {line} (byte offset {offset}) is not valid UTF-8 "
            f"(byte {data[offset : offset + 1]!r}); re-save the file as UTF-8"
        ) from None


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[str, dict[str, str]]]]:
    """Read a CSV with a header into (header, [(line, row)]); bad quoting names its line."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""), strict=True)
    header = _next_csv_record(reader, path)
    if not header:
        raise MedchatError(f"{path}: has no header row; the first line must name the columns")
    header = [h.strip() for h in header]
    rows = []
    while True:
        line = reader.line_num + 1
        values = _next_csv_record(reader, path)
        if values is None:
            break
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise MedchatError(
                f"{path}: line {line} has {len(values)} fields but the header has "
                f"{len(header)}; check quoting and commas on that line"
            )
        rows.append((f"line {line}", dict(zip(header, values, strict=True))))
    if not rows:
        raise MedchatError(f"{path}: has a header but no data rows")
    return header, rows


def _next_csv_record(reader: Any, path: Path) -> list[str] | None:
    start = reader.line_num + 1
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as e:
        # A record that fails here nearly always opened a quote it never closed.
        raise MedchatError(
            f"{path}: record starting at line {start} has an unclosed or stray quote "
            f'(csv: {e}); close the quote or escape it as ""'
        ) from None


def read_jsonl_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Read JSONL into [(line, object)]; a bad line names its number."""
    rows = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise MedchatError(f"{path}: line {lineno} is not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise MedchatError(f"{path}: line {lineno} is not a JSON object; write one per line")
        rows.append((f"line {lineno}", obj))
    return rows


# ----------------------------------------------------------------------------- Kaggle


def load_kaggle(path: Path) -> Loaded:
    """Kaggle medical-chatbot CSV: keep label 1 (true pairs), count label -1 (random negatives)."""
    header, rows = read_csv_rows(path)
    _require_columns(path, header, KAGGLE_COLUMNS, "--format csv with --question-col/--answer-col")
    records, counts = kaggle_records(str(path), rows, "kaggle")
    return Loaded("kaggle", records, sha256_file(path), counts)


def kaggle_records(
    source: str, rows: list[tuple[str, dict[str, Any]]], origin: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Keep the label-1 rows as records; count the label -1 ones."""
    records, negatives = [], 0
    for where, row in rows:
        if _kaggle_label(source, where, row["label"]) < 0:
            negatives += 1
            continue
        q, a = (
            _cell(source, where, row, "short_question"),
            _cell(source, where, row, "short_answer"),
        )
        tags = parse_tags(_cell(source, where, row, "tags"))
        records.append(make_record(record_id("kaggle", q, a), q, a, origin, tags=tags))
    counts = {"rows_in_source": len(rows), "skipped_at_load": {"negative_label": negatives}}
    return records, counts


def _kaggle_label(source: str, where: str, value: Any) -> int:
    try:
        label = float(value if value not in (None, "") else "nan")
    except (TypeError, ValueError):
        label = float("nan")
    if label not in (1.0, -1.0):
        raise MedchatError(
            f"{source}: {where}: label {value!r} is not 1 or -1 (1 = true pair, -1 = random "
            "negative); fix the row, or use --format csv to read it without labels"
        )
    return int(label)


def parse_tags(text: str) -> list[str]:
    """Parse a numpy-style list repr such as "['a' 'b'\\n 'c']"; "['']" gives []."""
    return [t for m in _TAG.finditer(text or "") if (t := (m.group(1) or m.group(2) or "").strip())]


def _require_columns(path: Path, header: list[str], needed: tuple[str, ...], hint: str) -> None:
    missing = [c for c in needed if c not in header]
    if missing:
        raise MedchatError(
            f"{path}: missing column(s) {', '.join(missing)} (columns present: "
            f"{', '.join(header) or 'none'}); fix the header or use {hint}"
        )


# ----------------------------------------------------------------------------- generic tables


def load_table(
    path: Path,
    fmt: str,
    rows: list[tuple[str, dict[str, Any]]],
    question_col: str | None,
    answer_col: str | None,
) -> Loaded:
    """Generic CSV/JSONL rows with a question and an answer column (named, or found by name)."""
    records, counts = table_records(str(path), fmt, fmt, rows, question_col, answer_col)
    return Loaded(fmt, records, sha256_file(path), counts)


def table_records(
    source: str,
    prefix: str,
    origin: str,
    rows: list[tuple[str, dict[str, Any]]],
    question_col: str | None,
    answer_col: str | None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Map (where, row) pairs to records through the question/answer columns.

    `source` names the input in errors, `prefix` starts each id, and `origin` fills the
    `source` field of rows that have no `source` column of their own.
    """
    columns = list(dict.fromkeys(k for _, row in rows for k in row))
    qcol = _pick_column(source, columns, question_col, "question")
    acol = _pick_column(source, columns, answer_col, "answer")
    records = []
    for where, row in rows:
        q, a = _cell(source, where, row, qcol), _cell(source, where, row, acol)
        meta = {k: _cell(source, where, row, k) or None for k in EXTRA_COLUMNS if k in row}
        row_source = _cell(source, where, row, "source") or origin
        records.append(make_record(record_id(prefix, q, a), q, a, row_source, **meta))
    counts = {"rows_in_source": len(rows), "columns": {"question": qcol, "answer": acol}}
    return records, counts


def _pick_column(path: Path | str, columns: list[str], given: str | None, role: str) -> str:
    """The column the user named, or else the one called `role` (any case)."""
    if given is not None:
        if given in columns:
            return given
        found = None
    else:
        found = next((c for c in columns if c.strip().lower() == role), None)
    if found is None:
        wanted = repr(given) if given is not None else f"named {role!r}"
        raise MedchatError(
            f"{path}: no {role} column {wanted} (columns present: {', '.join(columns) or 'none'}); "
            f"pass --{role}-col NAME"
        )
    return found


def _cell(path: Path | str, where: str, row: dict[str, Any], col: str) -> str:
    value = row.get(col)
    if value is None:
        return ""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise MedchatError(f"{path}: {where}: field {col!r} is a {type(value).__name__}, expected text")


# ----------------------------------------------------------------------------- MedQuAD


def load_medquad(path: Path) -> Loaded:
    """MedQuAD: a folder of its XML files, one XML file, or its .tar.gz read as a stream."""
    records: list[dict[str, Any]] = []
    empty: Counter[str] = Counter()
    layouts: Counter[str] = Counter()
    answered: Counter[str] = Counter()
    pairs = 0
    for name, subset, data in iter_xml(path):
        doc = parse_medquad_document(name, subset, data)
        pairs += doc.pairs
        empty[subset] += doc.pairs - len(doc.records)
        layouts[doc.layout] += 1
        answered[doc.layout] += len(doc.records)
        records.extend(doc.records)
    if not layouts:
        raise MedchatError(f"{path}: contains no .xml files; point at MedQuAD's folder or archive")
    counts = {
        "documents": sum(layouts.values()),
        "documents_by_layout": dict(layouts),
        "answered_by_layout": dict(answered),
        "rows_in_source": pairs,
        "skipped_at_load": {"empty_answer": dict(sorted((k, v) for k, v in empty.items() if v))},
    }
    return Loaded("medquad", records, _medquad_sha256(path), counts)


def iter_xml(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """Yield (display name, subset folder, bytes) for each XML file, in a stable order."""
    if path.is_dir():
        for file in sorted(path.rglob("*.xml")):
            yield str(file), file.parent.name, file.read_bytes()
    elif path.name.lower().endswith(".xml"):
        yield str(path), path.parent.name, path.read_bytes()
    else:
        yield from _iter_tar_xml(path)


def _iter_tar_xml(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """Stream XML members out of a tar archive without extracting anything to disk."""
    if path.stat().st_size == 0:
        raise MedchatError(f"{path}: file is empty; re-download the archive")
    try:
        with tarfile.open(path, mode="r:*") as tf:
            for member in tf:
                if member.isfile() and member.name.lower().endswith(".xml"):
                    extracted = tf.extractfile(member)
                    data = extracted.read() if extracted else b""
                    subset = PurePosixPath(member.name).parent.name
                    yield f"{path}:{member.name}", subset, data
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise MedchatError(
            f"{path}: not a readable tar archive or truncated ({_first_line(e)}); re-download it"
        ) from None


class _Schema(NamedTuple):
    """Tag and attribute names of one MedQuAD document layout."""

    id: str
    source: str
    focus: str
    pairs: str
    pair: str
    question: str
    answer: str


# Nearly every file uses <Document>; one CDC file says <DiseaseFile fid=...> and four NINDS files
# (0000007, 0000018, 0000182, 0000244) keep an older lower-case layout. All are MedQuAD.
MEDQUAD_SCHEMAS = {
    "Document": _Schema("id", "source", "Focus", "QAPairs", "QAPair", "Question", "Answer"),
    "DiseaseFile": _Schema("fid", "source", "Focus", "QAPairs", "QAPair", "Question", "Answer"),
    "doc": _Schema("docid", "corpus", "doctitle-focus", "qaPairs", "pair", "question", "answer"),
}


class ParsedDocument(NamedTuple):
    records: list[dict[str, Any]]  # the answered pairs
    pairs: int  # all pairs, answered or not
    layout: str  # root tag: Document, DiseaseFile or doc


def parse_medquad_document(name: str, subset: str, data: bytes) -> ParsedDocument:
    """Parse one MedQuAD XML document into records of its answered pairs."""
    root = _parse_xml(name, data)
    schema = MEDQUAD_SCHEMAS[root.tag]
    stem = PurePosixPath(name).stem
    # A document id can span several files (CancerGov 0000013_2.xml, 0000013_2_1.xml, ... are
    # one page), so rows are named by file, while doc_id names the page for the split.
    doc = root.get(schema.id) or stem
    focus = _text(root.find(schema.focus))
    pairs = list(root.iter(schema.pair))
    records = []
    for position, pair in enumerate(pairs, 1):
        question_el = pair.find(schema.question)
        q, a = _text(question_el), _text(pair.find(schema.answer))
        if not a.strip():
            continue
        records.append(
            make_record(
                # The position, not pid: pids repeat inside a few CancerGov files.
                f"{subset}/{stem}/{position}",
                q,
                a,
                root.get(schema.source) or subset,
                url=root.get("url"),
                focus=focus or None,
                qtype=question_el.get("qtype") if question_el is not None else None,
                doc_id=f"{subset}/{doc}",
            )
        )
    return ParsedDocument(records, len(pairs), root.tag)


def _parse_xml(name: str, data: bytes) -> ET.Element:
    if not data.strip():
        raise MedchatError(f"{name}: file is empty; re-download MedQuAD or remove this file")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise MedchatError(
            f"{name}: XML is truncated or malformed ({_first_line(e)}); re-download MedQuAD or "
            "remove this file"
        ) from None
    schema = MEDQUAD_SCHEMAS.get(root.tag)
    if schema is None or root.find(schema.pairs) is None:
        raise MedchatError(
            f"{name}: not a MedQuAD document (root <{root.tag}>, expected <Document> with "
            "<QAPairs>); point at MedQuAD's files or pass the right --format"
        )
    return root


def _first_line(error: BaseException) -> str:
    """An exception's message cut to one line: CLI errors are one line."""
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(":") if lines else type(error).__name__


def _text(element: ET.Element | None) -> str:
    return "".join(element.itertext()) if element is not None else ""


def _medquad_sha256(path: Path) -> str:
    """sha256 of the file, or for a folder of the sorted (relative path, file sha256) list."""
    if not path.is_dir():
        return sha256_file(path)
    listing = "".join(
        f"{f.relative_to(path).as_posix()} {sha256_file(f)}\n" for f in sorted(path.rglob("*.xml"))
    )
    return hashlib.sha256(listing.encode()).hexdigest()


# ----------------------------------------------------------------------------- Hugging Face


def load_hf(name: str, question_col: str | None, answer_col: str | None) -> Loaded:
    """`hf:org/name` through the `datasets` library (needs the network or a local cache)."""
    try:
        import datasets
    except ImportError:
        raise MedchatError(
            f"hf:{name}: needs the `datasets` library; pip install 'medchat[train]'"
        ) from None
    try:
        loaded = datasets.load_dataset(name)
    except Exception as e:  # the hub raises many types; all mean "could not get it"
        raise MedchatError(
            f"hf:{name}: could not load the dataset ({_first_line(e)}); check the name, or "
            "whether you are online"
        ) from None
    # Every split is read: prepare makes its own leakage-free split.
    rows = [
        (f"{split} row {i}", dict(row))
        for split in sorted(loaded)
        for i, row in enumerate(loaded[split], 1)
    ]
    if not rows:
        raise MedchatError(f"hf:{name}: the dataset has no rows")
    if set(KAGGLE_COLUMNS) <= set(rows[0][1]):
        # The full Kaggle medical-chatbot set mirrored on the hub: same rule, label 1 only.
        records, counts = kaggle_records(f"hf:{name}", rows, f"hf:{name}")
    else:
        source = f"hf:{name}"
        records, counts = table_records(source, "hf", source, rows, question_col, answer_col)
    return Loaded("hf", records, _records_sha256(records), counts)


def _records_sha256(records: list[dict[str, Any]]) -> str:
    """A fingerprint of rows with no file behind them: sha256 of their canonical JSON."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()
