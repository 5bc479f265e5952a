"""Dataset annotation formats → lists of `VideoItem(video_id, path, label)`.

One function per format, each returning an `Annotations` (class names + named subsets of items):

- `ucf101(src, annotations, split)`: `classInd.txt` (1-based), `trainlist0N.txt` (path + 1-based
  label), `testlist0N.txt` (path only; the label is the class folder); CRLF line endings.
- `hmdb51(src, annotations, split)`: `<class>_test_splitN.txt` lines `name.avi 1|2|0` (train, test,
  unused). Classes in TSN's `class_list.txt` order when that file is beside them, else sorted.
- `kinetics400(src, annotations)`: the official CSV(s) `label,youtube_id,time_start,time_end,split`
  with trimmed files `<youtube_id>_<start:06d>_<end:06d>.<ext>` anywhere under `src`; or a
  folder-per-class copy with the 400-name label list.
- `kinetics600(src, annotations)`, `kinetics700(src, annotations)`: the same CSV layout and file names
  as Kinetics-400 (Kinetics-700-2020 too: same 700 classes); the class list from the CSVs, or from a
  label file beside them (`label_map*.txt`, `classes.txt` or `categories.json`), which also names the
  classes of an unlabelled test CSV.
- `sthv2(src, annotations)`: Something-Something v2, `something-something-v2-labels.json` (template →
  class id) with `-train.json` / `-validation.json` (entries `id`, `label`, `template`, `placeholders`;
  the class is the `template` with the brackets of its `[something]` placeholders removed, which is a
  key of the labels file) and `-test.json` (ids only: unlabelled); videos `<id>.webm`.
- `diving48(src, annotations)`: Diving48, `Diving48_vocab.json` (48 classes, each a list of 4 attributes,
  named here by joining them with "+", as mmaction2's label map does; or that `label_map.txt`) with
  `Diving48_V2_train.json` / `Diving48_V2_test.json` (V1: `Diving48_train.json` / `_test.json`), lists of
  `{"vid_name", "label", "start_frame", "end_frame"}`; videos `<vid_name>.mp4`. The official JSON files
  were not at hand when this was written: it follows their published schema.
- `video_list(list_file, src)`: lines `path label` (or mmaction2's `path num_frames label`).
- `folders(src, class_list)`: every video file under `src`, labelled by the folder that holds it.

`load_annotations(src, format="auto", ...)` picks one (see `detect_format`). Annotation files are
only read here: whether each video exists is checked separately (`split_missing`), so a listed
but absent video is reported in one summary and left out, never fatal.

A `video_id` is the video's path relative to the dataset root without extension, '/'-separated
(`ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01`); for Kinetics CSVs it is the trimmed file's stem
(`<youtube_id>_<start>_<end>`), for Something-Something v2 the numeric id, for Diving48 the `vid_name`. It names the video's packed file in a store, so it only depends on
the annotations, never on where the source videos happen to live.

Every format checks its entries with `safe_entry`: an entry that climbs out of the source folder
with `..` (or a Kinetics youtube_id with a path separator) is refused, naming the file and line,
before any work; an absolute path in a list file may be read, but its video_id is its file name, so
its packed file still lands inside the store (`mateffnet.io.store.store_path` checks that too).
Two entries whose ids are equal (`c/a.mp4` beside `c/a.avi`, two CSV rows of one video) would share
one packed file and are refused too (`check_unique`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

from mateffnet.config import DATA_FORMATS
from mateffnet.errors import MateffnetError

# The one list of video file extensions (folder walks, format detection, list-file label parsing).
VIDEO_EXTENSIONS = frozenset(
    ".avi .mp4 .mkv .webm .mov .m4v .mpg .mpeg .flv .wmv .3gp .ogv .ts .mts .vob .gif".split()
)
KINETICS_FORMATS = ("kinetics400", "kinetics600", "kinetics700")
KINETICS_CLASS_FILES = ("label_map*.txt", "classes.txt", "categories.json")
STHV2_LABELS = "something-something-v2-labels.json"
STHV2_SPLITS = {"train": "something-something-v2-train.json", "validation": "something-something-v2-validation.json",
                "test": "something-something-v2-test.json"}
DIVING48_VOCAB = "Diving48_vocab.json"
DIVING48_SPLITS = {"train": ("Diving48_V2_train.json", "Diving48_train.json"),
                   "test": ("Diving48_V2_test.json", "Diving48_test.json")}
UNLABELLED = -1


@dataclasses.dataclass(frozen=True)
class VideoItem:
    video_id: str  # unique, '/'-separated, no extension
    path: Path  # where the source video is (or would be) on disk
    label: int  # index into the dataset's class list; -1 = unlabelled


@dataclasses.dataclass
class Annotations:
    format: str
    classes: list[str]
    subsets: dict[str, list[VideoItem]]  # e.g. {"train": [...], "test": [...]} or {"all": [...]}

    def items(self, subset: str | None = None) -> list[VideoItem]:
        """The items of one subset, or of all subsets (each video once, in order)."""
        if subset is not None:
            if subset not in self.subsets:
                raise MateffnetError(
                    f"no subset {subset!r} in these {self.format} annotations; have {', '.join(self.subsets)}"
                )
            return list(self.subsets[subset])
        seen: dict[str, VideoItem] = {}
        for items in self.subsets.values():
            for item in items:
                seen.setdefault(item.video_id, item)
        return list(seen.values())


# --------------------------------------------------------------------------------------- UCF101


def ucf101(src: str | os.PathLike, annotations: str | os.PathLike, split: int = 1) -> Annotations:
    """UCF101's official split `split` (1–3): classInd.txt, trainlist0N.txt, testlist0N.txt."""
    folder = _annotation_folder(annotations)
    _check_split(split)
    class_file = folder / "classInd.txt"
    classes = []
    for number, line in _lines(class_file, required=True):
        index, name = _split_fields(line, class_file, number, 2)
        if _int_or_none(index) != len(classes) + 1:
            raise MateffnetError(f"{class_file}:{number}: expected class number {len(classes) + 1}, got {index!r}")
        classes.append(name)
    by_name = {name: i for i, name in enumerate(classes)}
    locate = _Locator(src)
    subsets = {}
    for subset, list_name in (("train", f"trainlist0{split}.txt"), ("test", f"testlist0{split}.txt")):
        list_file = folder / list_name
        items = []
        for number, line in _lines(list_file):
            fields = line.split()
            rel = safe_entry(fields[0].replace("\\", "/"), list_file, number)
            class_name = rel.split("/")[0] if "/" in rel else _ucf_class_from_name(rel, by_name)
            if class_name not in by_name:
                raise MateffnetError(f"{list_file}:{number}: class {class_name!r} is not in {class_file}")
            label = by_name[class_name]
            if len(fields) > 1 and _int_or_none(fields[1]) != label + 1:
                raise MateffnetError(
                    f"{list_file}:{number}: label {fields[1]!r} disagrees with class folder {class_name!r} "
                    f"(number {label + 1} in classInd.txt)"
                )
            rel = rel if "/" in rel else f"{class_name}/{rel}"
            items.append(VideoItem(_strip_extension(rel), locate(rel), label))
        check_unique(items, list_file)
        subsets[subset] = items
    return Annotations("ucf101", classes, subsets)


def _ucf_class_from_name(name: str, by_name: dict[str, int]) -> str:
    # "v_ApplyEyeMakeup_g01_c01.avi" → "ApplyEyeMakeup" (case-insensitive: HandStandPushups)
    match = re.match(r"v_(.+)_g\d+_c\d+", name)
    wanted = match.group(1).lower() if match else ""
    return next((cls for cls in by_name if cls.lower() == wanted), wanted)


# --------------------------------------------------------------------------------------- HMDB51


def hmdb51(src: str | os.PathLike, annotations: str | os.PathLike, split: int = 1) -> Annotations:
    """HMDB51's official split `split` (1–3): `<class>_test_splitN.txt`, 1 = train, 2 = test, 0 = unused."""
    folder = _annotation_folder(annotations)
    _check_split(split)
    suffix = f"_test_split{split}.txt"
    split_files = sorted(folder.glob(f"*{suffix}"))
    if not split_files:
        raise MateffnetError(f"{folder}: no HMDB51 split files (*{suffix})")
    file_of = {f.name[: -len(suffix)]: f for f in split_files}
    classes = _hmdb51_class_order(folder, sorted(file_of))
    locate = _Locator(src)
    subsets: dict[str, list[VideoItem]] = {"train": [], "test": []}
    for label, class_name in enumerate(classes):
        split_file = file_of[class_name]
        for number, line in _lines(split_file):
            name, mark = _split_fields(line, split_file, number, 2)
            if mark not in ("0", "1", "2"):
                raise MateffnetError(f"{split_file}:{number}: mark {mark!r} should be 1 (train), 2 (test) or 0 (unused)")
            if mark == "0":
                continue
            rel = safe_entry(f"{class_name}/{name}", split_file, number)
            subsets["train" if mark == "1" else "test"].append(VideoItem(_strip_extension(rel), locate(rel), label))
    for items in subsets.values():
        check_unique(items, folder)
    return Annotations("hmdb51", classes, subsets)


def _hmdb51_class_order(folder: Path, names: list[str]) -> list[str]:
    """TSN's `class_list.txt` order when the file is there (TSN's label indices), else sorted
    names (mmaction2's). The two differ: TSN puts kick_ball before kick, sword_exercise before sword."""
    class_list = folder / "class_list.txt"
    if not class_list.is_file():
        return names
    listed = [line for _, line in _lines(class_list)]
    if sorted(listed) != names:
        raise MateffnetError(f"{class_list}: its class names differ from the *_test_split files beside it")
    return listed


# --------------------------------------------------------------------------------- Kinetics-400


def kinetics400(src: str | os.PathLike, annotations: str | os.PathLike) -> Annotations:
    """Kinetics from the official CSV(s) (a file, or a folder of train/validate/test .csv), or a
    folder-per-class copy described by the label list (one class name a line, in label order)."""
    return kinetics(src, annotations, "kinetics400")


def kinetics600(src: str | os.PathLike, annotations: str | os.PathLike) -> Annotations:
    """Kinetics-600: Kinetics-400's CSV layout and file names, 600 classes."""
    return kinetics(src, annotations, "kinetics600")


def kinetics700(src: str | os.PathLike, annotations: str | os.PathLike) -> Annotations:
    """Kinetics-700 and Kinetics-700-2020: Kinetics-400's CSV layout and file names, 700 classes."""
    return kinetics(src, annotations, "kinetics700")


def kinetics(src: str | os.PathLike, annotations: str | os.PathLike, format: str = "kinetics400") -> Annotations:
    """Any Kinetics version (`format` names it in the result); see `kinetics400`. In a folder of CSVs, a
    label file (KINETICS_CLASS_FILES) gives the class order; else the classes are the CSVs' sorted labels."""
    annotations = Path(annotations)
    class_file = None
    if annotations.is_dir():
        csv_files = sorted(annotations.glob("*.csv"))
        if not csv_files:
            raise MateffnetError(f"{annotations}: no Kinetics CSV files in this folder")
        class_file = next((f for pattern in KINETICS_CLASS_FILES for f in sorted(annotations.glob(pattern))), None)
    elif annotations.suffix.lower() == ".csv":
        csv_files = [annotations]
    else:
        result = folders(src, class_list=annotations)
        return Annotations(format, result.classes, result.subsets)
    rows = []
    for csv_file in csv_files:
        rows.extend(_kinetics_rows(csv_file))
    listed = sorted({label for *_, label in rows if label})
    if class_file is None:
        classes = listed
    else:
        classes = _class_names_file(class_file)
        unknown = sorted(set(listed) - set(classes))
        if unknown:
            raise MateffnetError(f"{class_file}: {len(unknown)} label(s) of the CSVs are not in it: {_first_few(unknown)}")
    by_name = {name: i for i, name in enumerate(classes)}
    locate = _Locator(src)
    subsets: dict[str, list[VideoItem]] = {}
    for split, stem, label in rows:
        path = locate.by_stem(stem)
        subsets.setdefault(split, []).append(VideoItem(stem, path, by_name[label] if label else UNLABELLED))
    check_unique([item for items in subsets.values() for item in items], annotations)
    return Annotations(format, classes, subsets)


def _class_names_file(path: Path) -> list[str]:
    """Class names in label order: one a line (.txt), or a JSON list of strings (.json)."""
    if path.suffix.lower() != ".json":
        return [line for _, line in _lines(path)]
    names = _load_json(path)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise MateffnetError(f"{path}: expected a JSON list of class names")
    return names


# ------------------------------------------------------------------------- Something-Something v2


def sthv2(src: str | os.PathLike, annotations: str | os.PathLike) -> Annotations:
    """Something-Something v2 (module docstring): the labels file and whichever split files are beside it."""
    folder = _annotation_folder(annotations)
    labels_file = folder / STHV2_LABELS
    ids = _load_json(labels_file)
    if not isinstance(ids, dict) or not all(_int_or_none(v) is not None for v in ids.values()):
        raise MateffnetError(f"{labels_file}: expected a JSON object of template → class id (\"0\", \"1\", …)")
    by_id = {int(v): k for k, v in ids.items()}
    if sorted(by_id) != list(range(len(ids))):
        raise MateffnetError(f"{labels_file}: class ids must be 0…{len(ids) - 1}, each once")
    classes = [by_id[i] for i in range(len(ids))]
    label_of = {name: i for i, name in enumerate(classes)}
    present = {subset: folder / name for subset, name in STHV2_SPLITS.items() if (folder / name).is_file()}
    if not present:
        raise MateffnetError(f"{folder}: no Something-Something v2 split file ({', '.join(STHV2_SPLITS.values())})")
    locate = _Locator(src)
    subsets = {}
    for subset, split_file in present.items():
        items = []
        for number, entry in _json_videos(split_file, "id"):
            video_id = plain_video_id(str(entry["id"]), split_file, number)
            label = UNLABELLED
            if "template" in entry:
                name = entry["template"].replace("[", "").replace("]", "")
                if name not in label_of:
                    raise MateffnetError(f"{split_file}: entry {number} (id {video_id}): template "
                                         f"{entry['template']!r} is not a class of {labels_file.name}")
                label = label_of[name]
            items.append(VideoItem(video_id, locate(f"{video_id}.webm"), label))
        subsets[subset] = items
    check_unique([item for items in subsets.values() for item in items], folder)
    return Annotations("sthv2", classes, subsets)


# ------------------------------------------------------------------------------------- Diving48


def diving48(src: str | os.PathLike, annotations: str | os.PathLike) -> Annotations:
    """Diving48 (module docstring): the vocabulary (or mmaction2's label_map.txt) and the split files."""
    folder = _annotation_folder(annotations)
    vocab_file = folder / DIVING48_VOCAB
    if vocab_file.is_file():
        vocab = _load_json(vocab_file)
        if not isinstance(vocab, list) or not all(isinstance(v, list) and all(isinstance(a, str) for a in v)
                                                  for v in vocab):
            raise MateffnetError(f"{vocab_file}: expected a JSON list of classes, each a list of attribute strings")
        classes = ["+".join(attributes) for attributes in vocab]
    elif (folder / "label_map.txt").is_file():
        classes = [line for _, line in _lines(folder / "label_map.txt")]
    else:
        raise MateffnetError(f"{folder}: no {DIVING48_VOCAB} (nor mmaction2's label_map.txt)")
    locate = _Locator(src)
    subsets = {}
    for subset, names in DIVING48_SPLITS.items():
        split_file = next((folder / n for n in names if (folder / n).is_file()), None)
        if split_file is None:
            continue
        items = []
        for number, entry in _json_videos(split_file, "vid_name"):
            label = entry.get("label", UNLABELLED)
            if not isinstance(label, int) or isinstance(label, bool) or not UNLABELLED <= label < len(classes):
                raise MateffnetError(f"{split_file}: entry {number} ({entry['vid_name']}): label must be 0…"
                                     f"{len(classes) - 1}, got {label!r}")
            name = plain_video_id(str(entry["vid_name"]), split_file, number)
            items.append(VideoItem(name, locate(f"{name}.mp4"), label))
        subsets[subset] = items
    if not subsets:
        raise MateffnetError(f"{folder}: no Diving48 split file ({', '.join(n for v in DIVING48_SPLITS.values() for n in v)})")
    check_unique([item for items in subsets.values() for item in items], folder)
    return Annotations("diving48", classes, subsets)


def _kinetics_rows(csv_file: Path) -> list[tuple[str, str, str]]:
    """(split, file stem, label or '') for each row of an official Kinetics CSV."""
    with _open_text(csv_file) as f:
        reader = csv.DictReader(f)
        missing = {"youtube_id", "time_start", "time_end"} - set(reader.fieldnames or ())
        if missing:
            raise MateffnetError(
                f"{csv_file}: not a Kinetics CSV (missing column {', '.join(sorted(missing))}; "
                "expected label,youtube_id,time_start,time_end,split)"
            )
        rows = []
        default_split = csv_file.stem
        for number, row in enumerate(reader, start=2):
            start, end = _whole_seconds(row["time_start"]), _whole_seconds(row["time_end"])
            if start is None or end is None:
                raise MateffnetError(
                    f"{csv_file}:{number}: time_start/time_end must be whole seconds, got "
                    f"{row['time_start']!r}, {row['time_end']!r}"
                )
            youtube_id = plain_video_id((row["youtube_id"] or "").strip(), csv_file, number, "youtube_id")
            stem = f"{youtube_id}_{start:06d}_{end:06d}"
            rows.append(((row.get("split") or default_split).strip(), stem, (row.get("label") or "").strip()))
    return rows


# ------------------------------------------------------------------------------ generic formats


def video_list(list_file: str | os.PathLike, src: str | os.PathLike | None = None) -> Annotations:
    """A list file: `path label` per line (mmaction2's `path num_frames label` too; `path,label` in a
    .csv). Paths are relative to `src`, or to the list file's folder when `src` is None; labels are
    class indices (0-based); a line with a path only is unlabelled."""
    list_file = Path(list_file)
    root = Path(src) if src is not None else list_file.parent
    items, lines = [], {}
    for number, line in _lines(list_file, required=True):
        fields = [f.strip() for f in line.split(",")] if list_file.suffix.lower() == ".csv" else line.split()
        if len(fields) >= 3 and _int_or_none(fields[-1]) is not None and _int_or_none(fields[-2]) is not None:
            path_text, label_text = " ".join(fields[:-2]), fields[-1]
        elif len(fields) >= 2 and _int_or_none(fields[-1]) is not None:
            path_text, label_text = " ".join(fields[:-1]), fields[-1]
        else:
            path_text, label_text = " ".join(fields), None
            head = " ".join(fields[:-1])
            if len(fields) >= 2 and os.path.splitext(head)[1].lower() in VIDEO_EXTENSIONS:
                raise MateffnetError(
                    f"{list_file}:{number}: label {fields[-1]!r} of {head!r} is not a whole number (expected 'path label')"
                )
        label = UNLABELLED if label_text is None else int(label_text)
        if label < UNLABELLED:
            raise MateffnetError(f"{list_file}:{number}: label must be >= 0, got {label}")
        path = Path(path_text)
        if not path.is_absolute():
            safe_entry(path_text.replace("\\", "/"), list_file, number)
            path = root / path
        if path in lines:
            raise MateffnetError(f"{list_file}:{number}: video {path_text!r} is listed twice (first on line {lines[path]})")
        lines[path] = number
        items.append(VideoItem(_video_id(path, root), path, label))
    check_unique(items, list_file)
    top = max((item.label for item in items), default=-1)
    return Annotations("list", [str(i) for i in range(top + 1)], {"all": items})


def folders(src: str | os.PathLike, class_list: str | os.PathLike | None = None) -> Annotations:
    """Every video file under `src` (recursively), labelled by the folder that holds it.

    Classes are the sorted folder names, or the names in `class_list` (one a line, in label order;
    folder names match them ignoring case, spaces, underscores and punctuation, so `arm_wrestling`
    is 'arm wrestling'). Files directly in `src` are unlabelled.
    """
    src = Path(src)
    if not src.is_dir():
        raise MateffnetError(f"{src}: no such folder of videos")
    paths = sorted(_video_files(src))
    folder_names = sorted({p.parent.name for p in paths if p.parent != src})
    if class_list is None:
        classes = folder_names
        label_of = {name: i for i, name in enumerate(classes)}
    else:
        class_list = Path(class_list)
        classes = [line for _, line in _lines(class_list, required=True)]
        keys = {_class_key(name): i for i, name in enumerate(classes)}
        unknown = [name for name in folder_names if _class_key(name) not in keys]
        if unknown:
            raise MateffnetError(
                f"{src}: {len(unknown)} folder(s) match no class in {class_list}: {_first_few(unknown)}"
            )
        label_of = {name: keys[_class_key(name)] for name in folder_names}
    items = [
        VideoItem(_video_id(p, src), p, UNLABELLED if p.parent == src else label_of[p.parent.name]) for p in paths
    ]
    check_unique(items, src)
    return Annotations("folders", classes, {"all": items})


# ------------------------------------------------------------------------------------ dispatch


def load_annotations(
    src: str | os.PathLike,
    format: str = "auto",
    annotations: str | os.PathLike | None = None,
    split: int = 1,
) -> Annotations:
    """The dataset's annotations in any supported format; `format="auto"` uses `detect_format`."""
    if format == "auto":
        format = detect_format(annotations)
    if format not in DATA_FORMATS:
        raise MateffnetError(f"unknown dataset format {format!r}; expected auto or one of {', '.join(DATA_FORMATS)}")
    if format == "folders":
        return folders(src, annotations)
    if annotations is None:
        raise MateffnetError(f"format {format} needs --annotations (the split files, CSV or list)")
    if not Path(annotations).exists():
        raise MateffnetError(f"{annotations}: no such annotations file or folder")
    if format == "ucf101":
        return ucf101(src, annotations, split)
    if format == "hmdb51":
        return hmdb51(src, annotations, split)
    if format in KINETICS_FORMATS:
        return kinetics(src, annotations, format)
    if format == "sthv2":
        return sthv2(src, annotations)
    if format == "diving48":
        return diving48(src, annotations)
    return video_list(annotations, src)


def detect_format(annotations: str | os.PathLike | None) -> str:
    """UCF101 (classInd/trainlist/testlist), HMDB51 (*_test_splitN.txt), Something-Something v2 (its
    labels or split JSON), Diving48 (its vocabulary or split JSON), Kinetics (CSV with youtube_id; the
    version from a 600- or 700-name label file beside it, else kinetics400), list (lines ending in a
    label), folders (no annotations, or a class-name list)."""
    if annotations is None:
        return "folders"
    path = Path(annotations)
    if not path.exists():
        raise MateffnetError(f"{path}: no such annotations file or folder")
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if "classInd.txt" in names or any(re.fullmatch(r"(train|test)list0\d\.txt", n) for n in names):
            return "ucf101"
        if any(re.fullmatch(r".+_test_split\d\.txt", n) for n in names):
            return "hmdb51"
        if names & {STHV2_LABELS, *STHV2_SPLITS.values()}:
            return "sthv2"
        if names & {DIVING48_VOCAB, *(n for v in DIVING48_SPLITS.values() for n in v)}:
            return "diving48"
        if any(n.endswith(".csv") for n in names):
            return _kinetics_version(path)
        raise MateffnetError(
            f"{path}: cannot tell the dataset format (no classInd.txt, *_test_split1.txt or .csv); pass --format"
        )
    if path.name == "classInd.txt" or re.fullmatch(r"(train|test)list0\d\.txt", path.name):
        return "ucf101"
    if re.fullmatch(r".+_test_split\d\.txt", path.name):
        return "hmdb51"
    if path.name in (STHV2_LABELS, *STHV2_SPLITS.values()):
        return "sthv2"
    if path.name in (DIVING48_VOCAB, *(n for v in DIVING48_SPLITS.values() for n in v)):
        return "diving48"
    if path.suffix.lower() == ".csv":
        with _open_text(path) as f:
            header = f.readline()
        return _kinetics_version(path.parent) if "youtube_id" in header else "list"
    for _, line in _lines(path, required=True)[:20]:
        fields = line.split()
        ends_in_label = len(fields) > 1 and _int_or_none(fields[-1]) is not None
        if ends_in_label or os.path.splitext(fields[0])[1].lower() in VIDEO_EXTENSIONS:
            return "list"
    return "folders"  # a list of class names for a folder-per-class layout


def _kinetics_version(folder: Path) -> str:
    """kinetics600 / kinetics700 when a label file in `folder` lists 600 / 700 classes, else kinetics400."""
    class_file = next((f for pattern in KINETICS_CLASS_FILES for f in sorted(folder.glob(pattern))), None)
    if class_file is not None:
        try:
            count = len(_class_names_file(class_file))
        except MateffnetError:
            count = 0
        return {600: "kinetics600", 700: "kinetics700"}.get(count, "kinetics400")
    return "kinetics400"


# ------------------------------------------------------------------------------- missing files


def split_missing(items: Iterable[VideoItem]) -> tuple[list[VideoItem], list[VideoItem]]:
    """(items whose source file exists, items whose source file is missing)."""
    present, missing = [], []
    for item in items:
        (present if item.path.is_file() else missing).append(item)
    return present, missing


def missing_summary(missing: list[VideoItem], listed: int, what: str = "videos") -> str:
    """One line: '3 of 120 listed videos are missing and left out: a.avi, b.avi, c.avi'."""
    names = [item.path.name for item in missing]
    return f"{len(missing)} of {listed} listed {what} are missing and left out: {_first_few(names)}"


# ------------------------------------------------------------------------------------- helpers


class _Locator:
    """Finds a listed video under `src`: at its relative path, else by file name (or stem)
    anywhere under `src` (flat copies, nested copies); else the nominal path, reported missing."""

    def __init__(self, src: str | os.PathLike):
        self.src = Path(src)
        self._by_name: dict[str, Path] | None = None
        self._by_stem: dict[str, Path] | None = None

    def __call__(self, rel: str) -> Path:
        nominal = self.src / rel
        if nominal.is_file():
            return nominal
        self._index()
        return self._by_name.get(Path(rel).name, nominal)

    def by_stem(self, stem: str) -> Path:
        self._index()
        return self._by_stem.get(stem, self.src / f"{stem}.mp4")

    def _index(self) -> None:
        if self._by_name is None:
            files = list(_video_files(self.src)) if self.src.is_dir() else []
            self._by_name = {p.name: p for p in files}
            self._by_stem = {p.stem: p for p in files}


def safe_entry(rel: str, source: Path, number: int) -> str:
    """`rel` (a '/'-separated path from an annotation file) if it stays inside the source folder;
    else one line naming the file, line and entry. The one path-safety check of every format."""
    depth = 0
    for part in rel.split("/"):
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            raise MateffnetError(
                f"{source}:{number}: entry {rel!r} climbs out of the source folder with '..'; "
                "refused (list videos relative to the source folder, or give an absolute path in a list file)"
            )
    return rel


def plain_video_id(text: str, source: Path, number: int, what: str = "video id") -> str:
    """`text` if it names one file (no path separators, no leading dot); else one line naming the entry."""
    if not text or "/" in text or "\\" in text or text.startswith("."):
        raise MateffnetError(f"{source}:{number}: {what} {text!r} is not a video id (no path separators, no leading "
                             "dot); refusing to write outside the store")
    return text


def check_unique(items: list[VideoItem], source: str | os.PathLike) -> None:
    """Refuse two items that would share one packed file (equal video ids)."""
    seen: dict[str, Path] = {}
    for item in items:
        if item.video_id in seen and seen[item.video_id] != item.path:
            raise MateffnetError(
                f"{source}: two videos would share the packed file {item.video_id}: {seen[item.video_id]} and "
                f"{item.path}; rename one"
            )
        if item.video_id in seen:
            raise MateffnetError(f"{source}: video {item.video_id} is listed twice ({item.path})")
        seen[item.video_id] = item.path


def _video_files(root: Path):
    """Video files under `root`, following folder links but never into a folder already walked
    (a link loop such as `cls/loop -> .` is skipped with a warning)."""
    walked: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        identity = _folder_identity(folder)
        if identity in walked:
            warnings.warn(f"{folder}: a folder link leads back to a folder already walked (a loop); skipped",
                          stacklevel=2)
            dirs[:] = []
            continue
        walked.add(identity)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                yield Path(folder) / name


def _folder_identity(folder: str) -> tuple[int, int]:
    info = os.stat(folder)
    return info.st_dev, info.st_ino


def _video_id(path: Path, root: Path) -> str:
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    return _strip_extension(rel.as_posix())


def _strip_extension(rel: str) -> str:
    head, _, name = rel.rpartition("/")
    stem = os.path.splitext(name)[0]
    return f"{head}/{stem}" if head else stem


def _class_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())


def _annotation_folder(annotations: str | os.PathLike) -> Path:
    path = Path(annotations)
    folder = path if path.is_dir() else path.parent
    if not folder.is_dir():
        raise MateffnetError(f"{annotations}: no such annotations folder")
    return folder


def _check_split(split: int) -> None:
    if split not in (1, 2, 3):
        raise MateffnetError(f"split must be 1, 2 or 3, got {split}")


def _open_text(path: Path):
    try:
        return open(path, encoding="utf-8-sig", errors="replace", newline="")
    except FileNotFoundError:
        raise MateffnetError(f"{path}: annotation file not found") from None
    except OSError as error:
        raise MateffnetError(f"{path}: cannot read annotation file ({error.strerror})") from None


def _load_json(path: Path):
    with _open_text(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as error:
            raise MateffnetError(f"{path}: not valid JSON ({error})") from None


def _json_videos(split_file: Path, key: str):
    """(number, entry) of a JSON split file: a list of objects, each with `key` (the video's name)."""
    entries = _load_json(split_file)
    if not isinstance(entries, list):
        raise MateffnetError(f"{split_file}: expected a JSON list of videos")
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or key not in entry:
            raise MateffnetError(f"{split_file}: entry {number} has no \"{key}\"")
        yield number, entry


def _lines(path: Path, required: bool = False) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-empty lines; CRLF or LF. `required`: an empty file is an error."""
    with _open_text(path) as f:
        text = f.read()
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if required and not lines:
        raise MateffnetError(f"{path}: empty annotation file (no lines)")
    return lines


def _split_fields(line: str, path: Path, number: int, count: int) -> list[str]:
    fields = line.split()
    if len(fields) != count:
        raise MateffnetError(f"{path}:{number}: expected {count} fields, got {line!r}")
    return fields


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _whole_seconds(text: str | None) -> int | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return int(value) if value.is_integer() and value >= 0 else None


def _first_few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")
