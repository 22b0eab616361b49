"""The process-wide vector cache: exact reuse per model, mode and text, and a bounded size."""

import numpy as np
import pytest

from resources.embeddings import EmbeddingsResource, VectorCache

# Tiers, marked per test: the cache is unit; vectors from the embedded model, integration.


@pytest.mark.unit
def test_the_cache_keeps_recent_vectors_and_drops_the_oldest():
    cache = VectorCache(capacity=2)
    one, two, three = (np.full(3, v, dtype=np.float32) for v in (1, 2, 3))
    cache.put(("m", True, "a"), one)
    cache.put(("m", True, "b"), two)
    assert cache.get(("m", True, "a")) is one  # a is now the most recent
    cache.put(("m", True, "c"), three)
    assert cache.get(("m", True, "b")) is None and cache.get(("m", True, "a")) is one
    assert cache.get(("m", False, "a")) is None  # query and passage vectors differ


@pytest.mark.integration
def test_cached_vectors_equal_fresh_ones_and_keep_the_order_of_the_texts():
    embeddings = EmbeddingsResource()
    texts = [
        "Acme Robotics raised 40 million euros.",
        "The plant opens in Tampere.",
        "Acme Robotics raised 40 million euros.",
    ]
    first = embeddings.embed_passages(texts)
    fresh = embeddings._embed_uncached(texts[:2], is_query=False)
    again = embeddings.embed_passages(list(reversed(texts)))
    assert first.shape == (3, 384) and np.allclose(first[:2], fresh, atol=1e-6)
    assert np.array_equal(again, first[::-1])
    assert not np.allclose(embeddings.embed_queries(texts[:1])[0], first[0])
