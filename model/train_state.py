"""Resumable training state without pickle: tensors in safetensors, the rest in JSON.

The trained model tensors (frozen ones are rebuilt from their source), the
optimizer's per-parameter buffers and the torch RNG state are tensors; the
iteration, the optimizer's hyperparameters and the run's configuration are JSON.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

# In a subfolder, so the run folder holds exactly one model checkpoint.
STATE_DIR = "state"
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
MODEL_PREFIX = "model."
OPTIMIZER_PREFIX = "optimizer."
RNG_KEY = "rng.torch"


@dataclass(frozen=True)
class TrainState:
    iteration: int  # the next iteration to run
    config: dict[str, Any]


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, buffers in state["state"].items():
        for key, value in buffers.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{OPTIMIZER_PREFIX}{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], description: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name.startswith(OPTIMIZER_PREFIX):
            param_id, key = name.removeprefix(OPTIMIZER_PREFIX).split(".", 1)
            state.setdefault(int(param_id), {})[key] = tensor
    for param_id, values in description["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": description["param_groups"]}


def save_train_state(
    run_dir: Path, model_tensors: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, iteration: int, config: dict[str, Any]
) -> None:
    """Write both files atomically (tensors first: a crash leaves the previous JSON pointing at a complete set)."""
    state_dir = run_dir / STATE_DIR
    state_dir.mkdir(exist_ok=True)
    optimizer_tensors, optimizer_description = _flatten_optimizer(optimizer)
    tensors = {f"{MODEL_PREFIX}{name}": t.detach().cpu().contiguous() for name, t in model_tensors.items()}
    tensors.update(optimizer_tensors)
    tensors[RNG_KEY] = torch.get_rng_state()
    temporary = state_dir / (STATE_TENSORS + ".tmp")
    save_file(tensors, str(temporary))
    os.replace(temporary, state_dir / STATE_TENSORS)
    description = {"iteration": iteration, "config": config, "optimizer": optimizer_description}
    temporary = state_dir / (STATE_JSON + ".tmp")
    temporary.write_text(json.dumps(description, indent=2) + "\n")
    os.replace(temporary, state_dir / STATE_JSON)


def read_train_state(run_dir: Path) -> TrainState | None:
    path = run_dir / STATE_DIR / STATE_JSON
    if not path.is_file():
        return None
    description = json.loads(path.read_text())
    return TrainState(iteration=int(description["iteration"]), config=description["config"])


def restore_train_state(run_dir: Path, model: nn.Module, trained_names: set[str], optimizer: torch.optim.Optimizer) -> int:
    """Load the trained tensors, optimizer and RNG state in place; return the iteration to continue from."""
    description = json.loads((run_dir / STATE_DIR / STATE_JSON).read_text())
    tensors = load_file(str(run_dir / STATE_DIR / STATE_TENSORS))
    model_tensors = {name.removeprefix(MODEL_PREFIX): t for name, t in tensors.items() if name.startswith(MODEL_PREFIX)}
    if set(model_tensors) != trained_names:
        raise ValueError(f"saved state in {run_dir / STATE_DIR} holds other tensors than this run trains")
    model.load_state_dict(model_tensors, strict=False)
    optimizer.load_state_dict(_unflatten_optimizer(tensors, description["optimizer"]))
    torch.set_rng_state(tensors[RNG_KEY])
    return int(description["iteration"])
