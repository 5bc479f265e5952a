import hashlib

import numpy as np
import pytest

from mateffnet.io.annotations import video_list
from mateffnet.io.store import PackedVideo, store_path
from mateffnet.prepare import pool, shared
from mateffnet.prepare.job import PrepareOptions, prepare_videos
from mateffnet.prepare.messages import Flows, Frames, Placed
from mateffnet.prepare.shared import Ring, SharedRegion


def test_a_ring_hands_out_ranges_in_order_wraps_around_and_refuses_what_does_not_fit():
    ring = Ring(100)
    assert [ring.take(40), ring.take(40)] == [0, 40]
    assert ring.take(30) is None  # 20 free at the end, none at the start
    ring.give_back(0)
    assert ring.take(30) == 0  # wraps to the start, before the oldest range still out (40)
    assert ring.take(15) is None  # 10 free between 30 and 40: not enough in one piece
    ring.give_back(40)
    assert ring.take(10) == 30
    assert ring.take(101) is None and ring.take(0) is None
    with pytest.raises(ValueError, match="out of order"):
        ring.give_back(30)


def test_an_array_placed_by_one_mapping_is_read_by_another(tmp_path):
    sizes = {"frames": 1 << 16, "flows": 1 << 16}
    writer = SharedRegion(tmp_path / "region", sizes, create=True)
    reader = SharedRegion(tmp_path / "region", sizes)
    frames = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    placed, view = writer.place("frames", frames.shape)
    view[...] = frames
    assert np.array_equal(reader.array("frames", placed), frames)
    flows = np.full((3, 2, 8, 8), 7, np.uint8)
    placed_flows, view = reader.place("flows", flows.shape)
    view[...] = flows
    assert np.array_equal(writer.array("flows", placed_flows), flows)
    assert writer.array("frames", placed).sum() == frames.sum()  # the two areas do not overlap
    assert writer.place("frames", ((1 << 16) + 1,)) is None  # larger than the area: it goes through the pipe
    reader.close()
    writer.close()
    assert not (tmp_path / "region").exists()


def _blobs(store, items):
    digests = {}
    for item in items:
        video = PackedVideo(store_path(store, item.video_id))
        blobs = video.rgb_jpegs(range(video.num_frames)) + video.flow_blobs(range(video.num_flows))
        digests[item.video_id] = [hashlib.md5(blob.numpy().tobytes()).hexdigest() for blob in blobs]
    return digests


def test_frames_and_flow_through_shared_memory_give_the_files_of_the_pipes_and_of_one_process(
        tmp_path, shared_data, monkeypatch):
    """Flow batched across videos: frames and flow through each worker's shared memory (roomy, or so small
    that chunks wait for room and some go through the pipe) give the same images as through the pipes
    only, and as packing each video in this process; no shared file is left behind."""
    pytest.importorskip("cv2", reason="Farneback flow (OpenCV)")
    names = ["ucf101/Archery/v_Archery_g01_c01.avi", "hmdb51/wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi",
             "ucf101/Basketball/v_Basketball_g01_c01.avi"]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{shared_data / 'videos' / n} 0\n" for n in names))
    items = video_list(listing).items()
    base = dict(size=64, flow_method="farneback", device="cpu", max_frames=30, chunk_frames=7, flow_batch=9)
    reference = prepare_videos(items, tmp_path / "in_process", PrepareOptions(workers=0, **base), progress=False)
    assert reference.done == 3
    expected = _blobs(tmp_path / "in_process", items)
    before = set(shared.shared_folder().glob(f"{shared.PREFIX}*"))

    travelled = []  # per Frames / Flows message: "shared" or "pipe"
    handle, send_waiting = pool.Pool._handle, pool.Pool._send_waiting

    def handle_counted(self, worker, message):
        if isinstance(message, Frames):
            travelled.append(("frames", "shared" if isinstance(message.frames, Placed) else "pipe"))
        return handle(self, worker, message)

    def send_waiting_counted(self, worker):
        put = worker.inbox.put

        def put_counted(message):
            if isinstance(message, Flows):
                travelled.append(("flows", "shared" if isinstance(message.quantized, Placed) else "pipe"))
            put(message)

        worker.inbox.put = put_counted
        try:
            send_waiting(self, worker)
        finally:
            worker.inbox.put = put

    monkeypatch.setattr(pool.Pool, "_handle", handle_counted)
    monkeypatch.setattr(pool.Pool, "_send_waiting", send_waiting_counted)
    chunk_bytes = 7 * 64 * 85 * 3  # 7 frames of Archery at short side 64 (85x64)
    runs = {"pipes": (None, {("frames", "pipe"), ("flows", "pipe")}),
            "roomy": (dict(shared.AREA_BYTES), {("frames", "shared"), ("flows", "shared")}),
            # one chunk of 85x64 frames at a time, the 115x64 ones through the pipe; flow: up to 3 fields at a time
            "tight": ({"frames": chunk_bytes + 1, "flows": 40000},
                      {("frames", "shared"), ("frames", "pipe"), ("flows", "shared"), ("flows", "pipe")})}
    for name, (area_bytes, ways) in runs.items():
        travelled.clear()
        with monkeypatch.context() as patch:
            if area_bytes is None:
                patch.setattr(shared.SharedRegion, "create", classmethod(lambda cls: None))
            else:
                patch.setattr(shared, "AREA_BYTES", area_bytes)
            report = prepare_videos(items, tmp_path / name, PrepareOptions(workers=2, batch_across_videos=True, **base),
                                    progress=False)
        assert report.done == 3, report.failures
        assert _blobs(tmp_path / name, items) == expected, name
        assert set(travelled) == ways, name
    assert set(shared.shared_folder().glob(f"{shared.PREFIX}*")) == before


def test_shared_files_of_a_main_process_that_is_gone_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    monkeypatch.setattr(shared, "shared_folder", lambda: tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{shared.PREFIX}{int(gone.stdout)}-0"
    live = tmp_path / f"{shared.PREFIX}{os.getppid()}-3"
    other = tmp_path / "unrelated-file"
    for path in (dead, live, other):
        path.write_bytes(b"x")
    assert shared.remove_stale_regions() == [dead]
    assert not dead.exists() and live.exists() and other.exists()
