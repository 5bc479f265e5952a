"""Test-time scoring and the two-stream evaluation protocol.

A test item is a video's V views (crops, optionally mirrored) of T evenly spaced segments:
(V, T, C, H, W). Each view is one forward pass of T segments (attention spans all T); the video's score
for a stream is the mean over views of the softmax probabilities; the fused score is the weighted mean of
the streams' scores (MAT-EffNet: 1:1).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mateffnet.config import MODALITIES, DataConfig
from mateffnet.data.dataset import DAMAGED_LABEL, VideoDataset
from mateffnet.engine import distributed
from mateffnet.engine.build import decodes_on_gpu, evaluation_items, make_eval_loader, resolve_precision
from mateffnet.engine.metrics import classification_metrics
from mateffnet.errors import MateffnetError
from mateffnet.fileio import atomic_path, atomic_write_json, atomic_write_text, output_folder
from mateffnet.models import StreamNet, TwoStreamNet, fuse_probabilities
from mateffnet.viz.plots import plot_confusion_matrix


@torch.no_grad()
def collect_scores(model, loader, ctx: distributed.Distributed, precision: torch.dtype = torch.float32,
                   desc: str = "evaluate", progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean softmax over views for every video of `loader`, whose sampler lists this process's share.

    Returns (indices, scores (N, K) float32, labels (N,)) of the whole dataset ordered by index, on every rank.
    """
    was_training = model.training
    model.eval()
    device = ctx.device
    scores, labels = [], []
    for views, label in tqdm(loader, desc=desc, leave=False, disable=not (progress and ctx.is_main),
                             dynamic_ncols=True):
        views = views.to(device, non_blocking=True)
        batch, num_views = views.shape[:2]
        with torch.autocast(device.type, dtype=precision, enabled=precision != torch.float32):
            logits = model(views.flatten(0, 1))
        scores.append(logits.float().softmax(-1).view(batch, num_views, -1).mean(1).cpu().numpy())
        labels.append(np.asarray(label.cpu() if torch.is_tensor(label) else label))
    model.train(was_training)
    indices = np.asarray(loader.sample_indices(), dtype=np.int64)
    local = (indices, np.concatenate(scores) if scores else None, np.concatenate(labels) if labels else None)
    parts = [p for p in distributed.gather_objects(ctx, local) if p[1] is not None]
    all_indices = np.concatenate([p[0] for p in parts])
    order = np.argsort(all_indices)
    return (all_indices[order], np.concatenate([p[1] for p in parts])[order],
            np.concatenate([p[2] for p in parts])[order])


def fused_scores(scores: dict[str, np.ndarray], weights: tuple[float, float]) -> np.ndarray:
    """Weighted mean of the per-stream softmax scores present (MAT-EffNet: 1:1)."""
    present = {name: torch.from_numpy(s) for name, s in scores.items() if name in MODALITIES}
    return fuse_probabilities(present, weights).numpy()


def summarize(scores: dict[str, np.ndarray], labels: np.ndarray, class_names: list[str],
              weights: tuple[float, float], title: str = "evaluation") -> dict:
    """Metrics per stream present and for their fusion, in the schema the HTML report reads.

    {"title", "class_names", "fusion_weights", "videos", "streams": {"rgb"|"flow"|"fused": {"top1", "top5",
    "mean_class", "per_class": {class: top-1 or None}}}}; accuracies are fractions in [0, 1].
    """
    all_scores = dict(scores)
    all_scores["fused"] = fused_scores(scores, weights)
    streams = {}
    for name, stream_scores in all_scores.items():
        m = classification_metrics(stream_scores, labels, len(class_names))
        streams[name] = {**m.summary(), "per_class": dict(zip(class_names, m.per_class))}
    return {"title": title, "class_names": list(class_names), "fusion_weights": {"rgb": weights[0], "flow": weights[1]},
            "videos": int(len(labels)), "streams": streams}


def save_scores(path, video_ids: list[str], labels: np.ndarray, class_names: list[str],
                scores: dict[str, np.ndarray], weights: tuple[float, float]) -> None:
    """Raw per-video scores, so fusion weights can be re-tuned without running the networks again."""
    arrays = {f"scores_{name}": s.astype(np.float32) for name, s in scores.items()}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, video_ids=np.array(video_ids), labels=labels.astype(np.int64),
                                class_names=np.array(class_names), fusion_weights=np.array(weights, dtype=np.float64),
                                **arrays)


def load_scores(path) -> tuple[list[str], np.ndarray, list[str], dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            scores = {key.removeprefix("scores_"): data[key] for key in data.files if key.startswith("scores_")}
            return [str(v) for v in data["video_ids"]], data["labels"], [str(c) for c in data["class_names"]], scores
    except (OSError, KeyError, ValueError) as error:
        raise MateffnetError(f"{path}: not a scores file written by `mateffnet evaluate` ({error})") from error


def write_outputs(out_dir, results: dict, scores: dict[str, np.ndarray], labels: np.ndarray,
                  video_ids: list[str]) -> dict[str, Path]:
    """metrics.json, per_class.csv, confusion_<stream>.png and scores.npz in `out_dir`; returns the image paths."""
    out_dir = output_folder(out_dir)
    class_names = results["class_names"]
    weights = (results["fusion_weights"]["rgb"], results["fusion_weights"]["flow"])
    atomic_write_json(out_dir / "metrics.json", results)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["class", *results["streams"]])
    for name in class_names:
        writer.writerow([name, *("" if m["per_class"][name] is None else f"{m['per_class'][name]:.4f}"
                                 for m in results["streams"].values())])
    atomic_write_text(out_dir / "per_class.csv", buffer.getvalue())
    all_scores = {**scores, "fused": fused_scores(scores, weights)}
    save_scores(out_dir / "scores.npz", video_ids, labels, class_names, all_scores, weights)
    images = {}
    for name, stream_scores in all_scores.items():
        confusion = classification_metrics(stream_scores, labels, len(class_names)).confusion
        images[f"confusion_{name}"] = plot_confusion_matrix(confusion, class_names, out_dir / f"confusion_{name}.png",
                                                            title=f"{name} — confusion matrix")
    return images


def evaluate_streams(data: DataConfig, model_dirs: dict, out_dir, weights: tuple[float, float] = (1.0, 1.0),
                     segments: int | None = None, crops: int | None = None, batch_size: int = 2,
                     device: str = "auto", workers: int | None = None, progress: bool = True,
                     title: str = "evaluation", damaged: str = "stop") -> dict:
    """Score each stream's model folder on the test videos of `data` (a DataConfig), fuse, write outputs.

    segments/crops default to data.test_segments/test_crops (TSN: 25 × 10). Returns `summarize`'s dict.
    A damaged packed file stops the evaluation with one line naming it (`damaged="stop"`), or with
    `damaged="skip"` its video is left out, named in the result's "damaged_videos" and the summary.
    """
    ctx = distributed.setup(device)
    try:
        streams = {name: StreamNet.from_pretrained(folder, ctx.device) for name, folder in model_dirs.items()}
        pair = TwoStreamNet(streams.get("rgb"), streams.get("flow"), weights)  # checks the class lists agree
        class_names, items = evaluation_items(data)
        model_classes = pair.class_names
        if model_classes is not None and list(model_classes) != list(class_names):
            raise MateffnetError(
                f"the model's {len(model_classes)} classes differ from the {len(class_names)} classes of the "
                f"{data.format} annotations ({data.annotations})"
            )
        precision = resolve_precision("auto", ctx.device)
        per_stream, labels_by_id, damaged_ids = {}, {}, set()
        for name, model in streams.items():
            config = model.config
            dataset = VideoDataset(items, data.path(data.store), config.modality,
                                   num_segments=segments or data.test_segments, flow_length=config.flow_length,
                                   train=False, input_size=config.input_size, num_crops=crops or data.test_crops,
                                   defer_decode=decodes_on_gpu(data, ctx.device) if damaged == "stop" else False,
                                   flow_bound=config.flow_bound, damaged=damaged)
            if len(dataset) == 0:
                raise MateffnetError(f"none of the {len(items)} test videos is prepared in {data.path(data.store)}")
            loader = make_eval_loader(dataset, batch_size, workers, ctx)
            indices, scores, labels = collect_scores(model, loader, ctx, precision, desc=f"evaluate {name}",
                                                     progress=progress)
            ids = [dataset.items[i].video_id for i in indices]
            damaged_ids.update(v for v, label in zip(ids, labels.tolist()) if label == DAMAGED_LABEL)
            per_stream[name] = dict(zip(ids, scores))
            labels_by_id.update(zip(ids, labels.tolist()))
        video_ids = sorted(set.intersection(*(set(s) for s in per_stream.values())) - damaged_ids)
        if damaged_ids and not video_ids:
            raise MateffnetError(f"every one of the {len(damaged_ids)} test videos' packed files is damaged; "
                                 "redo them with mateffnet prepare ... --verify")
        scores = {name: np.stack([s[v] for v in video_ids]) for name, s in per_stream.items()}
        labels = np.array([labels_by_id[v] for v in video_ids], dtype=np.int64)
        results = summarize(scores, labels, class_names, pair.weights, title)
        if damaged_ids:
            results["damaged_videos"] = sorted(damaged_ids)
        if ctx.is_main:
            write_outputs(Path(out_dir), results, scores, labels, video_ids)
        return results
    finally:
        distributed.teardown(ctx)

