"""The classification warm-up: fine-tune the backbone with a softmax over the
training classes before HashNet trains on it (`--warmup-epochs`).

With many classes the pairwise loss is a weak teacher for a backbone: a batch
of 32 from grocery's 81 classes holds about three similar partners per image,
so most of its gradient says only "these differ". A softmax sees every image's
class in every step. On grocery (Lite2, 320 px) ten epochs of it, then a head on
the frozen features, give P@1 0.868 against 0.811 for HashNet fine-tuning.

The stage trains the backbone stages the main stage would (from
--freeze-stages on) plus a throw-away linear classifier, with the main stage's
optimizer, augmentation and BatchNorm setting. It saves a resumable state in
warmup/ after every epoch; a finished state is the stage's result, so a
resumed run reloads it and goes straight on to HashNet.

The classifier's accuracy on held-out images (the query split) bounds what
the codes can reach: a query it misclassifies starts its ranking in the wrong
class whatever the hashing does (CIFAR-10, 28 epochs with BatchNorm's
statistics kept, CutMix and the first four blocks fixed: 0.904 of the queries,
mAP@all 0.850 at 64 bits).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from model.batch_order import epoch_order, remaining_batches
from model.cutmix import cut_and_mix
from model.data import ImageDataset, LabelledImages
from model.preprocess import train_transform
from model.train_config import TrainConfig
from model.train_parts import ImageInputs, SplitModel, build_optimizer, eval_prefix_batches, schedule_learning_rates
from model.train_state import restore_train_state, save_train_state

log = logging.getLogger(__name__)

WARMUP_DIR = "warmup"
NETWORK_PREFIX = "network."
CLASSIFIER_PREFIX = "classifier."


def _class_targets(labels: torch.Tensor) -> torch.Tensor:
    """Multi-hot rows as class distributions (a single label is one-hot; several share the mass)."""
    return labels / labels.sum(dim=1, keepdim=True).clamp(min=1.0)


def count_correct(logits: torch.Tensor, targets: torch.Tensor) -> int:
    """How many rows' top class holds the largest share of their target: one of their labels for
    multi-hot rows, the larger of the two images' classes for a CutMix blend."""
    predicted_share = targets[torch.arange(len(targets), device=targets.device), logits.argmax(dim=1)]
    return int(((predicted_share > 0) & (predicted_share == targets.max(dim=1).values)).sum().item())


@torch.no_grad()
def held_out_accuracy(split: SplitModel, classifier: nn.Linear, images: LabelledImages, device: str, workers: int) -> float:
    """The share of `images` the classifier gets right, through the deterministic eval preprocessing."""
    classifier.eval()
    batches = eval_prefix_batches(split, images, device, workers)
    return sum(count_correct(classifier(split.trained(prefix_outputs)).cpu(), labels) for prefix_outputs, labels in batches) / len(images)


def _state_tensors(split: SplitModel, classifier: nn.Linear) -> dict[str, torch.Tensor]:
    tensors = {NETWORK_PREFIX + name: tensor for name, tensor in split.trained_tensors(with_hash_layer=False).items()}
    tensors.update({CLASSIFIER_PREFIX + name: tensor for name, tensor in classifier.state_dict().items()})
    return tensors


def warm_up_by_classification(
    config: TrainConfig, run_dir: Path, split: SplitModel, images: LabelledImages, device: str, resuming: bool,
    held_out: LabelledImages | None = None,
) -> dict[str, Any]:
    """Train split's trained stages and a softmax classifier on `images`; returns the stage's summary,
    with the classifier's accuracy on `held_out` when given.

    `resuming` continues from (or, when it is finished, just reloads) the state
    saved in run_dir/warmup; the caller has checked it belongs to this recipe.
    Another run's warm-up (config.warmup_from) is only ever reloaded.
    """
    state_dir = run_dir / WARMUP_DIR
    state_dir.mkdir(exist_ok=True)
    num_classes = images.labels.shape[1]
    classifier = nn.Linear(split.model.backbone.num_features, num_classes).to(device)
    both = nn.ModuleDict({NETWORK_PREFIX.rstrip("."): split.model, CLASSIFIER_PREFIX.rstrip("."): classifier})
    optimizer = build_optimizer(config.warmup_optimizer_kind, config.weight_decay, classifier, split.trained, config.warmup_lr)
    batch_size = min(config.warmup_batch_size, len(images))
    iterations_per_epoch = len(images) // batch_size
    total_iterations = config.warmup_epochs * iterations_per_epoch
    iteration = restore_train_state(state_dir, both, set(_state_tensors(split, classifier)), optimizer) if resuming else 0
    if iteration >= total_iterations:
        log.info("warm-up: finished state reloaded from %s", state_dir)
        summary = {"iterations": total_iterations, "reloaded_from": str(state_dir)}
    elif config.warmup_from:
        raise ValueError(f"--warmup-from {config.warmup_from}: its warm-up stopped at iteration {iteration} of {total_iterations}; finish it first (--resume)")
    else:
        summary = _train_classifier(config, state_dir, split, classifier, optimizer, images, device, iteration, batch_size, total_iterations)
    if held_out is not None and len(held_out):
        summary["held_out_accuracy"] = held_out_accuracy(split, classifier, held_out, device, config.workers)
        log.info("warm-up: the classifier gets %.3f of %d held-out images right", summary["held_out_accuracy"], len(held_out))
    return summary


def _train_classifier(
    config: TrainConfig, state_dir: Path, split: SplitModel, classifier: nn.Linear, optimizer: torch.optim.Optimizer,
    images: LabelledImages, device: str, iteration: int, batch_size: int, total_iterations: int,
) -> dict[str, Any]:
    """The softmax loop in batches of `batch_size` from `iteration` to `total_iterations`, saving a resumable
    state after every epoch."""
    iterations_per_epoch = total_iterations // config.warmup_epochs
    inputs = ImageInputs(ImageDataset(images, train_transform(split.model.backbone.preprocess, config.augment)), split, device, config.workers)
    log.info("warm-up: iterations %d to %d (%d epochs x %d batches of %d, %d classes)", iteration, total_iterations,
             config.warmup_epochs, iterations_per_epoch, batch_size, images.labels.shape[1])
    started = time.perf_counter()
    epoch_summaries = []
    while iteration < total_iterations:
        epoch, first_batch = divmod(iteration, iterations_per_epoch)
        order = epoch_order(images.labels, config.seed, epoch)
        batch_indices = remaining_batches(order, batch_size, first_batch)
        split.train()
        classifier.train()
        losses, correct, seen = [], 0, 0
        progress = tqdm(inputs.batches(batch_indices), total=len(batch_indices), desc=f"warm-up {epoch + 1}/{config.warmup_epochs}", unit="batch", leave=False)
        for prefix_outputs, labels in progress:
            schedule_learning_rates(optimizer, config.lr_schedule, iteration, total_iterations)
            labels = labels.to(device, non_blocking=True)
            inputs_batch, targets = prefix_outputs.to(device, non_blocking=True), _class_targets(labels)
            if config.warmup_cutmix:
                inputs_batch, targets = cut_and_mix(inputs_batch, targets, config.warmup_cutmix, config.seed, iteration)
            class_logits = classifier(split.trained(inputs_batch))
            loss = F.cross_entropy(class_logits, targets, label_smoothing=config.warmup_label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            correct += count_correct(class_logits.detach(), targets)
            seen += len(labels)
            progress.set_postfix(loss=f"{losses[-1]:.4f}")
            iteration += 1
        save_train_state(state_dir, _state_tensors(split, classifier), optimizer, iteration, config.to_dict())
        epoch_summaries.append({"epoch": epoch + 1, "mean_loss": float(np.mean(losses)), "train_accuracy": correct / seen})
        log.info("warm-up epoch %d/%d: mean loss %.4f, training accuracy %.3f", epoch + 1, config.warmup_epochs,
                 epoch_summaries[-1]["mean_loss"], epoch_summaries[-1]["train_accuracy"])
    return {"iterations": total_iterations, "seconds": time.perf_counter() - started, "epochs": epoch_summaries}
