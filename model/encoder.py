"""The encoder the service and evaluation use: images in, packed binary codes out."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from model.checkpoint import load_checkpoint
from model.codes import codes_from_logits
from model.preprocess import PreprocessConfig, preprocess_image

__all__ = ["Encoder", "codes_from_logits", "default_device"]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


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

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | None = None) -> Encoder:
        """`path` is the .safetensors file or its directory; device None picks cuda when available."""
        device = device or default_device()
        checkpoint = load_checkpoint(path, device=device)
        return cls(checkpoint.model, checkpoint.metadata, device)

    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        """The checkpoint's deterministic eval transform (CHW float32, CPU; thread-safe)."""
        return preprocess_image(image, self.preprocess)

    def _check_batch(self, batch: torch.Tensor) -> torch.Tensor:
        size = self.preprocess.input_size
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a batch [B, 3, {size}, {size}], got {tuple(batch.shape)}")
        return batch.to(self.device, dtype=torch.float32, non_blocking=True)

    def encode_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Preprocessed images [B, 3, H, W] -> packed codes uint8 [B, bits // 8]."""
        with torch.inference_mode():
            return codes_from_logits(self._model(self._check_batch(batch)))

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        chunks = [
            self.encode_tensors(torch.stack([self.preprocess_image(image) for image in images[start : start + batch_size]]))
            for start in range(0, len(images), batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.bits // 8), dtype=np.uint8)

    def features(self, batch: torch.Tensor) -> np.ndarray:
        """Pooled backbone features float32 [B, F], for float baselines (LSH, ITQ, cosine)."""
        with torch.inference_mode():
            return self._model.backbone.forward_features(self._check_batch(batch)).float().cpu().numpy()
