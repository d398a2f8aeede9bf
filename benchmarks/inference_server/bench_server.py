"""Benchmark Ferry's inference server: cold start by phase vs floor, tokens/s by concurrency.

One run measures, on the same machine:
  * floor: Python start, Python + `import torch`, and reading the weight bytes from disk
    (page cache evicted first with posix_fadvise where the OS allows it);
  * cold start: `python -m ferry_server` process start -> /readyz 200, split into the server's
    own phases (import, weight_load, warmup) from /metrics;
  * throughput: generated tokens/s at 1, 8 and 32 concurrent clients, against a baseline of
    plain `model.generate` (batch 1, no server) measured in the same run.

Usage: python bench_server.py [--preset small|tiny|large] [--model DIR] [--engine transformers|vllm]
       python bench_server.py --cold-start-runs 5 --preset tiny   (start -> ready only, N runs)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

PROMPT = "Once upon a time there was a small language model that liked to count"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _evict(path: Path) -> None:
    for f in path.glob("*.safetensors"):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _time_cmd(code: str, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - t0)
    return best


def measure_floor(model_dir: Path) -> dict[str, float]:
    py = _time_cmd("pass")
    torch_import = _time_cmd("import torch")
    _evict(model_dir)
    t0 = time.perf_counter()
    n = 0
    for f in sorted(model_dir.glob("*.safetensors")):
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                n += len(chunk)
    read_s = time.perf_counter() - t0
    return {
        "python_start": py,
        "python_torch_import": torch_import,
        "read_weights": read_s,
        "weight_bytes": float(n),
    }


def _metric(text: str, name: str, labels: str) -> float:
    key = f"{name}{{{labels}}} "
    for line in text.splitlines():
        if line.startswith(key):
            return float(line.split()[-1])
    return float("nan")


class Server:
    def __init__(self, model: Path, engine: str, max_batch: int) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
        env.update(
            {
                "FERRY_MODEL": str(model),
                "FERRY_ENGINE": engine,
                "FERRY_HOST": "127.0.0.1",
                "FERRY_PORT": str(self.port),
                "FERRY_MAX_BATCH_SIZE": str(max_batch),
                "FERRY_LOG_LEVEL": "warning",
                "HF_HUB_OFFLINE": "1",
            }
        )
        _evict(model)
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "ferry_server"], env=env)

    def wait_ready(self, timeout: float = 600) -> float:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - self.t0
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise SystemExit("server did not become ready")

    def phases(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics").text
        return {
            p: _metric(text, "ferry_model_load_seconds", f'phase="{p}"')
            for p in ("import", "weight_load", "warmup")
        }

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


async def _client(c: httpx.AsyncClient, n_requests: int, max_tokens: int) -> int:
    tokens = 0
    for _ in range(n_requests):
        r = await c.post(
            "/v1/completions",
            json={
                "prompt": PROMPT,
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "ignore_eos": True,
            },
        )
        r.raise_for_status()
        tokens += int(r.json()["usage"]["completion_tokens"])
    return tokens


async def throughput(url: str, concurrency: int, per_client: int, max_tokens: int) -> float:
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as c:
        await _client(c, 1, 4)  # connection + JIT warm-up
        t0 = time.perf_counter()
        counts = await asyncio.gather(
            *(_client(c, per_client, max_tokens) for _ in range(concurrency))
        )
        return sum(counts) / (time.perf_counter() - t0)


def baseline_generate(model_dir: Path, max_tokens: int, runs: int) -> float:
    """Plain transformers `generate`, batch 1, greedy, no server: tokens/s."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tok(PROMPT, return_tensors="pt", return_token_type_ids=False)
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_tokens,
        "min_new_tokens": max_tokens,
        "do_sample": False,
        "pad_token_id": tok.pad_token_id,
    }
    with torch.inference_mode():
        model.generate(**ids, **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})
        t0 = time.perf_counter()
        for _ in range(runs):
            model.generate(**ids, **kwargs)
    return runs * max_tokens / (time.perf_counter() - t0)


def cold_starts(args: argparse.Namespace) -> None:
    """Start the server N times in a row (same model, same machine); print each start -> ready."""
    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        model_dir: Path = args.model or Path(tmp) / "model"
        if args.model is None:
            from ferry_server.devtools import build_model

            build_model(model_dir, preset=args.preset)
        runs: list[float] = []
        for _ in range(args.cold_start_runs):
            srv = Server(model_dir, args.engine, args.max_batch)
            try:
                runs.append(srv.wait_ready())
                phases = srv.phases()
            finally:
                srv.stop()
            print(
                f"start -> ready {runs[-1]:6.2f} s  ("
                + ", ".join(f"{k} {v:.2f}" for k, v in phases.items())
                + ")",
                flush=True,
            )
    ordered = sorted(runs)
    print(
        f"runs={len(runs)} min={ordered[0]:.2f} s median={ordered[len(ordered) // 2]:.2f} s "
        f"max={ordered[-1]:.2f} s  PYTHONDONTWRITEBYTECODE="
        f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="small", help="model size to build: tiny, small, large")
    ap.add_argument("--model", type=Path, help="use this model directory instead of building one")
    ap.add_argument("--engine", default="transformers", choices=["transformers", "vllm"])
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--per-client", type=int, default=2, help="requests per client")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument(
        "--cold-start-runs",
        type=int,
        default=0,
        help="only measure process start -> /readyz 200, this many times, and print each run",
    )
    args = ap.parse_args()
    if args.cold_start_runs:
        cold_starts(args)
        return

    with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
        model_dir: Path = args.model or Path(tmp) / "model"
        if args.model is None:
            from ferry_server.devtools import build_model

            build_model(model_dir, preset=args.preset)
        floor = measure_floor(model_dir)
        srv = Server(model_dir, args.engine, args.max_batch)
        try:
            ready_s = srv.wait_ready()
            phases = srv.phases()
            tput = {
                c: asyncio.run(throughput(srv.url, c, args.per_client, args.max_tokens))
                for c in (1, 8, 32)
            }
        finally:
            srv.stop()
        base = baseline_generate(model_dir, args.max_tokens, runs=3)

    other = ready_s - sum(phases.values())
    print(
        f"\nFerry inference server benchmark  (engine={args.engine}, preset="
        f"{'custom' if args.model else args.preset}, "
        f"weights={floor['weight_bytes'] / 2**20:.1f} MiB, cpus={os.cpu_count()})"
    )
    print("\nCold start (process start -> /readyz 200)")
    print(f"  {'phase':28} {'server s':>9} {'floor s':>9} {'ratio':>7}")
    rows = [
        (
            "import (torch+transformers)",
            phases["import"],
            floor["python_torch_import"] - floor["python_start"],
        ),
        ("weight load", phases["weight_load"], floor["read_weights"]),
        ("warm-up", phases["warmup"], float("nan")),
        ("other (interpreter, server)", other, floor["python_start"]),
        ("total", ready_s, floor["python_torch_import"] + floor["read_weights"]),
    ]
    for name, got, fl in rows:
        ratio = f"{got / fl:6.1f}x" if fl == fl and fl > 0 else "     -"
        fls = f"{fl:9.3f}" if fl == fl else "        -"
        print(f"  {name:28} {got:9.3f} {fls} {ratio}")
    print(
        f"\nThroughput ({args.max_tokens} tokens/request, greedy, {args.per_client} "
        "requests/client)"
    )
    print(f"  {'clients':>7} {'tokens/s':>10} {'vs generate()':>14} {'vs 1 client':>12}")
    print(
        f"  {'base':>7} {base:10.1f} {'1.00x':>14} {'-':>12}   (model.generate, batch 1, no server)"
    )
    for c, v in tput.items():
        print(f"  {c:7d} {v:10.1f} {v / base:13.2f}x {v / tput[1]:11.2f}x")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "floor": floor,
                    "ready_s": ready_s,
                    "phases": phases,
                    "throughput": tput,
                    "baseline": base,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
