"""Parsing: each unreadable file is quarantined with a specific reason; the others survive."""

import pytest

from resources.documents.chunking import chunk_document
from resources.documents.parsing import load_corpus, parse_document
from resources.documents.records import QuarantinedDocument, SourceDocument
from tests.conftest import write_file

pytestmark = pytest.mark.unit


def test_reasons_are_specific(tmp_path):
    cases = {
        "binary": write_file(tmp_path / "a.pdf", b"%PDF\x00\x01\x02"),
        "empty": write_file(tmp_path / "b.md", b"  \n"),
        "encoding": write_file(tmp_path / "c.txt", "Société".encode("latin-1")),
        "too_large": write_file(tmp_path / "d.txt", b"x" * 100),
    }
    for kind, path in cases.items():
        parsed = parse_document(path, max_bytes=50)
        assert isinstance(parsed, QuarantinedDocument) and parsed.kind == kind, (kind, parsed)
    assert "byte 0xe9 at offset 4" in parse_document(cases["encoding"], 50).reason


def test_one_bad_file_never_loses_the_others(tmp_path):
    write_file(tmp_path / "good.md", b"# Title\nDate: 2026-01-02\n\nAcme Corp hired 12 people. It grew.")
    write_file(tmp_path / "copy.md", b"# Title\nDate: 2026-01-02\n\nAcme Corp hired 12 people. It grew.")
    write_file(tmp_path / "bad.txt", b"\xff\xfe")
    documents, quarantined = load_corpus([tmp_path])
    assert [d.title for d in documents] == ["Title"] and documents[0].published == "2026-01-02"
    assert sorted(q.kind for q in quarantined) == ["duplicate", "encoding"]


def test_chunks_keep_whole_sentences_and_offsets():
    text = " ".join(f"Sentence number {i} is here." for i in range(40))
    document = SourceDocument(doc_id="d" * 16, path="x", title="t", published="", text=text, n_chars=len(text))
    chunks = chunk_document(document, target_chars=200)
    assert len(chunks) > 3
    for chunk in chunks:
        assert text[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.text.endswith(".") and len(chunk.text) <= 200
