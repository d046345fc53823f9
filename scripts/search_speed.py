"""Items per second of `search`'s scoring (merge + head of one query against
every corpus encoding), at the defaults' model size: the README's table.

    python scripts/search_speed.py [--sizes=10000,100000] [--units=32]

Random encodings stand in for a corpus (the scoring does not depend on
their values); the encoding step, once per corpus and cached, is not timed.
"""

import argparse
import os
import sys
import time

import numpy as np

# This checkout's package, not an installed one.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--merge", default="concat_absdiff_product")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import tensorflow as tf

    from siamese_research.core.model import build_model
    from siamese_research.artifacts import Run

    model = build_model(units=args.units, features=128, vocab_size=20000,
                        merge=args.merge)
    run = Run(model)
    rng = np.random.default_rng(0)
    query = rng.standard_normal(args.units).astype(np.float32)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    print(f"merge {args.merge}, encodings of {args.units}, "
          f"{'GPU' if gpu else 'CPU only'}; best of {args.repeats}")
    for n in (int(s) for s in args.sizes.split(",")):
        corpus = rng.standard_normal((n, args.units)).astype(np.float32)
        run.score_query(query, corpus)  # the trace, once
        best = min(_time(run, query, corpus) for _ in range(args.repeats))
        print(f"{n:>9,} items: {best * 1e3:8.1f} ms per query, {n / best:,.0f} items/s")


def _time(run, query, corpus):
    t0 = time.perf_counter()
    run.score_query(query, corpus)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
