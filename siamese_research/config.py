"""Every knob of a run, with its default, validated once.

`Config` is what the library receives; flags stop at `train.py`. A bad value
raises `ConfigError`, whose message names the flag and the value, so the entry
point can print one line and exit with status 2.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Optional

from siamese_research.errors import ConfigError, DataError, UserError  # noqa: F401 (the public names)
from siamese_research.text import vectors

BUILTIN_DATA = ("synthetic", "random")
# Built-in image sets (siamese_research.data.images); a folder of class
# subfolders is the other image source.
IMAGE_DATA = ("digits",)
SPLITS = ("random", "classes")
OPTIMIZERS = ("rmsprop", "adam", "adamw", "sgd", "adagrad", "nadam")
SHARES = ("tied", "untied")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
ON_NONFINITE = ("stop", "skip")
CLASS_WEIGHTS = ("none", "balanced")
EMBEDDING_INITS = ("uniform", "idf")
QUOTINGS = ("auto", "csv", "none")
MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")
TRIPLETS = ("none", "from_pairs", "from_corpus")
NEGATIVES = ("random", "hard")
# Losses over more than one pair of encoder calls: their training batches are
# (anchor, positive, negative) triplets or (anchor, positive) rows whose
# negatives are the batch's other positives (siamese_research.core.losses).
BRANCH_LOSSES = ("triplet", "mnrl", "batch_hard_triplet", "batch_semi_hard_triplet")
# The online miners: batches of --per_group rows per group, every anchor's
# hardest (or semi-hard) positive and negative chosen inside the batch.
GROUP_LOSSES = ("batch_hard_triplet", "batch_semi_hard_triplet")


# What --monitor can watch ("min" for the loss and the equal error rate,
# "max" for the rest);
# siamese_research.train.callbacks.MONITORS is this list.
MONITORS = ("val_loss", "val_accuracy", "val_auc", "val_map", "val_mrr", "val_pearson",
            "val_eer")


def numeric_data(data: str) -> bool:
    """Built-in, .npz or image data: floats, no text, no embedding."""
    return (data in BUILTIN_DATA or image_data(data)
            or os.path.splitext(data)[1].lower() == ".npz")


def image_data(data: str) -> bool:
    """A built-in image set or a folder (of class subfolders of images)."""
    return data in IMAGE_DATA or os.path.isdir(data)


def default_run_dir() -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", stamp)


@dataclasses.dataclass(frozen=True)
class Config:
    # Data.
    data: str = "synthetic"  # synthetic | random (the notebook's) | digits | a pair file | a folder
    validation_data: Optional[str] = None  # a pair file; else validation_split
    num_samples: int = 8000  # pairs generated for synthetic/random/image data
    timesteps: int = 20  # longest sequence generated (synthetic: 5..timesteps)
    features: int = 128  # input feature size (embedding size for text)
    validation_split: float = 0.2  # last fraction held out, as Keras's fit does
    split: str = "random"  # images: random (a fraction of each class) | classes
    image_size: str = ""  # images: "height,width" to resize to; "" = as stored
    channels: int = 0  # images: 1 (grey) or 3 (RGB); 0 = as stored
    prototypes: int = 16  # synthetic: number of hidden prototypes
    noise: float = 0.5  # synthetic: per-step noise std around a prototype
    left_column: Optional[str] = None  # pair files: columns (defaults: see data)
    right_column: Optional[str] = None
    label_column: Optional[str] = None
    label_range: Optional[str] = None  # "lo,hi": graded labels mapped to [0, 1]
    max_tokens: int = 20000  # text: vocabulary size (incl. pad and OOV)
    max_length: int = 64  # text: tokens kept per side
    oov_buckets: int = 1  # text: hashed ids for out-of-vocabulary words
    char_ngrams: str = ""  # text: "lo,hi": add each word's hashed char n-grams
    ngram_buckets: int = 100000  # text: ids the char n-grams hash into
    bucket_by_length: bool = False  # group similar lengths into batches
    strict: bool = False  # empty text on one side is an error, not skipped
    quoting: str = "auto"  # csv/tsv quotes: auto (.csv csv, .tsv none) | csv | none
    # Model.
    encoder: str = "lstm"  # a registered name or package.module:Name
    units: int = 32  # encoder output size
    encoder_args: str = "{}"  # JSON of extra encoder arguments
    merge: str = "concat_absdiff_product"  # how two encodings become one
    loss: str = "bce"  # bce | contrastive | mse | pairwise | triplet | mnrl
    margin: float = 1.0  # contrastive and triplet loss margin (on the distance)
    temperature: float = 0.05  # mnrl: softmax temperature on -distance
    triplets: str = "none"  # triplet (or mnrl) on pair data: from_pairs | from_corpus
    negatives: str = "random"  # triplets' negatives: random | hard (mined, see mining)
    mine_every: int = 1  # hard negatives: mined again every N epochs
    mine_range: str = "1,10"  # hard negatives: "lo,hi" ranks of non-positives kept
    mine_margin: str = ""  # hard negatives: keep d(a, n) >= d(a, p) + margin; "" = off
    per_group: int = 0  # batch-hard losses: rows per group in a batch (M)
    mini_batch_size: int = 0  # mnrl: cached (GradCache) chunks of this many rows; 0 = off
    anchor_column: Optional[str] = None  # triplet files: columns (default: by name)
    positive_column: Optional[str] = None
    negative_column: Optional[str] = None
    share: str = "tied"  # tied: ONE encoder; untied: two of the same shape
    # Optimisation.
    optimizer: str = "rmsprop"
    learning_rate: float = 0.001
    epochs: int = 3
    batch_size: int = 64
    class_weight: str = "none"  # none | balanced
    embedding_init: str = "uniform"  # text: uniform (Keras's) | idf (see model)
    embeddings: Optional[str] = None  # text: GloVe/.vec(.gz) word vectors to start from
    freeze_embeddings: bool = False  # text: keep the embedding table fixed
    seed: int = 42
    # Execution.
    steps_per_execution: int = 20  # train steps per compiled call
    strategy: str = "auto"
    jit_compile: bool = False
    mixed_precision: Optional[str] = None  # None | mixed_float16 | mixed_bfloat16
    deterministic: bool = False
    intra_op_threads: int = 0  # threads one op may use; 0 = auto (see devices)
    on_nonfinite: str = "stop"
    # Logging and checkpoints.
    run_dir: str = ""  # default: runs/<UTC timestamp>
    log_every: int = 10  # scalar summaries every N steps
    histogram_every: int = 100  # histograms every N steps
    grad_check_every: int = 100  # left + right = total check (0 = log_every)
    gate_gradients: bool = True  # per-gate gradients for lstm/gru/bilstm
    checkpoint_every: int = 0  # 0 = at epoch ends only
    keep_checkpoints: int = 3
    restart: bool = False  # ignore an existing checkpoint in run_dir
    projector_points: int = 1000
    monitor: str = ""  # the best epoch's measure (best.keras); "" = val_loss
    # (val_auc for triplet and mnrl runs, which validate on pairs)
    patience: int = 0  # stop after N epochs without a better --monitor; 0 = never
    verbose: int = 1  # 0 silent, 1 progress bar

    def __post_init__(self):
        if not self.run_dir:
            object.__setattr__(self, "run_dir", default_run_dir())
        if not self.grad_check_every:
            object.__setattr__(self, "grad_check_every", self.log_every)
        if not self.monitor:
            object.__setattr__(self, "monitor", "val_auc" if self.loss in BRANCH_LOSSES
                               else "val_loss")
        self.validate()
        if self.embeddings is not None:
            self._take_embedding_size()

    def _take_embedding_size(self) -> None:
        """--embeddings: the file's vector size is the embedding size. It
        replaces --features at its default (Config cannot tell a default from
        the same value typed), and any other --features must equal it; so
        config.json records the size the model really has."""
        if not os.path.isfile(self.embeddings):
            raise ConfigError("embeddings", self.embeddings, "no such file")
        dim = vectors.dimension(self.embeddings)
        if self.features == Config.__dataclass_fields__["features"].default:
            object.__setattr__(self, "features", dim)
        elif self.features != dim:
            raise ConfigError("features", self.features,
                              f"the vectors in {self.embeddings} have {dim} dimensions; "
                              f"pass --features={dim} or leave --features out")

    # -- validation ---------------------------------------------------------
    def validate(self) -> None:
        """Raises `ConfigError` (naming the flag and the value) for the first
        setting that cannot be, in this order."""
        self._validate_numbers()
        self._validate_objective()
        self._validate_data()
        self._validate_choices()
        self._validate_text()

    def _validate_numbers(self) -> None:
        """Counts, cadences, rates: their ranges."""
        positive = (
            "num_samples", "timesteps", "features", "units", "epochs",
            "batch_size", "steps_per_execution", "log_every", "histogram_every",
            "grad_check_every", "keep_checkpoints", "prototypes", "max_tokens",
            "max_length", "oov_buckets", "ngram_buckets",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(name, value, "must be a positive integer")
        if self.checkpoint_every < 0:
            raise ConfigError("checkpoint_every", self.checkpoint_every,
                              "must be >= 0 (0 = at epoch ends only)")
        if isinstance(self.intra_op_threads, bool) or not isinstance(
                self.intra_op_threads, int) or self.intra_op_threads < 0:
            raise ConfigError("intra_op_threads", self.intra_op_threads,
                              "must be >= 0 (0 = auto)")
        if self.channels not in (0, 1, 3):
            raise ConfigError("channels", self.channels, "expected 1, 3 or 0 (as stored)")
        if self.image_size:
            self.image_shape  # validates
        if self.projector_points < 0:
            raise ConfigError("projector_points", self.projector_points, "must be >= 0")
        if not 0.0 <= self.validation_split < 1.0:
            raise ConfigError("validation_split", self.validation_split,
                              "must be in [0, 1)")
        if not self.learning_rate > 0:
            raise ConfigError("learning_rate", self.learning_rate, "must be > 0")
        if not self.noise >= 0:
            raise ConfigError("noise", self.noise, "must be >= 0")
        if not self.margin > 0:
            raise ConfigError("margin", self.margin, "must be > 0")
        if not self.temperature > 0:
            raise ConfigError("temperature", self.temperature, "must be > 0")
        for name in ("mine_every", "per_group", "mini_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(name, value, "must be a non-negative integer")
        if self.mine_every == 0:
            raise ConfigError("mine_every", 0, "must be a positive integer")
        self.mine_window  # validates
        self.mine_margin_value  # validates

    def _validate_objective(self) -> None:
        """The loss and what it trains on."""
        _choice("triplets", self.triplets, TRIPLETS)
        _choice("negatives", self.negatives, NEGATIVES)
        if self.triplets != "none" and self.loss not in ("triplet", "mnrl"):
            raise ConfigError("triplets", self.triplets, "forms triplets for --loss=triplet "
                              f"or mnrl; --loss={self.loss} trains on pairs")
        if self.triplets == "from_corpus" and numeric_data(self.data):
            raise ConfigError("triplets", "from_corpus", "draws among a text pair file's "
                              f"candidates; --data={self.data} has no texts")
        if self.negatives == "hard":
            if self.triplets != "none":
                raise ConfigError("triplets", self.triplets, "--negatives=hard mines the "
                                  "triplets' negatives; leave --triplets out")
            if self.loss not in ("triplet", "mnrl"):
                raise ConfigError("negatives", "hard", "mines a negative per positive for "
                                  f"--loss=triplet or mnrl; --loss={self.loss} has none")
            if numeric_data(self.data):
                raise ConfigError("negatives", "hard", "mines among a text pair file's "
                                  "candidates (each left text's labelled positives "
                                  f"left out); --data={self.data} has no texts")
        else:
            for flag in ("mine_range", "mine_margin", "mine_every"):
                if getattr(self, flag) != Config.__dataclass_fields__[flag].default:
                    raise ConfigError(flag, getattr(self, flag),
                                      "applies to mined negatives: add --negatives=hard")
        if self.per_group and self.loss not in GROUP_LOSSES:
            raise ConfigError("per_group", self.per_group, "draws batches M per group "
                              f"for {' and '.join(GROUP_LOSSES)}; not --loss={self.loss}")
        if self.loss in GROUP_LOSSES:
            if self.per_group < 2:
                raise ConfigError("per_group", self.per_group, f"--loss={self.loss} needs "
                                  "at least 2 rows of a group in a batch (its positives)")
            if self.batch_size % self.per_group or self.batch_size < 2 * self.per_group:
                raise ConfigError("per_group", self.per_group, f"must divide --batch_size="
                                  f"{self.batch_size} into at least two groups")
        if self.mini_batch_size:
            if self.loss != "mnrl":
                raise ConfigError("mini_batch_size", self.mini_batch_size, "caches an "
                                  f"in-batch loss's encodings: --loss=mnrl, not {self.loss}")
            if self.jit_compile:
                raise ConfigError("mini_batch_size", self.mini_batch_size, "its loop over "
                                  "chunks of any number does not compile with XLA; "
                                  "leave --jit_compile out")
            if self.mini_batch_size >= self.batch_size:
                raise ConfigError("mini_batch_size", self.mini_batch_size,
                                  f"must be smaller than --batch_size={self.batch_size}")
        if self.loss in BRANCH_LOSSES and self.monitor == "val_loss":
            raise ConfigError("monitor", self.monitor, f"--loss={self.loss} validates on "
                              "pairs, which have no triplet or in-batch loss: use "
                              "val_auc, val_accuracy, val_map or val_mrr")
        if self.loss in BRANCH_LOSSES and self.class_weight != "none":
            raise ConfigError("class_weight", self.class_weight,
                              f"weighs pairs by label; --loss={self.loss} trains on "
                              "positives (and their negatives) only")

    def _validate_data(self) -> None:
        """--data, --validation_data and the image settings."""
        if self.data in BUILTIN_DATA or self.data in IMAGE_DATA:
            pass
        elif not self.data or self.data.startswith("-"):
            raise ConfigError("data", self.data, "expected synthetic, random, digits, "
                              "a pair file or a folder of class folders of images")
        elif not os.path.exists(self.data):
            if os.sep not in self.data and "." not in self.data:
                raise ConfigError("data", self.data,
                                  "unknown data source; expected synthetic, random, "
                                  "digits, a path to a .csv/.tsv/.jsonl/.npz file or "
                                  "a folder of class folders of images")
            raise ConfigError("data", self.data, "no such file or folder")
        if self.validation_data is not None and not os.path.exists(self.validation_data):
            raise ConfigError("validation_data", self.validation_data, "no such file")
        if ((self.data in BUILTIN_DATA or image_data(self.data))
                and self.validation_data is not None):
            raise ConfigError("validation_data", self.validation_data,
                              "only with a pair file as --data")
        _choice("split", self.split, SPLITS)
        images = image_data(self.data)
        if self.split == "classes" and not images:
            raise ConfigError("split", self.split, "holds out whole classes of images: "
                              "needs --data=digits or a folder of class folders")
        for flag, default in (("image_size", ""), ("channels", 0)):
            if getattr(self, flag) != default and not images:
                raise ConfigError(flag, getattr(self, flag), "applies to images: "
                                  "--data=digits or a folder of class folders")

    def _validate_choices(self) -> None:
        """Settings with a fixed set of values, and what --monitor needs."""
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("share", self.share, SHARES)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("on_nonfinite", self.on_nonfinite, ON_NONFINITE)
        _choice("class_weight", self.class_weight, CLASS_WEIGHTS)
        _choice("embedding_init", self.embedding_init, EMBEDDING_INITS)
        _choice("quoting", self.quoting, QUOTINGS)
        if self.mixed_precision is not None and self.mixed_precision not in MIXED_POLICIES:
            raise ConfigError("mixed_precision", self.mixed_precision,
                              "expected mixed_float16 or mixed_bfloat16")
        _choice("monitor", self.monitor, MONITORS)
        if self.patience < 0:
            raise ConfigError("patience", self.patience, "must be >= 0 (0 = never stop)")
        text = not numeric_data(self.data)
        if self.monitor in ("val_map", "val_mrr") and not text:
            raise ConfigError("monitor", self.monitor, "ranks each left text's candidates: "
                              "needs a text pair file (.csv/.tsv/.jsonl)")
        if self.monitor == "val_eer" and not image_data(self.data):
            raise ConfigError("monitor", self.monitor, "the equal error rate is an "
                              "image run's: needs --data=digits or a folder of images")
        if self.monitor == "val_pearson" and self.label_range is None:
            raise ConfigError("monitor", self.monitor, "needs graded labels "
                              "(--label_range)")
        if self.verbose not in (0, 1):
            raise ConfigError("verbose", self.verbose, "expected 0 or 1")

    def _validate_text(self) -> None:
        """--encoder_args, --label_range, and the settings only text has."""
        try:
            args = json.loads(self.encoder_args)
        except json.JSONDecodeError as e:
            raise ConfigError("encoder_args", self.encoder_args,
                              f"not valid JSON ({e.msg})") from None
        if not isinstance(args, dict):
            raise ConfigError("encoder_args", self.encoder_args,
                              "must be a JSON object, e.g. '{\"dropout\": 0.1}'")
        if self.label_range is not None:
            self.label_bounds  # validates
        numeric = numeric_data(self.data)
        if self.char_ngrams:
            lo, hi = _two("char_ngrams", self.char_ngrams, int,
                          "expected 'lo,hi' n-gram lengths, e.g. 3,5")
            if not 1 <= lo <= hi <= 10:
                raise ConfigError("char_ngrams", self.char_ngrams,
                                  "needs 1 <= lo <= hi <= 10")
            if numeric:
                raise ConfigError("char_ngrams", self.char_ngrams,
                                  f"needs a text pair file; --data={self.data} has no words")
        for flag, on in (("embeddings", self.embeddings is not None),
                         ("freeze_embeddings", self.freeze_embeddings)):
            if on and numeric:
                raise ConfigError(flag, getattr(self, flag),
                                  f"needs a text pair file (.csv/.tsv/.jsonl); "
                                  f"--data={self.data} has no embedding")
        if self.embeddings is not None and self.embedding_init == "idf":
            # idf sets every row's length; it would rescale the file's
            # vectors too, or (applied to missing words only) mix two scales.
            raise ConfigError("embedding_init", "idf", "rescales random embeddings; "
                              "with --embeddings the rows come from the file: use one")

    @property
    def encoder_kwargs(self) -> dict:
        return json.loads(self.encoder_args)

    @property
    def image_shape(self) -> Optional[tuple]:
        """--image_size as (height, width), or None (as stored)."""
        if not self.image_size:
            return None
        height, width = _two("image_size", self.image_size, int,
                             "expected 'height,width' in pixels, e.g. 28,28")
        if height <= 0 or width <= 0:
            raise ConfigError("image_size", self.image_size, "needs positive sizes")
        return height, width

    @property
    def row_negatives(self) -> bool:
        """Whether each training row carries a negative of its own: triplets
        (a file's, drawn from the groups, or mined)."""
        return self.loss in ("triplet", "mnrl") and (
            self.loss == "triplet" or self.triplets != "none" or self.negatives == "hard")

    @property
    def mine_window(self) -> tuple:
        """--mine_range as (lo, hi) (`mine_window`)."""
        return mine_window(self.mine_range)

    @property
    def mine_margin_value(self) -> Optional[float]:
        """--mine_margin as a float, or None (`mine_margin`)."""
        return mine_margin(self.mine_margin)

    @property
    def label_bounds(self) -> Optional[tuple]:
        if self.label_range is None:
            return None
        lo, hi = _two("label_range", self.label_range, float,
                      "expected two numbers 'lo,hi', e.g. 1,5")
        if not hi > lo:
            raise ConfigError("label_range", self.label_range, "needs lo < hi")
        return lo, hi

    # -- (de)serialisation --------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def field_names(cls) -> tuple:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


def mine_window(value: str) -> tuple:
    """--mine_range "lo,hi" as (lo, hi): the ranks, among an anchor's
    non-positive candidates nearest first, that mined negatives come from
    (train.py's flag and the mining tool's)."""
    lo, hi = _two("mine_range", value, int, "expected 'lo,hi' ranks, e.g. 1,10")
    if not 0 <= lo < hi:
        raise ConfigError("mine_range", value, "needs 0 <= lo < hi")
    return lo, hi


def mine_margin(value: str) -> Optional[float]:
    """--mine_margin as a float (a distance), or None for "" (no margin)."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigError("mine_margin", value,
                          "expected a number (a distance), or nothing") from None


def _two(flag: str, value: str, kind, expected: str) -> tuple:
    """`value` "a,b" as two numbers of `kind`; ConfigError(`expected`) else."""
    try:
        a, b = (kind(p) for p in value.split(","))
    except ValueError:
        raise ConfigError(flag, value, expected) from None
    return a, b


def _choice(flag: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(flag, value, f"expected one of {', '.join(choices)}")
