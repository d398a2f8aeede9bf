"""The Modal fake's state machine on a stepped clock (ferry.sandbox.modal.platform).

No sockets and no sleeping: the clock is frozen and stepped, and real processes are replaced
by a recording backend, so scaling, the reset-on-redeploy rule, billing and the D7 process
rules are checked exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from grpclib.const import Status
from modal_proto import api_pb2

from ferry.sandbox.clock import SandboxClock
from ferry.sandbox.modal.platform import (
    HEARTBEAT_TIMEOUT_S,
    Container,
    Function,
    ModalPlatform,
    Options,
    Refused,
    function_data,
)


class Backend:
    """Records launches and terminations; at most `limit` processes, LRU by touch order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.live: list[str] = []  # least recently used first
        self.launched: list[tuple[str, dict[str, str]]] = []
        self.terminated: list[str] = []

    def has_room(self) -> bool:
        return len(self.live) < self.limit

    def launch(self, container: Container, function: Function, env: dict[str, str]) -> None:
        assert self.has_room()
        self.live.append(container.id)
        self.launched.append((function.tag, env))

    def terminate(self, container_id: str) -> None:
        if container_id in self.live:
            self.live.remove(container_id)
            self.terminated.append(container_id)

    def touch(self, container_id: str) -> None:
        self.live.remove(container_id)
        self.live.append(container_id)

    def least_recently_used(self, evictable: Callable[[str], bool]) -> str | None:
        return next((c for c in self.live if evictable(c)), None)


def make(inference: bool = False, limit: int = 1) -> tuple[ModalPlatform, SandboxClock, Backend]:
    clock = SandboxClock(speed=0, start=1_000_000.0)
    backend = Backend(limit)
    platform = ModalPlatform(
        clock, Options(boot_seconds=2.0, inference=inference), backend if inference else None
    )
    return platform, clock, backend


def deploy(
    platform: ModalPlatform,
    name: str = "ferry-a-llm",
    *,
    gpus: tuple[str, ...] = ("L4",),
    count: int = 1,
    settings: api_pb2.AutoscalerSettings | None = None,
    target: int = 0,
    image: str = "ghcr.io/ferry-dev/inference-server:0.1.0",
    env: dict[str, str] | None = None,
) -> Function:
    """What a `modal` client's deploy sends, straight into the state machine."""
    existing = platform.deployed_app(name, "")
    app = existing or platform.create_app(name, "")
    secret = platform.secret(
        api_pb2.SecretGetOrCreateRequest(
            object_creation_type=api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP,
            env_dict=env or {"FERRY_MODEL": "hf://acme/tiny"},
            app_id=app.id,
        )
    )
    image_id = platform.image(api_pb2.Image(dockerfile_commands=[f"FROM {image}"]))
    webhook = api_pb2.WebhookConfig(type=api_pb2.WEBHOOK_TYPE_ASGI_APP)
    fn = platform.precreate(app.id, "serve", "", 1, webhook)
    data = api_pb2.FunctionData(
        function_name="serve",
        autoscaler_settings=settings
        or api_pb2.AutoscalerSettings(min_containers=1, max_containers=3),
    )
    for rank, gpu in enumerate(gpus):
        definition = api_pb2.Function(
            function_name="serve",
            image_id=image_id,
            secret_ids=[secret],
            target_concurrent_inputs=target,
            max_concurrent_inputs=2 * target,
        )
        definition.resources.gpu_config.gpu_type = gpu
        definition.resources.gpu_config.count = count
        data.ranked_functions.add(rank=rank, function=definition)
    platform.create_function(app.id, fn.id, data)
    platform.publish(app.id, name, "", [fn.id])
    return fn


def test_min_containers_boot_on_the_clock_and_idle_ones_go_after_the_window() -> None:
    platform, _clock, _ = make()
    fn = deploy(
        platform,
        settings=api_pb2.AutoscalerSettings(
            min_containers=2, max_containers=5, scaledown_window=30
        ),
    )
    assert len(fn.containers) == 2
    assert platform.stats(fn.id).headroom == 0, "booting: no room yet"
    platform.advance(2)
    assert all(c.ready(platform.clock.now()) for c in fn.containers.values())
    platform.update_settings(fn.id, api_pb2.AutoscalerSettings(min_containers=0))
    platform.advance(29)
    assert len(fn.containers) == 2, "idle for less than the scale-down window"
    platform.advance(1)
    assert fn.containers == {}
    assert platform.stats(fn.id).total == 0


def test_demand_buffer_and_max_decide_the_container_count() -> None:
    platform, _, _ = make()
    fn = deploy(
        platform,
        settings=api_pb2.AutoscalerSettings(
            min_containers=0, max_containers=4, buffer_containers=1
        ),
        target=2,
    )
    assert fn.containers == {}, "no demand, min 0: nothing runs (the buffer waits for demand)"
    for _ in range(3):
        platform.arrive(fn)
    assert platform.wanted(fn) == 3, "ceil(3 / 2) + buffer 1"
    for _ in range(10):
        platform.arrive(fn)
    assert platform.wanted(fn) == 4, "capped at max_containers"
    assert platform.stats(fn.id).backlog == 13


def test_a_redeploy_resets_live_overrides_and_replaces_containers() -> None:
    platform, _, _ = make()
    fn = deploy(platform)
    platform.advance(2)
    platform.update_settings(fn.id, api_pb2.AutoscalerSettings(max_containers=9, min_containers=2))
    assert platform.settings(fn.id).max_containers == 9
    platform.arrive(fn)
    busy = platform.assign(fn)
    assert busy is not None
    old = set(fn.containers)

    same = deploy(platform, image="ghcr.io/ferry-dev/inference-server:0.2.0")
    assert same.id == fn.id, "a redeploy keeps the function"
    assert fn.version == 2
    assert fn.override_resets == 1
    assert platform.settings(fn.id).max_containers == 3, "back to the definition's settings"
    assert platform.settings(fn.id).min_containers == 1
    assert busy.id in fn.containers, "a busy container of the old version finishes first"
    assert not (old - {busy.id}) & set(fn.containers), "idle old containers were replaced"
    platform.leave(fn, busy)
    assert busy.id not in fn.containers
    assert all(c.version == 2 for c in fn.containers.values())


def test_an_app_whose_deploying_client_went_away_is_stopped() -> None:
    platform, _, _ = make()
    app = platform.create_app("ferry-a-llm", "")
    platform.advance(HEARTBEAT_TIMEOUT_S - 1)
    platform.heartbeat(app.id)
    platform.advance(HEARTBEAT_TIMEOUT_S - 1)
    assert app.state == "initializing"
    platform.advance(2)
    assert app.state == "stopped"


def test_a_stopped_app_has_no_function_and_no_containers() -> None:
    platform, _, _ = make()
    fn = deploy(platform)
    platform.stop_app(fn.app_id)
    assert fn.containers == {}
    with pytest.raises(Refused) as err:
        platform.deployed_function("ferry-a-llm", "serve", "")
    assert err.value.status is Status.NOT_FOUND
    with pytest.raises(Refused):
        platform.stats(fn.id)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"gpus": ("RTX4090",)}, "not available"),
        (
            {"settings": api_pb2.AutoscalerSettings(min_containers=4, max_containers=2)},
            "cannot be greater",
        ),
        ({"settings": api_pb2.AutoscalerSettings(scaledown_window=1)}, "between 2 and 3600"),
    ],
    ids=["gpu-not-offered", "min-above-max", "window"],
)
def test_definitions_modal_refuses(kwargs: dict[str, object], needle: str) -> None:
    platform, _, _ = make()
    with pytest.raises(Refused) as err:
        deploy(platform, **kwargs)  # type: ignore[arg-type]
    assert err.value.status is Status.INVALID_ARGUMENT
    assert needle in err.value.message


def test_images_are_content_addressed_and_recorded() -> None:
    platform, _, _ = make()
    a = platform.image(api_pb2.Image(dockerfile_commands=["FROM x:1"]))
    assert platform.image(api_pb2.Image(dockerfile_commands=["FROM x:1"])) == a
    assert platform.image(api_pb2.Image(dockerfile_commands=["FROM x:2"])) != a
    assert [i["definition"]["dockerfileCommands"] for i in platform.describe_images()] == [
        ["FROM x:1"],
        ["FROM x:2"],
    ]


def test_a_single_gpu_definition_is_wrapped_as_rank_zero() -> None:
    definition = api_pb2.Function(function_name="serve", timeout_secs=600, image_id="im-1")
    definition.autoscaler_settings.min_containers = 2
    data = function_data(definition)
    assert data.function_name == "serve"
    assert data.timeout_secs == 600
    assert data.autoscaler_settings.min_containers == 2
    assert [r.function for r in data.ranked_functions] == [definition]


def test_billing_is_container_seconds_times_gpus_at_list_price() -> None:
    platform, _clock, _ = make()
    fn = deploy(
        platform,
        gpus=("H100",),
        count=2,
        settings=api_pb2.AutoscalerSettings(min_containers=1, max_containers=1),
    )
    platform.advance(100)
    platform.stop_app(fn.app_id)
    platform.advance(50)
    row = platform.billed_seconds()["apps"]["ferry-a-llm"]["serve"]
    assert row["containerSeconds"] == pytest.approx(100)
    assert row["gpuSeconds"] == pytest.approx(200)
    assert row["usd"] == pytest.approx(200 * 0.001097)


def test_requests_get_a_real_process_lazily_capped_least_recently_used_first() -> None:
    platform, _clock, backend = make(inference=True, limit=1)
    first = deploy(platform, "ferry-a-one", settings=api_pb2.AutoscalerSettings(max_containers=2))
    second = deploy(platform, "ferry-a-two", settings=api_pb2.AutoscalerSettings(max_containers=2))
    assert backend.launched == [], "no request yet: no process (D7)"

    platform.arrive(first)
    assert platform.assign(first) is None, "scale from zero: the container boots first"
    (container,) = first.containers.values()
    assert container.backed
    assert backend.launched[0][0] == "serve"
    assert backend.launched[0][1]["FERRY_MODEL"] == "hf://acme/tiny", "the function's secret env"
    platform.advance(2)
    assert platform.assign(first) is None, "booted, but its server is not ready yet"
    platform.process_ready(container.id)
    got = platform.assign(first)
    assert got is container

    platform.arrive(second)
    platform.advance(2)
    assert platform.assign(second) is None, "the only slot is busy: it is not taken away"
    assert backend.terminated == []
    platform.leave(first, got)
    platform.assign(second)
    assert backend.terminated == [container.id], "the idle one is demoted to make room"
    assert not container.backed
    assert len(backend.live) == 1
