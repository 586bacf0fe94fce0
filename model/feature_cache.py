"""Outputs of a frozen backbone prefix, computed once per image set and kept on disk.

Frozen training (and fine-tuning with frozen early stages and no augmentation)
sees the same prefix output for an image every epoch, so computing it once
turns hours of convolutions into a file read. The file name hashes everything
the outputs depend on, so a stale cache is never reused.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.checkpoint import hash_tensors
from model.data import ImageDataset, LabelledImages
from model.preprocess import PreprocessConfig, eval_transform

log = logging.getLogger(__name__)


def prefix_name(backbone_name: str, stages: int) -> str:
    """The name of a backbone's first `stages` stages in cache keys: the trainer and the evaluation must agree on it."""
    return f"{backbone_name}[:{stages}]"


def cache_key(prefix: nn.Module, prefix_name: str, preprocess: PreprocessConfig, images: LabelledImages) -> str:
    digest = hashlib.sha256()
    description = {"prefix": prefix_name, "preprocess": preprocess.to_dict(), "paths": [str(p) for p in images.paths]}
    digest.update(json.dumps(description, sort_keys=True).encode())
    hash_tensors(digest, prefix.state_dict())
    return digest.hexdigest()[:16]


@torch.inference_mode()
def _compute(
    prefix: nn.Module, images: LabelledImages, preprocess: PreprocessConfig, path: Path, device: str, batch_size: int, workers: int
) -> None:
    loader = DataLoader(
        ImageDataset(images, eval_transform(preprocess)), batch_size=batch_size, num_workers=workers, pin_memory=device == "cuda"
    )
    prefix = prefix.to(device).eval()
    temporary = path.with_name(path.name + ".tmp.npy")
    outputs = None
    start = 0
    for batch, _labels in tqdm(loader, desc=f"caching {path.stem}", unit="batch", leave=False):
        result = prefix(batch.to(device)).float().cpu().numpy()
        if outputs is None:
            outputs = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=(len(images), *result.shape[1:]))
        outputs[start : start + len(result)] = result
        start += len(result)
    outputs.flush()
    del outputs
    os.replace(temporary, path)


def cached_outputs(
    prefix: nn.Module,
    prefix_name: str,
    preprocess: PreprocessConfig,
    images: LabelledImages,
    cache_dir: str | Path,
    *,
    device: str,
    batch_size: int,
    workers: int = 0,
) -> np.ndarray:
    """prefix(eval-preprocessed image) for every image, float32 [N, ...], memory-mapped.

    `prefix_name` names the architecture part (e.g. "efficientnet_lite0[:18]");
    its weights are hashed from `prefix` itself.
    """
    if len(images) == 0:
        raise ValueError("no images to cache")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{cache_key(prefix, prefix_name, preprocess, images)}.npy"
    if path.is_file():
        log.info("using cached %s outputs for %d images: %s", prefix_name, len(images), path)
    else:
        log.info("computing %s outputs for %d images into %s", prefix_name, len(images), path)
        _compute(prefix, images, preprocess, path, device, batch_size, workers)
    return np.load(path, mmap_mode="r")
