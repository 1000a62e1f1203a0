"""Stage 2, semantic IDs: item text embeddings from a real sentence encoder, the co-occurrence graph, the quantisers
(RQ-KMeans, RQ-VAE, CoBa) and the SID table the generative models read (``embeddings``, ``graph``, ``quantizers``,
``semantic_ids``)."""
