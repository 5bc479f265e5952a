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
