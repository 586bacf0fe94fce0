"""The pieces every training stage shares: the network cut at a fixed prefix,
the batch sources, and the learning-rate schedule."""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from model.data import ImageDataset, LabelledImages
from model.encoder import inference_batch_size
from model.feature_cache import prefix_name
from model.hashnet import HashNet
from model.preprocess import eval_transform

# Layers trained from scratch (the hash layer, a warm-up classifier) learn at
# this multiple of the pretrained backbone's rate, as in the paper.
NEW_LAYER_LR_MULTIPLIER = 10.0


class SplitModel:
    """The HashNet cut into a fixed prefix of backbone stages and the trained rest."""

    def __init__(self, model: HashNet, frozen_stages: int, frozen_statistics: bool = False) -> None:
        stages = model.backbone.stages()
        if not 0 <= frozen_stages <= len(stages):
            raise ValueError(f"{model.backbone.name} has {len(stages)} stages; cannot freeze {frozen_stages}")
        self.model = model
        self.frozen = nn.Sequential(*stages[:frozen_stages]).requires_grad_(False)
        self.trained = nn.Sequential(*stages[frozen_stages:])
        self.prefix_name = prefix_name(model.backbone.name, frozen_stages)
        self.frozen_statistics = frozen_statistics

    def train(self) -> None:
        self.model.train()
        self.frozen.eval()  # fixed stages keep their BatchNorm statistics
        if self.frozen_statistics:
            for module in self.trained.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def logits(self, prefix_outputs: torch.Tensor) -> torch.Tensor:
        return self.model.hash_layer(self.trained(prefix_outputs))

    def trained_tensors(self, with_hash_layer: bool = True) -> dict[str, torch.Tensor]:
        """The model's state entries that training changes (parameters and BatchNorm statistics);
        without the hash layer, those of the backbone alone (what a warm-up trains)."""
        parts = (self.trained, self.model.hash_layer) if with_hash_layer else (self.trained,)
        trained_modules = {id(m) for part in parts for m in part.modules()}
        tensors = {}
        for module_name, module in self.model.named_modules():
            if id(module) in trained_modules:
                for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
                    tensors[f"{module_name}.{name}"] = tensor
        return tensors


def eval_prefix_batches(split: SplitModel, images: LabelledImages, device: str, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(frozen-prefix outputs, labels) of `images` in order, through the deterministic eval preprocessing,
    with the whole network in eval mode: what evaluation during training runs the trained stages on."""
    split.model.eval()
    preprocess = split.model.backbone.preprocess
    loader = DataLoader(ImageDataset(images, eval_transform(preprocess)), batch_size=inference_batch_size(device, preprocess.input_size), num_workers=workers)
    for batch, labels in loader:
        with torch.no_grad():
            prefix_outputs = split.frozen(batch.to(device))
        yield prefix_outputs, labels


class CachedInputs:
    """Batches of precomputed prefix outputs."""

    def __init__(self, outputs: np.ndarray, labels: np.ndarray) -> None:
        # Pooled features are small enough to read into memory; feature maps stay memory-mapped.
        self.outputs = np.array(outputs) if outputs.ndim == 2 else outputs
        self.labels = torch.from_numpy(labels.astype(np.float32))

    def batches(self, batch_indices: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for indices in batch_indices:
            yield torch.from_numpy(np.array(self.outputs[indices.numpy()])), self.labels[indices]


class EpochBatches:
    """The batch sampler of a DataLoader that lives for the whole run: the batches of the epoch being run."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ImageInputs:
    """Batches of images through the frozen prefix, loaded and augmented by DataLoader workers.

    The workers are forked once, at the first epoch. Forked again every epoch,
    they would share the trainer's by then large heap copy-on-write, and every
    page the trainer reuses (model.cpu_memory keeps them all) would be copied.
    """

    def __init__(self, dataset: ImageDataset, split: SplitModel, device: str, workers: int) -> None:
        self.split = split
        self.device = device
        self.epoch_batches = EpochBatches()
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.epoch_batches,
            num_workers=workers,
            pin_memory=device == "cuda",
            persistent_workers=workers > 0,
        )

    def batches(self, batch_indices: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.epoch_batches.batches = [indices.tolist() for indices in batch_indices]
        for images, labels in self.loader:
            # Yield outside no_grad: a generator suspended inside it would leave grad mode off for the caller.
            with torch.no_grad():
                prefix_outputs = self.split.frozen(images.to(self.device, non_blocking=True))
            yield prefix_outputs, labels


def schedule_learning_rates(optimizer: torch.optim.Optimizer, schedule: str, iteration: int, total: int) -> None:
    """Set each group's rate for `iteration` of `total`: its initial rate, kept ("constant") or cosine-decayed to 0."""
    factor = 1.0 if schedule == "constant" else 0.5 * (1.0 + math.cos(math.pi * iteration / total))
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor


def build_optimizer(kind: str, weight_decay: float, new_layer: nn.Module, trained_stages: nn.Module, lr: float) -> torch.optim.Optimizer:
    """An optimizer of `kind` (adam | sgd) over a layer trained from scratch (at NEW_LAYER_LR_MULTIPLIER x lr)
    and the backbone stages being fine-tuned (at lr); each group remembers its initial rate for the schedule."""
    groups = [{"params": list(new_layer.parameters()), "lr": lr * NEW_LAYER_LR_MULTIPLIER}]
    backbone_params = [p for p in trained_stages.parameters() if p.requires_grad]
    if backbone_params:
        groups.append({"params": backbone_params, "lr": lr})
    for group in groups:
        group["initial_lr"] = group["lr"]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
