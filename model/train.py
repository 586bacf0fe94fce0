"""The offline HashNet trainer (CLI: `python -m model.train`).

Two modes. `finetune` (the paper's method) trains backbone and hash layer end
to end, the hash layer at 10x the backbone's learning rate; the first
`--freeze-stages` stages can stay fixed, and with `--cache-activations` (no
augmentation) their outputs are computed once. `frozen` caches the pooled
backbone features once and trains only the hash layer: minutes on a CPU, and
the head-only checkpoint the service ships.

`--warmup-epochs N` first fine-tunes the backbone with a softmax over the
classes (model.warmup), in either mode; `--warmup-lr`, `--warmup-optimizer`,
`--warmup-label-smoothing` and `--warmup-cutmix` shape it, and the summary
gives its classifier's accuracy on the query split (warmup.held_out_accuracy).
`--warmup-from RUN` reuses RUN's finished warm-up instead (same warm-up flags,
any code length or HashNet settings): one tuned backbone, heads of every length.

Outputs in --out: train.log, history.csv (iteration, epoch, beta, loss for
every iteration: the loss per continuation stage), state/ (resumable
training state, every --save-every iterations), warmup/ (the warm-up's
state, every epoch), the final checkpoint hashnet-<backbone>-<bits>.{safetensors,json},
and summary.json.

Examples:
  python -m model.train --data grocery --mode frozen --bits 64 --out runs/grocery-frozen-64
  python -m model.train --data cifar10 --mode finetune --bits 64 --epochs 20 --out runs/cifar10-ft-64
  python -m model.train --data cifar10 --out runs/cifar10-ft-64 --resume   # continue after an interruption
  # fine-tune the whole network from a trained head, BatchNorm keeping its pretrained statistics
  python -m model.train --data grocery --mode finetune --image-size 224 --epochs 8 --lr 3e-5 --per-class 4 \
      --init-from model/default --frozen-bn-statistics --out runs/grocery-lpft-64
  # a softmax warm-up of the whole backbone, then a HashNet head on its features (a full checkpoint)
  python -m model.train --data grocery --mode frozen --backbone efficientnet_lite2 --image-size 320 --epochs 1000 \
      --warmup-epochs 10 --warmup-label-smoothing 0.1 --frozen-bn-statistics --out runs/grocery-lite2-warmup-ls-e10-64
  # a 32-bit head on that run's tuned backbone
  python -m model.train --data grocery --mode frozen --backbone efficientnet_lite2 --image-size 320 --epochs 1000 --bits 32 \
      --warmup-epochs 10 --warmup-label-smoothing 0.1 --frozen-bn-statistics --warmup-from runs/grocery-lite2-warmup-ls-e10-64 \
      --out runs/grocery-lite2-warmup-ls-e10-32

The default checkpoint in model/default/ comes from the command in
model/default/README.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model.backbones import create_backbone
from model.batch_order import epoch_order, remaining_batches
from model.checkpoint import FULL, HEAD_ONLY, load_checkpoint, save_checkpoint
from model.codes import codes_from_logits
from model.cpu_memory import keep_freed_memory
from model.data import DataSplits, ImageDataset, LabelledImages, load_splits
from model.encoder import default_device, inference_batch_size
from model.feature_cache import cached_outputs
from model.hashnet import HashNet
from model.metrics import mean_average_precision
from model.preprocess import train_transform
from model.train_config import FINETUNE, FROZEN, MODE_DEFAULTS, OPTIMIZERS, TrainConfig
from model.train_parts import CachedInputs, ImageInputs, SplitModel, build_optimizer, eval_prefix_batches, schedule_learning_rates
from model.train_state import read_train_state, restore_train_state, save_train_state
from model.warmup import WARMUP_DIR, warm_up_by_classification

log = logging.getLogger("model.train")

HISTORY_FILE = "history.csv"
SUMMARY_FILE = "summary.json"
EVAL_SAMPLE_SEED = 0


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    fingerprint: str
    summary: dict[str, Any]


HISTORY_FIELDS = ["iteration", "epoch", "beta", "loss"]


def _start_history(run_dir: Path, kept: list[dict[str, float]]) -> None:
    """Rewrite history.csv with the records a (resumed) run keeps."""
    with open(run_dir / HISTORY_FILE, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(kept)


def _append_history(run_dir: Path, records: list[dict[str, float]]) -> None:
    with open(run_dir / HISTORY_FILE, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=HISTORY_FIELDS).writerows(records)


def read_history(run_dir: str | Path) -> list[dict[str, float]]:
    """Per-iteration records {iteration, epoch, beta, loss} of a run (model.plots.plot_loss_by_stage takes them)."""
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [
            {"iteration": int(row["iteration"]), "epoch": int(row["epoch"]), "beta": float(row["beta"]), "loss": float(row["loss"])}
            for row in csv.DictReader(f)
        ]


def loss_by_stage(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """Mean, first and last loss of each continuation stage (a run of constant beta)."""
    stages: list[dict[str, Any]] = []
    for record in history:
        if not stages or stages[-1]["beta"] != record["beta"]:
            stages.append({"beta": record["beta"], "first_iteration": record["iteration"], "losses": []})
        stages[-1]["losses"].append(record["loss"])
        stages[-1]["last_iteration"] = record["iteration"]
    return [
        {
            "beta": stage["beta"],
            "first_iteration": stage["first_iteration"],
            "last_iteration": stage["last_iteration"],
            "mean_loss": float(np.mean(stage["losses"])),
            "first_loss": stage["losses"][0],
            "last_loss": stage["losses"][-1],
        }
        for stage in stages
    ]


def _configure_logging(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("model").addHandler(handler)
    logging.getLogger("model").setLevel(logging.INFO)
    return handler


def _resolve_device(device: str) -> str:
    resolved = default_device() if device == "auto" else device
    if resolved == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    return resolved


@torch.no_grad()
def split_logits(split: SplitModel, config: TrainConfig, images: LabelledImages, device: str) -> torch.Tensor:
    """Hash-layer outputs z [N, bits] for an image set, through the deterministic eval preprocessing."""
    split.model.eval()
    preprocess = split.model.backbone.preprocess
    batch_size = inference_batch_size(device, preprocess.input_size)
    if config.uses_cache:
        outputs = cached_outputs(
            split.frozen, split.prefix_name, preprocess, images, config.cache_dir, device=device, batch_size=batch_size, workers=config.workers,
        )
        batches = (torch.from_numpy(np.array(outputs[i : i + batch_size])) for i in range(0, len(images), batch_size))
    else:
        batches = (prefix_outputs for prefix_outputs, _ in eval_prefix_batches(split, images, device, config.workers))
    return torch.cat([split.logits(batch.to(device)).cpu() for batch in batches])


def quick_map(split: SplitModel, config: TrainConfig, splits: DataSplits, device: str) -> dict[str, Any]:
    """mAP@all of the query split against (a seeded sample of at most eval_db_limit of) the database."""
    # A seeded sample in random order: ties rank in that order, not in the data list's (often by class).
    sample = np.random.default_rng(EVAL_SAMPLE_SEED).permutation(len(splits.database))[: config.eval_db_limit]
    database = splits.database.subset(sample)
    query_codes = codes_from_logits(split_logits(split, config, splits.query, device))
    db_codes = codes_from_logits(split_logits(split, config, database, device))
    value = mean_average_precision(query_codes, splits.query.labels, db_codes, database.labels)
    return {"map_all": value, "queries": len(splits.query), "database": len(database)}


def _described(differences: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{key}: saved {old!r}, now {new!r}" for key, (old, new) in differences.items())


def _resumable_state(config: TrainConfig, state_parent: Path) -> bool:
    """True when --resume finds a state saved under state_parent; refuse one saved with a different recipe."""
    saved = read_train_state(state_parent) if config.resume else None
    if saved is None:
        return False
    differences = config.differences_for_resume(TrainConfig.from_dict(saved.config))
    if differences:
        raise ValueError(f"cannot resume {state_parent} with a different configuration ({_described(differences)})")
    return True


def _check_reusable_warmup(config: TrainConfig) -> None:
    """Refuse a --warmup-from run without a warm-up state or whose warm-up had another recipe
    (whether it finished is checked when it is loaded)."""
    warmup_dir = Path(config.warmup_from) / WARMUP_DIR
    saved = read_train_state(warmup_dir)
    if saved is None:
        raise ValueError(f"--warmup-from {config.warmup_from}: no warm-up state in {warmup_dir}")
    differences = config.warmup_differences(TrainConfig.from_dict(saved.config))
    if differences:
        raise ValueError(f"--warmup-from {config.warmup_from}: its warm-up had another recipe ({_described(differences)})")


def _start_from_checkpoint(model: HashNet, config: TrainConfig) -> str:
    """Load a trained checkpoint's weights, so fine-tuning starts from a trained head
    (a head on frozen features, then the whole network: the backbone's first
    gradients come from a head that already ranks, not from a random one).
    Returns the checkpoint's kind: a full one's backbone is no longer the pretrained file's."""
    loaded = load_checkpoint(config.init_from)
    metadata = loaded.metadata
    name, bits = metadata["backbone"]["name"], int(metadata["bits"])
    if (name, bits) != (config.backbone, config.bits):
        raise ValueError(f"--init-from {config.init_from} holds {name} with {bits} bits; this run trains {config.backbone} with {config.bits} bits")
    model.load_state_dict(loaded.model.state_dict(), strict=True)
    log.info("weights from %s (fingerprint %s)", config.init_from, metadata["fingerprint"])
    return metadata["kind"]


def run_training(config: TrainConfig, splits: DataSplits | None = None) -> TrainResult:
    """Train, save the final checkpoint, write the summary; see the module docstring."""
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _configure_logging(run_dir)
    try:
        return _run(config, run_dir, splits)
    finally:
        logging.getLogger("model").removeHandler(handler)
        handler.close()


def _training_inputs(config: TrainConfig, split: SplitModel, images: LabelledImages, device: str) -> CachedInputs | ImageInputs:
    preprocess = split.model.backbone.preprocess
    if config.uses_cache:
        outputs = cached_outputs(
            split.frozen, split.prefix_name, preprocess, images, config.cache_dir,
            device=device, batch_size=inference_batch_size(device, preprocess.input_size), workers=config.workers,
        )
        return CachedInputs(outputs, images.labels)
    return ImageInputs(ImageDataset(images, train_transform(preprocess, config.augment)), split, device, config.workers)


def _train(config: TrainConfig, run_dir: Path, split: SplitModel, train_images: LabelledImages, device: str, resuming: bool) -> dict[str, Any]:
    """The optimisation loop; returns the summary of this session's training."""
    inputs = _training_inputs(config, split, train_images, device)
    batch_size = min(config.batch_size, len(train_images))
    iterations_per_epoch = len(train_images) // batch_size
    total_iterations = config.epochs * iterations_per_epoch
    save_every = config.save_every or iterations_per_epoch
    optimizer = build_optimizer(config.optimizer, config.weight_decay, split.model.hash_layer, split.trained, config.lr)
    schedule, criterion, activation = config.beta_schedule(), config.loss(), config.activation()

    iteration = start_iteration = restore_train_state(run_dir, split.model, set(split.trained_tensors()), optimizer) if resuming else 0
    history = [record for record in read_history(run_dir) if record["iteration"] < iteration]
    _start_history(run_dir, history)
    saved_records = len(history)
    log.info("iterations %d to %d (%d epochs x %d batches of %d)", iteration, total_iterations, config.epochs, iterations_per_epoch, batch_size)

    started, cpu_started = time.perf_counter(), time.process_time()
    while iteration < total_iterations:
        epoch, first_batch = divmod(iteration, iterations_per_epoch)
        order = epoch_order(train_images.labels, config.seed, epoch, config.per_class)
        batch_indices = remaining_batches(order, batch_size, first_batch)
        split.train()
        epoch_losses = []
        progress = tqdm(inputs.batches(batch_indices), total=len(batch_indices), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False)
        for prefix_outputs, labels in progress:
            beta = schedule.beta_at(iteration)
            schedule_learning_rates(optimizer, config.lr_schedule, iteration, total_iterations)
            codes = activation(split.logits(prefix_outputs.to(device, non_blocking=True)), beta)
            loss = criterion(codes, labels.to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_losses.append(loss.item())
            history.append({"iteration": iteration, "epoch": epoch, "beta": beta, "loss": epoch_losses[-1]})
            progress.set_postfix(loss=f"{epoch_losses[-1]:.4f}", beta=f"{beta:.3f}")
            iteration += 1
            if iteration % save_every == 0 or iteration == total_iterations:
                save_train_state(run_dir, split.trained_tensors(), optimizer, iteration, config.to_dict())
                _append_history(run_dir, history[saved_records:])
                saved_records = len(history)
        log.info("epoch %d/%d: mean loss %.4f, beta %.3f", epoch + 1, config.epochs, float(np.mean(epoch_losses)), beta)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    steps = max(1, total_iterations - start_iteration)
    return {
        "iterations": total_iterations,
        "training_seconds": seconds,
        # CPU time of this process (all its threads, not DataLoader workers): on a
        # shared machine it says what the work cost when wall-clock time does not.
        "training_cpu_seconds": cpu_seconds,
        "seconds_per_iteration": seconds / steps,
        "ms_per_image_step": 1000 * seconds / (steps * batch_size),
        "loss_by_stage": loss_by_stage(history),
    }


def _run(config: TrainConfig, run_dir: Path, splits: DataSplits | None) -> TrainResult:
    started = time.perf_counter()
    device = _resolve_device(config.device)
    resuming = _resumable_state(config, run_dir)
    if config.warmup_from:
        _check_reusable_warmup(config)
        warmup_parent, resuming_warmup = Path(config.warmup_from), True
    else:
        warmup_parent = run_dir
        resuming_warmup = config.warmup_epochs > 0 and _resumable_state(config, run_dir / WARMUP_DIR)
    if config.resume and not (resuming or resuming_warmup):
        log.warning("--resume: no saved state in %s, starting from scratch", run_dir)
    torch.manual_seed(config.seed)
    splits = splits if splits is not None else load_splits(config.data, config.data_dir)
    log.info("config %s", json.dumps(config.to_dict()))
    log.info("data %s: %d train, %d query, %d database images; device %s", config.data, len(splits.train), len(splits.query), len(splits.database), device)

    backbone = create_backbone(config.backbone, weights=config.backbone_weights, input_size=config.image_size)
    model = HashNet(backbone, config.bits)
    # Also when resuming: the saved state holds only the trained stages, not a frozen prefix loaded here.
    backbone_as_pretrained = _start_from_checkpoint(model, config) == HEAD_ONLY if config.init_from else True
    model = model.to(device)
    warmup_summary = None
    if config.warmup_epochs:
        if resuming and not resuming_warmup:
            raise ValueError(f"cannot resume {run_dir}: its HashNet state is saved but its warm-up state ({WARMUP_DIR}/) is missing")
        warmup_split = SplitModel(model, config.freeze_stages, config.frozen_bn_statistics)
        held_out = splits.query if config.evaluate else None
        warmup_summary = warm_up_by_classification(config, warmup_parent, warmup_split, splits.train, device, resuming_warmup, held_out)
        backbone_as_pretrained = False
    split = SplitModel(model, len(backbone.stages()) if config.mode == FROZEN else config.freeze_stages, config.frozen_bn_statistics)
    summary = _train(config, run_dir, split, splits.train, device, resuming)
    if warmup_summary is not None:
        summary["warmup"] = warmup_summary

    head_only = config.mode == FROZEN and backbone.weights_file is not None and backbone_as_pretrained
    summary["checkpoint_kind"] = kind = HEAD_ONLY if head_only else FULL
    metrics = {}
    if config.evaluate and len(splits.query) and len(splits.database):
        summary["quick_map"] = quick_map(split, config, splits, device)
        metrics["quick_map_all"] = summary["quick_map"]["map_all"]
        log.info("quick mAP@all: %.4f (%d queries, %d database images)", metrics["quick_map_all"], summary["quick_map"]["queries"], summary["quick_map"]["database"])
    checkpoint = run_dir / f"hashnet-{config.backbone}-{config.bits}.safetensors"
    fingerprint = save_checkpoint(checkpoint, model.eval(), kind=kind, label_names=splits.train.class_names, training=config.to_dict(), metrics=metrics)
    summary.update(checkpoint=str(checkpoint), fingerprint=fingerprint, total_seconds=time.perf_counter() - started)
    (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    log.info("saved %s checkpoint %s (fingerprint %s)", kind, checkpoint, fingerprint)
    for stage in summary["loss_by_stage"]:
        log.info("beta %.3f (iterations %d-%d): mean loss %.4f", stage["beta"], stage["first_iteration"], stage["last_iteration"], stage["mean_loss"])
    return TrainResult(checkpoint=checkpoint, fingerprint=fingerprint, summary=summary)


def _per_mode(key: str) -> str:
    return ", ".join(f"{mode} {values[key]}" for mode, values in MODE_DEFAULTS.items())


def build_parser() -> argparse.ArgumentParser:
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    parser = argparse.ArgumentParser(prog="python -m model.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="grocery | cifar10 | folder:PATH | list:FILE")
    parser.add_argument("--out", required=True, help="run directory (e.g. runs/NAME)")
    parser.add_argument("--data-dir", help="folder holding grocery/ and cifar10/ (default: $DEEPHASH_DATA_DIR or ../shared/data)")
    parser.add_argument("--bits", type=int, default=defaults["bits"])
    parser.add_argument("--backbone", default=defaults["backbone"])
    parser.add_argument("--backbone-weights", default=defaults["backbone_weights"], help="'imagenet' (the backbone's standard source), a state-dict file, or 'none' (random)")
    parser.add_argument("--mode", choices=[FINETUNE, FROZEN], default=defaults["mode"])
    parser.add_argument("--epochs", type=int, help=f"default {_per_mode('epochs')}; with --resume, a new total")
    parser.add_argument("--batch-size", type=int, help=f"default {_per_mode('batch_size')}")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults["optimizer"])
    parser.add_argument("--lr", type=float, default=defaults["lr"], help="backbone learning rate; the hash layer gets 10x")
    parser.add_argument("--weight-decay", type=float, default=defaults["weight_decay"])
    parser.add_argument("--lr-schedule", choices=["cosine", "constant"], default=defaults["lr_schedule"])
    parser.add_argument("--image-size", type=int, default=defaults["image_size"])
    parser.add_argument("--no-augment", dest="augment", action="store_false", help="no random resized crop / flip")
    parser.add_argument("--freeze-stages", type=int, default=defaults["freeze_stages"], help="finetune: keep the first N backbone stages fixed")
    parser.add_argument(
        "--frozen-bn-statistics", action="store_true",
        help="finetune and the warm-up: BatchNorm layers normalise with their pretrained statistics instead of updating them from the training batches",
    )
    parser.add_argument(
        "--warmup-epochs", type=int, default=defaults["warmup_epochs"],
        help="first fine-tune the backbone for this many epochs with a softmax over the training classes (model.warmup); 0: no warm-up",
    )
    parser.add_argument("--warmup-lr", type=float, default=defaults["warmup_lr"], help="the warm-up's backbone learning rate; its classifier gets 10x")
    parser.add_argument("--warmup-batch-size", type=int, default=defaults["warmup_batch_size"])
    parser.add_argument("--warmup-label-smoothing", type=float, default=defaults["warmup_label_smoothing"], help="the share of each softmax target spread over all classes")
    parser.add_argument("--warmup-cutmix", type=float, default=defaults["warmup_cutmix"], help="CutMix the warm-up's batches with this Beta(alpha, alpha); 0: off")
    parser.add_argument("--warmup-optimizer", choices=OPTIMIZERS, help="the warm-up's optimizer (default: --optimizer's)")
    parser.add_argument(
        "--warmup-from", metavar="RUN",
        help="reuse the finished warm-up of run directory RUN (trained with the same warm-up flags, which must be given too) instead of training one",
    )
    parser.add_argument("--cache-activations", action="store_true", help="finetune: compute the frozen stages' outputs once (implies --no-augment)")
    parser.add_argument("--init-from", help="start from this checkpoint's weights (same backbone and bits), e.g. a head trained with --mode frozen")
    parser.add_argument(
        "--per-class", type=int, default=defaults["per_class"],
        help="build batches from runs of this many images of one class, so every image has similar partners in its batch (1: plain shuffle)",
    )
    parser.add_argument("--no-weighting", dest="weighting", action="store_false", help="ablation: all pairs weigh 1")
    parser.add_argument("--no-continuation", dest="continuation", action="store_false", help="ablation: fixed beta (see --fixed-beta)")
    parser.add_argument("--fixed-beta", type=float, help=f"ablation: constant beta (implies --no-continuation; default {defaults['fixed_beta']})")
    parser.add_argument("--sign-train", action="store_true", help="ablation: sign(z) forward, straight-through tanh gradient")
    parser.add_argument("--beta-step", type=int, default=defaults["beta_step"], help="iterations between beta updates")
    parser.add_argument("--beta-gamma", type=float, default=defaults["beta_gamma"])
    parser.add_argument("--alpha", type=float, help="inner-product scale (default 10 / bits)")
    parser.add_argument("--seed", type=int, default=defaults["seed"])
    parser.add_argument("--workers", type=int, default=defaults["workers"], help="DataLoader worker processes")
    parser.add_argument("--device", default=defaults["device"], help="auto (cuda if available, else cpu) | cpu | cuda | cuda:N")
    parser.add_argument("--save-every", type=int, default=defaults["save_every"], help="iterations between resumable saves (0: every epoch)")
    parser.add_argument("--no-eval", dest="evaluate", action="store_false", help="skip the quick mAP at the end")
    parser.add_argument("--eval-db-limit", type=int, default=defaults["eval_db_limit"])
    parser.add_argument("--cache-dir", default=defaults["cache_dir"])
    parser.add_argument("--resume", action="store_true", help="continue the run in --out with its saved configuration")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.resume:
        saved = read_train_state(Path(args.out))
        if saved is not None:
            # The saved recipe wins; only how long and where it runs may change.
            overrides = {"resume": True, "workers": args.workers, "device": args.device}
            if args.epochs is not None:
                overrides["epochs"] = args.epochs
            return replace(TrainConfig.from_dict(saved.config), **overrides)
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    for key in ("epochs", "batch_size"):
        if values[key] is None:
            values[key] = MODE_DEFAULTS[args.mode][key]
    if args.backbone_weights.lower() == "none":
        values["backbone_weights"] = None
    if args.fixed_beta is not None:
        values.update(continuation=False, fixed_beta=args.fixed_beta)
    else:
        values["fixed_beta"] = TrainConfig.fixed_beta
    if args.cache_activations:
        values["augment"] = False
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = config_from_args(args)
    device = _resolve_device(config.device)
    if device == "cpu":
        # All the cores this process may use (not torch's guess from the machine):
        # measured on 2 cores, giving the decoding workers their own cores was slower.
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        keep_freed_memory()
    result = run_training(config)
    print(json.dumps({key: result.summary[key] for key in ("checkpoint", "fingerprint", "quick_map", "training_seconds") if key in result.summary}, indent=2))


if __name__ == "__main__":
    main()
