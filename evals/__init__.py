"""Evaluations of the pipeline's quality claims, run from a clone (`make eval-factcheck`,
`make eval-retrieval`) on committed public data; not part of the installed package."""
