"""The study's command line (``python -m minirec.experiments.study``; see the package's docstring)."""
from __future__ import annotations

import argparse

from minirec.artifacts import figures_dir as default_figures_dir, save_figure
from minirec.experiments.results import HELD_OUT_USERS, ResultsTable, display_name
from minirec.experiments.runner import digest, fingerprint
from minirec.experiments.specs import TIGER as REFERENCE, SpecCatalogue, grids, grpo_candidates as rl_candidates
from minirec.experiments.study import __doc__ as STUDY_DOC
from minirec.experiments.study.agents import agents_digest, agents_piece, report_agents
from minirec.experiments.study.pieces import (current_pieces, load_pieces, think_ahead_digest, think_ahead_piece,
                                              train_piece)
from minirec.experiments.study.plan import ALIASES, SHOPX_AGENTS, THINK_AHEAD, expand_models, headline_specs
from minirec.experiments.study.report import GRPO_SIGNAL, assemble, stage_curves
from minirec.profiles import get_profile

def main(argv=None) -> None:
    from minirec.data import dataset as mdata
    from minirec.data import loaders

    parser = argparse.ArgumentParser(prog="python -m minirec.experiments.study", description=STUDY_DOC.split("\n")[0])
    parser.add_argument("--profile", default="study")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", action="append", default=[],
                        help="a headline label or alias: SASRec, TIGER-mini, item-ID-TIGER, S2GR-mini, OneRec-base, "
                             "OneRec-align, OneRec-reason, OneRec-reason-rates (the reasoning stage at every "
                             "fine-tuning rate), OneRec-RL (every GRPO setting), OneRec-RL-beam (one "
                             "reward, both learning rates), Think-Ahead (serves OneRec-reason and TIGER-mini), ShopX "
                             "(ShopX-mini, the learned tool-caller and SASRec, played on held-out phrasings), "
                             "OneRec-pretrained-base and OneRec-pretrained-align (on SmolLM2-135M), "
                             "OneRec-random-base and OneRec-random-align (on a shuffled SID table); a stage "
                             "trains its earlier stages first unless their checkpoints exist")
    parser.add_argument("--seed", type=int, action="append", default=[])
    parser.add_argument("--assemble", action="store_true", help="write the results table from the saved pieces")
    parser.add_argument("--trust-recorded-digests", action="store_true",
                        help="assemble every saved piece as made with today's settings, without recomputing the "
                             "fingerprints: for a machine that cannot rebuild an input bit-identically (a CoBa SID "
                             "table trained on another CPU differs in its last bits, and so does its fingerprint). "
                             "Check the result: the test rows must equal the committed ones")
    parser.add_argument("--held-out-users", type=float, default=0.0, metavar="SHARE",
                        help="choose the checkpoint on this share of users, left out of training (data.hold_out_users)"
                             " instead of every user's second-to-last item")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    ds = loaders.load_dataset(args.dataset)
    split = mdata.leave_one_out(ds.subset_users(profile.max_users))
    needs_specs = args.model or (args.assemble and not args.trust_recorded_digests)
    specs = headline_specs(ds, mdata.leave_one_out(ds), profile) if needs_specs else {}
    catalogue = SpecCatalogue(ds, profile)
    held = mdata.hold_out_users(split, args.held_out_users) if args.held_out_users else None
    for name in expand_models(args.model, profile):
        label = ALIASES.get(name, name)
        if label not in specs and label not in (THINK_AHEAD, SHOPX_AGENTS):
            names = sorted(set(specs) - set(ALIASES.values()) | set(ALIASES))
            raise SystemExit(f"unknown model {name!r}; choose from {names}")
        if label in (THINK_AHEAD, SHOPX_AGENTS) and held is not None:
            raise SystemExit(f"{label} uses the models as trained; --held-out-users does not apply to it")
        for seed in args.seed or profile.seeds:
            if label == SHOPX_AGENTS:
                piece = agents_piece(catalogue, split, profile, seed)
                print(f"{label} seed {seed}: hit (each kind's own) "
                      + ", ".join(f"{a} {piece.per_user[f'{a}|hit'].mean():.3f}" for a in piece.meta["agents"])
                      + f", {piece.meta['seconds']:.0f} s of training", flush=True)
                continue
            if label == THINK_AHEAD:
                piece = think_ahead_piece(specs, split, profile, seed)
            else:
                piece = train_piece(specs[label], held or split, profile, seed,
                                    protocol=HELD_OUT_USERS if held is not None else None)
            print(f"{label} seed {seed}: test NDCG@10 {piece.per_user['ndcg@10'].mean():.4f}, "
                  f"{piece.meta['epochs']} epochs, {piece.meta['seconds']:.0f} s", flush=True)
    if args.assemble:
        pieces = load_pieces(args.dataset)
        if args.trust_recorded_digests:
            print("assembling every piece as recorded: fingerprints not recomputed (--trust-recorded-digests)")
            digests = {(p.label, p.protocol): p.digest for p in pieces}
        else:
            digests = {(label, None): digest(fingerprint(spec, split, profile)) for label, spec in specs.items()}
            held = mdata.hold_out_users(split, args.held_out_users or 0.1)
            digests.update({(label, HELD_OUT_USERS): digest(fingerprint(spec, held, profile))
                            for label, spec in specs.items()})
            digests[THINK_AHEAD, None] = think_ahead_digest(specs, split, profile)
            digests[SHOPX_AGENTS, None] = agents_digest(catalogue, split, profile)
        fresh, held_out, stale = current_pieces(pieces, digests)
        agents = fresh.pop(SHOPX_AGENTS, {})
        for p in stale:
            print(f"stale piece set aside: {display_name({'method': p.label, 'protocol': p.protocol})} seed {p.seed} "
                  f"(commit {p.meta.get('commit')}): other settings")
        table = ResultsTable()
        summary = assemble(fresh, table, split, profile, held=held_out)
        for row in report_agents(agents, table, profile):
            print(f"ShopX-mini vs {row['against']} · {row['kind']} ({row['score']}, {row['seeds']} seeds): "
                  f"{row['difference']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]"
                  f"{' beyond noise' if row['beyond noise'] else ' within noise'}")
        for name, fig in (("onerec_stage_curves", stage_curves(fresh)),
                          ("grpo_curves", stage_curves(fresh, tuple(rl_candidates(profile)), GRPO_SIGNAL))):
            if fig is not None:
                save_figure(fig, f"{args.dataset}_{name}", default_figures_dir() / "study")
        found = summary.pop("breakdown")
        choices = summary.pop("choices")
        rows = [(label, HELD_OUT_USERS, s) for label, s in summary.pop("held_out").items()]
        for label, protocol, s in [(label, None, s) for label, s in summary.items()] + rows:
            name = display_name({"method": label, "protocol": protocol})
            print(name, {k: v for k, v in s.items() if not k.startswith("vs_")})
            others = {"vs_reference": display_name({"method": REFERENCE, "protocol": protocol}),
                      "vs_usual_validation": label}
            for key, other in others.items():
                for res in s.get(key, {}).values():
                    print("  ", res.verdict(name, other))
            for other, results in s.get("vs_steps", {}).items():
                for res in results.values():
                    print("  ", res.verdict(label, other))
        for grid in grids(profile):
            decided = choices[grid.method]
            print(f"{grid.method} settings on validation: {decided['candidates']}")
            if decided["chosen"]:
                print(f"chosen on validation: {decided['chosen']}"
                      f"{' (provisional: a setting lacks seeds)' if decided['provisional'] else ''}")
                for res in decided["vs_against"].values():
                    print("  ", res.verdict(decided["name"], grid.against))
        for name in ("by_popularity", "by_history"):
            if name in found:
                print(f"{name} (seeds {found['seeds']}):\n{found[name].round(4).to_string(index=False)}")


if __name__ == "__main__":
    main()
