"""Fixtures of the command tests: a trained two-stream model of four synthetic classes and a long video of them."""

import pytest
from tests.helpers.synthetic_actions import long_video, one_thread, train_model


@pytest.fixture(scope="session")
def synthetic_model(tmp_path_factory):
    """A trained two-stream model folder (rgb/, flow/, fusion.json) of the four CLASSES."""
    with one_thread():
        return train_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def long_synthetic_video(tmp_path_factory):
    return long_video(tmp_path_factory.mktemp("long") / "long.mp4")
