"""The labelled sample that signals are measured against: the bundled corpus, read by a person.

Rules catch contradictions (a city typed as a person, a recall tagged positive); only labels
tell whether an extraction is right. Each bundled document carries the kinds of its named
entities and its tone, as a careful reader sees them (calibration/signal_labels.json). A run
over these documents reports how many extracted kinds and tones agree, and the signal check
holds that to a floor. A label applies only while the document's bytes are the ones labelled
(its doc_id), so an edited file or another corpus is never scored against stale labels.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import BaseModel, Field

from resources.documents.text import normalize

SIGNAL_LABELS_FILE = Path(__file__).parent / "signal_labels.json"


class LabelledDocument(BaseModel):
    doc_id: str = Field(description="First 16 hex digits of the SHA-256 of the labelled file's bytes.")
    title: str
    tone: list[str] = Field(min_length=1, description="Tones a careful reader could defend, the likeliest first.")
    entities: dict[str, list[str]] = Field(description="Named entity -> the kinds a careful reader could defend.")


class SignalLabels(BaseModel):
    about: str = ""
    documents: dict[str, LabelledDocument] = Field(description="By the labelled file's name, for readers.")

    def for_document(self, doc_id: str) -> LabelledDocument | None:
        """The labels of the document with these bytes, wherever its file sits."""
        return next((labelled for labelled in self.documents.values() if labelled.doc_id == doc_id), None)


class SampleScore(BaseModel):
    """How one document's extraction agrees with its labels."""

    entities: int = Field(default=0, description="Extracted entities that the sample labels.")
    entities_right: int = Field(default=0, description="Of those, how many have a labelled kind.")
    wrong_kinds: list[str] = Field(default=[], description="'name: extracted kind (expected kinds)' per miss.")
    tone_right: bool = False


def score(labelled: LabelledDocument, entities: list[tuple[str, str]], sentiment: str) -> SampleScore:
    """Agreement of (name, kind) pairs and a tone with one document's labels; names the
    labels do not list are not scored (the sample labels the main entities, not every word)."""
    kinds = {normalize(name): expected for name, expected in labelled.entities.items()}
    scored, wrong = 0, []
    for name, kind in entities:
        expected = kinds.get(normalize(name.removeprefix("the ").removeprefix("The ")))
        if expected is None:
            continue
        scored += 1
        if kind not in expected:
            wrong.append(f"{name}: {kind} (expected {' or '.join(expected)})")
    return SampleScore(
        entities=scored, entities_right=scored - len(wrong), wrong_kinds=wrong, tone_right=sentiment in labelled.tone
    )


@cache
def load_signal_labels(path: Path = SIGNAL_LABELS_FILE) -> SignalLabels:
    return SignalLabels.model_validate_json(path.read_text(encoding="utf-8"))
