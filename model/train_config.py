"""The trainer's configuration, and the parts of HashNet it selects (the ablation switches)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from model.continuation import BetaSchedule, ContinuationSchedule, FixedBeta
from model.hashnet import ACTIVATIONS, Activation
from model.loss import PairwiseLikelihoodLoss, class_balanced_weights, uniform_weights

FINETUNE = "finetune"
FROZEN = "frozen"
OPTIMIZERS = ("adam", "sgd")

# Per-mode defaults of the CLI. Frozen training is cheap per iteration, and
# large batches hold more similar pairs: on grocery (224 px, 64 bits) 600
# epochs of 256 reach mAP 0.73 against 0.65 for 100 epochs of 64.
MODE_DEFAULTS = {FINETUNE: {"epochs": 20, "batch_size": 64}, FROZEN: {"epochs": 600, "batch_size": 256}}

# Fields that may differ when a run is resumed: they change how long or where
# it runs, not what it learns.
RESUMABLE_CHANGES = {"epochs", "workers", "device", "save_every", "resume", "evaluate", "eval_db_limit", "cache_dir"}

# Fields only the HashNet stage reads: runs that differ in nothing else share
# one warm-up (--warmup-from), e.g. heads of every code length on one tuned backbone.
# The optimizer counts through warmup_optimizer_kind.
HASHNET_STAGE_FIELDS = {
    "out", "bits", "mode", "epochs", "batch_size", "optimizer", "lr", "cache_activations", "per_class", "weighting",
    "continuation", "fixed_beta", "sign_train", "beta_step", "beta_gamma", "alpha", "warmup_from",
}


@dataclass(frozen=True)
class TrainConfig:
    data: str  # grocery | cifar10 | folder:PATH | list:FILE
    out: str  # run directory
    data_dir: str | None = None  # None: DEEPHASH_DATA_DIR or ../shared/data
    bits: int = 64
    backbone: str = "efficientnet_lite0"
    backbone_weights: str | None = "imagenet"  # "imagenet", a state-dict path, or None (random)
    mode: str = FINETUNE
    epochs: int = 20  # MODE_DEFAULTS gives the CLI's per mode
    batch_size: int = 64
    # Adam trains the hash layer far better than SGD on Lite0 features (grocery,
    # frozen, 64 bits: mAP 0.55 vs 0.52 at equal epochs, and SGD diverges at
    # rates Adam tolerates): the pooled features are large, so SGD's step in z
    # scales with |f|^2 while Adam's does not.
    optimizer: str = "adam"  # adam | sgd (momentum 0.9, the paper's)
    lr: float = 1e-4  # the backbone's; the hash layer gets 10x this
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"  # cosine | constant
    image_size: int = 128
    augment: bool = True  # random resized crop + flip; frozen mode and cached activations train without
    freeze_stages: int = 0  # finetune: backbone stages (stem, blocks, head) kept fixed
    # Statistics from augmented batches of a small set can move features away from
    # a head trained on the pretrained ones: one epoch of them (weights untouched)
    # lowered the default grocery head's mAP from 0.739 to 0.604.
    frozen_bn_statistics: bool = False  # finetune and warm-up: BatchNorm keeps its running statistics (eval mode)
    # The classification warm-up (model.warmup): epochs of softmax fine-tuning of
    # the backbone before HashNet trains; 0 skips it.
    warmup_epochs: int = 0
    warmup_lr: float = 5e-5  # the backbone's; the classifier gets 10x this
    warmup_batch_size: int = 32
    warmup_label_smoothing: float = 0.0  # the share of each target spread over all classes
    warmup_optimizer: str | None = None  # adam | sgd; None: the main stage's (optimizer)
    warmup_cutmix: float = 0.0  # CutMix's Beta(alpha, alpha) for the warm-up's batches (model.cutmix); 0: off
    warmup_from: str | None = None  # a run directory whose finished warm-up (same warm-up recipe) replaces this run's own
    init_from: str | None = None  # a checkpoint (same backbone and bits) whose weights training starts from
    cache_activations: bool = False  # finetune: cache the frozen stages' outputs (needs augment off)
    per_class: int = 1  # batches from runs of this many images of one class (model.batch_order); 1: plain shuffle
    weighting: bool = True  # class-balance pair weights (off: the "no weighting" ablation)
    continuation: bool = True  # beta schedule (off: fixed beta, the "no continuation" ablation)
    fixed_beta: float = 1.0
    sign_train: bool = False  # train through sign (straight-through) instead of tanh(beta z)
    beta_step: int = 200
    beta_gamma: float = 0.005
    alpha: float | None = None  # None: 10 / bits
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    save_every: int = 0  # iterations between resumable saves; 0: every epoch
    evaluate: bool = True  # quick mAP at the end (query split against the database)
    eval_db_limit: int = 10000  # quick mAP uses at most this many database images (seeded sample)
    cache_dir: str = "runs/cache"
    resume: bool = False

    def __post_init__(self) -> None:
        if self.mode not in (FINETUNE, FROZEN):
            raise ValueError(f"mode must be {FINETUNE!r} or {FROZEN!r}, got {self.mode!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.warmup_optimizer not in (*OPTIMIZERS, None):
            raise ValueError(f"warmup_optimizer must be one of {OPTIMIZERS} or None, got {self.warmup_optimizer!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.cache_activations and self.augment and self.mode == FINETUNE:
            raise ValueError("cached activations are computed once, without augmentation: turn augmentation off")
        if not 1 <= self.per_class <= self.batch_size:
            raise ValueError(f"per_class must be between 1 and the batch size ({self.batch_size}), got {self.per_class}")
        if self.warmup_epochs < 0 or self.warmup_batch_size < 1 or not 0.0 <= self.warmup_label_smoothing < 1.0 or self.warmup_cutmix < 0:
            raise ValueError("need warmup_epochs >= 0, warmup_batch_size >= 1, 0 <= warmup_label_smoothing < 1 and warmup_cutmix >= 0")
        if self.warmup_from is not None and self.warmup_epochs == 0:
            raise ValueError("warmup_from needs the warm-up's recipe: give warmup_epochs and the other warm-up settings it was trained with")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("need epochs >= 1 and batch_size >= 2 (the loss compares pairs)")

    @property
    def warmup_optimizer_kind(self) -> str:
        return self.warmup_optimizer or self.optimizer

    @property
    def uses_cache(self) -> bool:
        return self.mode == FROZEN or self.cache_activations

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def beta_schedule(self) -> BetaSchedule:
        if self.continuation:
            return ContinuationSchedule(step=self.beta_step, gamma=self.beta_gamma)
        return FixedBeta(self.fixed_beta)

    def loss(self) -> PairwiseLikelihoodLoss:
        return PairwiseLikelihoodLoss(alpha=self.alpha, weighting=class_balanced_weights if self.weighting else uniform_weights)

    def activation(self) -> Activation:
        return ACTIVATIONS["sign" if self.sign_train else "tanh"]

    def differences_for_resume(self, saved: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Fields that differ from a saved run's and may not change on resume."""
        return _differences(self.to_dict(), saved.to_dict(), RESUMABLE_CHANGES)

    def warmup_differences(self, saved: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Fields that make a saved run's warm-up another recipe than this run's."""
        mine, theirs = ({**config.to_dict(), "warmup_optimizer": config.warmup_optimizer_kind} for config in (self, saved))
        return _differences(mine, theirs, RESUMABLE_CHANGES | HASHNET_STAGE_FIELDS)


def _differences(mine: dict[str, Any], theirs: dict[str, Any], ignored: set[str]) -> dict[str, tuple[Any, Any]]:
    """{field: (saved value, this value)} for the fields outside `ignored` that differ."""
    return {key: (theirs[key], mine[key]) for key in mine if key not in ignored and mine[key] != theirs[key]}
