"""The study profile in pieces: one model and one seed at a time, its results kept in the repository.

Three seeds of every headline model take hours on 2 CPU cores, longer than one working session,
and checkpoints (``runs/``) are not part of the repository. A *piece* trains one seed of one
headline spec with the profile's recipe (through ``runner.run``, so a checkpoint made with
the same settings is reused), evaluates it once on the test stage and writes
``figures/study/<dataset>/<label>__seed<s>.npz``: the per-user test metrics, the epochs, the
training seconds, the validation curve, the learning-rate cuts, the commit and the digest of
the fingerprint that made it. ``assemble`` reads every piece back, sets aside stale pieces
(made with other settings), and writes records, paired bootstraps against TIGER-mini, the
validation -> test gap and the per-epoch training cost into the results table::

    python -m minirec.experiments.study --model S2GR-mini --seed 1     # one piece
    python -m minirec.experiments.study --model OneRec-base --model OneRec-align --model OneRec-reason --seed 0
    python -m minirec.experiments.study --model OneRec-RL --seed 0      # every GRPO setting of notebook 09's study grid
    python -m minirec.experiments.study --model Think-Ahead --seed 0    # notebook 10's serving, measured on one seed
    python -m minirec.experiments.study --model OneRec-align-cosine --seed 0   # a diagnostic: no plateau cuts
    python -m minirec.experiments.study --model ShopX --seed 0          # notebook 11's agents, on held-out words
    python -m minirec.experiments.study --model OneRec-pretrained-align --seed 0   # alignment on SmolLM2-135M
    python -m minirec.experiments.study --dataset world-depth3 --model TIGER-mini --model S2GR-mini --seed 0
                                                                        # a planted world (notebook 12's sweep)
    python -m minirec.experiments.study --assemble                      # the table from the pieces there are

Settings are chosen on validation among the pieces, by one rule for every grid the catalogue lists (``specs.grids``:
S²GR-mini's method-form settings, GRPO's reward and learning rate; ``choice.choose``, recorded by ``record_choice``);
OneRec-Think's stages are compared each with the one before it and with the tuned SASRec (``STEPS``), and alignment
on the pretrained SmolLM2-135M with its Base inside each popularity group of the targets too (``BY_POPULARITY``: the
tail is its question); a Think-Ahead piece records its latency and the share of the reasoning model's gain it keeps
(``record_serving``), and an agents piece (``agents``) plays notebook 11's three agents on the same
held-out shoppers' tasks in held-out words, compared over seeds and tasks (``report_agents``). On a planted world
(``--dataset world-...``, ``minirec.data.world``) the assembly adds every model's share of the Bayes-optimal ceiling
and S²GR-mini against TIGER-mini on the tail targets (``record_world``).

Every spec comes from the catalogue the notebooks use (``minirec.experiments.specs``), so a piece and a notebook's
run of the same label train the same thing (the same fingerprint, the same checkpoint folder).

The package: ``plan`` (what the study trains: the headline specs, the command line's short names, the steps compared),
``pieces`` (training, saving and reading pieces; which are stale), ``report`` (from pieces to the results table),
``agents`` (ShopX's piece and its report) and
``__main__`` (the command line). Everything a notebook or a test uses is importable from the package itself.
"""
from minirec.experiments.specs import (ALIGN, ALIGN_COSINE, BASE, REASON, RL, S2GR, SASREC_FIRST as SASREC,
                                      TIGER as REFERENCE, grpo_candidates as rl_candidates)
from minirec.experiments.study.pieces import (CURVE_KEYS, Piece, current_pieces, load_pieces, piece_path,
                                              save_piece, stage_diagnostics, think_ahead_digest, think_ahead_piece,
                                              train_piece)
from minirec.experiments.study.plan import (ALIASES, CACHED_LEVELS, PREFIX_COUNTS, SHOPX_AGENTS, STEPS, THINK_AHEAD,
                                            expand_models, headline_specs)
from minirec.experiments.study.agents import agents_digest, agents_piece, report_agents
from minirec.experiments.study.report import (GRPO_SIGNAL, RecordedChoice, assemble, breakdowns, compare_pieces,
                                              epoch_mean, forget_groups, record_caption_floor, record_captions,
                                              record_choice, record_serving, record_stage_diagnostics,
                                              recorded_breakdown, recorded_choice, stage_curves)

__all__ = ["ALIASES", "ALIGN", "ALIGN_COSINE", "BASE", "CACHED_LEVELS", "CURVE_KEYS", "GRPO_SIGNAL",
           "PREFIX_COUNTS", "Piece", "REASON", "REFERENCE", "RL", "RecordedChoice", "S2GR", "SASREC", "SHOPX_AGENTS",
           "STEPS", "agents_digest", "agents_piece", "report_agents",
           "THINK_AHEAD", "assemble", "breakdowns", "compare_pieces", "current_pieces", "epoch_mean",
           "expand_models", "forget_groups", "headline_specs", "load_pieces", "piece_path",
           "record_caption_floor", "record_captions", "record_choice", "record_serving",
           "record_stage_diagnostics", "recorded_breakdown", "recorded_choice", "rl_candidates", "save_piece",
           "stage_curves", "stage_diagnostics", "think_ahead_digest", "think_ahead_piece", "train_piece"]
