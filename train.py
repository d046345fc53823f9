#!/usr/bin/env python
"""Train a Siamese network with a shared encoder and watch its branch gradients.

    python train.py                                  # synthetic pairs, defaults
    python train.py --data=random --merge=concat --num_samples=1000 \
        --timesteps=10 --epochs=3 --batch_size=64    # the notebook's run
    tensorboard --logdir runs

A thin wrapper: the flags and `main` live in `siamese_research/tools/train.py`
(also the `siamese-train` console script). Exit status: 0 done, 2 bad input,
3 non-finite loss or gradient, 4 a run file could not be written (resumable),
130/143 interrupted (resumable).
"""

import sys

# The package sees from the command line that this is its train.py, and
# imports TensorFlow quietly (siamese_research.quiet.started_as_tool).
from siamese_research.tools.train import main

if __name__ == "__main__":
    sys.exit(main(sys.argv))
