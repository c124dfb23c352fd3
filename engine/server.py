"""Resident worker for VNN-COMP: imports done once, so an instance starts in a fraction of a second.

    python -m nncert.engine.server restart   # vnncomp/prepare_instance.sh: (re)start it and wait until it listens
    python -m nncert.engine.server stop

The server listens on a UNIX socket (NNCERT_SERVER, default /tmp/nncert-UID.sock). `python -m nncert.engine.vnncomp`
(run_instance.sh) sends it the instance with its own stdout/stderr (SCM_RIGHTS); the server forks a child that
verifies the instance and writes the results file exactly as the in-process path does (engine.vnncomp.write_result),
and kills it GRACE seconds past the timeout (results: `timeout`) or past the memory cap (results: `unknown`). The
timeout counts from the client's start (time.perf_counter is system-wide). One instance at a time. The server
never runs torch code itself, so the fork is safe (no thread pools to inherit), and it exits after IDLE_EXIT
seconds without a request. Without a server, or if it fails, the client verifies in its own process.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

GRACE = 0.5
IDLE_EXIT = 4 * 3600


def socket_path() -> str:
    return os.environ.get("NNCERT_SERVER") or os.path.join(tempfile.gettempdir(), f"nncert-{os.getuid()}.sock")


def _ask(msg: dict, fds=(), timeout: float | None = 5.0) -> dict | None:
    """Send one request; the reply, or None when no server answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(socket_path())
            socket.send_fds(s, [json.dumps(msg).encode() + b"\n"], list(fds))
            line = s.makefile().readline()
        return json.loads(line) if line else None
    except (OSError, ValueError):
        return None


def submit(onnx: str, spec: str, results: str, timeout: float, started: float) -> int | None:
    """Have the running server verify an instance (stdout/stderr are ours); its exit code, or None without one."""
    if not os.path.exists(socket_path()):
        return None
    reply = _ask({"cmd": "run", "onnx": onnx, "vnnlib": spec, "results": results, "timeout": timeout,
                  "started": started}, fds=(1, 2), timeout=None)
    return None if reply is None else int(reply["code"])


def _run(req: dict, fds: list[int]) -> int:
    from .memory import process_cap
    from .workers import rss_bytes
    pid = os.fork()
    if pid == 0:   # the child: the client's output, then the same path as without a server
        code = 3
        try:
            for fd, target in zip(fds, (1, 2)):
                os.dup2(fd, target)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            from .vnncomp import write_result
            code = write_result(req["onnx"], req["vnnlib"], req["results"], req["timeout"], req["started"],
                                bounded=False)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline, cap = req["started"] + req["timeout"] + GRACE, process_cap()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            if code < 0:   # killed from outside: a well-formed results file, never a verdict
                _write(req["results"], "error")
                return 3
            return code
        killed = "timeout" if time.perf_counter() > deadline else "unknown" if rss_bytes(pid) > cap else None
        if killed:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            _write(req["results"], killed)
            return 0
        time.sleep(0.005)


def _write(path: str, verdict: str) -> None:
    with open(path, "w") as f:
        f.write(verdict + "\n")


def serve() -> None:
    """Import what verification needs (no torch computation), then answer requests until stopped or idle."""
    import torch  # noqa: F401
    from . import instance, verify, vnncomp  # noqa: F401
    from .io import onnx_import, vnnlib  # noqa: F401
    from .registry import get_registry
    from .search import attack, bab, milp, relu_bab, splits  # noqa: F401
    get_registry()
    path = socket_path()
    if os.path.exists(path):
        os.unlink(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)
        s.listen(8)
        s.settimeout(IDLE_EXIT)
        while True:
            try:
                conn, _ = s.accept()
            except socket.timeout:
                break
            with conn:
                conn.settimeout(10)
                try:
                    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 4)
                    req = json.loads(data.decode())
                except (OSError, ValueError):
                    continue
                try:
                    conn.settimeout(None)
                    if req.get("cmd") == "run":
                        reply = {"code": _run(req, fds)}
                    else:
                        reply = {"ok": True, "pid": os.getpid()}
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    pass
                finally:
                    for fd in fds:
                        os.close(fd)
            if req.get("cmd") == "stop":
                break
    if os.path.exists(path):
        os.unlink(path)


def stop() -> None:
    reply = _ask({"cmd": "stop"})
    if reply is not None:
        pid = reply["pid"]
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.01)


def start(wait: float = 120.0) -> bool:
    """Start a server in the background (a new session, output to a log beside the socket); True once it answers."""
    log = open(socket_path() + ".log", "a")
    subprocess.Popen([sys.executable, "-m", "nncert.engine.server", "serve"], stdin=subprocess.DEVNULL, stdout=log,
                     stderr=log, start_new_session=True)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < wait:
        if _ask({"cmd": "ping"}, timeout=1.0) is not None:
            return True
        time.sleep(0.05)
    return False


def main(argv=None) -> int:
    cmd = (sys.argv[1:] if argv is None else argv) or ["help"]
    if cmd[0] == "serve":
        serve()
    elif cmd[0] == "stop":
        stop()
    elif cmd[0] == "restart":
        stop()
        return 0 if start() else 1
    else:
        print("usage: python -m nncert.engine.server restart|stop", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
