"""SASRec and the Lightning plumbing: a trained model must beat popularity."""
import numpy as np
import torch

from minirec import metrics
from minirec.data.dataset import leave_one_out
from minirec.experiments.runner import RunSpec, run
from minirec.models.baselines import Popularity
from minirec.models.sasrec import SASRec, SASRecConfig
from minirec.profiles import get_profile, seed_everything, with_recipe


def test_causal_no_future_leak():
    seed_everything(0)
    model = SASRec(SASRecConfig(n_items=20, max_len=8, hidden=16, n_layers=1, dropout=0.0)).eval()
    x = torch.tensor([[-1, -1, 3, 4, 5, 6, 7, 8]])
    y = x.clone()
    y[0, -1] = 19
    with torch.no_grad():
        h1, h2 = model.hidden_states(x), model.hidden_states(y)
    torch.testing.assert_close(h1[:, :-1], h2[:, :-1])       # earlier positions do not see the last item
    assert not torch.allclose(h1[:, -1], h2[:, -1])
    # left padding is ignored: a shorter padded input gives the same last state as the unpadded one
    with torch.no_grad():
        torch.testing.assert_close(model.hidden_states(x[:, 2:])[:, -1], h1[:, -1])


def test_trained_sasrec_beats_popularity(synthetic, tmp_path):
    split = leave_one_out(synthetic)
    profile = with_recipe(get_profile("smoke"), "sasrec", max_epochs=15, patience=15, batch_size=32, lr=3e-3)
    spec = RunSpec("SASRec", SASRec, SASRecConfig(n_items=synthetic.n_items, max_len=20, hidden=32, n_layers=1,
                                                  dropout=0.1))
    runs = run(spec, split, profile, runs_dir=tmp_path)
    pop = metrics.summarize(metrics.evaluate(Popularity(split), split.test))
    assert runs.per_seed["ndcg@10"][0] > pop["ndcg@10"] + 0.1, (runs.per_seed, pop)
    curves = runs.fits[0].curves
    assert len(curves) == runs.fits[0].epochs and "train_loss" in curves[-1] and "val_ndcg10" in curves[-1]
    assert curves[-1]["train_loss"] < curves[0]["train_loss"]
    # the best checkpoint reloads to the same validation score
    best = runs.fits[0]
    val = metrics.evaluate(best.module, split.valid, ks=(10,))["ndcg@10"].mean()
    assert np.isclose(val, best.best_val_ndcg10, atol=1e-5)
