"""Drives wrk (Debian's package) with pre-signed requests and reads its figures."""

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

LUA_TEMPLATE = """
local requests = {}
local data = %s
for i, r in ipairs(data) do
  requests[i] = wrk.format("POST", r.path, {["Content-Type"] = "application/json",
                                              ["X-Mine-Signature"] = r.signature}, r.body)
end
local counter = 0
request = function()
  counter = counter + 1
  return requests[(counter %% #requests) + 1]
end
"""


@dataclass(frozen=True)
class WrkResult:
    clients: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx answers plus socket errors


@dataclass(frozen=True)
class PreparedRequest:
    path: str
    body: str
    signature: str


def wrk_binary() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (Debian package)")
    return binary


def _lua_table(requests: list[PreparedRequest]) -> str:
    items = ",".join(
        f"{{path={_lua_string(r.path)},body={_lua_string(r.body)},signature={_lua_string(r.signature)}}}"
        for r in requests
    )
    return "{" + items + "}"


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal for this ASCII data


def _milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, requests: list[PreparedRequest], clients: int, seconds: int) -> WrkResult:
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "requests.lua"
        script.write_text(LUA_TEMPLATE % _lua_table(requests))
        completed = subprocess.run(
            [
                wrk_binary(),
                f"--threads={min(clients, 2)}",
                f"--connections={clients}",
                f"--duration={seconds}s",
                "--timeout=10s",
                "--latency",
                f"--script={script}",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=True,
        )
    output = completed.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    p50 = _milliseconds(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _milliseconds(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return WrkResult(clients, rate, p50, p99, total, errors)
