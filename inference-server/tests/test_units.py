"""In-process checks of settings, model references, fit checks and the spot notice parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry_server.config import Settings
from ferry_server.engine.factory import choose_engine
from ferry_server.errors import ModelLoadError, ModelTooLarge
from ferry_server.model_source import (
    check_fits,
    parse_hf_uri,
    resolve_model_dir,
    weight_bytes,
)
from ferry_server.spot import is_termination_notice


def test_settings_from_env_and_token_indirection() -> None:
    s = Settings.from_env({
        "FERRY_MODEL": "hf://org/name@v1", "FERRY_PORT": "9000", "FERRY_MAX_BATCH_SIZE": "16",
        "FERRY_BATCH_WINDOW_MS": "2.5", "FERRY_AUTH_TOKEN_ENV": "MY_TOKEN", "MY_TOKEN": "abc123",
        "FERRY_SPOT_METADATA_URL": "http://169.254.169.254/x", "FERRY_DRAIN_GRACE_S": "45",
    })
    assert (s.port, s.max_batch_size, s.batch_window_ms, s.drain_grace_s) == (9000, 16, 2.5, 45)
    assert s.auth_token == "abc123"
    assert s.served_model_name == "org/name"
    assert "abc123" not in repr(s)
    assert "auth_token='<set>'" in repr(s)
    assert Settings.from_env({}).auth_token == ""


@pytest.mark.parametrize(("env", "needle"), [
    ({"FERRY_PORT": "eighty"}, "FERRY_PORT"),
    ({"FERRY_ENGINE": "onnx"}, "FERRY_ENGINE"),
    ({"FERRY_MAX_BATCH_SIZE": "0"}, "FERRY_MAX_BATCH_SIZE"),
    ({"FERRY_DRAIN_GRACE_S": "-1"}, "FERRY_DRAIN_GRACE_S"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Settings.from_env(env)


def test_engine_choice() -> None:
    assert choose_engine(Settings(engine="transformers")) == "transformers"
    assert choose_engine(Settings(engine="vllm")) == "vllm"
    # vLLM is not installed in the test venv, so auto falls back to transformers.
    assert choose_engine(Settings(engine="auto")) == "transformers"


def test_parse_hf_uri() -> None:
    ref = parse_hf_uri("hf://meta-llama/Llama-3.1-8B@abc123")
    assert ref is not None
    assert (ref.repo_id, ref.revision) == ("meta-llama/Llama-3.1-8B", "abc123")
    ref = parse_hf_uri("hf://org/name")
    assert ref is not None
    assert ref.revision is None
    assert parse_hf_uri("/models/x") is None
    with pytest.raises(ModelLoadError, match="hf://org/name"):
        parse_hf_uri("hf://just-a-name")


def test_local_model_dir(tiny_model: Path, tmp_path: Path) -> None:
    assert resolve_model_dir(str(tiny_model)) == tiny_model
    assert weight_bytes(tiny_model) > 10_000
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_dir(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="safetensors"):
        weight_bytes(tmp_path)


def test_model_too_large_names_model_size_and_free_memory() -> None:
    with pytest.raises(ModelTooLarge) as err:
        check_fits("hf://meta-llama/Llama-3.1-70B", 140 * 2**30, "cuda:0", 79 * 2**30)
    msg = str(err.value)
    assert "hf://meta-llama/Llama-3.1-70B" in msg
    assert "140.0 GiB" in msg
    assert "79.0 GiB" in msg
    assert "cuda:0" in msg
    check_fits("small", 2**30, "cpu", 8 * 2**30)


@pytest.mark.parametrize(("status", "body", "notice"), [
    (404, "Not Found", False),
    (200, '{"action": "terminate", "time": "2026-01-01T00:00:00Z"}', True),
    (200, "FALSE", False),
    (200, "TRUE", True),
    (200, "", False),
    (500, "TRUE", False),
])
def test_spot_notice_parsing(status: int, body: str, notice: bool) -> None:
    assert is_termination_notice(status, body) is notice
