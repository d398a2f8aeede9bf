"""In-process checks of settings, model references, fit checks and the spot notice parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry_server.config import Settings
from ferry_server.dataplane import drain_timeline
from ferry_server.engine.factory import choose_engine
from ferry_server.errors import ModelLoadError, ModelTooLarge
from ferry_server.model_source import (
    check_fits,
    parse_hf_uri,
    resolve_model_dir,
    weight_bytes,
)
from ferry_server.spot import MetadataUnavailable, Notice, parse_notice


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
    ({"FERRY_DRAIN_GRACE_S": "-1"}, "FERRY_DRAIN_GRACE_S must be between 1 and 3600 seconds"),
    ({"FERRY_DRAIN_GRACE_S": "0"}, "FERRY_DRAIN_GRACE_S must be between 1 and 3600 seconds"),
    ({"FERRY_DRAIN_GRACE_S": "0.5"}, "FERRY_DRAIN_GRACE_S must be between 1 and 3600 seconds"),
    ({"FERRY_DRAIN_GRACE_S": "3601"}, "FERRY_DRAIN_GRACE_S must be between 1 and 3600 seconds"),
    ({"FERRY_DRAIN_GRACE_S": "nan"}, "FERRY_DRAIN_GRACE_S must be between 1 and 3600 seconds"),
    ({"FERRY_DRAIN_PROPAGATION_S": "-1"}, "FERRY_DRAIN_PROPAGATION_S"),
], ids=["port", "engine", "batch", "grace-negative", "grace-zero", "grace-half", "grace-over",
        "grace-nan", "propagation-negative"])
def test_bad_settings_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Settings.from_env(env)


@pytest.mark.parametrize("grace", ["1", "60", "3600"])
def test_drain_grace_accepts_the_operators_whole_range(grace: str) -> None:
    assert Settings.from_env({"FERRY_DRAIN_GRACE_S": grace}).drain_grace_s == float(grace)


@pytest.mark.parametrize(("grace", "propagation", "expected"), [
    (30, 5, (5, 28)),
    (60, 5, (5, 58)),
    (5, 5, (2, 4)),
    (1, 5, (0.4, 0.8)),
    (30, 0, (0, 28)),
], ids=["default", "long-grace", "short-grace", "minimum-grace", "no-propagation"])
def test_drain_timeline_fits_inside_the_grace(
    grace: float, propagation: float, expected: tuple[float, float]
) -> None:
    got = drain_timeline(grace, propagation)
    assert got == pytest.approx(expected)
    assert got[0] <= got[1] < grace


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


NOW = 1_767_225_000.0  # 2025-12-31T23:50:00Z


@pytest.mark.parametrize(("kind", "status", "body", "notice"), [
    ("aws", 404, "Not Found", None),
    ("aws", 200, '{"action": "terminate", "time": "2026-01-01T00:00:00Z"}',
     Notice("terminate", 1_767_225_600.0, False, NOW)),
    ("aws", 200, '{"action": "stop", "time": "2026-01-01T00:00:00+00:00"}',
     Notice("stop", 1_767_225_600.0, False, NOW)),
    ("aws", 200, "not json", Notice("terminate", NOW + 120, True, NOW)),
    ("gce", 200, "FALSE", None),
    ("gce", 200, "TRUE", Notice("preempt", NOW + 30, True, NOW)),
    ("gce", 200, "", None),
], ids=["aws-none", "aws-terminate", "aws-stop", "aws-unparsed", "gce-false", "gce-true",
        "gce-empty"])
def test_spot_notice_parsing(kind: str, status: int, body: str, notice: Notice | None) -> None:
    assert parse_notice(kind, status, body, NOW) == notice


@pytest.mark.parametrize(("kind", "status"), [("aws", 401), ("aws", 403), ("aws", 500),
                                              ("gce", 404), ("gce", 503)])
def test_spot_answers_that_say_nothing_are_errors_not_no_notice(kind: str, status: int) -> None:
    with pytest.raises(MetadataUnavailable, match=str(status)):
        parse_notice(kind, status, "TRUE", NOW)
