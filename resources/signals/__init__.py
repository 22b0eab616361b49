"""The signals library: what an extracted signal means (kinds, normalised names), how a
person's review of a signal is stored, and the labelled documents a signal extractor is
scored on."""
