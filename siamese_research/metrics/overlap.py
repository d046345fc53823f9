"""The lexical baseline: idf-weighted word overlap (`--baseline=overlap`)."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from siamese_research.text.tokens import idf_table, words


def overlap_scores(left: Sequence[str], right: Sequence[str],
                   idf: Optional[Dict[str, float]] = None) -> np.ndarray:
    """idf-weighted word overlap: the idf mass of the left text's words that
    also occur in the right text, over the left text's idf mass (in [0, 1]).

    Args:
      left, right: the pair texts.
      idf: word -> idf; default: from these texts (both sides).
    """
    if idf is None:
        idf = idf_table(list(left) + list(right))
    out = np.zeros(len(left), np.float64)
    for i, (a, b) in enumerate(zip(left, right)):
        qa, qb = set(words(a)), set(words(b))
        total = sum(idf.get(w, 0.0) for w in qa)
        if total > 0:
            out[i] = sum(idf.get(w, 0.0) for w in qa & qb) / total
    return out
