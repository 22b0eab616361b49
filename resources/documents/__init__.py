"""The documents library: safe file reading (no links, no special files, bounded size),
content-hash keys, parsing, chunking and the sentence splitting every checker shares, and
the bundled sample corpus."""
