"""Platform entrypoints: Modal (ASGI factory + parameters), RunPod handler, Replicate predictor."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ferry_server.app import build_dataplane, create_app
from ferry_server.config import Settings
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


@pytest.mark.skipif(importlib.util.find_spec("modal") is None, reason="modal not installed")
def test_modal_credentials_travel_as_a_secret_not_in_the_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import modal

    def baked(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("server variables were baked into the image definition")

    monkeypatch.setattr(modal.Image, "env", baked)
    env = {"FERRY_MODEL": "hf://org/m@v1", "HF_TOKEN": "hf_s3cret", "FERRY_AUTH_TOKEN": "tok",
           "FERRY_MODAL_GPU": "L4", "PATH": "/usr/bin"}
    assert modal_app.server_env(env) == {
        "FERRY_MODEL": "hf://org/m@v1", "HF_TOKEN": "hf_s3cret", "FERRY_AUTH_TOKEN": "tok"}
    app = modal_app.build_modal_app(modal_app.ModalParams(gpu="L4"), env=env)
    with warnings.catch_warnings():  # the only public way to the app's functions is deprecated
        warnings.simplefilter("ignore", modal.exception.DeprecationError)
        (fn,) = app.registered_functions.values()
    (secret,) = fn.info().secrets
    assert secret == "Secret.from_dict([FERRY_MODEL, HF_TOKEN, FERRY_AUTH_TOKEN])"


async def _runpod_items(model: Path, jobs: list[dict[str, Any]]) -> list[list[Any]]:
    """Run jobs through `runpod_handler.process` on one loaded data plane and app."""
    settings = Settings.from_env({"FERRY_MODEL": str(model), "FERRY_DEVICE": "cpu",
                                  "FERRY_MAX_TOKENS_LIMIT": "100", "FERRY_AUTH_TOKEN": "s3cret"})
    dp = build_dataplane(settings)
    await dp.start()
    try:
        await dp.wait_loaded()
        app = create_app(settings, dp)
        out = []
        for i, job_input in enumerate(jobs):
            job = {"id": str(i), "input": job_input}
            out.append([item async for item in runpod_handler.process(job, dp, app, settings)])
        return out
    finally:
        await dp.stop()


def test_runpod_native_jobs_map_to_the_engine(tiny_model: Path) -> None:
    greedy = {"temperature": 0, "ignore_eos": True}
    text, chat, streamed, *bad = asyncio.run(_runpod_items(tiny_model, [
        {"prompt": "hello", "max_tokens": 5, **greedy},
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **greedy},
        {"prompt": "hello", "max_tokens": 5, "stream": True, **greedy},
        {"max_tokens": 5},
        {"prompt": "x", "max_tokens": 10**9},
        {"prompt": "x", "max_tokens": "5"},
        {"prompt": "x", "stream": "yes"},
        {"prompt": "x", "logprobs": 2},
    ]))
    assert len(text) == 1
    assert text[0]["usage"]["completion_tokens"] == 5
    assert text[0]["finish_reason"] == "length"
    assert chat[0]["usage"]["completion_tokens"] == 3
    assert len(streamed) >= 2
    assert "".join(c["text"] for c in streamed) == text[0]["text"]
    assert streamed[-1]["finish_reason"] == "length"
    assert streamed[-1]["usage"]["completion_tokens"] == 5
    assert all("usage" not in c for c in streamed[:-1])
    errors = [items[0]["error"] for items in bad]
    assert "prompt" in errors[0]
    assert "limit" in errors[1]
    assert "max_tokens" in errors[2]
    assert "stream" in errors[3]
    assert "logprobs" in errors[4], "an unhonoured field is named, never ignored"


def test_runpod_native_chat_has_no_small_default(tiny_model: Path) -> None:
    (chat,) = asyncio.run(_runpod_items(tiny_model, [
        {"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "ignore_eos": True},
    ]))
    assert chat[0]["usage"]["completion_tokens"] > 16


def test_runpod_job_input_must_be_an_object(tiny_model: Path) -> None:
    async def run() -> list[Any]:
        settings = Settings.from_env({"FERRY_MODEL": str(tiny_model), "FERRY_DEVICE": "cpu"})
        dp = build_dataplane(settings)
        app = create_app(settings, dp)
        job = {"id": "1", "input": "just a string"}
        return [item async for item in runpod_handler.process(job, dp, app, settings)]

    assert asyncio.run(run()) == [{"error": "job input must be an object"}]


def test_runpod_openai_route_answers_what_the_http_api_answers(tiny_model: Path) -> None:
    """`openai_route` jobs go through the server's own app: same bodies, same errors."""
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}
    over = {"prompt": "hi", "max_tokens": 1000}
    results = asyncio.run(_runpod_items(tiny_model, [
        {"openai_route": "/v1/chat/completions", "openai_input": chat},
        {"openai_route": "/v1/chat/completions", "openai_input": {**chat, "stream": True}},
        {"openai_route": "/v1/completions", "openai_input": {"prompt": "hi", "max_tokens": 2}},
        {"openai_route": "/v1/models", "openai_input": {}},
        {"openai_route": "/v1/completions", "openai_input": over},
        {"openai_route": "/v1/chat/completions", "openai_input": {"messages": "nope"}},
        {"openai_route": "/v1/embeddings", "openai_input": {}},
        {"openai_route": "/v1/completions", "openai_input": ["not", "an", "object"]},
    ]))
    body, streamed, completion, models, too_long, invalid, unknown, not_object = results

    settings = Settings.from_env({"FERRY_MODEL": str(tiny_model), "FERRY_DEVICE": "cpu",
                                  "FERRY_MAX_TOKENS_LIMIT": "100"})
    with TestClient(create_app(settings)) as http:
        for _ in range(600):
            if http.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        direct = http.post("/v1/chat/completions", json=chat).json()
        direct_error = http.post("/v1/completions", json=over)
        direct_invalid = http.post("/v1/chat/completions", json={"messages": "nope"})

    assert body[0]["object"] == "chat.completion"
    assert body[0]["choices"][0]["message"] == direct["choices"][0]["message"]
    assert body[0]["usage"] == direct["usage"]
    assert set(body[0]) == set(direct)
    # Streaming: the SSE text exactly as the HTTP API streams it, ending with [DONE].
    text = "".join(streamed)
    events = [e.removeprefix("data: ") for e in text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert content == direct["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert not any("usage" in c for c in chunks)  # only with stream_options.include_usage
    assert completion[0]["usage"]["completion_tokens"] == 2
    assert models[0]["data"][0]["object"] == "model"
    # Errors: the HTTP status and the OpenAI error body, as JSON text in "error".
    for items, response in ((too_long, direct_error), (invalid, direct_invalid)):
        assert len(items) == 1
        error = json.loads(items[0]["error"])
        assert error == {"status": response.status_code, "body": response.json()}
    assert json.loads(too_long[0]["error"])["status"] == 400
    assert json.loads(unknown[0]["error"])["status"] == 404
    assert json.loads(not_object[0]["error"])["status"] == 400


class _FakeJobServer:
    """The two webhooks the runpod SDK polls, serving queued jobs and recording results."""

    def __init__(self, jobs: list[dict[str, Any]], key: str) -> None:
        self.jobs = list(jobs)
        self.key = key
        self.polls: list[float] = []
        self.bad_auth = 0
        self.results: dict[str, Any] = {}
        self.partials: dict[str, list[Any]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") != server.key:
                    server.bad_auth += 1
                    self.send_response(401)
                    self.end_headers()
                    return False
                return True

            def do_GET(self) -> None:
                if not self._authorized():
                    return
                if "/job-take" not in self.path:
                    self.send_response(204)
                    self.end_headers()
                    return
                server.polls.append(time.monotonic())
                assert "job_in_progress=" in self.path
                if not server.jobs:
                    time.sleep(0.2)
                    self.send_response(204)
                    self.end_headers()
                    return
                job = server.jobs.pop(0)
                body = json.dumps([job] if "/job-take-batch/" in self.path else job).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                if not self._authorized():
                    return
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                payload = json.loads(raw)
                job_id = self.path.split("?")[0].rsplit("/", 1)[1]
                if "/job-stream/" in self.path:
                    server.partials.setdefault(job_id, []).append(payload)
                else:
                    server.results[job_id] = payload
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_runpod_worker_loads_the_model_before_it_polls_and_runs_the_real_sdk_loop(
    tiny_model: Path, tmp_path: Path
) -> None:
    """`python -m ...runpod_handler` under the real runpod SDK loop (D17: load, then poll)."""
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0}
    jobs = [
        {"id": "native", "input": {"prompt": "hello", "max_tokens": 4, "ignore_eos": True}},
        {"id": "openai", "input": {"openai_route": "/v1/chat/completions",
                                   "openai_input": {**chat, "stream": True}}},
    ]
    key = "worker-key-123"
    fake = _FakeJobServer(jobs, key)
    log_path = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "RUNPOD_", "HF_"))}
    env.update({
        "FERRY_MODEL": str(tiny_model), "FERRY_DEVICE": "cpu", "FERRY_MAX_BATCH_SIZE": "2",
        "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path), "RUNPOD_POD_ID": "w1",
        "RUNPOD_WEBHOOK_GET_JOB": f"{fake.url}/v2/ep/job-take/w1?gpu=x",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{fake.url}/v2/ep/job-done/w1/$ID?gpu=x",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{fake.url}/v2/ep/job-stream/w1/$ID?gpu=x",
        "RUNPOD_AI_API_KEY": key, "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        "RUNPOD_SKIP_GPU_CHECK": "true", "RUNPOD_LOG_LEVEL": "INFO",
    })
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ferry_server.providers.runpod_handler"],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while len(fake.results) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.1)
        output = log_path.read_text()
        assert len(fake.results) == 2, output
        assert fake.bad_auth == 0
        loaded_line = next(i for i, line in enumerate(output.splitlines())
                           if "model loaded; starting the RunPod job loop" in line)
        assert "Starting Serverless Worker" in "\n".join(output.splitlines()[loaded_line:])
        assert fake.polls[0] > started
        native = fake.results["native"]
        assert native["output"][0]["usage"]["completion_tokens"] == 4
        streamed = fake.results["openai"]["output"]
        assert "".join(streamed).rstrip().endswith("data: [DONE]")
        assert [p["output"] for p in fake.partials["openai"]] == streamed
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        fake.close()
    assert proc.returncode == 0, log_path.read_text()


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
