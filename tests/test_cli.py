"""The CLI parses and dispatches: each subcommand hands its arguments to `mateffnet.commands.<name>.run`."""

import importlib

import pytest

from mateffnet.cli import build_parser, main
from mateffnet.errors import MateffnetError
from mateffnet.io.flowcodec import DEFAULT_FLOW_CODEC


@pytest.fixture
def calls(monkeypatch):
    """Replace every command's `run` with a recorder; returns {name: (args, kwargs)}."""
    seen = {}
    for name in ("prepare", "flow", "train", "evaluate", "reproduce", "predict", "explain", "export", "demo"):
        module = importlib.import_module(f"mateffnet.commands.{name}")

        def record(*args, _name=name, **kwargs):
            seen[_name] = (args, kwargs)
            return 7

        monkeypatch.setattr(module, "run", record)
    return seen


def test_every_subcommand_dispatches_to_its_command_module(calls):
    lines = {
        "prepare": ["prepare", "src", "--out", "store"],
        "flow": ["flow", "v.mp4", "--out", "o"],
        "train": ["train"],
        "evaluate": ["evaluate", "--model", "m"],
        "reproduce": ["reproduce", "table2", "--data-root", "d"],
        "predict": ["predict", "v.mp4", "--model", "m"],
        "explain": ["explain", "v.mp4", "--model", "m", "--out", "o"],
        "export": ["export", "--model", "m"],
        "demo": ["demo"],
    }
    for name, argv in lines.items():
        assert main(argv) == 7, name
    assert set(calls) == set(lines)


def test_prepare_receives_the_documented_defaults(calls):
    main(["prepare", "videos", "--out", "store"])
    args, kwargs = calls["prepare"]
    assert args == ("videos", "store")
    assert kwargs | {"progress": None} == {
        "format": "auto", "annotations": None, "split": 1, "flow_method": "tvl1", "flow_bound": 20.0, "tvl1": "fast",
        "size": "256", "max_frames": None, "workers": None, "device": "auto", "flow_batch": 128, "rgb_quality": 90,
        "flow_quality": 95, "flow_codec": DEFAULT_FLOW_CODEC, "shard": None, "verify": False, "progress": None}


def test_flows_fast_flag_still_works_and_says_it_is_deprecated(calls, capsys):
    main(["flow", "v.mp4", "--out", "o"])
    assert calls["flow"][1]["tvl1"] == "opencv"
    main(["flow", "v.mp4", "--out", "o", "--fast"])
    assert calls["flow"][1]["tvl1"] == "fast"
    assert "--fast is deprecated; use --tvl1 fast" in capsys.readouterr().err


def test_every_device_option_takes_the_same_names(calls):
    for argv in (["evaluate", "--model", "m"], ["predict", "v", "--model", "m"], ["demo"], ["flow", "v", "--out", "o"],
                 ["explain", "v", "--model", "m", "--out", "o"], ["prepare", "s", "--out", "o"]):
        name = argv[0]
        main([*argv, "--device", "cuda:1"])
        assert calls[name][1]["device"] == "cuda:1", name
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([*argv, "--device", "gpu"])
        assert exit_info.value.code == 2


def test_a_command_error_is_one_line_on_stderr_and_status_2(monkeypatch, capsys):
    from mateffnet.commands import train

    def fail(*args, **kwargs):
        raise MateffnetError("config.yaml: model.heads must be a positive integer")

    monkeypatch.setattr(train, "run", fail)
    assert main(["train"]) == 2
    assert capsys.readouterr().err == "mateffnet train: error: config.yaml: model.heads must be a positive integer\n"
