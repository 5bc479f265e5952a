import dataclasses

import pytest
import torch

from mateffnet.config import config_from_dict
from mateffnet.engine.build import (ShardSampler, build_model, check_batch_split, decodes_on_gpu, evaluation_items,
                                    freeze_bn_parameters, lr_factor, make_optimizer, resolve_precision, set_bn_mode)
from mateffnet.errors import MateffnetError


def test_every_model_key_reaches_the_stream_config_unchanged():
    model = {"modality": "flow", "backbone": "resnet18", "pretrained": None, "num_segments": 3, "flow_length": 4,
             "attention": True, "attention_tokens": "segments", "heads": 4, "embed_dim": 64,
             "attention_residual": True, "dropout": 0.3, "input_size": 48, "stem_init": "timm"}
    config = config_from_dict({"model": model, "data": {"store": "/nonexistent"}})
    net = build_model(config, ["a", "b"])
    for key, value in model.items():
        if key != "pretrained":
            assert getattr(net.config, key) == value, key
    assert net.config.class_names == ["a", "b"] and net.config.num_classes == 2


def test_the_global_batch_must_split_evenly_across_processes():
    config = config_from_dict({"train": {"batch_size": 6}})
    check_batch_split(config.train, 3)
    with pytest.raises(MateffnetError, match="train.batch_size 6 \\(global\\) must be divisible by the 4 processes"):
        check_batch_split(config.train, 4)


def test_shard_samplers_cover_every_video_once():
    shards = [list(ShardSampler(10, rank, 3)) for rank in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(10))
    assert shards[1] == [1, 4, 7]


def test_the_test_videos_of_a_list_are_its_validation_list(tmp_path):
    (tmp_path / "train.txt").write_text("a.avi 0\nb.avi 1\n")
    (tmp_path / "val.txt").write_text("c.avi 1\n")
    config = config_from_dict({"data": {"format": "list", "root": str(tmp_path), "annotations": "train.txt",
                                        "val_annotations": "val.txt"}})
    classes, items = evaluation_items(config.data)
    assert [item.video_id for item in items] == ["c"] and classes == ["0", "1"]
    no_val = dataclasses.replace(config.data, val_annotations=None)
    assert [item.video_id for item in evaluation_items(no_val)[1]] == ["a", "b"]


def test_weight_decay_spares_biases_and_norms_and_the_schedule_warms_up():
    config = config_from_dict({"train": {"lr": 0.1, "weight_decay": 1e-3, "warmup_epochs": 1, "epochs": 2}})
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    optimizer, scheduler = make_optimizer(model, config.train, steps_per_epoch=10)
    decayed, spared = optimizer.param_groups
    assert [p.ndim for p in decayed["params"]] == [4] and decayed["weight_decay"] == 1e-3
    assert len(spared["params"]) == 3 and spared["weight_decay"] == 0.0
    factor = lr_factor(config.train, 10)
    assert factor(0) == pytest.approx(0.01) and factor(10) == pytest.approx(1.0) and factor(20) == pytest.approx(0.0)


def test_partial_bn_fixes_every_norm_layer_but_the_first():
    model = torch.nn.Sequential(torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2))
    freeze_bn_parameters(model, "partial")
    model.train()
    set_bn_mode(model, "partial")
    assert [m.training for m in model] == [True, False, False]
    assert [m.weight.requires_grad for m in model] == [True, False, False]


def test_auto_precision_is_fp32_on_the_cpu():
    assert resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16


@pytest.mark.parametrize("decode, device, expected", [
    ("auto", "cuda", "auto"), ("gpu", "cuda", True), ("cpu", "cuda", False), ("auto", "cpu", False),
    ("gpu", "cpu", False),
])
def test_data_decode_chooses_where_images_are_decoded(decode, device, expected):
    data = config_from_dict({"data": {"decode": decode}}).data
    assert decodes_on_gpu(data, torch.device(device)) == expected
