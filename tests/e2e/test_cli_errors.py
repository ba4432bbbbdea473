"""How the real ``e2ee`` command fails (issue 12): one line on stderr saying what went
wrong and what to do, exit code 2 for a wrong command line and 1 for a failure, no
traceback; signals stop ``demo`` with its server and temporary directory cleaned up;
``e2ee serve`` says which project it serves; ``e2ee session list|show|delete``.

The tests run the installed entry point (``.venv/bin/e2ee``) in a child process, and the
servers are ``e2ee serve`` processes on loopback; only the race of a port taken between
``serve``'s check and its bind is played in process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from e2ee.server.store import DEFAULT_DATA_DIR, SQLiteStore
from e2ee.tools import cli, cli_args, serve_cmd
from e2ee.tools.cli_errors import CommandError

_SCRIPT = Path(sys.executable).with_name("e2ee")
E2EE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "e2ee"]
#: Generous: the machine is shared and loaded.
TIMEOUT = 90.0


def e2ee(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*E2EE, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        env=env,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The single stderr line of a failed command with exit code ``code``."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def refused(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def new_project(data_dir: Path) -> None:
    """A data directory with project credentials, as `e2ee serve` leaves it."""
    store = SQLiteStore.in_data_dir(data_dir)
    store.get_or_create_credentials_sync()
    store.close_sync()


class Serve:
    """``e2ee serve --port 0`` in a child process; stdout and stderr kept in files."""

    def __init__(self, data_dir: Path, cwd: Path, *options: str) -> None:
        self.out, self.err = cwd / "serve.out", cwd / "serve.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [*E2EE, "serve", "--port", "0", "--data-dir", str(data_dir), *options],
                stdout=out,
                stderr=err,
                cwd=cwd,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + TIMEOUT
        while not (m := re.search(r"listening on (http://\S+)", self.stdout())):
            assert self.proc.poll() is None, self.err.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        self.url = m.group(1)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(TIMEOUT)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, Path]]:
    """A server started with the CLI, and its data directory."""
    home = tmp_path_factory.mktemp("served")
    server = Serve(home / "data", home)
    try:
        yield server, home / "data"
    finally:
        server.stop()


# -- Usage errors: exit code 2 ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["session", "create", "--url", "127.0.0.1:8080"], "did you mean http://127.0.0.1:8080?"),
        (["session", "create", "--url", "http://localhost:8080x"], "has a bad port"),
        (["session", "list", "--url", "ftp://foo"], "http:// or https://, not ftp://"),
        (["serve", "--port", "99999"], "give 1-65535, or 0 for any free port"),
        (["serve", "--port", "-1"], "give 1-65535, or 0 for any free port"),
        (["demo", "--participants", "1"], "need at least 2 participants"),
        (["demo", "--seconds", "-3"], "give a number of seconds above 0"),
        (["demo", "--seconds", "0"], "give a number of seconds above 0"),
        (["demo", "--url", "http://127.0.0.1:8080"], "--url needs --data-dir"),
        (["session", "list", "--limit", "5000"], "at most 1000"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], says: str) -> None:
    line = one_line(e2ee(*args), 2)
    assert says in line
    assert line.startswith(f"e2ee {args[0]}")
    assert line.endswith("--help`)")  # where to read more


def test_bench_help_works_and_options_show_their_defaults() -> None:
    bench = e2ee("bench", "--help")
    assert bench.returncode == 0, bench.stderr
    assert "crypto" in bench.stdout
    assert "router" in bench.stdout
    demo = e2ee("demo", "--help").stdout
    assert "how many take part (default: 3)" in demo
    assert "(default: 10.0)" in demo
    assert "(default: publisher)" in e2ee("token", "--help").stdout
    serve = e2ee("serve", "--help").stdout
    assert "Run the session server" in serve  # a description
    assert "(default: 8080)" in serve


def test_the_cli_default_data_dir_is_the_servers() -> None:
    assert cli_args.DEFAULT_DATA_DIR == DEFAULT_DATA_DIR


# -- Failures: exit code 1 --------------------------------------------------------------------


def test_a_missing_extra_gives_the_install_hint(tmp_path: Path) -> None:
    # aiohttp made unimportable in the child, as if the server extra were not installed.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'aiohttp':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    line = one_line(e2ee("bench", "router", "--quick", env=env), 1)
    assert "bench router needs aiohttp" in line
    assert "pip install -e '.[server]'" in line
    assert "'.[server]'" in one_line(e2ee("session", "list", env=env), 1)
    # What needs no server still works.
    assert e2ee("selftest", env=env).returncode == 0


def test_serve_on_a_busy_port_leaves_nothing_behind(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line(e2ee("serve", "--port", str(port), cwd=tmp_path), 1)
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in line
    assert "choose another --port" in line
    assert list(tmp_path.iterdir()) == []  # no ./e2ee-data with a new API key


def test_a_bind_that_fails_after_the_check_removes_the_new_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In process: the port is taken between the check and the server's bind.
    async def port_looks_free(host: str, port: int) -> None:
        return None

    monkeypatch.setattr(serve_cmd, "_probe", port_looks_free)
    data_dir = tmp_path / "new" / "data"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = cli.build_parser().parse_args(
            ["serve", "--port", str(port), "--data-dir", str(data_dir)]
        )
        with pytest.raises(CommandError, match="the port is in use"):
            args.func(args)
    assert list(tmp_path.iterdir()) == []  # ./new/data and its credentials are gone
    # An existing data directory keeps everything but the new database.
    data_dir.mkdir(parents=True)
    (data_dir / "notes.txt").write_text("mine")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        with pytest.raises(CommandError, match="the port is in use"):
            args.func(args)
    assert [p.name for p in data_dir.iterdir()] == ["notes.txt"]


def test_serve_says_which_project_it_serves(tmp_path: Path) -> None:
    first = Serve(Path("e2ee-data"), tmp_path)
    assert first.stop() == 0
    where = (tmp_path / "e2ee-data").resolve()
    assert re.match(
        rf"e2ee: created new project credentials in {re.escape(str(where))} \(api key \S+\)\n",
        first.stdout(),
    ), first.stdout()
    api_key = first.stdout().split("(api key ")[1].split(")")[0]
    again = Serve(Path("e2ee-data"), tmp_path)
    assert again.stop() == 0
    assert again.stdout().startswith(
        f"e2ee: using the project credentials in {where} (api key {api_key})\n"
    ), again.stdout()


def test_nothing_listening_says_start_the_server(tmp_path: Path) -> None:
    new_project(tmp_path / "data")
    url = f"http://127.0.0.1:{free_port()}"
    line = one_line(
        e2ee("session", "create", "--url", url, "--data-dir", str(tmp_path / "data")), 1
    )
    assert line == (
        f"e2ee: cannot reach {url} (connection refused): is the server running? start it "
        "with `e2ee serve` (or ./scripts/serve)"
    )


def test_another_data_dir_says_which_data_dir(served: tuple[Serve, Path], tmp_path: Path) -> None:
    server, _ = served
    new_project(tmp_path / "other")
    other = str(tmp_path / "other")
    line = one_line(e2ee("session", "create", "--url", server.url, "--data-dir", other), 1)
    assert re.match(r"e2ee: token_(bad_signature|unknown_key): ", line), line
    assert f"signed with the API secret in {other}" in line
    assert "pass the --data-dir that server was started with" in line


def test_session_list_show_delete(served: tuple[Serve, Path]) -> None:
    server, data = served
    where = ["--url", server.url, "--data-dir", str(data)]
    created = e2ee("session", "create", "--e2ee", *where)
    assert created.returncode == 0, created.stderr
    sid = created.stdout.strip()

    listed = e2ee("session", "list", *where)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].startswith("id ")
    assert any(line.startswith(sid) for line in listed.stdout.splitlines()[1:])
    as_json = json.loads(e2ee("session", "list", "--json", *where).stdout)
    assert sid in [s["id"] for s in as_json["sessions"]]

    shown = e2ee("session", "show", sid, *where)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["e2ee"] is True

    deleted = e2ee("session", "delete", sid, *where)
    assert deleted.returncode == 0, deleted.stderr
    assert sid not in e2ee("session", "list", *where).stdout
    for action in ("show", "delete"):
        line = one_line(e2ee("session", action, sid, *where), 1)
        assert line.startswith("e2ee: session_not_found: ")
        assert "`e2ee session list` shows the sessions" in line


# -- demo: quiet with --json, cleaned up on signals -------------------------------------------


def test_demo_json_is_quiet_and_the_server_logs_no_ice_checks(
    served: tuple[Serve, Path],
) -> None:
    server, data = served
    demo = e2ee(
        "demo", "--participants", "2", "--seconds", "2", "--json",
        "--url", server.url, "--data-dir", str(data),
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr
    assert json.loads(demo.stdout)["session"]["e2ee"] is True
    assert demo.stderr == ""  # no library log lines (the expected mismatch warnings)
    log = server.err.read_text(errors="replace")
    assert "joined session" in log  # the server does log at INFO
    assert "aioice" not in log  # but not every ICE candidate pair's state change


@pytest.mark.parametrize(
    ("signum", "says"), [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "stopped by SIGTERM")]
)
def test_a_signal_stops_the_demo_and_its_server(
    tmp_path: Path, signum: signal.Signals, says: str
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [*E2EE, "demo", "--participants", "2", "--seconds", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    try:
        seen = []
        port = None
        while port is None:
            line = proc.stderr.readline()
            assert line, "".join(seen)
            seen.append(line)
            if m := re.search(r" at http://127\.0\.0\.1:(\d+)$", line.strip()):
                port = int(m.group(1))
        assert not refused(port)  # its server is up
        assert [p.name[:10] for p in tmp.iterdir()] == ["e2ee-demo-"]
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err, err
    assert err.splitlines()[-1] == f"e2ee: {says}", err
    assert refused(port)  # the demo's server is gone
    assert list(tmp.iterdir()) == []  # and its temporary data directory


def test_serve_budget_options_reach_the_server(tmp_path: Path) -> None:
    # --max-connections-per-address 1: a second WebSocket from 127.0.0.1 is refused
    # with HTTP 429 before the upgrade while the first stays open.
    server = Serve(tmp_path / "data", tmp_path, "--max-connections-per-address", "1")
    try:
        where = ["--url", server.url, "--data-dir", str(tmp_path / "data")]
        sid = e2ee("session", "create", *where).stdout.strip()
        token = e2ee("token", sid, "--data-dir", str(tmp_path / "data")).stdout.strip()
        ws_url = f"{server.url.replace('http', 'ws', 1)}/v1/sessions/{sid}/ws?token={token}"

        async def two() -> int:
            async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as first:
                hello = await first.receive_json(timeout=TIMEOUT)
                assert hello["type"] == "session", hello
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(ws_url)
                return refused.value.status

        assert asyncio.run(two()) == 429
    finally:
        assert server.stop() == 0
