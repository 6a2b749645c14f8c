"""Fixtures for the data tests: tiny hand-written sources, and the real MedQuAD prepared once."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

# Tiny MedQuAD: 10 pairs, 1 empty answer, 1 answer split over 2 pairs, 1 exact duplicate, the
# same condition spelt two ways across GARD and GHR, and one file in the old NINDS layout.
TINY_MEDQUAD = {
    "2_GARD_QA/0000001.xml": (
        "0000001",
        "Aicardi Syndrome",
        [
            ("What is (are) Aicardi Syndrome ?", "information", "A rare disorder &amp; more."),
            ("What are the symptoms of Aicardi Syndrome ?", "symptoms", ""),
        ],
    ),
    "3_GHR_QA/0000001.xml": (
        "0000001",
        "Aicardi syndrome",
        [
            ("What is (are) Aicardi syndrome ?", "information", "A disorder  of brain\n growth."),
            ("What are the treatments for Aicardi syndrome ?", "treatment", "Part one."),
            ("What are the treatments for Aicardi syndrome ?", "treatment", "Part two."),
        ],
    ),
    "3_GHR_QA/0000002.xml": (
        "0000002",
        "Achondroplasia",
        [
            ("What is (are) Achondroplasia ?", "information", "Short-limbed dwarfism."),
            ("Is Achondroplasia inherited ?", "inheritance", "Autosomal dominant pattern."),
        ],
    ),
    "3_GHR_QA/0000003.xml": (
        "0000003",
        "Hypochondroplasia",
        [
            ("Is Achondroplasia inherited ?", "inheritance", "Autosomal dominant pattern."),
            ("What is (are) Hypochondroplasia ?", "information", "A milder form."),
        ],
    ),
}
LEGACY_NINDS = """<?xml version="1.0" encoding="UTF-8"?>
<doc docid="0000007" corpus="NINDS" url="https://example.org/holmes">
<doctitle-focus>Holmes-Adie</doctitle-focus>
<qaPairs><pair pid="1"><question qid="0000007-1" qtype="information">what is holmes-adie
syndrome ?</question><answer>A disorder of the pupil.</answer></pair></qaPairs>
</doc>
"""

KAGGLE_TINY = """short_question,short_answer,tags,label
what causes a headache after running,dehydration and overexertion drink water,"['headache' 'exercise'
 'dehydration']",1.0
what causes a headache after running,you should sell your car,"['']",-1.0
What causes a headache after running,Dehydration and  overexertion drink water,"['headache']",1
hi,hello,"['']",1.0
is ibuprofen safe with alcohol,it can irritate the stomach so avoid mixing,"['pain relief']",1.0
"""


def medquad_xml(doc_id: str, focus: str, pairs: list[tuple[str, str, str]]) -> str:
    """One MedQuAD <Document> with the given (question, qtype, answer) pairs."""
    qa = "".join(
        f'<QAPair pid="{i}"><Question qid="{doc_id}-{i}" qtype="{qtype}">{q}</Question>'
        f"<Answer>{a}</Answer></QAPair>\n"
        for i, (q, qtype, a) in enumerate(pairs, 1)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Document id="{doc_id}" source="T" url="https://example.org/{doc_id}">\n'
        f"<Focus>{focus}</Focus>\n<QAPairs>\n{qa}</QAPairs>\n</Document>\n"
    )


@pytest.fixture
def tiny_medquad(tmp_path: Path) -> Path:
    """A folder of hand-written MedQuAD XML files."""
    root = tmp_path / "MedQuAD"
    for rel, (doc_id, focus, pairs) in TINY_MEDQUAD.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(medquad_xml(doc_id, focus, pairs), encoding="utf-8")
    (root / "6_NINDS_QA").mkdir()
    (root / "6_NINDS_QA" / "0000007.xml").write_text(LEGACY_NINDS, encoding="utf-8")
    return root


def make_tgz(folder: Path, archive: Path) -> Path:
    """Pack `folder` as MedQuAD's archive is packed: one top folder, files in sorted order."""
    with tarfile.open(archive, "w:gz") as tf:
        for path in sorted(folder.rglob("*")):
            tf.add(
                path,
                arcname=f"{folder.name}/{path.relative_to(folder).as_posix()}",
                recursive=False,
            )
    return archive


@pytest.fixture
def kaggle_tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_chatbot.csv"
    path.write_text(KAGGLE_TINY, encoding="utf-8")
    return path
