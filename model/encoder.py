"""The encoder the service and evaluation use: images in, packed binary codes out."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from model.checkpoint import hash_tensors, load_checkpoint
from model.codes import codes_from_logits
from model.preprocess import PreprocessConfig, preprocess_image

__all__ = ["Encoder", "codes_from_logits", "default_device", "inference_batch_size"]


# On the CPU, large batches are slower per image: activations beyond glibc's
# mmap threshold are mapped and page-faulted afresh on every call. Lite0 at
# 224 px on 2 cores took 22-33 ms an image in batches of 4 and 57 ms in
# batches of 64. Batches are cut to about this many input pixels.
CPU_PIXELS_PER_FORWARD = 4 * 224 * 224
GPU_BATCH = 256


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def inference_batch_size(device: str, input_size: int) -> int:
    """Images per forward pass that run fastest on `device`."""
    if device.startswith("cuda"):
        return GPU_BATCH
    return max(1, CPU_PIXELS_PER_FORWARD // (input_size * input_size))


class Encoder:
    """A verified checkpoint ready for inference.

    Codes are uint8 [B, bits // 8]: bit i is 1 iff z_i >= 0, packed most
    significant bit first (np.packbits), as `codes_from_logits` defines.
    """

    def __init__(self, model: torch.nn.Module, metadata: dict[str, Any], device: str) -> None:
        self._model = model
        self.metadata = metadata  # the checkpoint sidecar: training config, metrics, ...
        self.bits: int = int(metadata["bits"])
        self.fingerprint: str = metadata["fingerprint"]
        self.device = device
        self.preprocess = PreprocessConfig.from_dict(metadata["preprocess"])
        self.label_names: list[str] = list(metadata["label_names"])
        self._forward_batch = inference_batch_size(device, self.preprocess.input_size)
        self._backbone_fingerprint: str | None = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None) -> Encoder:
        """`path` is the .safetensors file or its directory; device None picks cuda when available."""
        device = device or default_device()
        checkpoint = load_checkpoint(path, device=device)
        return cls(checkpoint.model, checkpoint.metadata, device)

    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        """The checkpoint's deterministic eval transform (CHW float32, CPU; thread-safe)."""
        return preprocess_image(image, self.preprocess)

    def _forward(self, network: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
        """Run `network` over the batch in pieces of the fastest size, on the device."""
        size = self.preprocess.input_size
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a batch [B, 3, {size}, {size}], got {tuple(batch.shape)}")
        with torch.inference_mode():
            return torch.cat(
                [network(part.to(self.device, dtype=torch.float32, non_blocking=True)) for part in batch.split(self._forward_batch)]
            )

    def encode_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Preprocessed images [B, 3, H, W] -> packed codes uint8 [B, bits // 8]."""
        return codes_from_logits(self._forward(self._model, batch))

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        chunks = [
            self.encode_tensors(torch.stack([self.preprocess_image(image) for image in images[start : start + batch_size]]))
            for start in range(0, len(images), batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.bits // 8), dtype=np.uint8)

    def features(self, batch: torch.Tensor) -> np.ndarray:
        """Pooled backbone features float32 [B, F], for float baselines (LSH, ITQ, cosine)."""
        return self._forward(self._model.backbone.forward_features, batch).float().cpu().numpy()

    def encode_with_features(self, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(packed codes, pooled features) with one backbone pass: the codes are the hash layer of those features."""
        return self._codes_and_features(self._forward(self._model.backbone.forward_features, batch))

    def backbone_prefix(self, stages: int) -> torch.nn.Module:
        """The backbone's first `stages` stages (see `Backbone.stages`), for caching their outputs."""
        return torch.nn.Sequential(*self._model.backbone.stages()[:stages])

    def encode_from_stage(self, outputs: torch.Tensor, stage: int) -> tuple[np.ndarray, np.ndarray]:
        """(packed codes, pooled features) from the outputs of the first `stage` backbone stages."""
        rest = torch.nn.Sequential(*self._model.backbone.stages()[stage:])
        with torch.inference_mode():
            return self._codes_and_features(rest(outputs.to(self.device, dtype=torch.float32)))

    @torch.inference_mode()
    def _codes_and_features(self, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The hash layer's codes of pooled features, and the features on the host."""
        return codes_from_logits(self._model.hash_layer(features)), features.float().cpu().numpy()

    def codes_from_features(self, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Packed codes of pooled backbone features [N, F] (from this encoder's backbone) through the hash layer."""
        chunks = [np.zeros((0, self.bits // 8), dtype=np.uint8)]
        with torch.inference_mode():
            for start in range(0, len(features), batch_size):
                part = torch.from_numpy(np.ascontiguousarray(features[start : start + batch_size], dtype=np.float32))
                chunks.append(codes_from_logits(self._model.hash_layer(part.to(self.device))))
        return np.concatenate(chunks)

    @property
    def backbone_fingerprint(self) -> str:
        """Hash of what the features depend on: the backbone's tensors and the preprocessing.

        Head-only checkpoints over the same backbone share it, so their
        evaluations can share the (expensive) features of an image set.
        """
        if self._backbone_fingerprint is None:
            digest = hashlib.sha256(json.dumps(self.preprocess.to_dict(), sort_keys=True).encode())
            hash_tensors(digest, self._model.backbone.state_dict())
            self._backbone_fingerprint = digest.hexdigest()[:16]
        return self._backbone_fingerprint
