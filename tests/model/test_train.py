"""Real (tiny) training runs on grocery images: the loss falls, retrieval improves, runs resume."""
import csv
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model import warmup as model_warmup
from model.backbones import create_backbone
from model.checkpoint import FULL, HEAD_ONLY, read_metadata
from model.continuation import FixedBeta
from model.data import DataSplits, grocery, load_image
from model.encoder import Encoder, codes_from_logits
from model.hashnet import HashNet, sign_straight_through
from model.loss import uniform_weights
from model.metrics import mean_average_precision
from model.preprocess import preprocess_image
from model.train import EVAL_SAMPLE_SEED, build_parser, config_from_args, main, read_history, run_training
from model.train_config import TrainConfig

CLASSES = (0, 10, 20, 30, 40, 50)  # apples, ... , packages: visually distinct groups
TRAIN_PER_CLASS = 8
QUERIES_PER_CLASS = 3
IMAGE_SIZE = 64


def _pick(images, per_class):
    rows = [i for c in CLASSES for i in np.flatnonzero(images.labels[:, c])[:per_class]]
    return images.subset(rows)


@pytest.fixture(scope="module")
def tiny_grocery(shared_data) -> DataSplits:
    train = _pick(grocery(shared_data / "grocery", "train"), TRAIN_PER_CLASS)
    query = _pick(grocery(shared_data / "grocery", "test"), QUERIES_PER_CLASS)
    return DataSplits(train=train, query=query, database=train)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _config(tmp_path, cache_dir, **overrides) -> TrainConfig:
    values = dict(
        data="grocery", out=str(tmp_path / "run"), mode="frozen", image_size=IMAGE_SIZE, epochs=12, batch_size=16,
        workers=0, device="cpu", cache_dir=str(cache_dir),
    )
    return TrainConfig(**{**values, **overrides})


def _map_of(model: HashNet, splits: DataSplits) -> float:
    def codes(images):
        batch = torch.stack([preprocess_image(load_image(p), model.backbone.preprocess) for p in images.paths])
        with torch.inference_mode():
            return codes_from_logits(model.eval()(batch))

    return _trainers_map(codes(splits.query), splits.query.labels, codes(splits.database), splits.database.labels)


def _trainers_map(query_codes, query_labels, db_codes, db_labels) -> float:
    """mAP@all with the database in the seeded order the trainer's quick evaluation ranks ties in."""
    order = np.random.default_rng(EVAL_SAMPLE_SEED).permutation(len(db_labels))
    return mean_average_precision(query_codes, query_labels, db_codes[order], db_labels[order])


def _mean_loss(history, epochs):
    return np.mean([r["loss"] for r in history if r["epoch"] in epochs])


@pytest.fixture(scope="module")
def untrained_map(tiny_grocery) -> float:
    """mAP of the network every run below starts from (seed 0: the trainer's initial head)."""
    torch.manual_seed(TrainConfig.seed)
    return _map_of(HashNet(create_backbone("efficientnet_lite0", input_size=IMAGE_SIZE), TrainConfig.bits), tiny_grocery)


def test_frozen_training_lowers_loss_and_raises_map(tiny_grocery, cache_dir, untrained_map, tmp_path):
    config = _config(tmp_path, cache_dir)
    result = run_training(config, tiny_grocery)
    history = read_history(config.out)
    assert len(history) == 12 * 3
    assert _mean_loss(history, {10, 11}) < 0.8 * _mean_loss(history, {0, 1})

    encoder = Encoder.from_checkpoint(result.checkpoint, device="cpu")
    trained_map = result.summary["quick_map"]["map_all"]
    assert trained_map > untrained_map + 0.05
    # The checkpoint reproduces the trainer's own evaluation.
    query = encoder.encode_images([load_image(p) for p in tiny_grocery.query.paths])
    database = encoder.encode_images([load_image(p) for p in tiny_grocery.database.paths])
    assert _trainers_map(query, tiny_grocery.query.labels, database, tiny_grocery.database.labels) == pytest.approx(trained_map)

    metadata = read_metadata(result.checkpoint)
    assert metadata["kind"] == HEAD_ONLY and metadata["bits"] == 64 and metadata["fingerprint"] == result.fingerprint
    assert metadata["training"]["mode"] == "frozen" and metadata["metrics"]["quick_map_all"] == pytest.approx(trained_map)
    assert metadata["label_names"] == tiny_grocery.train.class_names
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["loss_by_stage"][0]["beta"] == 1.0


def test_finetune_lowers_loss_raises_map_and_saves_full_checkpoint(tiny_grocery, cache_dir, untrained_map, tmp_path):
    config = _config(tmp_path, cache_dir, mode="finetune", epochs=4, augment=False, lr=3e-4)
    result = run_training(config, tiny_grocery)
    history = read_history(config.out)
    assert _mean_loss(history, {3}) < 0.8 * _mean_loss(history, {0})
    assert result.summary["quick_map"]["map_all"] > untrained_map + 0.02
    assert read_metadata(result.checkpoint)["kind"] == FULL
    initial = create_backbone("efficientnet_lite0", input_size=IMAGE_SIZE).state_dict()
    tuned = Encoder.from_checkpoint(result.checkpoint, device="cpu")._model.backbone.state_dict()
    assert not torch.equal(initial["_blocks.0._depthwise_conv.weight"], tuned["_blocks.0._depthwise_conv.weight"])


def test_finetune_with_frozen_cached_stages_trains_only_the_rest(tiny_grocery, cache_dir, tmp_path):
    config = _config(tmp_path, cache_dir, mode="finetune", epochs=2, freeze_stages=12, cache_activations=True, augment=False, evaluate=False)
    result = run_training(config, tiny_grocery)
    initial = create_backbone("efficientnet_lite0", input_size=IMAGE_SIZE).state_dict()
    tuned = Encoder.from_checkpoint(result.checkpoint, device="cpu")._model.backbone.state_dict()
    assert torch.equal(initial["_blocks.10._project_conv.weight"], tuned["_blocks.10._project_conv.weight"])
    assert not torch.equal(initial["_blocks.11._project_conv.weight"], tuned["_blocks.11._project_conv.weight"])


def test_finetune_with_batches_grouped_by_class(tiny_grocery, cache_dir, tmp_path):
    config = _config(tmp_path, cache_dir, mode="finetune", epochs=1, per_class=4, evaluate=False)
    result = run_training(config, tiny_grocery)
    history = read_history(config.out)
    assert len(history) == 48 // 16 and all(np.isfinite(r["loss"]) for r in history)
    initial = create_backbone("efficientnet_lite0", input_size=IMAGE_SIZE).state_dict()
    tuned = Encoder.from_checkpoint(result.checkpoint, device="cpu")._model.backbone.state_dict()
    assert not torch.equal(initial["_blocks.0._depthwise_conv.weight"], tuned["_blocks.0._depthwise_conv.weight"])
    assert read_metadata(result.checkpoint)["training"]["per_class"] == 4


def test_finetune_starts_from_a_trained_head(tiny_grocery, cache_dir, tmp_path):
    head = run_training(_config(tmp_path / "head", cache_dir, evaluate=False), tiny_grocery)
    trained_head = Encoder.from_checkpoint(head.checkpoint, device="cpu")._model.hash_layer.weight
    # A learning rate too small to move anything: the run ends where it started.
    config = _config(tmp_path / "tuned", cache_dir, mode="finetune", epochs=1, lr=1e-12, evaluate=False, init_from=str(head.checkpoint))
    tuned = run_training(config, tiny_grocery)
    assert torch.allclose(Encoder.from_checkpoint(tuned.checkpoint, device="cpu")._model.hash_layer.weight, trained_head, atol=1e-6)
    assert read_metadata(tuned.checkpoint)["training"]["init_from"] == str(head.checkpoint)
    fresh = run_training(replace(config, out=str(tmp_path / "fresh"), init_from=None), tiny_grocery)
    assert not torch.allclose(Encoder.from_checkpoint(fresh.checkpoint, device="cpu")._model.hash_layer.weight, trained_head, atol=1e-3)
    with pytest.raises(ValueError, match="with 64 bits; this run trains efficientnet_lite0 with 32 bits"):
        run_training(replace(config, out=str(tmp_path / "wrong"), bits=32), tiny_grocery)


def test_a_head_trained_on_a_fine_tuned_backbone_keeps_that_backbone(tiny_grocery, cache_dir, tmp_path):
    tuned = run_training(_config(tmp_path / "tuned", cache_dir, mode="finetune", epochs=1, evaluate=False), tiny_grocery)
    head = run_training(_config(tmp_path / "head", cache_dir, epochs=1, evaluate=False, init_from=str(tuned.checkpoint)), tiny_grocery)
    assert read_metadata(head.checkpoint)["kind"] == FULL
    saved, started = (Encoder.from_checkpoint(r.checkpoint, device="cpu")._model.backbone.state_dict() for r in (head, tuned))
    assert all(torch.equal(saved[key], started[key]) for key in started)


def test_frozen_bn_statistics_stay_put_while_the_weights_train(tiny_grocery, cache_dir, tmp_path):
    config = _config(tmp_path, cache_dir, mode="finetune", epochs=1, evaluate=False, frozen_bn_statistics=True)
    initial = create_backbone("efficientnet_lite0", input_size=IMAGE_SIZE).state_dict()
    tuned = Encoder.from_checkpoint(run_training(config, tiny_grocery).checkpoint, device="cpu")._model.backbone.state_dict()
    statistics = [key for key in initial if key.endswith(("running_mean", "running_var"))]
    assert statistics and all(torch.equal(initial[key], tuned[key]) for key in statistics)
    assert not torch.equal(initial["_blocks.0._depthwise_conv.weight"], tuned["_blocks.0._depthwise_conv.weight"])
    updating = run_training(replace(config, out=str(tmp_path / "updating"), frozen_bn_statistics=False), tiny_grocery)
    moved = Encoder.from_checkpoint(updating.checkpoint, device="cpu")._model.backbone.state_dict()
    assert not all(torch.equal(initial[key], moved[key]) for key in statistics)


def test_loader_workers_live_for_the_run_and_serve_every_epoch(tiny_grocery, cache_dir, tmp_path):
    in_process = _config(tmp_path / "a", cache_dir, mode="finetune", epochs=2, augment=False, evaluate=False)
    run_training(in_process, tiny_grocery)
    run_training(_config(tmp_path / "b", cache_dir, mode="finetune", epochs=2, augment=False, evaluate=False, workers=2), tiny_grocery)
    losses = [[r["loss"] for r in read_history(tmp_path / name / "run")] for name in ("a", "b")]
    assert len(losses[0]) == 2 * 3 and losses[1] == pytest.approx(losses[0])


def test_resume_continues_exactly(tiny_grocery, cache_dir, tmp_path):
    straight = run_training(_config(tmp_path / "a", cache_dir, epochs=4, lr_schedule="constant", evaluate=False), tiny_grocery)
    interrupted = _config(tmp_path / "b", cache_dir, epochs=2, lr_schedule="constant", evaluate=False)
    run_training(interrupted, tiny_grocery)
    resumed = run_training(replace(interrupted, epochs=4, resume=True), tiny_grocery)
    assert resumed.fingerprint == straight.fingerprint
    assert [r["loss"] for r in read_history(tmp_path / "b" / "run")] == pytest.approx([r["loss"] for r in read_history(tmp_path / "a" / "run")])
    with pytest.raises(ValueError, match="bits"):
        run_training(replace(interrupted, bits=32, resume=True), tiny_grocery)


def _warmup_config(tmp_path, cache_dir, **overrides) -> TrainConfig:
    values = dict(warmup_epochs=3, warmup_batch_size=8, warmup_lr=1e-4, frozen_bn_statistics=True, lr_schedule="constant")
    return _config(tmp_path, cache_dir, **{**values, **overrides})


def test_warmup_classifies_then_hashes_on_the_tuned_backbone(tiny_grocery, cache_dir, untrained_map, tmp_path):
    result = run_training(_warmup_config(tmp_path, cache_dir), tiny_grocery)
    epochs = result.summary["warmup"]["epochs"]
    assert len(epochs) == 3 and result.summary["warmup"]["iterations"] == 3 * (48 // 8)
    assert epochs[-1]["mean_loss"] < 0.8 * epochs[0]["mean_loss"]
    assert epochs[-1]["train_accuracy"] > epochs[0]["train_accuracy"]

    # The warm-up changed the backbone, so the checkpoint carries it (BatchNorm statistics kept as asked).
    metadata = read_metadata(result.checkpoint)
    assert metadata["kind"] == FULL and metadata["training"]["warmup_epochs"] == 3
    initial = create_backbone("efficientnet_lite0", input_size=IMAGE_SIZE).state_dict()
    encoder = Encoder.from_checkpoint(result.checkpoint, device="cpu")
    tuned = encoder._model.backbone.state_dict()
    assert not torch.equal(initial["_blocks.0._depthwise_conv.weight"], tuned["_blocks.0._depthwise_conv.weight"])
    assert all(torch.equal(initial[key], tuned[key]) for key in initial if key.endswith(("running_mean", "running_var")))

    # The head trained on the tuned features, which the checkpoint reproduces.
    trained_map = result.summary["quick_map"]["map_all"]
    assert trained_map > untrained_map + 0.05
    query = encoder.encode_images([load_image(p) for p in tiny_grocery.query.paths])
    database = encoder.encode_images([load_image(p) for p in tiny_grocery.database.paths])
    assert _trainers_map(query, tiny_grocery.query.labels, database, tiny_grocery.database.labels) == pytest.approx(trained_map)

    # The classifier's accuracy on the queries, recomputed from its saved weights and the checkpoint's backbone.
    classifier = load_file(str(tmp_path / "run" / "warmup" / "state" / "state.safetensors"))
    features = torch.from_numpy(encoder.features(torch.stack([encoder.preprocess_image(load_image(p)) for p in tiny_grocery.query.paths])))
    predicted = (features @ classifier["model.classifier.weight"].T + classifier["model.classifier.bias"]).argmax(dim=1).numpy()
    expected = tiny_grocery.query.labels[np.arange(len(predicted)), predicted].mean()
    assert result.summary["warmup"]["held_out_accuracy"] == pytest.approx(expected)


class _Crash(Exception):
    pass


def _run_until_first_warmup_save(config: TrainConfig, splits: DataSplits, monkeypatch) -> None:
    """Run `config` until it crashes right after the warm-up's first epoch is saved."""
    save = model_warmup.save_train_state

    def save_then_crash(*args, **kwargs):
        save(*args, **kwargs)
        raise _Crash

    monkeypatch.setattr(model_warmup, "save_train_state", save_then_crash)
    with pytest.raises(_Crash):
        run_training(config, splits)
    monkeypatch.undo()


def test_warmup_resumes_mid_stage_and_after_it(tiny_grocery, cache_dir, tmp_path, monkeypatch):
    # With CutMix: its draws, too, must repeat when a run resumes.
    straight = run_training(_warmup_config(tmp_path / "a", cache_dir, epochs=4, evaluate=False, warmup_cutmix=1.0), tiny_grocery)

    # A crash right after the warm-up's first epoch is saved.
    interrupted = _warmup_config(tmp_path / "b", cache_dir, epochs=2, evaluate=False, warmup_cutmix=1.0)
    _run_until_first_warmup_save(interrupted, tiny_grocery, monkeypatch)
    resumed = run_training(replace(interrupted, resume=True), tiny_grocery)
    assert [e["epoch"] for e in resumed.summary["warmup"]["epochs"]] == [2, 3]
    losses = [[e["mean_loss"] for e in r.summary["warmup"]["epochs"]] for r in (resumed, straight)]
    assert losses[0] == pytest.approx(losses[1][1:])

    # Then more HashNet epochs: the finished warm-up is reloaded, not rerun, and the run ends where the straight one did.
    extended = run_training(replace(interrupted, epochs=4, resume=True), tiny_grocery)
    assert "reloaded_from" in extended.summary["warmup"]
    assert extended.fingerprint == straight.fingerprint

    shutil.rmtree(tmp_path / "b" / "run" / "warmup")
    with pytest.raises(ValueError, match="warm-up state"):
        run_training(replace(interrupted, resume=True), tiny_grocery)


def test_a_finished_warmup_serves_heads_of_other_lengths(tiny_grocery, cache_dir, untrained_map, tmp_path, monkeypatch):
    source = run_training(_warmup_config(tmp_path / "a", cache_dir, evaluate=False), tiny_grocery)
    source_dir = tmp_path / "a" / "run"
    # Another length and other HashNet settings: the warm-up is reloaded, not trained again or copied.
    reused = run_training(_warmup_config(tmp_path / "b", cache_dir, bits=32, beta_step=100, warmup_from=str(source_dir)), tiny_grocery)
    assert reused.summary["warmup"]["reloaded_from"] == str(source_dir / "warmup")
    assert "epochs" not in reused.summary["warmup"] and not (tmp_path / "b" / "run" / "warmup").exists()
    source_backbone = Encoder.from_checkpoint(source.checkpoint, device="cpu")._model.backbone.state_dict()
    encoder = Encoder.from_checkpoint(reused.checkpoint, device="cpu")
    assert encoder.bits == 32 and read_metadata(reused.checkpoint)["kind"] == FULL
    assert all(torch.equal(tensor, encoder._model.backbone.state_dict()[key]) for key, tensor in source_backbone.items())
    # A head trained on the reused backbone: it retrieves better than the untrained network.
    assert reused.summary["quick_map"]["map_all"] > untrained_map + 0.05

    with pytest.raises(ValueError, match="another recipe.*warmup_lr: saved 0.0001, now 0.001"):
        run_training(_warmup_config(tmp_path / "c", cache_dir, warmup_lr=1e-3, warmup_from=str(source_dir)), tiny_grocery)
    with pytest.raises(ValueError, match="no warm-up state"):
        run_training(_warmup_config(tmp_path / "c", cache_dir, warmup_from=str(tmp_path / "b" / "run")), tiny_grocery)

    # An unfinished warm-up (interrupted after its first epoch) is refused, and left as it was.
    _run_until_first_warmup_save(_warmup_config(tmp_path / "d", cache_dir, evaluate=False), tiny_grocery, monkeypatch)
    interrupted_state = (tmp_path / "d" / "run" / "warmup" / "state" / "state.json").read_text()
    with pytest.raises(ValueError, match="stopped at iteration 6 of 18"):
        run_training(_warmup_config(tmp_path / "e", cache_dir, warmup_from=str(tmp_path / "d" / "run")), tiny_grocery)
    assert (tmp_path / "d" / "run" / "warmup" / "state" / "state.json").read_text() == interrupted_state


def test_cli_ablation_flags_select_the_parts(tmp_path):
    args = build_parser().parse_args(["--data", "grocery", "--out", str(tmp_path), "--no-weighting", "--fixed-beta", "2", "--sign-train"])
    config = config_from_args(args)
    assert config.loss().weighting is uniform_weights
    assert config.beta_schedule() == FixedBeta(2.0)
    assert config.activation() is sign_straight_through
    default = config_from_args(build_parser().parse_args(["--data", "grocery", "--out", str(tmp_path)]))
    assert default.beta_schedule().beta_at(400) > 1 and default.weighting and not default.sign_train
    assert default.per_class == 1


def test_cli_groups_batches_by_class(tmp_path):
    args = build_parser().parse_args(["--data", "grocery", "--out", str(tmp_path), "--per-class", "4"])
    assert config_from_args(args).per_class == 4
    with pytest.raises(ValueError, match="per_class"):
        config_from_args(build_parser().parse_args(["--data", "grocery", "--out", str(tmp_path), "--per-class", "100"]))


def test_cli_warmup_flags(tmp_path):
    arguments = ["--data", "grocery", "--out", str(tmp_path), "--warmup-epochs", "6", "--warmup-lr", "2e-5", "--warmup-label-smoothing", "0.1"]
    config = config_from_args(build_parser().parse_args(arguments))
    assert (config.warmup_epochs, config.warmup_lr, config.warmup_label_smoothing, config.warmup_batch_size) == (6, 2e-5, 0.1, 32)
    assert config.warmup_optimizer_kind == "adam"
    default = config_from_args(build_parser().parse_args(["--data", "grocery", "--out", str(tmp_path)]))
    assert default.warmup_epochs == 0
    assert default.warmup_cutmix == 0.0
    sgd = config_from_args(build_parser().parse_args([*arguments, "--warmup-optimizer", "sgd", "--warmup-cutmix", "1"]))
    assert (sgd.optimizer, sgd.warmup_optimizer_kind, sgd.warmup_cutmix) == ("adam", "sgd", 1.0)
    with pytest.raises(ValueError, match="warmup_optimizer"):
        replace(config, warmup_optimizer="lbfgs")
    reusing = config_from_args(build_parser().parse_args([*arguments, "--warmup-from", "runs/a", "--bits", "32", "--optimizer", "sgd", "--warmup-optimizer", "adam"]))
    assert reusing.warmup_from == "runs/a" and reusing.warmup_differences(config) == {}
    assert reusing.warmup_differences(replace(config, warmup_optimizer="sgd")) == {"warmup_optimizer": ("sgd", "adam")}
    with pytest.raises(ValueError, match="warmup_from"):
        config_from_args(build_parser().parse_args(["--data", "grocery", "--out", str(tmp_path), "--warmup-from", "runs/a"]))
    for bad in (["--warmup-epochs", "-1"], ["--warmup-label-smoothing", "1.0"], ["--warmup-batch-size", "0"], ["--warmup-cutmix", "-1"]):
        with pytest.raises(ValueError, match="warmup"):
            config_from_args(build_parser().parse_args(["--data", "grocery", "--out", str(tmp_path), *bad]))


def test_cli_trains_from_a_list_file(tiny_grocery, cache_dir, tmp_path, capsys):
    list_path = tmp_path / "images.txt"
    lines = [f"{p} {tiny_grocery.train.class_names[int(np.argmax(row))]}" for p, row in zip(tiny_grocery.train.paths, tiny_grocery.train.labels)]
    list_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    main([
        "--data", f"list:{list_path}", "--out", str(out), "--mode", "frozen", "--bits", "32", "--epochs", "3",
        "--batch-size", "8", "--image-size", str(IMAGE_SIZE), "--workers", "0", "--device", "cpu",
        "--cache-dir", str(cache_dir), "--no-weighting", "--fixed-beta", "3", "--sign-train",
    ])
    printed = json.loads(capsys.readouterr().out)
    assert 0.0 <= printed["quick_map"]["map_all"] <= 1.0
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {float(row["beta"]) for row in rows} == {3.0} and len(rows) == 3 * (43 // 8)
    assert (out / "hashnet-efficientnet_lite0-32.safetensors").is_file() and (out / "train.log").read_text()
    assert Encoder.from_checkpoint(out, device="cpu").bits == 32
