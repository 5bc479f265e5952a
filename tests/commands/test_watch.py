import json
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
from tests.helpers.synthetic_actions import SECONDS_PER_ACTION, SEQUENCE, one_thread

from mateffnet.cli import main

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                  reason="the ffmpeg program is not installed (Debian: apt-get install ffmpeg; .ci/run does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port, read from /proc (connecting would take ffmpeg's one client)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        if any(row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A" for row in rows):
            return True
    return False


@pytest.fixture
def serve(long_synthetic_video):
    """serve(port, seconds) → FFmpeg serving the first `seconds` of the long video over HTTP on 127.0.0.1:port at its
    real rate (-re), to one client, once listening; every server started is killed at the end."""
    servers = []

    def start(port: int, seconds: float = 10) -> subprocess.Popen:
        server = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-i", str(long_synthetic_video),
                                   "-t", str(seconds), "-c", "copy", "-f", "mpegts", "-flush_packets", "1", "-listen", "1",
                                   f"http://127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers.append(server)
        deadline = time.monotonic() + 30
        while not listening(port):
            assert server.poll() is None and time.monotonic() < deadline, "ffmpeg did not start serving"
            time.sleep(0.1)
        return server

    yield start
    for server in servers:
        server.kill()
        server.wait()


@pytest.fixture
def http_stream(serve):
    """FFmpeg serving the first 10 s of the long video over HTTP on loopback, at its real rate (-re), once."""
    port = free_port()
    serve(port)
    return f"http://127.0.0.1:{port}"


def truth(second: float) -> str:
    return SEQUENCE[int(second // SECONDS_PER_ACTION)]


@needs_ffmpeg
def test_watch_prints_timed_predictions_of_an_http_stream_and_stops_cleanly_when_it_ends(synthetic_model, http_stream,
                                                                                        capsys):
    with one_thread():
        status = main(["watch", http_stream, "--model", str(synthetic_model), "--window", "2", "--every", "1",
                       "--segments", "4", "--json", "--timeout", "20"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    predictions = [json.loads(line) for line in captured.out.splitlines()]
    assert len(predictions) >= 4
    times = [p["time"] for p in predictions]
    assert times == sorted(times) and times[-1] > 7.0  # seconds into the stream, up to (near) its end
    for p in predictions:
        assert p["latency"] >= 0 and p["time"] - p["start"] <= 2.0  # the ring holds one window
        if truth(p["start"]) == truth(p["time"]):  # the window lies inside one action
            assert p["fused"][0]["label"] == truth(p["time"]), p
    assert captured.err.strip().splitlines()[-1].startswith("done: ")


@needs_ffmpeg
def test_a_source_that_cannot_be_reached_gives_one_clear_line_and_a_failing_status(synthetic_model, capsys):
    url = f"http://127.0.0.1:{free_port()}/live.ts"
    assert main(["watch", url, "--model", str(synthetic_model), "--timeout", "3"]) != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and url in error[0] and "unreadable" in error[0]


def test_a_file_is_watched_at_its_real_rate(synthetic_model, long_synthetic_video, tmp_path, capsys):
    from mateffnet.data.synthetic import write_video
    from mateffnet.io.decode import read_video

    frames, _ = read_video(long_synthetic_video, max_frames=48)  # the first 6 s
    clip = write_video(tmp_path / "six_seconds.mp4", frames, fps=8)
    started = time.monotonic()
    with one_thread():
        status = main(["watch", str(clip), "--realtime", "--model", str(synthetic_model), "--window", "2", "--every",
                       "1", "--segments", "4", "--json", "--out", str(tmp_path / "predictions.jsonl")])
    elapsed = time.monotonic() - started
    assert status == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert elapsed >= 5.0  # played at 8 fps, not decoded as fast as possible
    assert [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()] == printed
    assert printed[-1]["time"] == pytest.approx(47 / 8, abs=0.2)


def test_a_file_without_realtime_is_refused_with_one_line(synthetic_model, long_synthetic_video, capsys):
    assert main(["watch", str(long_synthetic_video), "--model", str(synthetic_model)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--realtime" in error[0]


def watch_http(port: int, model, *extra: str) -> int:
    with one_thread():
        return main(["watch", f"http://127.0.0.1:{port}", "--model", str(model), "--window", "2", "--every", "1",
                     "--segments", "4", "--json", *extra])


def once_connected(port: int, seconds: float, action) -> None:
    """In a thread: `action()` `seconds` after a client connected to the server on `port` (it stops listening)."""
    def wait_and_act():
        deadline = time.monotonic() + 60
        while listening(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(seconds)
        action()

    threading.Thread(target=wait_and_act, daemon=True).start()


@needs_ffmpeg
def test_a_stream_that_stalls_midway_gives_one_clear_line_and_a_failing_status_after_its_predictions(
        synthetic_model, serve, capsys):
    port = free_port()
    server = serve(port, seconds=20)
    once_connected(port, 8.0, lambda: server.send_signal(signal.SIGSTOP))  # it hangs 8 s in, the connection open
    status = watch_http(port, synthetic_model, "--timeout", "4")
    captured = capsys.readouterr()
    assert status == 1
    predictions = [json.loads(line) for line in captured.out.splitlines()]
    assert len(predictions) >= 2 and predictions[-1]["time"] < 10.0, captured.err  # what came before the stall was printed
    errors = [line for line in captured.err.splitlines() if "error" in line]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "no data within the read timeout" in errors[0]


@needs_ffmpeg
def test_with_reconnect_a_killed_server_that_comes_back_is_watched_on_with_the_times_going_on(
        synthetic_model, serve, capsys):
    port = free_port()
    first = serve(port, seconds=10)

    def replace_server():  # once watch is connected the port is free: a second server waits there, then the first dies
        serve(port, seconds=4)
        time.sleep(3.0)
        first.kill()

    once_connected(port, 0.0, replace_server)
    status = watch_http(port, synthetic_model, "--timeout", "5", "--reconnect", "1")
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert any("reconnecting (1/1)" in line for line in captured.err.splitlines())
    times = [json.loads(line)["time"] for line in captured.out.splitlines()]
    assert times == sorted(times) and times[-1] > 6.0  # the second stream's times follow the first's


@needs_ffmpeg
def test_with_reconnect_a_server_that_does_not_come_back_gives_one_clear_line_and_a_failing_status(
        synthetic_model, serve, capsys):
    port = free_port()
    server = serve(port, seconds=20)
    once_connected(port, 8.0, server.kill)
    status = watch_http(port, synthetic_model, "--timeout", "4", "--reconnect", "2")
    captured = capsys.readouterr()
    assert status == 1
    assert sum("reconnecting" in line for line in captured.err.splitlines()) == 2
    errors = [line for line in captured.err.splitlines() if "error" in line]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "after 2 reconnection attempts" in errors[0]
