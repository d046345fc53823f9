"""MAP and MRR per group: this project's own, with pessimistic ties.

A group is one left text's candidates (a question's answers). Only groups
with at least one similar and one dissimilar candidate count. Within a
group candidates are ranked by score, and tied scores rank the dissimilar
ones first (the pessimistic order), so a constant score earns no credit.
(Ranking libraries differ here: TREC's trec_eval breaks ties by document
id, scikit-learn's `label_ranking_average_precision_score` optimistically;
neither is what a model that cannot separate its candidates deserves.)
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

import numpy as np


def ranking_metrics(groups: Sequence, labels, scores) -> Dict[str, float]:
    """MAP and MRR over groups (e.g. one question's candidate answers).

    Returns:
      {"map", "mrr", "groups_scored"} (map/mrr NaN when no group counts).
    """
    y = np.asarray(labels) >= 0.5
    s = np.asarray(scores, np.float64)
    members: Dict[object, List[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    aps, rrs = [], []
    for idx in members.values():
        gy, gs = y[idx], s[idx]
        if gy.all() or not gy.any():
            continue
        # lexsort: last key first; by -score, then similar (True) last.
        order = np.lexsort((gy, -gs))
        ranks = np.flatnonzero(gy[order]) + 1.0
        aps.append(float(np.mean(np.arange(1, len(ranks) + 1) / ranks)))
        rrs.append(1.0 / ranks[0])
    if not aps:
        return {"map": math.nan, "mrr": math.nan, "groups_scored": 0}
    return {"map": float(np.mean(aps)), "mrr": float(np.mean(rrs)),
            "groups_scored": len(aps)}
