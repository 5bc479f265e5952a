"""prepare when the options, the environment or another process get in the way: one line naming the option or
path, exit status 2 (or 1 when some videos failed), nothing finished lost, no temporary file left, no traceback."""

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mateffnet.cli import main
from mateffnet.io.store import PackedVideo
from mateffnet.prepare.pool import _held_unix_sockets

pytest.importorskip("cv2", reason="the prepare tests use Farneback flow (OpenCV)")

F = ["--size", "32", "--flow-method", "farneback", "--device", "cpu"]
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def videos(tmp_path, video_writer, square_frames):
    """Three tiny clips in a folder-per-class tree."""
    for i in range(3):
        video_writer(tmp_path / f"src/c/v{i}.mp4", square_frames(n=6), codec="mpeg4")
    return tmp_path / "src"


def _cli(*args, inject: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    """`mateffnet ARGS` in a fresh interpreter; `inject` is Python run first (to simulate a failing disk)."""
    code = f"{inject}\nfrom mateffnet.cli import main\nraise SystemExit(main({[str(a) for a in args]!r}))"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)


def _temporaries(store: Path) -> list[Path]:
    return [p for p in store.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".lock-tmp")]


@pytest.mark.parametrize(
    "option, value, named",
    [
        ("--flow-batch", "0", "flow_batch (--flow-batch) must be >= 1, got 0"),
        ("--max-frames", "0", "max_frames must be >= 1, got 0"),
        ("--workers", "-1", "workers must be >= 0, got -1"),
        ("--rgb-quality", "101", "rgb_quality must be in 1..100, got 101"),
        ("--flow-quality", "0", "flow_quality must be in 1..100, got 0"),
        ("--size", "0", "bad frame size '0'"),
        ("--size", "32x", "bad frame size '32x'"),
    ],
)
def test_a_bad_numeric_option_is_one_line_naming_it_before_any_work(videos, tmp_path, capsys, option, value, named):
    assert main(["prepare", str(videos), "--out", str(tmp_path / "store"), *F, "--workers", "0", option, value]) == 2
    err = capsys.readouterr().err
    assert named in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists()  # refused before any work


def test_flow_batch_zero_in_a_subprocess_has_no_traceback(videos, tmp_path):
    result = _cli("prepare", videos, "--out", tmp_path / "store", *F, "--flow-batch", "0")
    assert result.returncode == 2
    assert "--flow-batch" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------- two processes, one store


def test_a_second_prepare_on_a_store_in_use_is_one_line_with_the_pid_and_touches_nothing(videos, tmp_path):
    from mateffnet.prepare.lock import store_lock

    store = tmp_path / "store"
    store.mkdir()
    ours = store / "c" / f".v0.mfv.{os.getpid()}.abcd1234.tmp"  # a live process's file being written
    ours.parent.mkdir()
    ours.write_bytes(b"half")
    (store / "report.json").write_text('{"mine": 1}\n')
    with store_lock(store, (0, 1)):
        result = _cli("prepare", videos, "--out", store, *F, "--workers", "0")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"mateffnet prepare: error: {store} is in use by another mateffnet prepare (PID {os.getpid()}); "
        "wait for it to finish, or give each process its own --shard i/n"
    )
    assert ours.read_bytes() == b"half"
    assert json.loads((store / "report.json").read_text()) == {"mine": 1}
    assert not list(store.rglob("*.mfv"))


def test_shards_share_a_store_but_one_shard_or_the_whole_list_twice_is_refused(videos, tmp_path):
    from mateffnet.prepare.lock import store_lock

    store = tmp_path / "store"
    store.mkdir()
    with store_lock(store, (0, 2)):
        other_shard = _cli("prepare", videos, "--out", store, *F, "--workers", "0", "--shard", "1/2")
        same_shard = _cli("prepare", videos, "--out", store, *F, "--workers", "0", "--shard", "0/2")
        whole = _cli("prepare", videos, "--out", store, *F, "--workers", "0")
    assert other_shard.returncode == 0, other_shard.stderr
    assert sorted(p.name for p in store.rglob("*.mfv")) == ["v1.mfv"]  # shard 1 of 2 of v0, v1, v2
    assert (store / "report-1-of-2.json").exists() and not (store / "report.json").exists()
    for refused in (same_shard, whole):
        assert refused.returncode == 2
        assert f"is in use by another mateffnet prepare (PID {os.getpid()})" in refused.stderr
        assert "Traceback" not in refused.stderr


def test_a_lock_left_by_a_killed_run_does_not_block_and_its_temporaries_are_removed(videos, tmp_path):
    store = tmp_path / "store"
    (store / "c").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (store / ".lock").write_text(f"{dead_pid}\n")
    stale = store / "c" / f".v0.mfv.{dead_pid}.abcd1234.tmp"
    stale.write_bytes(b"half")
    assert main(["prepare", str(videos), "--out", str(store), *F, "--workers", "0"]) == 0
    assert not stale.exists() and not _temporaries(store)
    assert len(list(store.rglob("*.mfv"))) == 3


# ------------------------------------------------------------------------------------------- the environment


def test_out_naming_an_existing_file_or_a_path_through_one_is_one_line(videos, tmp_path):
    a_file = tmp_path / "store.txt"
    a_file.write_text("keep me")
    existing = _cli("prepare", videos, "--out", a_file, *F)
    assert existing.returncode == 2 and "Traceback" not in existing.stderr
    assert existing.stderr.strip() == f"mateffnet prepare: error: {a_file}: exists and is not a folder (EEXIST)"
    assert main(["prepare", str(videos), "--out", str(a_file / "store"), *F]) == 2
    assert a_file.read_text() == "keep me"


def test_a_store_that_is_not_writable_is_one_line_naming_it(videos, tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    # root ignores permission bits, so the refusal of a read-only folder is injected where the folder is made
    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert main(["prepare", str(videos), "--out", str(store), *F, "--workers", "0"]) == 2
    assert capsys.readouterr().err.strip() == f"mateffnet prepare: error: {store}: permission denied (EACCES)"


NO_SPACE_FOR = """
import errno, os, tempfile
from mateffnet.io.store import PackedVideoWriter
_write = PackedVideoWriter._write
def _full(self, data):
    if self.path.name in {names!r}:
        raise OSError(errno.ENOSPC, "No space left on device")
    return _write(self, data)
PackedVideoWriter._write = _full
"""

NO_SPACE_AT_ALL = """
import errno, os, tempfile
def _full(suffix=None, prefix=None, dir=None, text=False):
    raise OSError(errno.ENOSPC, "No space left on device", os.path.join(dir, prefix + "x" + suffix))
tempfile.mkstemp = _full
"""


def test_a_disk_filling_during_prepare_keeps_the_finished_videos_and_a_rerun_completes(videos, tmp_path):
    store = tmp_path / "store"
    result = _cli("prepare", videos, "--out", store, *F, "--workers", "0", inject=NO_SPACE_FOR.format(names={"v1.mfv"}))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = f"mateffnet prepare: error: {store / 'c' / 'v1.mfv'}: no space left on device; free some space (ENOSPC)"
    assert result.stderr.strip().splitlines()[-1] == line
    assert "3 listed, 0 missing, 1 done" in result.stdout and "stopped:" in result.stdout
    PackedVideo(store / "c" / "v0.mfv").verify(deep=True)
    assert not (store / "c" / "v1.mfv").exists() and not (store / "c" / "v2.mfv").exists()
    assert not _temporaries(store)
    report = json.loads((store / "report.json").read_text())
    assert report["stopped"].endswith("no space left on device; free some space (ENOSPC)") and report["failed"] == 0

    rerun = _cli("prepare", videos, "--out", store, *F, "--workers", "0")
    assert rerun.returncode == 0, rerun.stderr
    assert "3 listed, 0 missing, 2 done, 1 skipped" in rerun.stdout


def test_a_full_disk_before_prepare_still_prints_the_summary_and_says_the_report_is_not_written(videos, tmp_path):
    store = tmp_path / "store"
    assert main(["prepare", str(videos), "--out", str(store), *F, "--workers", "0", "--max-frames", "4"]) == 0
    before = (store / "report.json").read_text()
    (store / "c" / "v2.mfv").unlink()
    result = _cli("prepare", videos, "--out", store, *F, "--workers", "0", "--max-frames", "4", inject=NO_SPACE_AT_ALL)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "3 listed, 0 missing, 0 done, 2 skipped (already done)" in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("mateffnet")]
    assert errors[0].startswith(f"mateffnet prepare: error: the report could not be written: {store}/.report.json.")
    assert errors[0].endswith(": no space left on device; free some space (ENOSPC)")
    assert errors[1].startswith(f"mateffnet prepare: error: {store / 'c'}/.v2.mfv.")
    assert (store / "report.json").read_text() == before  # the last good report stays
    assert not _temporaries(store)


# ----------------------------------------------------------------------------------------------- kill -9

SLOW_FLOW = """
import time, cv2
_flow = cv2.calcOpticalFlowFarneback
def _slow(*args, **kwargs):
    time.sleep(0.05)
    return _flow(*args, **kwargs)
cv2.calcOpticalFlowFarneback = _slow
"""

FLOW_WAITING_FOR = """
import os, time, cv2
_flow = cv2.calcOpticalFlowFarneback
def _waiting(*args, **kwargs):
    open({started!r}, "a").close()
    while not os.path.exists({go!r}):
        time.sleep(0.05)
    return _flow(*args, **kwargs)
cv2.calcOpticalFlowFarneback = _waiting
"""


def _alive(pid: int) -> bool:
    from mateffnet.fileio import process_alive

    return process_alive(pid)


def test_after_kill_9_the_workers_exit_at_once_and_the_rerun_removes_their_temporaries(tmp_path, video_writer,
                                                                                        square_frames, monkeypatch):
    video_writer(tmp_path / "src/c/long.mp4", square_frames(n=200), codec="mpeg4")
    store = tmp_path / "store"
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(SLOW_FLOW)  # every process of the run, the workers too: 50 ms a pair
    scratch = tmp_path / "tmp"  # the run's temporary directory, to see what it leaves there
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(slow), str(SRC), os.environ.get("PYTHONPATH", "")]),
           "TMPDIR": str(scratch)}
    run = subprocess.Popen([sys.executable, "-m", "mateffnet", "prepare", str(tmp_path / "src"), "--out", str(store), *F,
                            "--workers", "1", "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    def video_temporaries():  # not the main process's own (the store's settings, written and renamed at once)
        return [p for p in _temporaries(store) if p.name.startswith(".long.mfv.") and p.name.endswith(".tmp")]

    deadline = time.monotonic() + 300  # a worker's start (a forkserver, then torch's import) is slow on a busy machine
    while not video_temporaries() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert video_temporaries(), f"no worker started writing the video (the run's exit status: {run.poll()})"
    (temporary,) = video_temporaries()  # a worker is writing the video
    worker_pid = int(temporary.name.split(".")[-3])
    assert worker_pid != run.pid and _alive(worker_pid)
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 3
    while _alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker_pid)  # it would otherwise go on for the rest of the video (~10 s)
    assert temporary.exists() and not (store / "c/long.mfv").exists()
    (forkserver_folder,) = scratch.glob("pymp-*")  # multiprocessing's, with the forkserver's socket
    # the forkserver ends once it sees its main process gone, but its exit can take seconds on a busy machine,
    # and a folder whose socket some process still holds is rightly kept
    deadline = time.monotonic() + 30
    def forkserver_alive():
        return any(str(socket) in (_held_unix_sockets() or ()) for socket in forkserver_folder.iterdir())

    while forkserver_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    os.utime(forkserver_folder, (time.time() - 10, time.time() - 10))

    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert main(["prepare", str(tmp_path / "src"), "--out", str(store), *F, "--workers", "0", "--no-progress"]) == 0
    assert not _temporaries(store) and not forkserver_folder.exists()
    assert PackedVideo(store / "c/long.mfv").num_frames == 200


def test_after_kill_9_a_half_written_packed_file_is_found_by_the_rerun_and_redone(videos, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["prepare", str(videos), "--out", str(store), *F, "--workers", "0", "--no-progress"]) == 0
    good = (store / "c/v0.mfv").read_bytes()
    half = store / "c/v1.mfv"
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])  # as if the rename had raced a power cut
    capsys.readouterr()
    assert main(["prepare", str(videos), "--out", str(store), *F, "--workers", "0", "--no-progress"]) == 0
    assert "3 listed, 0 missing, 1 done, 2 skipped" in capsys.readouterr().out
    assert json.loads((store / "report.json").read_text())["redone"] == 1
    PackedVideo(half).verify(deep=True)
    assert (store / "c/v0.mfv").read_bytes() == good


# ------------------------------------------------------------------ a real small disk (where the test may mount)


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB tmpfs (mounting needs root; skipped where it is not allowed)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True,
                                 text=True)
    except FileNotFoundError:
        pytest.skip("no mount command")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave: int) -> None:
    """Fill the disk up to `leave` free bytes."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_on_a_real_disk_that_fills_the_finished_videos_stay_and_a_rerun_completes(tmp_path, small_disk, video_writer,
                                                                                  square_frames):
    for i in range(3):
        video_writer(tmp_path / f"long/c/v{i}.mp4", square_frames(n=40, step=1), codec="mpeg4")
    store = small_disk / "store"
    assert main(["prepare", str(tmp_path / "long"), "--out", str(store), *F, "--workers", "0", "--no-progress"]) == 0
    size = (store / "c/v0.mfv").stat().st_size
    good = (store / "c/v0.mfv").read_bytes()
    for i in (1, 2):
        (store / f"c/v{i}.mfv").unlink()
    _fill(small_disk, leave=size + size // 2 + 8192)  # room for one more video, not two

    result = _cli("prepare", tmp_path / "long", "--out", store, *F, "--workers", "1", "--no-progress")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"mateffnet prepare: error: {store / 'c' / 'v2.mfv'}: no space left on device; free some space (ENOSPC)"
    )
    assert "3 listed, 0 missing, 1 done, 1 skipped" in result.stdout
    assert (store / "c/v0.mfv").read_bytes() == good
    PackedVideo(store / "c/v1.mfv").verify(deep=True)
    assert not (store / "c/v2.mfv").exists() and not _temporaries(store)

    (small_disk / "filler").unlink()
    rerun = _cli("prepare", tmp_path / "long", "--out", store, *F, "--workers", "0", "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    assert "3 listed, 0 missing, 1 done, 2 skipped" in rerun.stdout


def test_on_a_real_read_only_disk_prepare_is_one_line_naming_the_store(videos, small_disk):
    store = small_disk / "store"
    assert main(["prepare", str(videos), "--out", str(store), *F, "--workers", "0", "--no-progress"]) == 0
    (store / "c/v2.mfv").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = _cli("prepare", videos, "--out", store, *F, "--workers", "0", "--no-progress")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"mateffnet prepare: error: {store / '.lock'}: read-only file system (EROFS)"
    assert len(list(store.rglob("*.mfv"))) == 2


def test_two_real_prepare_processes_on_one_store_the_second_is_refused_and_the_first_finishes(tmp_path, video_writer,
                                                                                               square_frames):
    videos = tmp_path / "src"
    for i in range(3):
        video_writer(videos / f"c/v{i}.mp4", square_frames(n=40), codec="mpeg4")
    slow, started, go = tmp_path / "slow", tmp_path / "started", tmp_path / "go"
    slow.mkdir()
    # the first run's flow says it has begun, then waits until the second run has ended, however long either
    # takes to start on a busy machine
    (slow / "sitecustomize.py").write_text(FLOW_WAITING_FOR.format(started=str(started), go=str(go)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(slow), str(SRC), os.environ.get("PYTHONPATH", "")])}
    store = tmp_path / "store"
    # files, not pipes: a run that fills a pipe nobody reads yet would block before it writes anything
    with open(tmp_path / "first.out", "w+") as out_file, open(tmp_path / "first.err", "w+") as err_file:
        first = subprocess.Popen([sys.executable, "-m", "mateffnet", "prepare", str(videos), "--out", str(store),
                                  *F, "--workers", "0", "--no-progress"], env=env, stdout=out_file, stderr=err_file)
        deadline = time.monotonic() + 300
        while not started.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not started.exists():
            first.kill()
            first.wait()
            err_file.seek(0)
            pytest.fail(f"the first run never reached its flow (exit {first.returncode}): {err_file.read()[-2000:]}")
        assert _temporaries(store), "the first run is in its first video's flow but writes no temporary"
        second = _cli("prepare", videos, "--out", store, *F, "--workers", "0", "--no-progress")
        go.touch()
        first.wait(timeout=120)
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"is in use by another mateffnet prepare (PID {first.pid})" in second.stderr
    assert first.returncode == 0, err
    assert "3 listed, 0 missing, 3 done" in out
    assert len(list(store.rglob("*.mfv"))) == 3
    assert json.loads((store / "report.json").read_text())["done"] == 3
    assert not _temporaries(store)


def test_without_fcntl_the_lock_is_a_pid_file_taken_over_when_its_process_is_gone(tmp_path, monkeypatch):
    from mateffnet.errors import MateffnetError
    from mateffnet.prepare import lock

    monkeypatch.setattr(lock, "fcntl", None)
    (tmp_path / ".lock").write_text(f"{os.getppid()}\n")  # a live process (pytest's parent)
    with pytest.raises(MateffnetError, match=rf"in use by another mateffnet prepare \(PID {os.getppid()}\)"):
        with lock.store_lock(tmp_path, (0, 1)):
            pass
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(dead.stdout)
    with lock.store_lock(tmp_path, (0, 1)):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
        with lock.store_lock(tmp_path, (1, 2)):  # shards have their own files
            assert (tmp_path / ".lock-1-of-2").exists()
    assert not list(tmp_path.glob(".lock*"))


def test_the_forkserver_folder_of_a_killed_run_is_removed_and_a_live_one_kept(tmp_path, monkeypatch):
    import socket

    from mateffnet.prepare.pool import remove_dead_forkserver_folders

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead, live, other = tmp_path / "pymp-dead", tmp_path / "pymp-live", tmp_path / "pymp-other"
    for folder in (dead, live, other):
        folder.mkdir()
    with socket.socket(socket.AF_UNIX) as gone:
        gone.bind(str(dead / "listener-a"))  # bound, never listening, closed: as after kill -9
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(live / "listener-b"))
    listening.listen()
    (other / "something").write_text("not a forkserver's")
    try:
        assert remove_dead_forkserver_folders(older_than=60) == []  # too young to be sure
        for folder in (dead, live, other):
            os.utime(folder, (time.time() - 120, time.time() - 120))
        assert remove_dead_forkserver_folders(older_than=60) == [dead]
        assert live.exists() and other.exists()
    finally:
        listening.close()
