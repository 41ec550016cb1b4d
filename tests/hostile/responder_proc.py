"""Run an HTTP01Server in its own process, for tests that measure it from outside.

Usage: python responder_proc.py TOKEN KEYAUTH [connection_timeout] [max_connections]
Prints the bound port on the first line, then answers commands on stdin:
``stats`` prints one JSON line {"threads", "rss_kb", "hwm_kb",
"fds", "evicted", "max_connections", "max_draining"}; ``quit`` exits.
"""

from __future__ import annotations

import json
import os
import sys
import threading

from certman.challenges import HTTP01Server, MemoryTokenStore


def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def main() -> None:
    token, keyauth = sys.argv[1], sys.argv[2]
    kwargs: dict[str, float | int] = {}
    if len(sys.argv) > 3:
        kwargs["connection_timeout"] = float(sys.argv[3])
    if len(sys.argv) > 4:
        kwargs["max_connections"] = int(sys.argv[4])
    tokens = MemoryTokenStore()
    tokens.put(token, keyauth)
    with HTTP01Server(tokens, "127.0.0.1", 0, **kwargs) as server:  # type: ignore[arg-type]
        print(server.port, flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "stats":
                stats = {
                    "threads": threading.active_count(),
                    "rss_kb": _status("VmRSS"),
                    "hwm_kb": _status("VmHWM"),
                    "fds": len(os.listdir("/proc/self/fd")),
                    "evicted": getattr(server, "evicted", -1),
                    "max_connections": server.max_connections,
                    "max_draining": getattr(server, "max_draining", 0),
                }
                print(json.dumps(stats), flush=True)
            elif cmd == "quit":
                break


if __name__ == "__main__":
    main()
