"""Stage 6, experiments: the runner that trains and evaluates a spec (``runner``), the results table (``results``),
breakdowns, benchmarks, the references (``reference``), the study in resumable pieces (``study``) and the main job
that executes the notebooks (``pipeline``)."""
