#!/usr/bin/env python3
"""A stand-in login CLI that draws the way Ink CLIs (gemini, claude) do: words placed with
cursor moves (CHA) instead of spaces, dialogs erased and redrawn line by line with a spinner,
keys read in raw mode, and the login URL hard-wrapped at the terminal's width with an indent.

  ink_like.py --authorize URL [--dialog "question|choice"]... [--width N]

Each --dialog is shown until Enter is pressed; then the URL (URL?redirect_uri=...&state=...)
is printed and the CLI waits (redrawing its spinner) until killed.
"""
import argparse, os, select, sys, termios, time, tty

ap = argparse.ArgumentParser()
ap.add_argument("--authorize", required=True)
ap.add_argument("--dialog", action="append", default=[])
ap.add_argument("--width", type=int, default=200)
ap.add_argument("--state", default="ink-st4te")
a = ap.parse_args()

out = sys.stdout
def w(s):
    out.write(s)
    out.flush()

def placed(text, col=2):
    """Words at absolute columns (ESC [ n G), no spaces written."""
    s = ""
    for word in text.split(" "):
        s += "\x1b[%dG%s" % (col, word)
        col += len(word) + 1
    return s

SPIN = "\u280b\u2819\u2839\u2838\u283c\u2834"
fd = sys.stdin.fileno()
tty.setraw(fd)
w("\x1b[?25l")
drawn = 0
def frame(lines):
    global drawn
    # Ink's eraseLines: erase and go up, for every line of the previous frame.
    w("\x1b[2K\x1b[1A" * drawn + "\x1b[2K\r")
    w("\r\n".join(lines) + "\r\n")
    drawn = len(lines)

for d in a.dialog:
    q, choice = d.split("|")
    i = 0
    while True:
        bar = "\u2500" * 80
        frame(["\u256d" + bar + "\u256e",
               "\u2502" + placed(q, 3) + "\x1b[82G\u2502",
               "\u2502 \x1b[32m\u25cf 1. " + choice + "\x1b[0m\x1b[82G\u2502",
               "\u2502   2. Something else\x1b[82G\u2502",
               "\u2570" + bar + "\u256f",
               SPIN[i % len(SPIN)] + placed("Waiting for your choice", 3)])
        i += 1
        r, _, _ = select.select([fd], [], [], 0.08)
        if r and b"\r" in os.read(fd, 64):
            break
    frame(["\u2714" + placed("Chose: " + choice, 3)])
    drawn = 0

url = "%s?redirect_uri=http%%3A%%2F%%2F127.0.0.1%%3A9%%2Fcb&scope=%s&state=%s&client_id=stand-in" % (
    a.authorize, "s" * 300, a.state)
w(placed("Otherwise navigate to:", 3) + "\r\n")
width = a.width - 2
for i in range(0, len(url), width):
    w("  " + url[i:i + width] + "\r\n")
i = 0
while True:
    frame([SPIN[i % len(SPIN)] + placed("Waiting for authentication...", 3)])
    i += 1
    time.sleep(0.08)
