"""Per-line features: voice and image embeddings, clip quality stats, and the per-episode store.

Kept free of heavy imports so that ``import ml_backend.features.store`` stays cheap; the embedders
and the VAD load their models lazily in their own modules.
"""
