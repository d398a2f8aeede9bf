"""Platform entrypoints: Modal (ASGI factory + parameters), RunPod handler, Replicate predictor."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ferry_server.providers import modal_app, runpod_handler

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def model_env(monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> Path:
    monkeypatch.setenv("FERRY_MODEL", str(tiny_model))
    monkeypatch.setenv("FERRY_DEVICE", "cpu")
    monkeypatch.setenv("FERRY_MAX_BATCH_SIZE", "4")
    monkeypatch.delenv("FERRY_AUTH_TOKEN", raising=False)
    return tiny_model


def test_modal_asgi_factory_serves_the_same_api(model_env: Path) -> None:
    app = modal_app.asgi_app()
    with TestClient(app) as client:
        for _ in range(300):
            if client.get("/readyz").status_code == 200:
                break
            asyncio.run(asyncio.sleep(0.05))
        out = client.post("/v1/completions",
                          json={"prompt": "hi", "max_tokens": 3, "ignore_eos": True})
        assert out.status_code == 200, out.text
        assert out.json()["usage"]["completion_tokens"] == 3
        gen = client.post("/generate", json={"prompt": "hi", "max_new_tokens": 2})
        assert gen.status_code == 200


def test_modal_parameters_from_operator_env() -> None:
    params = modal_app.ModalParams.from_env({
        "FERRY_MODAL_GPU": "H100:2", "FERRY_MODAL_MIN_CONTAINERS": "1",
        "FERRY_MODAL_MAX_CONTAINERS": "5", "FERRY_MODAL_SCALEDOWN_WINDOW_S": "120",
        "FERRY_MODAL_APP_NAME": "ferry-llama",
    })
    assert params.app_name == "ferry-llama"
    assert params.function_kwargs() == {
        "gpu": "H100:2", "min_containers": 1, "max_containers": 5, "scaledown_window": 120,
        "timeout": 600,
    }
    assert modal_app.ModalParams.from_env({"FERRY_MODAL_GPU": "none"}).gpu is None
    with pytest.raises(ValueError, match="max_containers"):
        modal_app.ModalParams.from_env({"FERRY_MODAL_MIN_CONTAINERS": "3",
                                        "FERRY_MODAL_MAX_CONTAINERS": "2"})


@pytest.mark.skipif(importlib.util.find_spec("modal") is None, reason="modal not installed")
def test_modal_app_is_built_with_the_parameters() -> None:
    params = modal_app.ModalParams(gpu="L4", min_containers=0, max_containers=3,
                                   scaledown_window_s=60)
    import modal

    app = modal_app.build_modal_app(params, env={"FERRY_MODEL": "hf://org/m@v1"})
    assert isinstance(app, modal.App)
    assert app.name == "ferry-endpoint"
    fn = modal_app.register_modal_function(modal.App("probe"), params)
    assert isinstance(fn, modal.Function)


def test_runpod_handler_maps_jobs_to_the_engine(model_env: Path) -> None:
    import runpod

    assert callable(runpod.serverless.start)

    async def run() -> list[Any]:
        try:
            greedy = {"temperature": 0, "ignore_eos": True}
            text_job = await runpod_handler.handler(
                {"id": "1", "input": {"prompt": "hello", "max_tokens": 5, **greedy}})
            chat_job = await runpod_handler.handler({"id": "2", "input": {
                "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **greedy}})
            streamed = [c async for c in runpod_handler.stream_handler(
                {"id": "3", "input": {"prompt": "hello", "max_tokens": 5, **greedy}})]
            bad = [
                await runpod_handler.handler({"id": "4", "input": {"max_tokens": 5}}),
                await runpod_handler.handler({"id": "5", "input": {"prompt": "x",
                                                                   "max_tokens": 10**9}}),
                await runpod_handler.handler({"id": "6", "input": {"prompt": "x",
                                                                   "max_tokens": "5"}}),
                await runpod_handler.handler({"id": "7", "input": "just a string"}),
            ]
            return [text_job, chat_job, streamed, bad]
        finally:
            await runpod_handler.reset()

    text_job, chat_job, streamed, bad = asyncio.run(run())
    assert text_job["usage"]["completion_tokens"] == 5
    assert text_job["finish_reason"] == "length"
    assert chat_job["usage"]["completion_tokens"] == 3
    assert "".join(c["text"] for c in streamed) == text_job["text"]
    assert streamed[-1]["finish_reason"] == "length"
    assert "prompt" in bad[0]["error"]
    assert "limit" in bad[1]["error"]
    assert "max_tokens" in bad[2]["error"]
    assert "object" in bad[3]["error"]


def _load_predict_module() -> Any:
    path = ROOT / "replicate" / "predict.py"
    spec = importlib.util.spec_from_file_location("ferry_predict", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ferry_predict"] = module
    spec.loader.exec_module(module)
    return module


def test_replicate_predictor_streams_tokens(model_env: Path) -> None:
    import cog

    predict = _load_predict_module()
    assert issubclass(predict.Predictor, cog.BasePredictor)
    predictor = predict.Predictor()
    predictor.setup()
    try:
        pieces = list(predictor.predict(prompt="hello", max_tokens=6, temperature=0.0,
                                        top_p=1.0, seed=-1))
        again = list(predictor.predict(prompt="hello", max_tokens=6, temperature=0.0,
                                       top_p=1.0, seed=-1))
        assert len(pieces) >= 2
        assert "".join(pieces) == "".join(again)
        with pytest.raises(Exception, match="limit"):
            list(predictor.predict(prompt="x", max_tokens=10**9, temperature=0.0, top_p=1.0,
                                   seed=-1))
    finally:
        predictor.shutdown()
