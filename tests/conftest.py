import sys
from pathlib import Path

import pytest

from tests.helpers.videos import REAL_CLIPS, moving_square_frames, write_video

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real clips, frames and split files beside the project (../shared/data); skip without them."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (only present in the project's CI)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def fresh_compiler():
    """Each test compiles as a new training process does: frames compiled by an earlier test would make dynamo
    recompile this one's model with dynamic shapes (slower to compile, other kernels)."""
    yield
    if "torch._dynamo" in sys.modules:
        sys.modules["torch._dynamo"].reset()


@pytest.fixture
def video_writer():
    return write_video


@pytest.fixture
def square_frames():
    return moving_square_frames


@pytest.fixture(scope="session")
def real_clips(shared_data) -> dict[Path, int]:
    """{path of each real clip: its frame count}; skips without ../shared/data."""
    return {shared_data / "videos" / rel: count for rel, count in REAL_CLIPS.items()}


@pytest.fixture
def pyav19_open(monkeypatch):
    """`av.open` as PyAV 19 has it, on any installed PyAV: the `metadata_errors` keyword is gone (a
    TypeError, as PyAV 19 raises) and metadata that is not UTF-8 is decoded with `surrogateescape`."""
    av = pytest.importorskip("av")
    real_open, real_major = av.open, int(av.__version__.split(".")[0])

    def open_19(file, mode=None, **options):
        for removed in ("metadata_errors", "metadata_encoding"):
            if removed in options:
                raise TypeError(f"open() got an unexpected keyword argument '{removed}'")
        if real_major < 19 and mode in (None, "r"):
            options["metadata_errors"] = "surrogateescape"
        return real_open(file, mode, **options)

    monkeypatch.setattr(av, "open", open_19)
    monkeypatch.setattr(av, "__version__", "19.0.2")
    return open_19
