"""The retrieval library: BM25 beside Chroma's vectors, fused by rank and reranked, and the
sync that keeps a collection in step with the documents it indexes."""
