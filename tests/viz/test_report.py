import base64
from html.parser import HTMLParser

import numpy as np
import pytest
from matplotlib.image import imread

from tests.helpers.browser import needs_chromium, screenshot
from mateffnet.errors import MateffnetError
from mateffnet.viz.plots import plot_confusion_matrix, plot_training_curves
from mateffnet.viz.report import check_results, write_report

NAMES = ["ball_red", "ball_blue", "move_left", "move_right"]
GROUPS = {"ball_red": "appearance", "ball_blue": "appearance", "move_left": "motion", "move_right": "motion"}


def stream(per_class, top5=1.0):
    values = list(per_class.values())
    return {"top1": sum(values) / len(values), "top5": top5, "mean_class": sum(values) / len(values),
            "videos": 40, "per_class": per_class}


def results():
    return {
        "title": "Demo <run>",
        "description": "Two classes by colour, two by motion.",
        "class_names": NAMES,
        "class_groups": GROUPS,
        "streams": {
            "fused": stream({"ball_red": 1.0, "ball_blue": 0.9, "move_left": 1.0, "move_right": 0.8}),
            "rgb": stream({"ball_red": 1.0, "ball_blue": 1.0, "move_left": 0.5, "move_right": 0.4}, top5=None),
            "flow": stream({"ball_red": 0.5, "ball_blue": 0.6, "move_left": 1.0, "move_right": 0.9}),
        },
        "fusion_weights": {"rgb": 1.0, "flow": 1.5},
        "details": {"device": "cpu", "seed": 3},
        "notes": ["flow beats RGB on motion classes"],
    }


class Page(HTMLParser):
    """Collects what the tests look at: tables as rows of (text, classes) cells, every URL-bearing attribute."""

    def __init__(self, text):
        super().__init__()
        self.tables, self.urls, self.scripts, self.headings = [], [], 0, []
        self._cell = self._heading = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "script":
            self.scripts += 1
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ["", attrs.get("class", "")]
        elif tag == "h2":
            self._heading = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append((self._cell[0].strip(), self._cell[1]))
            self._cell = None
        elif tag == "h2":
            self.headings.append(self._heading)
            self._heading = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data
        if self._heading is not None:
            self._heading += data


@pytest.fixture
def images(tmp_path):
    matrix = np.array([[9, 1, 0, 0], [1, 9, 0, 0], [0, 0, 8, 2], [0, 0, 3, 7]])
    return {
        "Confusion matrices/fused": plot_confusion_matrix(matrix, NAMES, tmp_path / "cm.png", title="fused"),
        "Training curves/rgb": plot_training_curves(
            [{"epoch": e, "train_loss": 1 / e, "val_top1": 0.2 * e} for e in range(1, 5)], tmp_path / "curves.png"),
    }


def test_report_tables_show_each_stream_and_highlight_the_best(tmp_path, images):
    path = write_report(tmp_path / "out" / "report.html", results(), images)
    page = Page(path.read_text())
    summary, groups, per_class, details = page.tables
    assert [row[0][0] for row in summary] == ["stream", "RGB (spatial)", "flow (temporal)", "fused"]  # fixed order
    rgb_row = summary[1]
    assert [cell[0] for cell in rgb_row[1:]] == ["72.5%", "—", "72.5%", "40"]
    fused_row = summary[3]
    assert fused_row[1] == ("92.5%", "best")
    assert [row[0][0] for row in per_class[1:]] == NAMES  # class_names order
    move_left = per_class[3]
    assert move_left[1][0] == "motion"
    assert [c[0] for c in move_left[2:]] == ["50.0%", "100.0%", "100.0%"]
    assert ["best" in c[1] for c in move_left[2:]] == [False, True, True]  # ties are all best
    # group means: appearance rgb (1.0 + 1.0) / 2, flow (0.5 + 0.6) / 2; motion rgb 0.45, flow 0.95
    assert [c[0] for c in groups[1][1:]] == ["100.0%", "55.0%", "95.0%"]
    assert [c[0] for c in groups[2][1:]] == ["45.0%", "95.0%", "90.0%"]
    assert details == [[("device", ""), ("cpu", "")], [("seed", ""), ("3", "")]]
    assert page.headings == ["Accuracy", "By class group", "Per-class accuracy", "Confusion matrices",
                             "Training curves", "Notes", "Details"]


def test_report_is_self_contained(tmp_path, images):
    text = write_report(tmp_path / "report.html", results(), images).read_text()
    page = Page(text)
    assert page.scripts == 0
    assert len(page.urls) == 2 and all(url.startswith("data:image/png;base64,") for url in page.urls)
    embedded = base64.b64decode(page.urls[0].split(",", 1)[1])
    assert embedded == images["Confusion matrices/fused"].read_bytes()
    assert "Demo &lt;run&gt;" in text and "<run>" not in text  # text is escaped
    assert "http://" not in text and "https://" not in text
    assert "default-src 'none'" in text


def test_report_reads_what_the_evaluator_summarizes(tmp_path):
    # the shape of mateffnet.engine.scoring.summarize(...): "videos" counts, None for a class without videos,
    # NaN where nothing could be measured
    results = {"title": "evaluation", "class_names": ["a", "b"], "fusion_weights": {"rgb": 1.0, "flow": 1.0},
               "videos": 3, "streams": {
                   "rgb": {"top1": 2 / 3, "top5": 1.0, "mean_class": 0.75, "videos": 3, "per_class": {"a": 0.5, "b": None}},
                   "fused": {"top1": float("nan"), "top5": 1.0, "mean_class": 1.0, "videos": 3,
                             "per_class": {"a": 1.0, "b": None}}}}
    page = Page(write_report(tmp_path / "r.html", results).read_text())
    summary, per_class = page.tables
    assert [c[0] for c in summary[1][1:]] == ["66.7%", "100.0%", "75.0%", "3"]
    assert summary[1][1] == ("66.7%", "best")  # the NaN of the fused stream is not a number to beat
    assert summary[2][1] == ("—", "missing")
    assert per_class[2][1:] == [("—", "missing"), ("—", "missing")]


def test_report_without_per_class_or_images(tmp_path):
    minimal = {"streams": {"rgb": {"top1": 0.5, "top5": 0.9, "mean_class": 0.45}}}
    page = Page(write_report(tmp_path / "r.html", minimal).read_text())
    assert len(page.tables) == 1
    assert page.tables[0][1][1] == ("50.0%", "")  # a single stream is not "best" of anything
    assert page.headings == ["Accuracy"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.update(stremas={}), r"results: unknown key\(s\) stremas"),
        (lambda r: r["streams"]["rgb"].update(top_1=0.5), r"results\['streams'\]\['rgb'\]: unknown key\(s\) top_1"),
        (lambda r: r["streams"]["flow"].update(top1=75.6), r"\['flow'\]\['top1'\] must be an accuracy in \[0, 1\] \(a fraction"),
        (lambda r: r["streams"]["rgb"]["per_class"].update(jump=0.5), "names classes not in class_names: jump"),
        (lambda r: r.update(streams={}), "must be a non-empty dict"),
        (lambda r: r.pop("class_names"), r"class_names'\] is missing"),
        (lambda r: r.update(notes="one note"), "notes'] must be a list of strings"),
    ],
)
def test_bad_results_are_named(change, message):
    data = results()
    change(data)
    with pytest.raises(MateffnetError, match=message):
        check_results(data)


def test_missing_or_fake_images_are_errors(tmp_path):
    with pytest.raises(MateffnetError, match="cannot read .*nothing.png"):
        write_report(tmp_path / "r.html", results(), {"x": tmp_path / "nothing.png"})
    (tmp_path / "fake.png").write_text("not an image")
    with pytest.raises(MateffnetError, match="fake.png: not a PNG file"):
        write_report(tmp_path / "r.html", results(), {"x": tmp_path / "fake.png"})
    assert not (tmp_path / "r.html").exists()


@needs_chromium
def test_report_renders_in_headless_chromium_without_console_errors(tmp_path, images):
    path = write_report(tmp_path / "report.html", results(), images)
    screenshot_path = tmp_path / "shot.png"
    console = screenshot(path, screenshot_path, tmp_path / "profile")
    # Every console message of the page (errors, CSP violations, failed loads) is logged as "...:CONSOLE...";
    # the page has no script, so there must be none at all.
    assert console == []
    image = imread(screenshot_path)
    assert image.shape[:2] == (1600, 1280)
    rgb = image[..., :3]
    assert rgb.std() > 0.05  # not blank
    assert (rgb.mean(-1) < 0.3).mean() > 0.002  # there is dark text
    assert (np.abs(rgb[..., 2] - rgb[..., 0]) > 0.2).mean() > 0.005  # and coloured figures/highlights
