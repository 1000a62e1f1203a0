"""Stage 3, recommenders: the Qwen3 backbone and SID vocabulary, the baselines (popularity, SASRec), TIGER-style
generative retrieval, the constrained beam search and text sampling (``backbone``, ``baselines``, ``sasrec``,
``generative``, ``beam_search``, ``sampling``)."""
