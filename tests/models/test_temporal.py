import json

import pytest
import torch
import torch.nn.functional as F

from mateffnet.config import config_from_dict
from mateffnet.engine.build import build_model
from mateffnet.errors import MateffnetError
from mateffnet.models import StreamNet
from mateffnet.models.temporal import QueryReadout, TemporalEncoding, interpolate_table

SIZE = 32


def small_stream(modality="rgb", **options) -> StreamNet:
    torch.manual_seed(0)
    return StreamNet(5, modality=modality, backbone="resnet18", flow_length=2, input_size=SIZE, embed_dim=32,
                     num_segments=4, **options).eval()


def clips_for(model: StreamNet, segments=6, batch=2) -> torch.Tensor:
    """Segments that differ from each other (each its own brightness), so their order is something to see."""
    generator = torch.Generator().manual_seed(1)
    noise = torch.randint(0, 60, (batch, segments, model.config.in_chans, SIZE, SIZE), generator=generator)
    levels = (torch.arange(segments) * 190 // max(segments - 1, 1)).view(1, segments, 1, 1, 1)
    return (noise + levels).clamp(0, 255).to(torch.uint8)


def logits_and_shuffled_logits(model: StreamNet, segments=6):
    clips = clips_for(model, segments)
    permutation = torch.tensor([3, 0, 5, 1, 4, 2][:segments])
    with torch.no_grad():
        return model(clips), model(clips[:, permutation])


def give_encoding_weight(model: StreamNet) -> StreamNet:
    """Tables and queries unlike their initial values, as after training."""
    if model.temporal_encoding is not None and model.temporal_encoding.kind == "learned":
        with torch.no_grad():
            model.temporal_encoding.table.normal_(0, 1.0, generator=torch.Generator().manual_seed(2))
    if model.readout is not None:
        with torch.no_grad():
            model.readout.query.normal_(0, 1.0, generator=torch.Generator().manual_seed(3))
    return model


@pytest.mark.parametrize("modality", ["rgb", "flow"])
@pytest.mark.parametrize("attention", [True, False])
def test_the_papers_stream_and_the_baseline_give_the_same_logits_for_shuffled_segments(modality, attention):
    model = small_stream(modality, attention=attention)
    logits, shuffled = logits_and_shuffled_logits(model)
    assert torch.allclose(logits, shuffled, atol=1e-5, rtol=1e-5)
    assert logits.abs().max() > 1e-3  # not a vacuous comparison of zeros


def test_a_query_readout_without_a_position_encoding_is_still_blind_to_order():
    model = give_encoding_weight(small_stream(readout="query"))
    logits, shuffled = logits_and_shuffled_logits(model)
    assert torch.allclose(logits, shuffled, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("modality", ["rgb", "flow"])
@pytest.mark.parametrize("options", [
    {"temporal_encoding": "learned"},
    {"temporal_encoding": "sinusoidal"},
    {"temporal_encoding": "learned", "readout": "query"},
    {"temporal_encoding": "sinusoidal", "attention": False, "readout": "query"},
    {"temporal_encoding": "sinusoidal", "attention_tokens": "spatiotemporal"},
])
def test_an_order_aware_stream_gives_other_logits_for_shuffled_segments(modality, options):
    model = give_encoding_weight(small_stream(modality, **options))
    logits, shuffled = logits_and_shuffled_logits(model)
    assert (logits - shuffled).abs().max() > 1e-3 * logits.abs().max()


def test_learned_encoding_is_its_table_at_the_training_segment_count_and_interpolates_to_others():
    encoding = TemporalEncoding("learned", 6, num_segments=4)
    assert torch.equal(encoding.table, encoding.sinusoidal(4))  # starts as the fixed encoding
    with torch.no_grad():
        encoding.table.copy_(torch.randn(4, 6))
    assert torch.equal(encoding.encoding(4), encoding.table)
    for segments in (1, 2, 3, 7, 8, 25):
        expected = F.interpolate(encoding.table.T[None], size=segments, mode="linear", align_corners=False)[0].T
        assert torch.allclose(encoding.encoding(segments), expected, atol=1e-6), segments
    # halfway between two trained segments is their average
    table = torch.arange(4.0)[:, None].repeat(1, 6)
    assert torch.allclose(interpolate_table(table, 8)[1:7, 0], torch.tensor([0.25, 0.75, 1.25, 1.75, 2.25, 2.75]))


def test_a_learned_encoding_trained_at_4_segments_runs_at_25():
    model = small_stream(temporal_encoding="learned")
    with torch.no_grad():
        assert model(clips_for(model, segments=25, batch=1)).shape == (1, 5)


def test_sinusoidal_encoding_depends_on_relative_position_not_on_the_segment_count():
    encoding = TemporalEncoding("sinusoidal", 16)
    three, nine = encoding.encoding(3), encoding.encoding(9)
    assert torch.allclose(three, nine[[1, 4, 7]], atol=1e-5)
    assert not torch.allclose(three[0], three[2])


def test_spatiotemporal_tokens_share_their_segments_encoding_over_positions():
    encoding = TemporalEncoding("sinusoidal", 8)
    tokens = torch.zeros(1, 3 * 4, 8)  # 3 segments × 4 positions
    added = encoding(tokens, segments=3)[0].view(3, 4, 8)
    assert torch.equal(added, encoding.encoding(3)[:, None].expand(3, 4, 8))


def test_query_readout_starts_as_the_mean():
    tokens = torch.randn(2, 5, 8)
    assert torch.allclose(QueryReadout(8)(tokens), tokens.mean(dim=1), atol=1e-6)


@pytest.mark.parametrize("options", [{"temporal_encoding": "learned", "readout": "query"},
                                     {"temporal_encoding": "sinusoidal"}])
def test_save_then_load_keeps_the_order_options_and_predicts_the_same(tmp_path, options):
    model = give_encoding_weight(small_stream("flow", **options))
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert {k: saved[k] for k in options} == options
    loaded = StreamNet.from_pretrained(tmp_path)
    assert loaded.config == model.config
    clips = clips_for(model)
    with torch.no_grad():
        assert torch.equal(loaded(clips), model(clips))


def test_a_model_folder_saved_before_the_order_options_loads_as_the_papers_model(tmp_path):
    model = small_stream()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("temporal_encoding", "readout"):
        del config[key]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = StreamNet.from_pretrained(tmp_path)
    assert (loaded.config.temporal_encoding, loaded.config.readout) == ("none", "mean")
    assert loaded.temporal_encoding is None and loaded.readout is None


@pytest.mark.parametrize("key, value", [("temporal_encoding", "rope"), ("readout", "max")])
def test_bad_order_options_are_one_line_errors_naming_the_key(key, value):
    with pytest.raises(MateffnetError, match=key):
        StreamNet(3, backbone="resnet18", **{key: value})
    with pytest.raises(MateffnetError, match=f"model.{key} must be one of"):
        config_from_dict({"model": {key: value}})


def test_the_experiment_config_builds_an_order_aware_stream():
    config = config_from_dict({"model": {"backbone": "resnet18", "temporal_encoding": "sinusoidal", "readout": "query",
                                         "input_size": SIZE, "embed_dim": 32}})
    model = build_model(config, ["a", "b"], pretrained=False)
    assert model.config.temporal_encoding == "sinusoidal" and model.config.readout == "query"
    assert isinstance(model.readout, QueryReadout)
