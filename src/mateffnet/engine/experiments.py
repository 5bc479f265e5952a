"""The paper's experiments as data: which runs make up Tables 2–4, their configs, the paper's numbers.

Table 2 (UCF101) and Table 3 (HMDB51): ResNet-18/34/50 and EfficientNet-B0 (input 112/168/224/224),
each with and without the attention layer, RGB and flow streams and their 1:1 fusion, mean of the
three official splits. Table 4 (Kinetics-400): EfficientNet-B0 with and without attention, top-1 and
top-5.

Beyond the paper, the temporal-order ablation on the motion-centric datasets (tables `sthv2`,
`diving48`, `kinetics600`, `kinetics700`): EfficientNet-B0 without attention, with attention (the
paper's stream, blind to the order of its segments), and with attention plus a learned or a sinusoidal
temporal position encoding (`models/temporal.py`), RGB and flow, 1:1 fusion. Something-Something v2 is
trained without horizontal flips: a third of its classes name a direction ("from left to right").

`python -m mateffnet.experiments configs/` writes one YAML per run (the files shipped in configs/);
`mateffnet reproduce` runs them. Paths inside the configs are relative to `data.root`, which
`reproduce --data-root DIR` sets; the expected layout of DIR is:

    DIR/ucf101/store/              packed videos (mateffnet prepare)    DIR/ucf101/ucfTrainTestlist/
    DIR/hmdb51/store/                                                   DIR/hmdb51/testTrainMulti_7030_splits/
    DIR/kinetics400/store/                                              DIR/kinetics400/annotations/ (CSVs)
    DIR/kinetics600/store/, DIR/kinetics700/store/                      DIR/kinetics{600,700}/annotations/ (CSVs)
    DIR/sthv2/store/        DIR/sthv2/annotations/ (something-something-v2-labels.json, -train.json, -validation.json)
    DIR/diving48/store/     DIR/diving48/annotations/ (Diving48_vocab.json, Diving48_V2_train.json, _test.json)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from mateffnet.config import MODALITIES
from mateffnet.models.backbones import PAPER_INPUT_SIZE

BACKBONES = ("resnet18", "resnet34", "resnet50", "efficientnet_b0")
BACKBONE_LABEL = {"resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50",
                  "efficientnet_b0": "EfficientNet-B0"}
DATASETS = {
    "ucf101": {"format": "ucf101", "annotations": "ucf101/ucfTrainTestlist", "store": "ucf101/store", "splits": (1, 2, 3)},
    "hmdb51": {"format": "hmdb51", "annotations": "hmdb51/testTrainMulti_7030_splits", "store": "hmdb51/store",
               "splits": (1, 2, 3)},
    "kinetics400": {"format": "kinetics400", "annotations": "kinetics400/annotations", "store": "kinetics400/store",
                    "splits": (None,)},
    "kinetics600": {"format": "kinetics600", "annotations": "kinetics600/annotations", "store": "kinetics600/store",
                    "splits": (None,)},
    "kinetics700": {"format": "kinetics700", "annotations": "kinetics700/annotations", "store": "kinetics700/store",
                    "splits": (None,)},
    "sthv2": {"format": "sthv2", "annotations": "sthv2/annotations", "store": "sthv2/store", "splits": (None,),
              "flip": False},
    "diving48": {"format": "diving48", "annotations": "diving48/annotations", "store": "diving48/store", "splits": (None,)},
}
TABLES = {"table2": "ucf101", "table3": "hmdb51", "table4": "kinetics400", "sthv2": "sthv2", "diving48": "diving48",
          "kinetics600": "kinetics600", "kinetics700": "kinetics700"}
PAPER_TABLES = ("table2", "table3", "table4")
# The order ablation's variants: (attention, temporal encoding); the paper's two come first.
ORDER_ABLATION = ((False, "none"), (True, "none"), (True, "learned"), (True, "sinusoidal"))
ENCODING_SUFFIX = {"none": "", "learned": "_learnedpe", "sinusoidal": "_sinpe"}

# The paper's reported numbers (%), keyed (dataset, backbone, attention, column). Only the headline
# results were transcribed; the per-stream and ablation cells of Tables 2–4 are None
# until someone copies them from the paper, and the report prints "n/a" for them.
PAPER_RESULTS: dict[tuple[str, str, bool, str], float | None] = {
    ("ucf101", "efficientnet_b0", True, "fused_top1"): 94.8,
    ("hmdb51", "efficientnet_b0", True, "fused_top1"): 71.1,
    ("kinetics400", "efficientnet_b0", True, "fused_top1"): 72.6,
    ("kinetics400", "efficientnet_b0", True, "fused_top5"): 90.8,
}


@dataclass(frozen=True)
class Run:
    """One trained stream of one experiment."""

    dataset: str
    split: int | None
    backbone: str
    attention: bool
    modality: str
    temporal_encoding: str = "none"

    @property
    def variant(self) -> str:
        return f"{'' if self.attention else '_noatt'}{ENCODING_SUFFIX[self.temporal_encoding]}"

    @property
    def name(self) -> str:
        split = f"_split{self.split}" if self.split else ""
        return f"{self.dataset}{split}_{self.modality}_{self.backbone}{self.variant}"

    @property
    def pair(self) -> str:
        """The name shared by the RGB and flow runs that are fused together."""
        split = f"_split{self.split}" if self.split else ""
        return f"{self.dataset}{split}_{self.backbone}{self.variant}"

    @property
    def config_path(self) -> str:
        return f"{self.dataset}/{self.name}.yaml"

    def config(self) -> dict:
        data = DATASETS[self.dataset]
        config = {
            "name": self.name,
            "data": {"root": "data", "format": data["format"], "store": data["store"], "annotations": data["annotations"]},
            "model": {"modality": self.modality, "backbone": self.backbone, "attention": self.attention,
                      "input_size": PAPER_INPUT_SIZE[self.backbone]},
            "train": {"epochs": 50, "batch_size": 16, "lr": 0.01},
        }
        if self.temporal_encoding != "none":
            config["model"]["temporal_encoding"] = self.temporal_encoding
        if data.get("flip") is False:
            config["data"]["flip"] = False
        if self.split:
            config["data"]["split"] = self.split
        if self.modality == "flow":
            config["train"]["clip_grad_norm"] = 20.0  # TSN's setting for the flow stream
        return config


def runs(table: str, splits: tuple[int, ...] | None = None, backbones: tuple[str, ...] | None = None) -> list[Run]:
    dataset = TABLES[table]
    one_split = DATASETS[dataset]["splits"] == (None,)
    chosen_splits = DATASETS[dataset]["splits"] if splits is None or one_split else splits
    if table not in PAPER_TABLES:  # the order ablation: EfficientNet-B0 in four variants
        return [Run(dataset, None, "efficientnet_b0", attention, modality, encoding)
                for attention, encoding in ORDER_ABLATION for modality in MODALITIES]
    chosen_backbones = ("efficientnet_b0",) if one_split else (backbones or BACKBONES)
    return [Run(dataset, split, backbone, attention, modality)
            for split in chosen_splits for backbone in chosen_backbones for attention in (False, True)
            for modality in MODALITIES]


def all_runs() -> list[Run]:
    return [run for table in TABLES for run in runs(table)]


def config_text(run: Run) -> str:
    encoding = "" if run.temporal_encoding == "none" else f" and a {run.temporal_encoding} temporal position encoding"
    header = (f"# {run.name}: {BACKBONE_LABEL[run.backbone]} {run.modality} stream "
              f"{'with' if run.attention else 'without'} attention{encoding} on {run.dataset}"
              f"{f' split {run.split}' if run.split else ''}.\n"
              f"# Generated by `python -m mateffnet.experiments configs/`; every other key has its default "
              f"(`mateffnet train --help-config`).\n")
    return header + yaml.safe_dump(run.config(), sort_keys=False)


def write_configs(folder: str | Path) -> int:
    folder = Path(folder)
    for run in all_runs():
        path = folder / run.config_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config_text(run))
    return len(all_runs())


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    target = args[0] if args else "configs"
    print(f"wrote {write_configs(target)} configs under {target}/")
