"""HashNet model results: every row's exact train + evaluate commands, run or collected into tables.

    python -m bench.hashnet_bench --only c10-ft-64        # train and evaluate one row (skips what is done)
    python -m bench.hashnet_bench --group ablation        # every row of a group
    python -m bench.hashnet_bench --collect               # only read runs/ and write the tables

Each row is a `model.train` command (its run directory under runs/) and a
`model.evaluate` command (its report under RUN/eval). Jobs run one at a time
under `nice -n 19`, since the machine is shared with other benchmarks. A row
whose run directory already holds summary.json (training) or whose eval
directory holds summary.json (evaluation) is not run again unless --force.
Evaluations share one feature cache (runs/eval-cache): every head-only
checkpoint over the ImageNet Lite0 at the same input size reuses the same
encoded CIFAR-10 database.

Results: bench/results/hashnet.md (Markdown tables) and bench/results/hashnet.json
(every row's command, training summary, evaluation metrics and times).
Nothing here is typed in by hand: a cell without a finished run says "-".
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

from bench.report import cpu_model, markdown_table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BACKBONE = "efficientnet_lite0"
BACKBONE_NAMES = {DEFAULT_BACKBONE: "EfficientNet-Lite0", "efficientnet_lite2": "EfficientNet-Lite2"}
RUNS = Path("runs")
EVAL_CACHE = RUNS / "eval-cache"
RESULTS = ROOT / "bench" / "results"
FIGURES = RESULTS / "figures"
PYTHON = sys.executable
NICE = ["nice", "-n", "19"]

# CIFAR-10 end to end at 128 px: the stem and blocks 0-7 of Lite0 stay at their
# ImageNet weights and their outputs (80 x 8 x 8 per image) are computed once;
# blocks 8-15, the 1x1 head conv and the hash layer train (see the report for why).
CIFAR_FINETUNE = ["--mode", "finetune", "--image-size", "128", "--freeze-stages", "9", "--cache-activations",
                  "--epochs", "12", "--lr", "3e-4", "--beta-step", "100", "--beta-gamma", "0.05", "--eval-db-limit", "3000"]


class EndToEnd(NamedTuple):
    """CIFAR-10 end to end with nothing frozen, as the paper trains: every stage with random resized crops and flips
    (so no activation cache), epochs of 78 batches of 64; the hash layer always gets 10x the rate."""

    lr: str
    image_size: int = 128
    backbone: str = DEFAULT_BACKBONE
    epochs: int = 20


CIFAR_END_TO_END = {"c10-e2e": EndToEnd("1e-4"), "c10-e2e-lr3e-4": EndToEnd("3e-4"), "c10-e2e-lr1e-3": EndToEnd("1e-3"),
                    "c10-e2e160-lr1e-3": EndToEnd("1e-3", 160),
                    "c10-lite2-e2e-lr1e-3": EndToEnd("1e-3", backbone="efficientnet_lite2"),
                    "c10-e2e40-lr1e-3": EndToEnd("1e-3", epochs=40),
                    # Lite0's native input size: 10 epochs, half the hour at 36 ms an image a step.
                    "c10-e2e224-lr1e-3": EndToEnd("1e-3", 224, epochs=10)}  # row prefix -> recipe


def cifar_end_to_end(recipe: EndToEnd) -> list[str]:
    return ["--mode", "finetune", "--image-size", str(recipe.image_size), "--epochs", str(recipe.epochs), "--lr", recipe.lr,
            "--beta-step", "100", "--beta-gamma", "0.05", "--eval-db-limit", "3000"]


# The first recipe at Lite0's native 224 px (blocks 8-15 then see 14 x 14 maps instead of 8 x 8).
CIFAR_FINETUNE_224 = [*CIFAR_FINETUNE[:2], "--image-size", "224", *CIFAR_FINETUNE[4:]]
# Frozen mode: the hash layer alone on pooled ImageNet Lite0 features (the trainer's defaults but 300 epochs
# of 19 batches of 256, 5,700 steps, to save time; these rows are the pretrained baselines and the ablations).
CIFAR_FROZEN = ["--mode", "frozen", "--image-size", "128", "--epochs", "300", "--eval-db-limit", "2000"]
# Grocery end to end: the CIFAR-10 recipe at 160 px (10 epochs of 41 batches, beta every 40 steps), and at the
# default checkpoint's 224 px for 30 epochs (1,230 steps).
GROCERY_FINETUNE = ["--mode", "finetune", "--image-size", "160", "--freeze-stages", "9", "--cache-activations",
                    "--epochs", "10", "--lr", "3e-4", "--beta-step", "40", "--beta-gamma", "0.1"]
GROCERY_FINETUNE_224 = ["--mode", "finetune", "--image-size", "224", "--freeze-stages", "9", "--cache-activations",
                        "--epochs", "30", "--lr", "3e-4", "--beta-step", "100", "--beta-gamma", "0.05"]
# Grocery end to end with nothing frozen, augmented, at 192 px (12 epochs of 41 batches, beta every 40 steps);
# per class > 1 builds the batches from runs of that many images of one class (81 classes leave a shuffled
# batch of 64 with about 0.8 similar partners an image).
GROCERY_END_TO_END = {"grocery-e2e-64": ("1e-4", 1), "grocery-e2e-lr1e-3-64": ("1e-3", 1),
                      "grocery-e2e-pk4-64": ("1e-4", 4)}  # row id -> (learning rate, per class)


def grocery_frozen(image_size: int = 224) -> list[str]:
    """The default checkpoint's recipe; larger inputs than 224 px test whether the photos' detail (about 348 px) helps."""
    return ["--mode", "frozen", "--image-size", str(image_size), "--epochs", "1000"]


def grocery_end_to_end(lr: str, per_class: int) -> list[str]:
    grouping = ["--per-class", str(per_class)] if per_class > 1 else []
    return ["--mode", "finetune", "--image-size", "192", "--epochs", "12", "--lr", lr, "--beta-step", "40",
            "--beta-gamma", "0.1", *grouping]

# Grocery from a trained head (a linear probe, then fine-tuning): every stage at the head's input size, augmented,
# batches of 4-image runs of one class; BatchNorm statistics updated from the training batches, or kept.
@dataclass(frozen=True)
class FromHead:
    lr: str
    kept_statistics: bool
    start: str = "model/default"  # the head's checkpoint (directory)
    start_name: str = "model/default's head"
    backbone: str = DEFAULT_BACKBONE
    image_size: int = 224
    epochs: int = 8
    batch_size: int = 64

    def train_arguments(self) -> list[str]:
        # beta moves every 3,200 training images whatever the batch size (50 batches of 64).
        batch = ["--batch-size", str(self.batch_size)] if self.batch_size != 64 else []
        return ["--mode", "finetune", "--image-size", str(self.image_size), "--epochs", str(self.epochs),
                "--per-class", "4", *batch, "--init-from", self.start, "--beta-step", str(3200 // self.batch_size),
                "--beta-gamma", "0.15", "--lr", self.lr, *(["--frozen-bn-statistics"] if self.kept_statistics else [])]

    def note(self) -> str:
        batch = f", batches of {self.batch_size}" if self.batch_size != 64 else ""
        return (f"from {self.start_name}, end to end, {self.image_size} px, augmented, {self.epochs} epochs{batch}, "
                f"learning rate {self.lr}, BatchNorm statistics {'kept' if self.kept_statistics else 'updated'}")


# Lite2 at 320 px costs about 3.4x Lite0 at 224 px a step; batches of 32 keep its activations in memory, and the
# learning rate halves with the batch.
LITE2_HEAD = dict(start="runs/grocery-lite2-frozen320-64", start_name="the Lite2 320-px head (grocery-lite2-frozen320-64)",
                  backbone="efficientnet_lite2", image_size=320, batch_size=32)
GROCERY_FROM_HEAD_ROWS = {
    "grocery-lpft-64": FromHead("3e-5", False), "grocery-lpft-fbn-64": FromHead("3e-5", True),
    "grocery-lpft-fbn-lr1e-4-64": FromHead("1e-4", True),
    "grocery-lite2-lpft-fbn-64": FromHead("5e-5", True, **LITE2_HEAD, epochs=6),
    "grocery-lite2-lpft-fbn-e10-64": FromHead("5e-5", True, **LITE2_HEAD, epochs=10),
    "grocery-lite2-lpft-fbn-lr1e-4-64": FromHead("1e-4", True, **LITE2_HEAD, epochs=6),
}

# A softmax warm-up (model.warmup): every stage of EfficientNet-Lite2 fine-tuned for some epochs of batches of 32
# with a softmax over the classes (the classifier at 10x the backbone's rate, random resized crops and flips), then
# a head on the tuned backbone's frozen features. Grocery keeps BatchNorm's ImageNet statistics (new statistics
# broke every grocery fine-tuning run). The CIFAR-10 rows updated them at first, as its end-to-end runs do, on the
# reasoning that its 32-px images upscaled to 128 px are not ImageNet-like; kept, at 1e-4, they score best
# (c10-lite2-warmup-fbn-e10-64).
@dataclass(frozen=True)
class Warmup:
    label_smoothing: str
    image_size: int
    head_extra: tuple[str, ...] = ()  # the head stage's arguments beyond the default head recipe (grocery_frozen)
    epochs: int = 6
    lr: str = "5e-5"
    kept_statistics: bool = True
    cutmix: str | None = None  # CutMix's alpha
    bits: int = 64
    alpha: str | None = None  # the head's --alpha (None: 10 / bits)
    reuse: str | None = None  # the row whose finished warm-up (the same recipe) this row's head trains on
    freeze_stages: int = 0  # backbone stages (stem, blocks) the warm-up keeps at their ImageNet weights
    seed: int = 0

    def train_arguments(self) -> list[str]:
        statistics = ["--frozen-bn-statistics"] if self.kept_statistics else []
        cutmix = ["--warmup-cutmix", self.cutmix] if self.cutmix else []
        alpha = ["--alpha", self.alpha] if self.alpha else []
        reuse = ["--warmup-from", str(RUNS / self.reuse)] if self.reuse else []
        frozen = ["--freeze-stages", str(self.freeze_stages)] if self.freeze_stages else []
        seed = ["--seed", str(self.seed)] if self.seed else []
        return [*grocery_frozen(self.image_size), *self.head_extra, *alpha, *frozen, *seed,
                "--warmup-epochs", str(self.epochs), "--warmup-lr", self.lr, "--warmup-label-smoothing",
                self.label_smoothing, *cutmix, *statistics, *reuse]

    def note(self) -> str:
        cutmix = f", CutMix alpha {self.cutmix}" if self.cutmix else ""
        alpha = f" with alpha {self.alpha}" if self.alpha else ""
        reused = f"; the warm-up is {self.reuse}'s, reused (--warmup-from), and counted in the train time" if self.reuse else ""
        seed = f", seed {self.seed}" if self.seed else ""
        stages = f"the stem and blocks 0-{self.freeze_stages - 2} fixed" if self.freeze_stages else "every stage"
        return (f"softmax warm-up of EfficientNet-Lite2 ({stages}, {self.image_size} px, augmented{cutmix}, {self.epochs} "
                f"epochs, batches of 32, learning rate {self.lr}, label smoothing {self.label_smoothing}, BatchNorm "
                f"statistics {'kept' if self.kept_statistics else 'updated'}{seed}), then a head (as the default{alpha}) "
                f"on its features{reused}")


GROCERY_WARMUP = {
    "grocery-lite2-warmup-ls-64": Warmup("0.1", 320), "grocery-lite2-warmup-64": Warmup("0.0", 320),
    "grocery-lite2-warmup-ls-e10-64": Warmup("0.1", 320, epochs=10),
}
# CIFAR-10 at 128 px: the end-to-end runs' learning rate (1e-3 beat 3e-4 here too: quick mAP 0.734 against 0.695
# after 3 warm-up epochs), 20 epochs as they train; the head as the frozen rows train theirs, 1,000 epochs.
CIFAR_WARMUP_HEAD = dict(image_size=128, head_extra=("--eval-db-limit", "3000"), lr="1e-3", kept_statistics=False)
# BatchNorm's ImageNet statistics kept: 1e-3 does not train that way (chance after the first epoch), 1e-4 does.
CIFAR_KEPT_STATISTICS = {**CIFAR_WARMUP_HEAD, "lr": "1e-4", "kept_statistics": True}
# The best CIFAR-10 run: the stem and the first four blocks (the 16- and 24-channel stages, at 64 and 32 px) keep
# their ImageNet weights, which costs a third less a step (21 against 31 ms an image), so 28 epochs fit where 20 did.
CIFAR_BEST = "c10-lite2-warmup-fbn-cutmix-f5-e28-64"
CIFAR_BEST_WARMUP = Warmup("0.1", **CIFAR_KEPT_STATISTICS, epochs=28, cutmix="1.0", freeze_stages=5)
# The best run before it (every stage trained, 20 epochs), whose warm-up the low-alpha heads below reuse.
CIFAR_E20 = "c10-lite2-warmup-fbn-cutmix-e20-64"
CIFAR_E20_WARMUP = Warmup("0.1", **CIFAR_KEPT_STATISTICS, epochs=20, cutmix="1.0")
CIFAR_WARMUP = {"c10-lite2-warmup-ls-64": Warmup("0.1", **CIFAR_WARMUP_HEAD, epochs=20),
                "c10-lite2-warmup-ls-e30-64": Warmup("0.1", **CIFAR_WARMUP_HEAD, epochs=30),
                "c10-lite2-warmup-cutmix-64": Warmup("0.1", **CIFAR_WARMUP_HEAD, epochs=20, cutmix="1.0"),
                "c10-lite2-warmup-cutmix-e30-64": Warmup("0.1", **CIFAR_WARMUP_HEAD, epochs=30, cutmix="1.0"),
                "c10-lite2-warmup-cutmix-e40-64": Warmup("0.1", **CIFAR_WARMUP_HEAD, epochs=40, cutmix="1.0"),
                "c10-lite2-warmup-fbn-e10-64": Warmup("0.1", **CIFAR_KEPT_STATISTICS, epochs=10),
                "c10-lite2-warmup-fbn224-e3-64": Warmup("0.1", **{**CIFAR_KEPT_STATISTICS, "image_size": 224}, epochs=3),
                CIFAR_E20: CIFAR_E20_WARMUP,
                CIFAR_BEST: CIFAR_BEST_WARMUP,
                # The same recipe from another seed (batch order, CutMix draws, the classifier's and head's start).
                f"{CIFAR_BEST.removesuffix('-64')}-s1-64": replace(CIFAR_BEST_WARMUP, seed=1)}
# The best run's shorter codes: heads with the paper's alpha on its warm-up.
CIFAR_BEST_BY_LENGTH = {
    f"{CIFAR_BEST.removesuffix('-64')}-{bits}": replace(CIFAR_BEST_WARMUP, bits=bits, reuse=CIFAR_BEST) for bits in (48, 32, 16)
}
# Heads on CIFAR_E20's warm-up with a third of the paper's alpha (3.2 / bits): quick mAP
# (1,000 queries against 10,000 database images) at 64 bits 0.838, 0.841, 0.847, 0.847, 0.845, 0.841 and 0.839 for
# alpha 0.02, 0.03, 0.04, 0.05, 0.08, 0.156 (10 / 64) and 0.3; chosen on the query split, which the protocol has no
# validation split beside, so the best run (CIFAR_BEST) keeps the paper's alpha.
CIFAR_LOW_ALPHA = {
    f"{CIFAR_E20.removesuffix('-64')}-a3.2-{bits}": replace(CIFAR_E20_WARMUP, bits=bits, alpha=f"{3.2 / bits:.4g}", reuse=CIFAR_E20)
    for bits in (64, 48, 32, 16)
}


BASELINES = ["--baselines", "lsh,itq,cosine"]
# The first 9 stages are the ImageNet weights in every CIFAR-10 checkpoint here (fine-tuned with them frozen, or
# head only): their outputs for the 60,000 images are computed once and shared by every evaluation.
CIFAR_EVAL = ["--prefix-stages", "9"]
ABLATIONS = {
    "full": [],
    "no-weighting": ["--no-weighting"],
    "no-continuation": ["--no-continuation"],  # beta fixed at 1
    "sign-train": ["--sign-train"],
}


@dataclass
class Row:
    id: str
    group: str  # cifar | cifar-extra | cifar-frozen | grocery | ablation
    data: str
    bits: int
    train: list[str] | None  # model.train arguments (None: an existing checkpoint)
    checkpoint: str | None = None  # for rows without training
    eval_extra: list[str] = field(default_factory=list)
    variant: str = "full"
    mode: str = "finetune"
    note: str = ""
    backbone: str = DEFAULT_BACKBONE

    @property
    def run_dir(self) -> Path:
        return RUNS / self.id

    @property
    def eval_dir(self) -> Path:
        return self.run_dir / "eval"

    def checkpoint_path(self) -> Path:
        if self.checkpoint is not None:
            return Path(self.checkpoint)
        return self.run_dir / f"hashnet-{self.backbone}-{self.bits}.safetensors"

    def train_command(self) -> list[str] | None:
        if self.train is None:
            return None
        backbone = [] if self.backbone == DEFAULT_BACKBONE else ["--backbone", self.backbone]
        return [*NICE, PYTHON, "-m", "model.train", "--data", self.data, "--bits", str(self.bits), *backbone, *self.train,
                "--out", str(self.run_dir)]

    def eval_command(self) -> list[str]:
        return [*NICE, PYTHON, "-m", "model.evaluate", "--checkpoint", str(self.checkpoint_path()), "--data", self.data,
                "--out", str(self.eval_dir), "--cache-dir", str(EVAL_CACHE), *BASELINES, *self.eval_extra]


def rows() -> list[Row]:
    table: list[Row] = []
    for bits in (16, 32, 48, 64):
        extra = ["--tsne", "--run-dir", str(RUNS / f"c10-ft-{bits}")] if bits == 64 else []
        table.append(Row(f"c10-ft-{bits}", "cifar", "cifar10", bits, CIFAR_FINETUNE, eval_extra=[*CIFAR_EVAL, *extra]))
        table.append(Row(f"c10-frozen-{bits}", "cifar-frozen", "cifar10", bits, CIFAR_FROZEN, eval_extra=CIFAR_EVAL,
                         mode="frozen"))
    for prefix, recipe in CIFAR_END_TO_END.items():
        tsne = ["--tsne", "--run-dir", str(RUNS / "c10-e2e-64")] if prefix == "c10-e2e" else []
        table.append(Row(f"{prefix}-64", "cifar-extra", "cifar10", 64, cifar_end_to_end(recipe), eval_extra=tsne,
                         backbone=recipe.backbone))
    table.append(Row("c10-ft224-64", "cifar-extra", "cifar10", 64, CIFAR_FINETUNE_224, eval_extra=CIFAR_EVAL))
    # Lite2's ImageNet features: the ITQ and LSH of the paper's comparison for the Lite2 rows.
    for bits in (64, 48, 32, 16):
        table.append(Row(f"c10-lite2-frozen-{bits}", "cifar-extra", "cifar10", bits, CIFAR_FROZEN, mode="frozen",
                         backbone="efficientnet_lite2", note="head only on EfficientNet-Lite2's ImageNet features, 128 px"))
    table.append(Row("grocery-default", "grocery", "grocery", 64, None, checkpoint="model/default/hashnet-lite0-64.safetensors",
                     mode="frozen", note="model/default (as shipped)"))
    table.append(Row("grocery-ft-64", "grocery", "grocery", 64, GROCERY_FINETUNE, eval_extra=["--prefix-stages", "9"],
                     note="fine-tuned, 160 px, 10 epochs, blocks 8-15 + head trained"))
    table.append(Row("grocery-ft-64-224", "grocery", "grocery", 64, GROCERY_FINETUNE_224, eval_extra=["--prefix-stages", "9"],
                     note="fine-tuned, 224 px, 30 epochs, blocks 8-15 + head trained"))
    for row_id, (lr, per_class) in GROCERY_END_TO_END.items():
        grouping = f", batches of {per_class}-image runs of one class" if per_class > 1 else ""
        table.append(Row(row_id, "grocery", "grocery", 64, grocery_end_to_end(lr, per_class),
                         note=f"end to end, every stage trained, 192 px, augmented, 12 epochs, learning rate {lr}{grouping}"))
    table.append(Row("grocery-frozen288-64", "grocery", "grocery", 64, grocery_frozen(288), mode="frozen",
                     note="head only (as the default), 288 px"))
    for row_id, image_size in (("grocery-lite2-frozen-64", 260), ("grocery-lite2-frozen320-64", 320),
                                ("grocery-lite2-frozen384-64", 384)):
        table.append(Row(row_id, "grocery", "grocery", 64, grocery_frozen(image_size), mode="frozen",
                         backbone="efficientnet_lite2",
                         note=f"head only (as the default) on EfficientNet-Lite2, {image_size} px"))
    # After the heads they start from.
    for row_id, recipe in GROCERY_FROM_HEAD_ROWS.items():
        table.append(Row(row_id, "grocery", "grocery", 64, recipe.train_arguments(), note=recipe.note(),
                         backbone=recipe.backbone))
    for group, data, warmups in (("grocery", "grocery", GROCERY_WARMUP), ("cifar-extra", "cifar10", CIFAR_WARMUP),
                                 ("cifar-extra", "cifar10", CIFAR_LOW_ALPHA), ("cifar-extra", "cifar10", CIFAR_BEST_BY_LENGTH)):
        for row_id, warmup in warmups.items():
            table.append(Row(row_id, group, data, warmup.bits, warmup.train_arguments(), mode="frozen",
                             backbone="efficientnet_lite2", note=warmup.note()))
    # The grocery "full" ablation row is model/default itself: its README's command is grocery_frozen() at 64 bits
    # (seed 0, deterministic: a second run reproduced it bit for bit), so it is not trained again.
    for variant, flags in ABLATIONS.items():
        if variant != "full":
            table.append(Row(f"c10-frozen-64-{variant}", "ablation", "cifar10", 64, [*CIFAR_FROZEN, *flags],
                             eval_extra=CIFAR_EVAL, variant=variant, mode="frozen"))
            table.append(Row(f"grocery-frozen-64-{variant}", "ablation", "grocery", 64, [*grocery_frozen(), *flags],
                             variant=variant, mode="frozen"))
    table.append(Row("c10-ft-64-no-weighting", "ablation", "cifar10", 64, [*CIFAR_FINETUNE, "--no-weighting"],
                     eval_extra=CIFAR_EVAL, variant="no-weighting"))
    return table


# ------------------------------------------------------------------ running


def _run_logged(command: list[str], log_path: Path) -> dict[str, Any]:
    """Run one job, its output into log_path; wall time, the CPU it ran on and the machine's load around it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print("$", shlex.join(command), flush=True)
    load_before = os.getloadavg()
    started = time.perf_counter()
    with open(log_path, "w") as log:
        result = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"command failed ({result.returncode}); see {log_path}")
    return {"wall_seconds": seconds, "load_before": load_before, "load_after": os.getloadavg(), "cpu": cpu_model()}


def linear_probe(row: Row) -> dict[str, Any]:
    """Test accuracy of a softmax classifier on the frozen backbone features of a head-only row's evaluation.

    A hash layer is linear in those features, so this is roughly the best P@1 a head-only checkpoint can
    reach on them. Reads the features the evaluation cached; L-BFGS, 300 iterations, L2 1e-4.
    """
    import numpy as np
    import torch

    from model.data import load_splits
    from model.encoder import Encoder
    from model.evaluate import read_cached_encoding

    encoder = Encoder.from_checkpoint(ROOT / row.checkpoint_path(), device="cpu")
    splits = load_splits(row.data)
    arrays = {}
    for name, images in (("query", splits.query), ("database", splits.database)):
        cached = read_cached_encoding(encoder, name, images, ROOT / EVAL_CACHE)
        if cached is None:
            raise RuntimeError(f"{row.id}: no cached {name} features in {EVAL_CACHE}; run its evaluation first")
        arrays[name] = torch.from_numpy(cached.features.astype(np.float32))
    train_labels = torch.from_numpy(splits.train.labels.argmax(1))
    test_labels = torch.from_numpy(splits.query.labels.argmax(1))
    torch.manual_seed(0)
    classifier = torch.nn.Linear(arrays["database"].shape[1], splits.train.labels.shape[1])
    optimizer = torch.optim.LBFGS(classifier.parameters(), max_iter=300, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(classifier(arrays["database"]), train_labels)
        loss = loss + 1e-4 * classifier.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        accuracy = (classifier(arrays["query"]).argmax(1) == test_labels).float().mean().item()
    return {"linear_probe_test_accuracy": accuracy, "features": f"{row.checkpoint_path()} backbone, "
            f"{encoder.preprocess.input_size} px", "train": len(splits.train), "test": len(splits.query)}


PROBED = {"grocery-default", "grocery-lite2-frozen-64"}


def run_row(row: Row, force: bool) -> None:
    command = row.train_command()
    if command is not None and (force or not (ROOT / row.run_dir / "summary.json").is_file()):
        timing = _run_logged(command, ROOT / row.run_dir / "train.out")
        (ROOT / row.run_dir / "driver_train.json").write_text(json.dumps(timing, indent=2) + "\n")
    if force or not (ROOT / row.eval_dir / "summary.json").is_file():
        timing = _run_logged(row.eval_command(), ROOT / row.eval_dir / "evaluate.out")
        (ROOT / row.eval_dir / "driver_eval.json").write_text(json.dumps(timing, indent=2) + "\n")
    if row.id in PROBED and (force or not (ROOT / row.eval_dir / "probe.json").is_file()):
        (ROOT / row.eval_dir / "probe.json").write_text(json.dumps(linear_probe(row), indent=2) + "\n")


# ---------------------------------------------------------------- collecting


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _warmup_seconds(summary: dict[str, Any]) -> float | None:
    """The warm-up's training time; for one reused from another run (--warmup-from), the time that run took."""
    warmup = summary.get("warmup", {})
    if "seconds" not in warmup and "reloaded_from" in warmup:
        warmup = (_read_json(ROOT / Path(warmup["reloaded_from"]).parent / "summary.json") or {}).get("warmup", {})
    return warmup.get("seconds")


def collect_row(row: Row) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": row.id, "group": row.group, "data": row.data, "bits": row.bits, "mode": row.mode, "variant": row.variant,
        "train_command": shlex.join(_relative(row.train_command())) if row.train else None,
        "eval_command": shlex.join(_relative(row.eval_command())),
        "note": row.note,
    }
    summary = _read_json(ROOT / row.run_dir / "summary.json")
    if summary is not None:
        config = _read_json(ROOT / row.checkpoint_path().with_suffix(".json")) or {}
        record["train"] = {key: summary.get(key) for key in (
            "iterations", "training_seconds", "training_cpu_seconds", "seconds_per_iteration", "ms_per_image_step",
            "total_seconds", "fingerprint", "quick_map")}
        record["train"]["warmup_seconds"] = _warmup_seconds(summary)
        record["train"]["batch_size"] = config.get("training", {}).get("batch_size")
        record["train"]["epochs"] = config.get("training", {}).get("epochs")
        driver = _read_json(ROOT / row.run_dir / "driver_train.json")
        if driver is not None:
            record["train"]["driver"] = driver
    report = _read_json(ROOT / row.eval_dir / "summary.json")
    if report is not None:
        record["eval"] = {
            "fingerprint": report["run"]["fingerprint"],
            "n_queries": report["n_queries"],
            "n_database": report["n_database"],
            "methods": {name: method["metrics"] for name, method in report["methods"].items()},
            "figures": report.get("figures", []),
        }
        driver = _read_json(ROOT / row.eval_dir / "driver_eval.json")
        if driver is not None:
            record["eval"]["driver"] = driver
        probe = _read_json(ROOT / row.eval_dir / "probe.json")
        if probe is not None:
            record["eval"]["probe"] = probe
    drivers = [record.get(stage, {}).get("driver", {}) for stage in ("train", "eval")]
    record["cpu"] = next((driver["cpu"] for driver in drivers if "cpu" in driver), cpu_model())
    return record


def _relative(command: list[str] | None) -> list[str]:
    """Commands as run from the repository root, with `python` for the venv's interpreter."""
    return ["python" if part == PYTHON else part for part in command or []]


def machine() -> dict[str, Any]:
    import torch

    memory = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), "0")
    return {"cores": len(os.sched_getaffinity(0)), "memory_gib": round(int(memory) / 2**20, 1),
            "python": platform.python_version(), "torch": torch.__version__, "gpu": torch.cuda.is_available()}


# ------------------------------------------------------------------ writing


def _metric(record: dict[str, Any], method: str, key: str) -> float | None:
    return record.get("eval", {}).get("methods", {}).get(method, {}).get(key)


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def _training_seconds(train: dict[str, Any]) -> float | None:
    """The optimisation loops' time: HashNet's, plus the classification warm-up's where there was one."""
    seconds = train.get("training_seconds")
    return None if seconds is None else seconds + (train.get("warmup_seconds") or 0.0)


def _cifar_by_length(records: dict[str, dict[str, Any]], prefix: str) -> list[str]:
    """One line per code length that has a `{prefix}-{bits}` row, beside the frozen rows' pretrained baselines."""
    body = []
    for bits in (16, 32, 48, 64):
        hashnet_row, frozen = records.get(f"{prefix}-{bits}"), records.get(f"c10-frozen-{bits}", {})
        if hashnet_row is None or "eval" not in hashnet_row:
            continue
        hashnet, itq_pre = _metric(hashnet_row, "hashnet", "mAP@all"), _metric(frozen, "itq", "mAP@all")
        gap = None if hashnet is None or itq_pre is None else hashnet - itq_pre
        body.append([str(bits), _f(hashnet), _f(_metric(hashnet_row, "hashnet", "mAP@1000")),
                     _f(_metric(hashnet_row, "hashnet", "P@H<=2")), _f(_metric(hashnet_row, "hashnet", "P@1")),
                     _f(itq_pre), _f(_metric(hashnet_row, "itq", "mAP@all")), _f(_metric(frozen, "lsh", "mAP@all")),
                     _f(_metric(frozen, "hashnet", "mAP@all")), _f(_metric(frozen, "cosine", "mAP@all")),
                     _f(_metric(hashnet_row, "cosine", "mAP@all")), _f(gap),
                     _minutes(_training_seconds(hashnet_row.get("train", {})))])
    if not body:
        return []
    return markdown_table(["bits", "HashNet mAP@all", "HashNet mAP@1000", "HashNet P@H<=2", "HashNet P@1",
                           "ITQ (ImageNet Lite0) mAP@all", "ITQ (fine-tuned) mAP@all", "LSH (ImageNet Lite0) mAP@all",
                           "HashNet (frozen Lite0) mAP@all", "cosine (ImageNet Lite0)", "cosine (fine-tuned)",
                           "HashNet - ITQ (ImageNet Lite0)", "HashNet train time"], body).splitlines()


def markdown(records: dict[str, dict[str, Any]], host: dict[str, Any]) -> str:
    get = records.get
    lines = ["# HashNet results", "",
             "Produced by `python -m bench.hashnet_bench` (`--collect` rebuilds this file from runs/); "
             "every figure comes from a run on the CPU its row names in the times table. EfficientNet-Lite0 backbone "
             "(ImageNet weights) unless a row names another.",
             ""]

    lines += ["## CIFAR-10, by code length", "",
              "Protocol `cifar10`: 1,000 queries, 5,000 training images, 54,000-image database (training images not in it), "
              "split seed 0; relevance = same class; mAP over the whole ranked database (mAP@all) and the top 1,000.",
              "ITQ/LSH (ImageNet Lite0) = fitted on the ImageNet Lite0 features at 128 px (the standard comparison: shallow "
              "methods do not train the backbone), the same columns beside every backbone; ITQ (fine-tuned) = fitted on "
              "the features of the HashNet checkpoint's own fine-tuned backbone. Cosine = float features, ranked by cosine "
              "(no hashing). HashNet (frozen Lite0) = the hash layer alone on the ImageNet Lite0 features.", ""]
    end_to_end = {prefix: f"HashNet end to end on {BACKBONE_NAMES[recipe.backbone]}: every stage trained, "
                          f"{recipe.image_size} px, random resized crops and flips, {recipe.epochs} epochs, learning rate "
                          f"{recipe.lr} (the hash layer 10x)."
                  for prefix, recipe in CIFAR_END_TO_END.items()}
    warmed_up = {row_id.removesuffix("-64"): f"{warmup.note()}." for row_id, warmup in CIFAR_WARMUP.items()}
    lite2_by_length = {
        "c10-lite2-warmup-fbn-cutmix-e20-a3.2": "as c10-lite2-warmup-fbn-cutmix-e20 with the head's alpha 3.2 / bits, on "
                                                "that row's warm-up (reused with --warmup-from, its time counted in the "
                                                "train time).",
        "c10-lite2-frozen": "the hash layer alone on EfficientNet-Lite2's ImageNet features, 128 px; its (fine-tuned) "
                            "columns hold those ImageNet features, the ITQ and LSH of the paper's comparison for the "
                            "Lite2 rows.",
    }
    for prefix, title in (*end_to_end.items(), *warmed_up.items(), *lite2_by_length.items(),
                          ("c10-ft", "HashNet with the first stages frozen: stem and blocks 0-7 keep their ImageNet "
                                     "weights (their outputs cached, no augmentation), blocks 8-15, the head "
                                     "convolution and the hash layer train, 12 epochs, 128 px."),
                          ("c10-ft224", "as c10-ft, at 224 px.")):
        table = _cifar_by_length(records, prefix)
        if table:
            lines += [f"### {prefix}: {title}", "", *table, ""]
    lines += ["mAP@1000 of the baselines at each length is in bench/results/hashnet.json.", ""]
    figures = sorted(p.name for p in FIGURES.glob("*.png")) if FIGURES.is_dir() else []
    if figures:
        lines += [f"Figures of the {HEADLINE} run (bench/results/figures/): " + ", ".join(f"[{n}](figures/{n})" for n in figures), ""]

    lines += ["## Grocery (81 fine classes)", "",
              "Train on the 2,640 training images; the 2,485 test images query the training images. P@1 = precision of the "
              "first result.", ""]
    body = []
    for record in records.values():
        if record["data"] == "grocery" and record["group"] == "grocery":
            body.append([record["id"], record["mode"], record.get("note", ""), _f(_metric(record, "hashnet", "mAP@all")),
                         _f(_metric(record, "hashnet", "P@1")), _f(_metric(record, "hashnet", "P@10")),
                         _f(_metric(record, "hashnet", "P@H<=2")), _f(_metric(record, "itq", "mAP@all")),
                         _f(_metric(record, "cosine", "mAP@all")), _f(_metric(record, "cosine", "P@1")),
                         _minutes(_training_seconds(record.get("train", {})))])
    lines += markdown_table(["run", "mode", "note", "mAP@all", "P@1", "P@10", "P@H<=2", "ITQ mAP@all", "cosine mAP@all",
                     "cosine P@1", "train time"], body).splitlines()

    for row_id in sorted(PROBED):
        probe = get(row_id, {}).get("eval", {}).get("probe")
        if probe:
            lines += ["", f"{row_id}: a softmax classifier on the same frozen features ({probe['features']}) gets "
                      f"{probe['linear_probe_test_accuracy']:.3f} of the {probe['test']} test images right "
                      "(`linear_probe` in the driver): a hash layer on those features is linear too, which bounds what a "
                      "head-only checkpoint over them can reach in P@1."]
    lines += ["", "## Ablations (64 bits)", "",
              "full = class-balanced weighting + continuation (tanh(beta z), beta from 1 up) + tanh at training; "
              "no-weighting = all pairs weigh 1; no-continuation = beta fixed at 1; sign-train = sign(z) forward with "
              "tanh's gradient (straight-through). Frozen = hash layer on ImageNet Lite0 features (CIFAR 128 px, "
              "grocery 224 px); finetune = end to end as in the CIFAR table.", ""]
    body = []
    for data, mode, prefix, full_id in (("cifar10", "frozen", "c10-frozen-64", "c10-frozen-64"),
                                        ("grocery", "frozen", "grocery-frozen-64", "grocery-default"),
                                        ("cifar10", "finetune", "c10-ft-64", "c10-ft-64")):
        full = get(full_id) or {}
        for variant in ABLATIONS:
            record = full if variant == "full" else get(f"{prefix}-{variant}")
            if record is None or (variant != "full" and "train" not in record and "eval" not in record):
                continue
            value, base = _metric(record, "hashnet", "mAP@all"), _metric(full, "hashnet", "mAP@all")
            delta = None if value is None or base is None or variant == "full" else value - base
            body.append([data, mode, variant, _f(value), _f(None if delta is None else delta),
                         _f(_metric(record, "hashnet", "mAP@1000")), _f(_metric(record, "hashnet", "P@H<=2")),
                         _f(_metric(record, "hashnet", "P@1"))])
    lines += markdown_table(["data", "mode", "variant", "mAP@all", "vs full", "mAP@1000", "P@H<=2", "P@1"], body).splitlines()

    lines += ["", "## Times", "",
              "Wall-clock time of training (the optimisation loop, as the trainer measures it) and of the whole "
              "evaluation command (encoding every image, baselines, metrics, figures); CPU = the trainer process's CPU "
              "seconds (both threads). ms/image/step = training wall time / (steps x batch). Jobs ran under nice 19 while "
              "other benchmarks used the same 2 cores, so wall times include waiting: load = 1-minute load average "
              "before / after the job.", ""]
    body = []
    for record in records.values():
        train, evaluation = record.get("train", {}), record.get("eval", {})
        if not train and not evaluation:
            continue
        driver_train, driver_eval = train.get("driver", {}), evaluation.get("driver", {})
        body.append([record["id"], record["mode"], str(train.get("epochs") or "-"), str(train.get("iterations") or "-"),
                     str(train.get("batch_size") or "-"), _minutes(_training_seconds(train)),
                     _minutes(train.get("training_cpu_seconds")), _f(train.get("ms_per_image_step"), 1),
                     _minutes(train.get("total_seconds")), _minutes(driver_eval.get("wall_seconds")),
                     _load(driver_train), _load(driver_eval), record["cpu"]])
    lines += markdown_table(["run", "mode", "epochs", "steps", "batch", "train wall", "train CPU", "ms/image/step",
                     "train command total", "eval wall", "load (train)", "load (eval)", "CPU"], body).splitlines()

    lines += ["", "## Machine", "", f"- {host['cores']} cores; {host['memory_gib']} GiB; GPU: {host['gpu']}",
              f"- Python {host['python']}, torch {host['torch']}", "",
              "## Commands", ""]
    for record in records.values():
        if "train" in record or "eval" in record:
            lines.append(f"- `{record['id']}`:")
            if record["train_command"]:
                lines.append(f"  - `{record['train_command']}`")
            lines.append(f"  - `{record['eval_command']}`")
    return "\n".join(lines) + "\n"


def _load(driver: dict[str, Any]) -> str:
    if not driver:
        return "-"
    return f"{driver['load_before'][0]:.1f} / {driver['load_after'][0]:.1f}"


HEADLINE = "c10-ft-64"
HEADLINE_FIGURES = {"precision_recall.png": "cifar10-64-precision_recall.png", "tsne_hashnet.png": "cifar10-64-tsne.png",
                    "loss_by_stage.png": "cifar10-64-loss_by_stage.png", "precision_at_n.png": "cifar10-64-precision_at_n.png"}


def copy_figures() -> None:
    """The headline run's figures into bench/results/figures (small PNGs, committed)."""
    source = ROOT / RUNS / HEADLINE / "eval"
    for name, target in HEADLINE_FIGURES.items():
        if (source / name).is_file():
            FIGURES.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, FIGURES / target)


def collect(selected: list[Row]) -> None:
    """Tables from runs/; a row whose run directory is not here (a fresh checkout) keeps its published record.

    A kept record keeps the commands and the CPU it was measured with; only its descriptive note follows the
    code. The machine section describes this machine only when some row was measured here.
    """
    copy_figures()
    published = _read_json(RESULTS / "hashnet.json") or {"rows": {}}
    previous = published["rows"]
    measured_here = [row for row in selected if (ROOT / row.run_dir).is_dir() or row.id not in previous]
    records = {row.id: collect_row(row) if row in measured_here else {**previous[row.id], "note": row.note}
               for row in selected}
    host = machine() if any((ROOT / row.run_dir).is_dir() for row in measured_here) else published["machine"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "hashnet.json").write_text(json.dumps({"machine": host, "rows": records}, indent=2) + "\n")
    (RESULTS / "hashnet.md").write_text(markdown(records, host))
    print(RESULTS / "hashnet.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect", action="store_true", help="only read existing run directories and write the tables")
    parser.add_argument("--only", nargs="+", default=[], help="row ids to run")
    parser.add_argument("--group", nargs="+", default=[], help="groups to run (cifar, cifar-frozen, grocery, ablation)")
    parser.add_argument("--force", action="store_true", help="run again even where results exist")
    parser.add_argument("--list", action="store_true", help="print every row's commands and stop")
    args = parser.parse_args(argv)
    table = rows()
    if args.list:
        for row in table:
            print(row.id, "\n  ", shlex.join(_relative(row.train_command())), "\n  ", shlex.join(_relative(row.eval_command())))
        return 0
    if not args.collect:
        by_id = {row.id: row for row in table}
        unknown = [name for name in args.only if name not in by_id]
        if unknown:
            parser.error(f"unknown row(s) {', '.join(unknown)}; see --list")
        selected = [by_id[name] for name in args.only] + [row for row in table if row.group in args.group and row.id not in args.only]
        if not selected:
            parser.error("name rows with --only or --group (or use --collect / --list)")
        for row in selected:
            run_row(row, args.force)
            collect(table)
    collect(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
