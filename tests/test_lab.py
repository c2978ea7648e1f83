"""`make lab`'s JupyterLab opens the notebooks on the project's kernel: every notebook names the kernel "aslib",
and a real JupyterLab server (started as `make lab` starts it) opens a notebook through its REST API on that
kernel and runs a cell over the kernel's websocket, in this environment's Python."""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from helpers import REPO_ROOT

pytest.importorskip("jupyterlab")  # the notebooks extra (make env installs it)
websocket = pytest.importorskip("websocket")  # websocket-client, a dependency of jupyter_server

KERNEL = {"name": "aslib", "display_name": "Python (aslib)", "language": "python"}
NOTEBOOK = "01_penalty_and_error_bounds.ipynb"


def test_every_notebook_names_the_projects_kernel():
    for path in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert json.loads(path.read_text())["metadata"]["kernelspec"] == KERNEL, path.name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A JupyterLab server on ``notebooks/`` at a free port with a random token, for one test."""

    def __init__(self, home: Path) -> None:
        self.port, self.token = _free_port(), secrets.token_hex(16)
        jupyter = Path(sys.executable).with_name("jupyter")
        command = [str(jupyter), "lab"] if jupyter.exists() else [sys.executable, "-m", "jupyterlab"]
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
               "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "JUPYTER_CONFIG_DIR": str(home / "config")}
        self.log = (home / "server.log").open("w")
        self.process = subprocess.Popen(
            [*command, str(REPO_ROOT / "notebooks"), "--no-browser", "--allow-root", f"--port={self.port}",
             "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1", f"--ServerApp.token={self.token}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Authorization": f"token {self.token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else {}

    def wait_ready(self, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"jupyter lab exited with {self.process.returncode}")
            try:
                self.request("GET", "/api/status")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        raise AssertionError(f"jupyter lab did not answer within {seconds} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()


def _execute(server: Server, kernel_id: str, code: str, seconds: float = 60.0) -> tuple[str, str]:
    """Run ``code`` on the kernel over its websocket; returns the reply's status and the cell's stdout."""
    session = uuid.uuid4().hex
    connection = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/api/kernels/{kernel_id}/channels?session_id={session}",
        header=[f"Authorization: token {server.token}"], timeout=seconds)
    try:
        msg_id = uuid.uuid4().hex
        connection.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": session, "msg_type": "execute_request",
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        stdout, status, idle = [], None, False
        deadline = time.monotonic() + seconds
        while (status is None or not idle) and time.monotonic() < deadline:
            message = json.loads(connection.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["header"]["msg_type"]
            if kind == "stream" and message["content"]["name"] == "stdout":
                stdout.append(message["content"]["text"])
            elif kind == "error":
                stdout.append("\n".join(message["content"]["traceback"]))
            elif kind == "execute_reply":
                status = message["content"]["status"]
            elif kind == "status" and message["content"]["execution_state"] == "idle":
                idle = True
        return status or "timeout", "".join(stdout)
    finally:
        connection.close()


def test_jupyterlab_opens_a_notebook_on_the_aslib_kernel_and_runs_a_cell(tmp_path):
    server = Server(tmp_path)
    try:
        server.wait_ready()
        specs = server.request("GET", "/api/kernelspecs")["kernelspecs"]
        assert "aslib" in specs, ("the kernel 'aslib' is not installed (make env installs it: python -m ipykernel "
                                  f"install --sys-prefix --name aslib); found {sorted(specs)}")
        spec = specs["aslib"]["spec"]
        assert spec["display_name"] == "Python (aslib)"
        # what JupyterLab does on opening a notebook: read it, start a session on the kernel its metadata names
        notebook = server.request("GET", f"/api/contents/{NOTEBOOK}")
        name = notebook["content"]["metadata"]["kernelspec"]["name"]
        opened = server.request("POST", "/api/sessions", {"path": NOTEBOOK, "name": NOTEBOOK, "type": "notebook",
                                                          "kernel": {"name": name}})
        assert opened["kernel"]["name"] == "aslib"
        status, output = _execute(server, opened["kernel"]["id"],
                                  "import os, sys\nimport aslib.models\nprint(sys.executable)\nprint(os.getcwd())\n"
                                  "print(aslib.models.shufflenet_v2.__module__)")
        assert status == "ok", output
        executable, cwd, module = output.split()
        assert Path(executable).resolve() == Path(spec["argv"][0]).resolve()
        assert Path(cwd).resolve() == (REPO_ROOT / "notebooks").resolve()
        assert module == "aslib.models.shufflenet_v2"
        server.request("DELETE", f"/api/sessions/{opened['id']}")
        assert server.request("GET", "/api/sessions") == []
    finally:
        server.stop()
