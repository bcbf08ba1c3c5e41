"""The meshd command line, run as a real process: `version`, `check`, and `run`'s start-up
errors, which name the file, line, column and key path of every problem at once."""
import json
import re
import shutil
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest

from meshd_harness import MESHD_BIN, ROOT, simple_config, write_config

ERROR_LINE = re.compile(r"^\s+(?P<file>[^\s:]+):(?P<line>\d+):(?P<col>\d+): (?P<path>[^\s:]+): (?P<message>.*)$")


def meshd(*args, cwd=None, timeout=30):
    return subprocess.run([MESHD_BIN, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def parse_errors(stderr):
    """{key path: (file, line, col, message)} of every `FILE:LINE:COL: path: message` line."""
    errors = {}
    for line in stderr.splitlines():
        match = ERROR_LINE.match(line)
        if match:
            errors[match["path"]] = (match["file"], int(match["line"]), int(match["col"]), match["message"])
    return errors


def position(text, marker, token=None):
    """1-based (line, column) of `token` (default: the marker's first non-space character) on the
    single line of `text` that contains `marker`."""
    hits = [i for i, line in enumerate(text.splitlines()) if marker in line]
    assert len(hits) == 1, f"marker {marker!r} is on lines {hits}"
    line = text.splitlines()[hits[0]]
    column = line.index(token) if token else len(line) - len(line.lstrip(" -"))
    return hits[0] + 1, column + 1


def test_version():
    result = meshd("version")
    assert result.returncode == 0
    assert re.fullmatch(r"meshd 0\.\d+\.\d+\n", result.stdout), result.stdout
    flag = meshd("--version")
    assert flag.returncode == 0
    assert result.stdout.strip() == "meshd " + flag.stdout.strip()


def test_check_accepts_a_good_config(tmp_path):
    write_config(tmp_path, simple_config(), disco={"web": "127.0.0.1 8080\n"})
    (tmp_path / "good.yaml").write_text((tmp_path / "meshd.yaml").read_text())
    result = meshd("check", "--config", "good.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "good.yaml: ok"
    # The same file with the namer's directory gone is not ok: check really reads it.
    shutil.rmtree(tmp_path / "disco")
    result = meshd("check", "--config", "good.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "rootDir" in result.stderr and "does not exist" in result.stderr


MANY_PROBLEMS = """\
admin:
  ip: 127.0.0.1
  port: 0
namers:
- kind: io.l5d.fs
  prefix: /files
- kind: io.l5d.consul
  host: 127.0.0.1
routers:
- protocol: http
  dtab: /svc => 
  servers:
  - ip: 127.0.0.1
    prot: 4140
- protocol: http
  label: second
  servers:
  - ip: 127.0.0.2
    port: http
- protocol: h2
  servers:
  - port: 0
"""


def expected_many_problems():
    text = MANY_PROBLEMS
    return {
        "namers[0].rootDir": (position(text, "- kind: io.l5d.fs"), "missing required key 'rootDir'"),
        "namers[1].kind": (position(text, "- kind: io.l5d.consul", "io.l5d.consul"), "Linkerd"),
        "routers[0].dtab": (position(text, "dtab: /svc =>")[0], "invalid dtab"),
        "routers[0].servers[0].prot": (position(text, "prot: 4140", "prot"), "did you mean 'port'"),
        "routers[1].servers[0].port": (position(text, "port: http", "http"), "expected an integer"),
        "routers[2].protocol": (position(text, "- protocol: h2", "h2"), "not support"),
    }


def assert_many_problems(result, file_name):
    assert result.returncode == 1, result.stderr
    errors = parse_errors(result.stderr)
    expected = expected_many_problems()
    assert set(errors) == set(expected), result.stderr
    assert f"{len(expected)} config errors:" in result.stderr
    for path, (where, fragment) in expected.items():
        file, line, col, message = errors[path]
        assert file == file_name
        if isinstance(where, tuple):
            assert (line, col) == where, (path, result.stderr)
        else:
            assert line == where, (path, result.stderr)
        assert fragment in message, (path, message)
    # Details of the individual messages.
    assert "'io.l5d.fs'" in errors["namers[1].kind"][3]
    assert "io.l5d.consul" in errors["namers[1].kind"][3]
    assert "'http'" in errors["routers[2].protocol"][3]
    assert '"http"' in errors["routers[1].servers[0].port"][3]
    # The dtab error shows the text with a caret under the problem.
    lines = result.stderr.splitlines()
    at = next(i for i, line in enumerate(lines) if "routers[0].dtab" in line)
    assert lines[at + 1].strip() == "/svc =>"
    caret = lines[at + 2]
    assert caret.strip() == "^"
    assert caret.index("^") == len(lines[at + 1].rstrip()), "the caret is not at the end of the dentry"


def test_check_reports_every_problem_with_its_position(tmp_path):
    (tmp_path / "many.yaml").write_text(MANY_PROBLEMS)
    result = meshd("check", "--config", "many.yaml", cwd=tmp_path)
    assert result.stdout == ""
    assert_many_problems(result, "many.yaml")


def test_run_reports_the_same_problems_and_exits_1(tmp_path):
    (tmp_path / "many.yaml").write_text(MANY_PROBLEMS)
    check = meshd("check", "--config", "many.yaml", cwd=tmp_path)
    run = meshd("run", "--config", "many.yaml", cwd=tmp_path)
    assert_many_problems(run, "many.yaml")
    assert parse_errors(run.stderr) == parse_errors(check.stderr)
    assert "meshd ready" not in run.stderr


def test_dtab_error_in_block_scalar_points_at_the_dentry(tmp_path):
    text = "admin:\n  port: 0\nrouters:\n- protocol: http\n  dtab: |\n    /svc => /#/io.l5d.fs;\n    /web => \n  servers:\n  - port: 0\n"
    (tmp_path / "block.yaml").write_text(text)
    result = meshd("check", "--no-bind-check", "--config", "block.yaml", cwd=tmp_path)
    assert result.returncode == 1
    errors = parse_errors(result.stderr)
    assert set(errors) == {"routers[0].dtab"}, result.stderr
    assert errors["routers[0].dtab"][1] == position(text, "/web =>")[0], result.stderr
    lines = result.stderr.splitlines()
    at = next(i for i, line in enumerate(lines) if "routers[0].dtab" in line)
    assert lines[at + 1].strip() == "/web =>"


def test_dtab_error_in_block_scalar_column(tmp_path):
    """A syntax error inside a `|` dtab (not at its end) points at the offending character."""
    text = "admin:\n  port: 0\nrouters:\n- protocol: http\n  dtab: |\n    /svc => /#/io.l5d.fs;\n    /web => ;\n  servers:\n  - port: 0\n"
    (tmp_path / "block.yaml").write_text(text)
    result = meshd("check", "--no-bind-check", "--config", "block.yaml", cwd=tmp_path)
    assert result.returncode == 1
    errors = parse_errors(result.stderr)
    assert set(errors) == {"routers[0].dtab"}, result.stderr
    assert errors["routers[0].dtab"][1:3] == position(text, "/web => ;", ";")


def listening_socket():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def test_port_in_use_is_reported_at_the_server_entry(tmp_path):
    holder = listening_socket()
    port = holder.getsockname()[1]
    try:
        text = f"""\
admin:
  ip: 127.0.0.1
  port: 0
routers:
- protocol: http
  dtab: /svc => /$/inet/127.1/1;
  servers:
  - ip: 127.0.0.1
    port: {port}
"""
        (tmp_path / "busy.yaml").write_text(text)
        line, col = position(text, "- ip: 127.0.0.1")
        run = meshd("run", "--config", "busy.yaml", cwd=tmp_path, timeout=30)
        assert run.returncode == 1, run.stderr
        errors = parse_errors(run.stderr)
        assert set(errors) == {"routers[0].servers[0]"}, run.stderr
        file, error_line, error_col, message = errors["routers[0].servers[0]"]
        assert (file, error_line, error_col) == ("busy.yaml", line, col)
        assert f"127.0.0.1:{port}" in message and "already in use" in message
        assert "meshd ready" not in run.stderr

        check = meshd("check", "--config", "busy.yaml", cwd=tmp_path)
        assert check.returncode == 1
        errors = parse_errors(check.stderr)
        assert set(errors) == {"routers[0].servers[0]"}, check.stderr
        assert errors["routers[0].servers[0]"][:3] == ("busy.yaml", line, col)
        assert "already in use" in errors["routers[0].servers[0]"][3]
        # --no-bind-check skips exactly that test.
        skipped = meshd("check", "--no-bind-check", "--config", "busy.yaml", cwd=tmp_path)
        assert skipped.returncode == 0, skipped.stderr
    finally:
        holder.close()


def test_admin_port_in_use_is_reported(tmp_path):
    holder = listening_socket()
    port = holder.getsockname()[1]
    try:
        text = f"admin:\n  ip: 127.0.0.1\n  port: {port}\nrouters:\n- protocol: http\n  servers:\n  - port: 0\n"
        (tmp_path / "busy.yaml").write_text(text)
        run = meshd("run", "--config", "busy.yaml", cwd=tmp_path, timeout=30)
        assert run.returncode == 1
        assert re.search(rf"busy\.yaml:2:\d+: admin: cannot listen on admin 127\.0\.0\.1:{port}", run.stderr), run.stderr
    finally:
        holder.close()


def run_then_shut_down(args, cwd, timeout=30):
    """Runs `meshd run ARGS` until it logs that it is ready, shuts it down with POST
    /admin/shutdown, and returns (every stderr line, exit status)."""
    proc = subprocess.Popen([MESHD_BIN, "run", *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    ready = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if "meshd ready" in line:
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(timeout), "meshd never logged that it is ready"
        assert proc.poll() is None, "\n".join(lines)
        admin = re.search(r'meshd\.admin"?[=:]"?(127\.0\.0\.1:\d+)', next(line for line in lines if "meshd ready" in line))[1]
        request = urllib.request.Request(f"http://{admin}/admin/shutdown", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        status = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(5)
    return lines, status


def test_log_format_json_and_text(tmp_path):
    write_config(tmp_path, simple_config(), disco={})
    lines, status = run_then_shut_down(["--config", "meshd.yaml", "--log-format", "json"], tmp_path)
    assert status == 0
    events = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "msg"} <= set(event) for event in events)
    ready = [event for event in events if event["msg"] == "meshd ready"]
    assert ready and ready[0]["level"] == "info"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ready[0]["ts"])
    assert re.fullmatch(r"127\.0\.0\.1:\d+", ready[0]["meshd.admin"])
    assert events[-1]["msg"] == "meshd stopped"
    assert not any(event["level"] == "debug" for event in events), "debug lines at the default level (info)"

    text_lines, status = run_then_shut_down(["--config", "meshd.yaml", "--log-format", "text", "--log-level", "debug"], tmp_path)
    assert status == 0
    assert any(re.search(r"Z INFO meshd: meshd ready .*meshd\.admin=127\.0\.0\.1:\d+", line) for line in text_lines), text_lines
    assert any(" DEBUG " in line for line in text_lines), "no debug lines at --log-level debug"
    for line in text_lines:
        with pytest.raises(ValueError):
            json.loads(line)


@pytest.mark.parametrize("command", ["check", "run"])
def test_invalid_log_options_exit_non_zero(tmp_path, command):
    write_config(tmp_path, simple_config(), disco={})
    level = meshd(command, "--config", "meshd.yaml", "--log-level", "nope", cwd=tmp_path)
    assert level.returncode != 0
    assert "--log-level" in level.stderr
    assert "meshd ready" not in level.stderr
    fmt = meshd(command, "--config", "meshd.yaml", "--log-format", "xml", cwd=tmp_path)
    assert fmt.returncode != 0
    assert "--log-format" in fmt.stderr


def test_default_config_path(tmp_path):
    shutil.copytree(ROOT / "config", tmp_path / "config")
    result = meshd("check", "--no-bind-check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "config/meshd.yaml: ok"

    # The default file is really the one read: break it and check says so.
    config = tmp_path / "config" / "meshd.yaml"
    text = config.read_text() + "bogus: 1\n"
    config.write_text(text)
    result = meshd("check", "--no-bind-check", cwd=tmp_path)
    assert result.returncode == 1
    errors = parse_errors(result.stderr)
    assert errors["bogus"][:2] == ("config/meshd.yaml", len(text.splitlines())), result.stderr

    # Without config/ in the working directory, meshd looks in /etc/meshd.
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    result = meshd("check", "--no-bind-check", cwd=empty)
    if not Path("/etc/meshd/meshd.yaml").exists():
        assert result.returncode == 1
        assert "/etc/meshd/meshd.yaml" in result.stderr and "no such file" in result.stderr


def test_invalid_yaml_reports_a_line(tmp_path):
    text = "admin:\n  port: 0\n routers:\n- protocol: http\n  servers:\n  - port: 0\n"
    (tmp_path / "broken.yaml").write_text(text)
    for command in ("check", "run"):
        result = meshd(command, "--config", "broken.yaml", cwd=tmp_path)
        assert result.returncode == 1
        match = re.search(r"broken\.yaml:(\d+):(\d+): invalid YAML", result.stderr)
        assert match, result.stderr
        assert int(match[1]) == 3, result.stderr

    unclosed = "admin:\n  port: 0\nrouters:\n- protocol: http\n  servers:\n  - port: [0\n"
    (tmp_path / "unclosed.yaml").write_text(unclosed)
    result = meshd("check", "--config", "unclosed.yaml", cwd=tmp_path)
    assert result.returncode == 1
    match = re.search(r"unclosed\.yaml:(\d+):(\d+): invalid YAML", result.stderr)
    assert match and int(match[1]) >= 6, result.stderr
