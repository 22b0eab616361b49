"""A synthetic corpus of any size: short dated news items about a handful of companies.

Every document is distinct (no duplicate quarantines), names its company, a figure and
a date, so that each stage has real work: signals find entities and figures, drafts
find topics, verification finds the numbers in the evidence. Generated from a seed, so
two runs of a benchmark see the same bytes.
"""

from __future__ import annotations

import random
from pathlib import Path

COMPANIES = [
    ("Northwind Robotics", "Rotterdam", "warehouse robots"),
    ("Helios Grid", "Seville", "solar plants"),
    ("Cobalt Freight", "Hamburg", "rail freight"),
    ("Larkspur Health", "Lyon", "diagnostic clinics"),
    ("Tessera Labs", "Turin", "battery cells"),
    ("Orchid Mobile", "Porto", "mobile networks"),
]
EVENTS = [
    ("opened a new site in {city}", "The site employs {n} people."),
    ("reported quarterly revenue of {n} million euros", "Revenue grew {p} percent on the year."),
    ("signed a supply contract worth {n} million euros", "Deliveries start in {month}."),
    ("hired {n} engineers for its {line} business", "Chief executive {ceo} announced the hires."),
    ("raised {n} million euros from investors", "The round values the company at {v} million euros."),
]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
CEOS = ["Maarten Visser", "Lucia Moreno", "Jonas Becker", "Claire Dubois", "Marco Bianchi", "Ines Costa"]


def document_text(index: int, rng: random.Random) -> str:
    company, city, line = COMPANIES[(index // 2) % len(COMPANIES)]  # in pairs: even 4 documents make two topics
    what, more = EVENTS[rng.randrange(len(EVENTS))]
    month = rng.randrange(12)
    day = rng.randrange(1, 28)
    values = {
        "city": city,
        "line": line,
        "n": rng.randrange(10, 900),
        "p": rng.randrange(2, 40),
        "v": rng.randrange(200, 5000),
        "month": MONTHS[(month + 3) % 12],
        "ceo": CEOS[(index // 2) % len(CEOS)],
    }
    headline = f"{company} {what.format(**values)}"
    return (
        f"# {headline} (item {index})\nDate: 2026-{month + 1:02d}-{day:02d}\n\n"
        f"{company}, the {city} maker of {line}, {what.format(**values)} on {day} {MONTHS[month]} 2026. "
        f"{more.format(**values)} The company counted {values['v']} customers in item {index} of this series.\n"
    )


def write_corpus(folder: Path, count: int, seed: int = 7, start: int = 0) -> list[Path]:
    """Documents `start` to `start + count - 1` as Markdown files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for index in range(start + count):
        text = document_text(index, rng)  # drawn in order, so document i is the same whatever `start` is
        if index >= start:
            path = folder / f"doc-{index:05d}.md"
            path.write_text(text, encoding="utf-8")
            paths.append(path)
    return paths
