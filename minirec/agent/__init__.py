"""ShopX-mini: fulfilling shopping intents by acting in SID space (docs/method.md §8).

- ``protocol``  the actions a model may emit (JSON) and the one validator that turns text into an action;
- ``catalogue`` catalogue grounding: SID <-> item facts, and the filters constraints select with;
- ``intents``   shopping tasks synthesised from the data, in varied words, with held-out sentence forms;
- ``harness``   the serving harness: context access, session state across turns, and execution of actions
  that never crashes and never shows an item that does not exist;
- ``episodes``  playing tasks through the harness and scoring them; the oracle parser and the three agents compared;
- ``model``     ShopX-mini: the aligned OneRec-Think model fine-tuned to write actions, its own SID retrieval as the
  harness's backend, and the agent that plays it; the learned tool-caller (the same, writing calls SASRec serves);
- ``fuzz``      random and adversarial action strings, for the tests and the notebook.
"""
from minirec.agent.catalogue import Catalogue
from minirec.agent.harness import Harness, PopularityBackend, RankerBackend, Result, SessionState
from minirec.agent.protocol import ACTIONS, ERROR_CODES, ActionError, Answer, Ask, Bundle, Constraints, Rank, Retrieve, action_json, parse_action

__all__ = ["ACTIONS", "ERROR_CODES", "ActionError", "Answer", "Ask", "Bundle", "Catalogue", "Constraints", "Harness",
           "PopularityBackend", "Rank", "RankerBackend", "Result", "Retrieve", "SessionState", "action_json", "parse_action"]
