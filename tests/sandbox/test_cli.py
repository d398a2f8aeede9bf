"""`python -m ferry.sandbox` as a user runs it: flags, errors as sentences, clean shutdown."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from ferry.sandbox.__main__ import main
from tests.sandbox.conftest import Sandbox


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--speed", "-1"], "--speed"),
        (["--runpod-api-port", "70000"], "--runpod-api-port"),
        (["--inference", "maybe"], "--inference"),
        (["--max-processes", "-1"], "--max-processes"),
        (["--bogus"], "unrecognized arguments"),
        (["--token", " "], "--token"),
        (["--runpod-api-port", "18090", "--runpod-jobs-port", "18090"], "must differ"),
    ],
    ids=["speed", "port-range", "inference", "max-processes", "unknown-flag", "token", "same-port"],
)
def test_bad_flags_exit_2_with_a_sentence_and_no_traceback(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err
    assert "Traceback" not in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "sandbox" in capsys.readouterr().out


def test_a_port_in_use_is_a_sentence(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = main(
            [
                "--inference", "off", "--runpod-api-port", str(port), "--runpod-jobs-port", "0",
                "--state-dir", str(tmp_path),
            ]
        )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err


def test_missing_inference_server_says_what_to_do(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-venv" / "bin" / "python"
    code = main(["--server-python", str(missing), "--state-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "--inference off" in err
    assert "Traceback" not in err


def test_sigterm_stops_it_cleanly_and_the_urls_file_goes(
    start_sandbox: Callable[..., Sandbox],
) -> None:
    sb = start_sandbox("--inference", "off")
    info = json.loads(sb.urls_file.read_text())
    assert {"runpod", "replicate"} <= set(info)
    assert info["replicate"]["admin"] == f"{info['replicate']['api']}/_sandbox"
    assert info["runpod"]["api"] == sb.api_url
    assert info["runpod"]["jobs"].startswith("http://127.0.0.1:")
    assert info["runpod"]["token"] == "ferry-sandbox-token"
    assert info["runpod"]["admin"] == f"{sb.api_url}/_sandbox"
    banner = sb.log()
    assert "Ferry sandbox" in banner
    assert "Nothing here is a real cloud" in banner
    sb.proc.send_signal(signal.SIGTERM)
    assert sb.proc.wait(timeout=30) == 0
    assert not sb.urls_file.exists()
    assert "Traceback" not in sb.log()
    assert "[ferry sandbox]" in sb.log() or "ferry sandbox: stopped" in sb.log()
