#!/usr/bin/env python3
"""Replays a PTY recording (oauth_support/screens/*.bin: little-endian u32 length + bytes
per read) to the terminal, 20 ms between reads, then waits until killed (or exits with
--exit N)."""
import struct, sys, time
data = open(sys.argv[1], "rb").read()
i = 0
while i + 4 <= len(data):
    n = struct.unpack("<I", data[i:i + 4])[0]
    sys.stdout.buffer.write(data[i + 4:i + 4 + n])
    sys.stdout.buffer.flush()
    i += 4 + n
    time.sleep(0.02)
if "--exit" in sys.argv:
    sys.exit(int(sys.argv[sys.argv.index("--exit") + 1]))
time.sleep(600)
