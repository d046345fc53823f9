"""Words and idf: the one standardisation and the one idf formula.

`words` standardises as the run's `TextVectorization` does
(`lower_and_strip_punctuation`, split on whitespace); `STRIP_PUNCTUATION`
is that layer's pattern, which the exported graph reuses.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Dict, Hashable, Iterable, List, Sequence

# TextVectorization's lower_and_strip_punctuation, character for character
# (keras/src/layers/preprocessing/text_vectorization.py); RE2 and Python's
# re read it alike.
STRIP_PUNCTUATION = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'
_PUNCTUATION = re.compile(STRIP_PUNCTUATION)


def words(text: str) -> List[str]:
    """Lowercased words without punctuation (the vectoriser's standardisation)."""
    return _PUNCTUATION.sub("", text.lower()).split()


def idf_weights(documents: Iterable[Iterable[Hashable]]) -> Dict[Hashable, float]:
    """idf(w) = log(N / df(w)) over N documents, each a collection of items
    (words, token ids); an item counts once per document. The one formula
    behind the embedding's idf start (`data`) and the overlap baseline."""
    docs = [set(d) for d in documents]
    df = Counter(w for d in docs for w in d)
    return {w: math.log(len(docs) / c) for w, c in df.items()}


def idf_table(texts: Sequence[str]) -> Dict[str, float]:
    """idf per word over the DISTINCT texts (a question repeated for each of
    its candidates counts once)."""
    return idf_weights(words(t) for t in dict.fromkeys(texts))
