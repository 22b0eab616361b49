"""How a materialization explains itself in the UI: markdown tables, inline SVG charts and
per-partition verdicts that a check over a whole table records."""
