"""Stage 4, reasoning: S²GR's stepwise latent thinking (``s2gr``) and OneRec-Think's stages: itemic alignment
(``itemic``, ``onerec``), category rationales (``rationales``), GRPO (``grpo``) and Think-Ahead serving
(``think_ahead``)."""
