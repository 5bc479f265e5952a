"""Render a page in headless Chromium (Debian's package) and collect its console messages."""

import shutil
import subprocess

import pytest


def chromium_binary():
    return shutil.which("chromium") or shutil.which("chromium-browser")


needs_chromium = pytest.mark.skipif(chromium_binary() is None,
                                    reason="chromium not installed (Debian: apt-get install chromium)")


def screenshot(page, png, profile, width=1280, height=1600) -> list[str]:
    """Save a screenshot of `page` to `png`; return the console lines (errors, CSP violations, failed loads)."""
    command = [
        chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
        f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", f"--window-size={width},{height}",
        f"--screenshot={png}", page.as_uri(),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return [line for line in run.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
