"""Run wrk with a Lua script that rotates request bodies and checks every response.

The Lua side counts responses whose body does not contain the expected number of items (the
``check`` pattern, counted with ``string.gsub``) and prints one JSON line in ``done``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WrkResult", "run_wrk"]

_LUA = r"""
-- bad and checked are globals: done() reads them from each thread with thread:get().
local bodies = {}
local idx = 0
bad = 0
checked = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do table.insert(bodies, line) end
  f:close()
  wrk.method = "POST"
  for k, v in string.gmatch(args[2], "([^|]+)=([^|]+)") do wrk.headers[k] = v end
  pattern = args[3]
  expected = tonumber(args[4])
  idx = math.random(#bodies)
end

function request()
  idx = idx % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[idx])
end

function response(status, headers, body)
  checked = checked + 1
  local _, n = string.gsub(body, pattern, "")
  if status ~= 200 or n ~= expected then bad = bad + 1 end
end

function done(summary, latency, requests)
  local bad_total, checked_total = 0, 0
  for _, t in ipairs(threads) do
    bad_total = bad_total + t:get("bad")
    checked_total = checked_total + t:get("checked")
  end
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f, ' ..
    '"socket_errors": %d, "non2xx": %d, "bad": %d, "checked": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, bad_total, checked_total))
end
"""


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured; ``items_per_s`` counts items, not requests."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: int
    non2xx: int
    bad: int
    checked: int
    items_per_request: int

    @property
    def items_per_s(self) -> float:
        """Items answered per second (requests/s times batch size)."""
        return self.requests * self.items_per_request / self.seconds


def run_wrk(
    url: str,
    bodies: list[str],
    headers: dict[str, str],
    check_pattern: str,
    items: int,
    *,
    connections: int = 50,
    threads: int = 2,
    seconds: int = 15,
) -> WrkResult:
    """POST ``bodies`` round-robin to ``url`` for ``seconds`` on ``connections`` keep-alive connections."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bench.lua"
        script.write_text(_LUA)
        body_file = Path(tmp) / "bodies.txt"
        body_file.write_text("\n".join(bodies) + "\n")
        header_arg = "|".join(f"{k}={v}" for k, v in headers.items())
        out = subprocess.run(
            [
                wrk,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds}s",
                "--timeout",
                "60s",
                "-s",
                str(script),
                url,
                "--",
                str(body_file),
                header_arg,
                check_pattern,
                str(items),
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            check=False,
        )
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("{"))
    return WrkResult(**json.loads(line), items_per_request=items)
