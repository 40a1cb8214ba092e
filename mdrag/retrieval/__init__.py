"""Retrieval: first stage (SPLADE, dense MiniLM, BM25), a sparse inverted index, and reranking."""
