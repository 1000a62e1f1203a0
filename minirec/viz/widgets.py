"""Interactive explorers for the notebooks (ipywidgets), built on plain functions that
tests can call without a browser."""
from __future__ import annotations

from collections import Counter

import pandas as pd

from minirec.data.dataset import SequenceDataset


def parse_prefix(text: str) -> tuple[int, ...]:
    """'12' or '12-3' or '12, 3' -> (12,) or (12, 3); empty text is the empty prefix."""
    parts = [p for p in text.replace(",", "-").replace(" ", "").split("-") if p]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"a SID prefix is numbers separated by '-', e.g. 12-3; got {text!r}") from None


def prefix_items(table, dataset: SequenceDataset, prefix: tuple[int, ...], limit: int = 30) -> pd.DataFrame:
    """Items whose SID starts with ``prefix``: SID, title, genres."""
    if len(prefix) > table.codes.shape[1]:
        raise ValueError(f"prefix {prefix} is longer than the SIDs ({table.codes.shape[1]} codes)")
    match = (table.codes[:, :len(prefix)] == list(prefix)).all(axis=1) if prefix else slice(None)
    items = dataset.items.index.to_numpy()[match]
    return pd.DataFrame({"sid": ["-".join(map(str, table.codes[i])) for i in items],
                         "title": dataset.items["title"].to_numpy()[items],
                         "genres": [", ".join(g) for g in dataset.items["genres"].to_numpy()[items]]}).head(limit)


def prefix_genres(table, dataset: SequenceDataset, prefix: tuple[int, ...], top: int = 5) -> list[tuple[str, int]]:
    """The most common genres among a prefix's items."""
    match = (table.codes[:, :len(prefix)] == list(prefix)).all(axis=1)
    return Counter(g for gs in dataset.items["genres"][match] for g in gs).most_common(top)


def sid_explorer(tables: dict, dataset: SequenceDataset):
    """Pick a quantiser and type a code prefix; see its items and their genres."""
    import ipywidgets as w
    from IPython.display import display

    which = w.Dropdown(options=list(tables), description="quantiser")
    prefix = w.Text(value="0", description="prefix", placeholder="e.g. 3 or 3-17")
    out = w.Output()

    def show(_=None):
        out.clear_output()
        with out:
            try:
                p = parse_prefix(prefix.value)
                table = tables[which.value]
                frame = prefix_items(table, dataset, p)
                n = int((table.codes[:, :len(p)] == list(p)).all(axis=1).sum()) if p else table.n_items
                print(f"{n} items with prefix {p}; top genres: {prefix_genres(table, dataset, p)}")
                display(frame)
            except ValueError as err:
                print(err)

    which.observe(show, names="value")
    prefix.observe(show, names="value")
    show()
    return w.VBox([w.HBox([which, prefix]), out])


def attention_explorer(attention_of, users: list[int], titles, n_layers: int, n_heads: int):
    """Pick a user, a layer and a head; see the thinking steps' attention over that user's history.

    ``attention_of(user) -> (att (L, layers, heads, T), history item indices)``; "mean"
    averages over layers or heads.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    from minirec.viz.plots import thinking_attention

    user = w.Dropdown(options=users, description="user")
    layer = w.Dropdown(options=["mean"] + list(range(n_layers)), description="layer")
    head = w.Dropdown(options=["mean"] + list(range(n_heads)), description="head")
    out = w.Output()

    def show(_=None):
        out.clear_output(wait=True)
        with out:
            att, history = attention_of(user.value)
            fig = thinking_attention(att, [titles[i] for i in history],
                                     None if layer.value == "mean" else layer.value,
                                     None if head.value == "mean" else head.value)
            display(fig)
            plt.close(fig)

    for control in (user, layer, head):
        control.observe(show, names="value")
    show()
    return w.VBox([w.HBox([user, layer, head]), out])


def shop_chat(catalogue, backend, history, agent, max_actions: int = 4):
    """Talk to a shopping agent: type what the shopper says; the agent's actions and the harness's results appear.

    Each session is a fresh ``Harness(catalogue, backend, history)`` ("new session" starts another);
    ``agent`` is an ``episodes`` agent (ShopX-mini or the rule-based baseline).
    """
    import ipywidgets as w

    from minirec.agent import Harness

    def start_session():
        return Harness(catalogue, backend, history)

    box = w.Text(placeholder="e.g. A 90s comedy, but nothing romantic.", description="shopper",
                 continuous_update=False)           # the value changes on Enter
    reset = w.Button(description="new session")
    out = w.Output(layout={"border": "1px solid #ccc", "max_height": "360px", "overflow": "auto"})
    session = {"harness": start_session()}

    def say(_=None):
        h, text = session["harness"], box.value.strip()
        if not text:
            return
        box.value = ""
        h.user(text)
        last, utterance = None, text
        with out:
            print(f"shopper: {text}")
            for _ in range(max_actions):
                action = agent.act(h, utterance, last)
                utterance, last = None, h.act(action)
                print(f"  agent:   {action}\n  harness: " + last.message.replace("\n", "\n           "))
                if last.final:
                    break

    def new(_=None):
        session["harness"] = start_session()
        out.clear_output()

    box.observe(say, names="value")
    reset.on_click(new)
    return w.VBox([w.HBox([box, reset]), out])
