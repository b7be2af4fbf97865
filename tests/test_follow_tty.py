"""`gand follow` on a terminal draws a progress bar with the time left, img/s and the latest
losses; piped, it prints the plain lines it always did. The terminal is a real pty."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

# Colours and styles vanish; cursor moves and line erasures (a redraw) become line breaks.
STYLE = re.compile(r"\x1b\[[0-9;]*m|\x1b\][^\x07]*\x07")
MOVE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def _run_on_a_terminal(args: list[str], env: dict, cwd, timeout: float) -> tuple[int, str]:
    """Runs `args` with a 160-column pty as stdin/stdout/stderr: (exit code, all it wrote)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    p = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, close_fds=True,
                         env={**env, "TERM": "xterm-256color", "COLUMNS": "160"})
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the process closed its end: it has exited
                    break
                if not data:
                    break
                chunks.append(data)
            elif p.poll() is not None:
                break
        else:
            raise AssertionError(f"follow still running after {timeout}s:\n"
                                 f"{b''.join(chunks).decode(errors='replace')[-3000:]}")
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
    return p.wait(timeout=10), b"".join(chunks).decode(errors="replace")


def test_follow_on_a_terminal_shows_eta_rate_and_losses_then_plain_lines_when_piped(gand):
    job = gand.submit("gan", "--data", "ring8", "--steps", "3000", "--sample-every", "3000",
                      "--checkpoint-every", "3000", "--seed", "3", "--batch-size", "64")
    gand.worker()
    code, raw = _run_on_a_terminal([sys.executable, "-m", "gand", "follow", job], gand.env,
                                   gand.home, timeout=300)
    text = MOVE.sub("\n", STYLE.sub("", raw))
    assert code == 0, text[-2000:]
    assert "\x1b[" in raw  # drawn in place, with control sequences: a bar, not lines
    running = [line for line in text.splitlines() if "running" in line and "/3000" in line]
    assert running, text[-2000:]
    # While it ran: the time left and the speed, from the trainer's img/s, and both losses.
    assert any(re.search(r"ETA \d+:\d\d:\d\d", line) and re.search(r"[\d,]+ img/s", line)
               and "d_loss=" in line and "g_loss=" in line for line in running), running[-5:]
    assert f"{job[:12]} succeeded at step 3000/3000" in text
    # Piped, the same command prints plain lines, no bar and no control sequences.
    piped = gand.run("follow", job)
    assert "\x1b" not in piped.stdout
    assert piped.stdout.splitlines()[0].startswith("succeeded  step 3000/3000  d_loss=")
