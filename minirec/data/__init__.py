"""Stage 1, data: interaction sequences, the leave-one-out protocol's splits, the MovieLens loaders and the synthetic
catalogue of the tests (``dataset``, ``loaders``, ``synthetic``)."""
