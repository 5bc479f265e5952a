import json
import os

import numpy as np
import pytest
import torch

from mateffnet.cli import main
from mateffnet.prepare import pool
from mateffnet.io.annotations import folders, video_list
from mateffnet.io.decode import read_video
from mateffnet.prepare.job import PrepareOptions, prepare_dataset, prepare_videos
from mateffnet.prepare.options import parse_shard
from mateffnet.io.store import PackedVideo, store_path
from mateffnet.errors import MateffnetError
from mateffnet.flow import compute_flow, dequantize_flow, quantize_flow

pytest.importorskip("cv2", reason="the prepare tests use Farneback flow (OpenCV)")

SMALL = dict(size=64, flow_method="farneback", device="cpu", max_frames=12)


def _options(**changes) -> PrepareOptions:
    return PrepareOptions(**{**SMALL, "workers": 0, **changes})


def _flow_bytes(path):
    video = PackedVideo(path)
    return [bytes(t.numpy()) for t in video.flow_blobs(range(video.num_flows))]


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    """The 10 real clips, prepared once (12 frames each, short side 64, Farneback)."""
    store = tmp_path_factory.mktemp("store")
    report = prepare_dataset(shared_data / "videos", store, options=_options(), progress=False)
    return store, report


def test_one_packed_file_per_clip_and_a_report(prepared, real_clips):
    store, report = prepared
    assert (report.listed, report.missing, report.done, report.skipped, report.failed) == (10, 0, 10, 0, 0)
    assert report.exit_status == 0 and report.flow_pairs == 10 * 11
    files = sorted(p.relative_to(store).as_posix() for p in store.rglob("*.mfv"))
    assert files == sorted(p.relative_to(p.parents[2]).with_suffix(".mfv").as_posix() for p in real_clips)
    on_disk = json.loads((store / "report.json").read_text())
    assert on_disk["done"] == 10 and on_disk["failures"] == [] and on_disk["settings"]["flow_method"] == "farneback"
    assert not list(store.rglob("*.tmp"))


def test_read_back_frames_and_flow(prepared, shared_data):
    store, _ = prepared
    source = shared_data / "videos/hmdb51/wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi"  # 560x240
    video = PackedVideo(store / "hmdb51/wave/RATRACE_wave_f_nm_np1_fr_goo_37.mfv")
    assert (video.num_frames, video.num_flows) == (12, 11)
    assert (video.width, video.height) == (round(560 * 64 / 240), 64)
    assert video.meta["original"]["width"] == 560 and video.meta["fps"] == 30
    decoded, _ = read_video(source, size=64, max_frames=12)
    decoded = torch.from_numpy(decoded).permute(0, 3, 1, 2)
    stored = video.read_rgb(range(12))
    assert stored.shape == decoded.shape
    errors = (stored.float() - decoded.float()).abs().mean(dim=(1, 2, 3))
    assert errors.max() < 4.0  # JPEG quality 90 on 64-pixel frames
    # flow k is the flow from frame k to k+1, quantised (TSN) and JPEG-compressed
    expected = quantize_flow(compute_flow(decoded[3:6], decoded[4:7], method="farneback"), 20.0)
    got = video.read_flow([3, 4, 5])
    assert (got.float() - expected.float()).abs().mean() < 1.0
    assert (got.float() - quantize_flow(compute_flow(decoded[4:7], decoded[5:8], method="farneback")).float()).abs().mean() > (
        got.float() - expected.float()
    ).abs().mean()
    in_pixels = dequantize_flow(got, video.flow_bound)
    reference = compute_flow(decoded[3:6], decoded[4:7], method="farneback").clamp(-20, 20)
    assert (in_pixels - reference).abs().mean() < 0.2


def test_rerun_does_no_work_and_redoes_damaged_files(prepared, shared_data):
    store, _ = prepared
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*.mfv")}
    report = prepare_dataset(shared_data / "videos", store, options=_options(), progress=False)
    assert (report.done, report.skipped, report.failed) == (0, 10, 0)
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*.mfv")} == before

    damaged = store / "ucf101/Archery/v_Archery_g01_c01.mfv"
    good_bytes = damaged.read_bytes()
    damaged.write_bytes(good_bytes[: len(good_bytes) // 2])  # a half-written file
    leftover = damaged.parent / f".{damaged.name}.x1y2z3.tmp"
    leftover.write_bytes(b"partial")
    report = prepare_dataset(shared_data / "videos", store, options=_options(), progress=False)
    assert (report.done, report.redone, report.skipped) == (1, 1, 9)
    assert damaged.read_bytes() == good_bytes and not leftover.exists()


def test_other_settings_on_the_same_store_are_refused(prepared, shared_data):
    store, _ = prepared
    with pytest.raises(MateffnetError, match=r"prepared with other settings \(size='64'→'96'\)"):
        prepare_dataset(shared_data / "videos", store, options=_options(size=96), progress=False)


def test_lz4_flow_is_stored_exactly(tmp_path, shared_data):
    source = shared_data / "videos/ucf101/Archery/v_Archery_g01_c01.avi"
    listing = tmp_path / "list.txt"
    listing.write_text(f"{source} 0\n")
    store = tmp_path / "store"
    status = main(["prepare", str(source.parent), "--out", str(store), "--annotations", str(listing), "--flow-codec",
                   "lz4", "--flow-method", "farneback", "--size", "64", "--max-frames", "8", "--workers", "0",
                   "--device", "cpu", "--no-progress"])
    assert status == 0
    video = PackedVideo(store / "v_Archery_g01_c01.mfv")
    assert video.flow_codec == "lz4" and video.meta["settings"]["flow_codec"] == "lz4"
    decoded = torch.from_numpy(read_video(source, size=64, max_frames=8)[0]).permute(0, 3, 1, 2)
    expected = quantize_flow(compute_flow(decoded[:-1], decoded[1:], method="farneback"), 20.0)
    assert torch.equal(video.read_flow(range(7)), expected)
    with pytest.raises(MateffnetError, match=r"prepared with other settings \(flow_codec='lz4'→'lz4-near'\)"):
        prepare_dataset(source.parent, store, "list", listing, options=_options(max_frames=8), progress=False)


def test_new_stores_hold_lz4_near_flow_and_a_jpeg_store_refuses_to_mix_codecs(tmp_path, shared_data):
    source = shared_data / "videos/ucf101/Archery/v_Archery_g01_c01.avi"
    listing = tmp_path / "list.txt"
    listing.write_text(f"{source} 0\n")
    new, old = tmp_path / "new", tmp_path / "old"
    prepare_dataset(source.parent, new, "list", listing, options=_options(max_frames=6), progress=False)
    video = PackedVideo(new / "v_Archery_g01_c01.mfv")
    assert video.flow_codec == "lz4-near" and video.meta["settings"]["flow_codec"] == "lz4-near"
    decoded = torch.from_numpy(read_video(source, size=64, max_frames=6)[0]).permute(0, 3, 1, 2)
    exact = quantize_flow(compute_flow(decoded[:-1], decoded[1:], method="farneback"), 20.0)
    assert (video.read_flow(range(5)).int() - exact.int()).abs().max() <= 1
    prepare_dataset(source.parent, old, "list", listing, options=_options(max_frames=6, flow_codec="jpeg"), progress=False)
    with pytest.raises(MateffnetError, match=r"prepared with other settings \(flow_codec='jpeg'→'lz4-near', "
                                             r"flow_quality=95→None\); use another --out"):
        prepare_dataset(source.parent, old, "list", listing, options=_options(max_frames=6), progress=False)
    assert PackedVideo(old / "v_Archery_g01_c01.mfv").flow_codec == "jpeg"  # nothing already done is lost


def test_bad_and_missing_videos_are_reported_and_good_ones_kept(tmp_path, shared_data, capsys):
    good = [
        shared_data / "videos/ucf101/Archery/v_Archery_g01_c01.avi",
        shared_data / "videos/hmdb51/wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi",
    ]
    salted = tmp_path / "salted"
    salted.mkdir()
    (salted / "zero.avi").write_bytes(b"")
    (salted / "notes.avi").write_text("this is a text file, not a video\n")
    whole = good[0].read_bytes()
    (salted / "cut.avi").write_bytes(whole[: len(whole) // 2])
    listing = tmp_path / "list.txt"
    lines = [f"{p} 0" for p in good] + [f"{salted / n} 1" for n in ("zero.avi", "notes.avi", "cut.avi", "gone.avi")]
    listing.write_text("\n".join(lines) + "\n")
    store = tmp_path / "store"
    status = main(
        ["prepare", str(salted), "--out", str(store), "--annotations", str(listing), "--flow-method", "farneback",
         "--size", "64", "--workers", "0", "--device", "cpu", "--no-progress"]
    )
    out = capsys.readouterr().out
    assert status == 1
    assert "6 listed, 1 missing, 2 done, 0 skipped (already done), 3 failed" in out
    assert "gone.avi" in out
    report = json.loads((store / "report.json").read_text())
    reasons = {os.path.basename(f["path"]): f["reason"] for f in report["failures"]}
    assert reasons == {"zero.avi": "empty", "notes.avi": "unreadable", "cut.avi": "truncated"}
    assert report["missing_videos"] == [str(salted / "gone.avi")]
    for f in report["failures"]:
        assert f["path"] in out and f["detail"]
    items = video_list(listing).items()
    for item, frames in zip(items[:2], (131, 48)):
        assert PackedVideo(store_path(store, item.video_id)).num_frames == frames
    for item in items[2:]:
        assert not store_path(store, item.video_id).exists()
    assert not list(store.rglob("*.tmp"))


def test_rgb_only_and_too_short_videos(tmp_path, video_writer, square_frames):
    one = video_writer(tmp_path / "src/a/one_frame.mp4", square_frames(n=1), codec="libx264")
    three = video_writer(tmp_path / "src/a/three.mp4", square_frames(n=3), codec="libx264")
    items = folders(tmp_path / "src").items()
    report = prepare_videos(items, tmp_path / "flow", _options(max_frames=None), progress=False)
    assert report.done == 1 and [f["reason"] for f in report.failures] == ["too_short"]
    assert PackedVideo(tmp_path / "flow/a/three.mfv").num_flows == 2
    report = prepare_videos(items, tmp_path / "rgb", _options(max_frames=None, flow_method="none"), progress=False)
    assert report.done == 2 and report.failed == 0
    video = PackedVideo(tmp_path / "rgb/a/one_frame.mfv")
    assert (video.num_frames, video.num_flows, video.flow_bound) == (1, 0, None)
    assert one.exists() and three.exists()


def test_shards_split_the_work(tmp_path, video_writer, square_frames):
    for i in range(5):
        video_writer(tmp_path / f"src/c/v{i}.mp4", square_frames(n=4), codec="libx264")
    items = folders(tmp_path / "src").items()
    reports = [prepare_videos(items, tmp_path / "store", _options(shard=(i, 2)), progress=False) for i in (0, 1)]
    assert [r.done for r in reports] == [3, 2]
    assert sorted(p.name for p in (tmp_path / "store").glob("report*.json")) == ["report-0-of-2.json", "report-1-of-2.json"]
    assert len(list((tmp_path / "store/c").glob("*.mfv"))) == 5
    with pytest.raises(MateffnetError, match="bad shard 2/2"):
        parse_shard("2/2")


def test_worker_processes_give_the_same_files_and_survive_a_crash(tmp_path, shared_data, monkeypatch):
    """Flow in each worker, and flow batched across videos in the main process, write the same
    flow as the in-process path; a worker killed mid-video fails only that video."""
    names = [
        "ucf101/Archery/v_Archery_g01_c01.avi",
        "hmdb51/wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi",  # another frame size: its own flow batches
        "ucf101/Basketball/v_Basketball_g01_c01.avi",
        "kinetics400/arm_wrestling/demo.mp4",
    ]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{shared_data / 'videos' / n} 0\n" for n in names))
    items = video_list(listing).items()
    base = dict(max_frames=20, chunk_frames=7, flow_batch=9)  # chunks and batches cut across videos
    reference = prepare_videos(items, tmp_path / "serial", _options(**base), progress=False)
    assert reference.done == 4

    victim = items[3].video_id
    assign = pool.Pool._assign

    def assign_then_kill(self, worker, index):
        assign(self, worker, index)
        if self.todo[index].video_id == victim:
            worker.process.kill()

    monkeypatch.setattr(pool.Pool, "_assign", assign_then_kill)
    for across in (False, True):
        store = tmp_path / f"workers-{across}"
        report = prepare_videos(items, store, _options(workers=2, batch_across_videos=across, **base), progress=False)
        assert (report.done, report.failed) == (3, 1), report.failures
        assert report.failures[0]["reason"] == "crashed" and report.failures[0]["video_id"] == victim
        for item in items[:3]:
            assert _flow_bytes(store_path(store, item.video_id)) == _flow_bytes(store_path(tmp_path / "serial", item.video_id))
        assert not list(store.rglob("*.tmp"))


def test_report_names_the_flow_method_error():
    with pytest.raises(MateffnetError, match="unknown flow method 'optical'"):
        prepare_videos([], "/nonexistent-store-never-created", PrepareOptions(flow_method="optical"))


def test_rgb_frames_match_across_chunk_boundaries(tmp_path, video_writer):
    frames = np.stack([np.full((32, 48, 3), 10 * i, np.uint8) for i in range(9)])
    video_writer(tmp_path / "src/c/ramp.mp4", frames, codec="libx264")
    report = prepare_videos(folders(tmp_path / "src").items(), tmp_path / "s", _options(max_frames=None, size=None, chunk_frames=4), progress=False)
    assert report.done == 1
    stored = PackedVideo(tmp_path / "s/c/ramp.mfv").read_rgb(range(9)).float().mean(dim=(1, 2, 3))
    assert torch.allclose(stored, torch.arange(9) * 10.0, atol=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_flow_batched_across_videos_matches_flow_per_video(tmp_path, shared_data):
    """The main process queues batches mixing several videos on the GPU and hands each pair's flow back
    to its video's worker when the batch is done: the files equal those of the one-video-at-a-time path."""
    names = ["ucf101/Archery/v_Archery_g01_c01.avi", "hmdb51/wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi",
             "ucf101/Basketball/v_Basketball_g01_c01.avi"]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{shared_data / 'videos' / n} 0\n" for n in names))
    items = video_list(listing).items()
    base = dict(size=64, flow_method="tvl1", device="cuda", max_frames=30, chunk_frames=7, flow_batch=9)
    per_video = prepare_videos(items, tmp_path / "per_video", PrepareOptions(workers=0, **base), progress=False)
    across = prepare_videos(items, tmp_path / "across",
                            PrepareOptions(workers=2, batch_across_videos=True, **base), progress=False)
    assert per_video.done == across.done == 3
    for item in items:
        assert _flow_bytes(store_path(tmp_path / "across", item.video_id)) == \
            _flow_bytes(store_path(tmp_path / "per_video", item.video_id)), item.video_id
