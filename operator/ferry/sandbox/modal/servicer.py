"""The Modal fake's gRPC API: a `modal.client.ModalClient` servicer written for Ferry.

`ModalServicer` subclasses the generated `modal_proto.api_grpc.ModalClientBase` (grpclib).
Every one of its 285 RPCs that the fake does not implement answers UNIMPLEMENTED (bodies
generated at import from the base's abstract methods), naming the RPC, so a client that
starts using a new one fails loudly. The implemented ones are the deploy -> scale -> stats ->
stop cycle of providers.md, answered from `platform.ModalPlatform`.

Every call goes through one pipeline, in order: it is counted (`POST /modal.client.ModalClient/
<Rpc>`, the gRPC path, so the shared `/_sandbox/calls` and `/_sandbox/faults` routes name RPCs
the same way they name HTTP routes), an armed fault applies, the token pair in the metadata
(`x-modal-token-id` / `x-modal-token-secret`) is checked (UNAUTHENTICATED otherwise), a repeated
`(rpc, x-idempotency-key)` replays the stored reply without doing anything again (Modal's
client retries UNAVAILABLE & co. with the same key), and the handler runs. Faults as gRPC:

- `rate_limit`: RESOURCE_EXHAUSTED carrying `RPCRetryPolicy{retry_after_secs}` in the status
  details, the way Modal throttles (its client then waits that long, unless told not to).
- `status`: the gRPC code standing for the HTTP status (gRPC's own HTTP mapping: 503
  UNAVAILABLE, 500 INTERNAL, 504 DEADLINE_EXCEEDED, 429 RESOURCE_EXHAUSTED (no retry policy),
  401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 NOT_FOUND, 400 INVALID_ARGUMENT, ...).
- `delay`: the call is answered normally after `delaySeconds` of wall time.
- `lose_response`: the call takes effect and its reply is stored, then nothing is sent until
  the client gives up (cancels) or `holdSeconds` pass, when it is answered DEADLINE_EXCEEDED;
  a retry with the same idempotency key then gets the stored reply.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from google.protobuf import empty_pb2
from google.protobuf.message import Message
from grpclib.const import Cardinality, Handler, Status
from grpclib.encoding.base import StatusDetailsCodecBase
from grpclib.exceptions import GRPCError
from grpclib.server import Stream
from modal_proto import api_grpc, api_pb2

from ferry.sandbox.calls import CallCounter
from ferry.sandbox.faults import Fault, FaultTable
from ferry.sandbox.modal import platform
from ferry.sandbox.modal.platform import ModalPlatform, Refused

log = logging.getLogger("ferry.sandbox.modal")

SERVICE = "/modal.client.ModalClient/"
#: How many replies are kept for idempotent replay (least recently stored go first).
REPLAY_LIMIT = 20_000

GRPC_FOR_HTTP = {
    400: Status.INVALID_ARGUMENT,
    401: Status.UNAUTHENTICATED,
    403: Status.PERMISSION_DENIED,
    404: Status.NOT_FOUND,
    409: Status.ABORTED,
    429: Status.RESOURCE_EXHAUSTED,
    499: Status.CANCELLED,
    500: Status.INTERNAL,
    501: Status.UNIMPLEMENTED,
    503: Status.UNAVAILABLE,
    504: Status.DEADLINE_EXCEEDED,
}


class DetailsCodec(StatusDetailsCodecBase):
    """Status details the way Modal's client decodes them: an `RPCStatus` whose details are
    `Any`s, Modal's own messages under the `type.modal.com/` prefix."""

    def encode(
        self, status: Status, message: str | None, details: Sequence[Message] | None
    ) -> bytes:
        body = api_pb2.RPCStatus(code=status.value, message=message or "")
        for detail in details or ():
            body.details.add().Pack(detail, type_url_prefix="type.modal.com/")
        return bytes(body.SerializeToString())

    def decode(self, status: Status, message: str | None, data: bytes) -> Any:
        body = api_pb2.RPCStatus.FromString(data)
        return list(body.details)


Unary = Callable[[Any, "Call"], Awaitable[Message]]


class Call:
    """What a handler sees besides the request: the RPC name and the caller's metadata."""

    def __init__(self, rpc: str, metadata: Any) -> None:
        self.rpc = rpc
        self.metadata = metadata


def _meta(metadata: Any, key: str) -> str:
    """One metadata value of a call as text ("" when absent)."""
    value = metadata.get(key) if metadata is not None else None
    return str(value or "")


def _unimplemented(name: str) -> Callable[[Any, Stream[Any, Any]], Awaitable[None]]:
    async def handler(self: Any, stream: Stream[Any, Any]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, f"the Ferry sandbox does not implement {name}")

    handler.__name__ = name
    return handler


class ModalServicer(api_grpc.ModalClientBase):
    """The fake's answers to Modal's client; see the module docstring."""

    def __init__(
        self,
        state: ModalPlatform,
        *,
        token_id: str,
        token_secret: str,
        faults: FaultTable,
        calls: CallCounter,
    ) -> None:
        self.state = state
        self.faults = faults
        self.calls = calls
        self._token_id = token_id.encode()
        self._token_secret = token_secret.encode()
        self._replies: OrderedDict[tuple[str, str], Message] = OrderedDict()
        self._handlers: dict[str, Unary] = {
            "AppClientDisconnect": self._app_client_disconnect,
            "AppCreate": self._app_create,
            "AppGetByDeploymentName": self._app_get_by_deployment_name,
            "AppGetLayout": self._app_get_layout,
            "AppGetOrCreate": self._app_get_or_create,
            "AppHeartbeat": self._app_heartbeat,
            "AppPublish": self._app_publish,
            "AppStop": self._app_stop,
            "ClientHello": self._client_hello,
            "EnvironmentGetOrCreate": self._environment_get_or_create,
            "FunctionCreate": self._function_create,
            "FunctionGet": self._function_get,
            "FunctionGetCurrentStats": self._function_get_current_stats,
            "FunctionGetSchedulingParams": self._function_get_scheduling_params,
            "FunctionPrecreate": self._function_precreate,
            "FunctionUpdateSchedulingParams": self._function_update_scheduling_params,
            "ImageGetOrCreate": self._image_get_or_create,
            "MountBatchedCheckExistence": self._mount_batched_check_existence,
            "MountGetOrCreate": self._mount_get_or_create,
            "MountPutFile": self._mount_put_file,
            "SecretGetOrCreate": self._secret_get_or_create,
        }

    @property
    def implemented(self) -> list[str]:
        """The RPCs the fake answers."""
        return sorted(self._handlers)

    def forget_replies(self) -> None:
        """Drop every stored reply (sandbox reset)."""
        self._replies.clear()

    def __mapping__(self) -> dict[str, Handler]:
        mapping = super().__mapping__()
        for path, handler in mapping.items():
            impl = self._handlers.get(path.removeprefix(SERVICE))
            if impl is not None and handler.cardinality is not Cardinality.UNARY_UNARY:
                raise AssertionError(f"{path} is not unary; the fake only implements unary RPCs")
            mapping[path] = Handler(
                self._pipeline(path, impl, handler.func),
                handler.cardinality,
                handler.request_type,
                handler.reply_type,
            )
        return mapping

    # ---- the pipeline ----------------------------------------------------------------------

    def _pipeline(
        self,
        path: str,
        impl: Unary | None,
        fallback: Callable[[Stream[Any, Any]], Awaitable[None]],
    ) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
        rpc = path.removeprefix(SERVICE)

        async def serve(stream: Stream[Any, Any]) -> None:
            self.calls.count("POST", path)
            fault = self.faults.take("POST", path)
            if fault is not None:
                await self._fault_before(fault, rpc)
            self._authenticate(stream.metadata)
            if impl is None:
                await fallback(stream)
                return
            request = await stream.recv_message()
            key = _meta(stream.metadata, "x-idempotency-key")
            stored = self._replies.get((rpc, key)) if key else None
            if stored is not None:
                log.info("%s: replaying the stored reply for a repeated idempotency key", rpc)
                await stream.send_message(stored)
                return
            try:
                reply = await impl(request, Call(rpc, stream.metadata))
            except Refused as exc:
                raise GRPCError(exc.status, exc.message) from None
            if key:
                self._replies[(rpc, key)] = reply
                while len(self._replies) > REPLAY_LIMIT:
                    self._replies.popitem(last=False)
            if fault is not None and fault.spec.kind == "lose_response":
                log.info("%s: losing the reply on purpose (fault %s)", rpc, fault.id)
                await asyncio.sleep(fault.spec.hold_seconds)
                raise GRPCError(Status.DEADLINE_EXCEEDED, "the sandbox lost this reply on purpose")
            await stream.send_message(reply)

        return serve

    async def _fault_before(self, fault: Fault, rpc: str) -> None:
        spec = fault.spec
        log.info("fault %s: %s on %s", fault.id, spec.kind, rpc)
        if spec.kind == "rate_limit":
            raise GRPCError(
                Status.RESOURCE_EXHAUSTED,
                f"injected fault {fault.id}: rate limit exceeded, retry in"
                f" {spec.retry_after_seconds}s",
                [api_pb2.RPCRetryPolicy(retry_after_secs=spec.retry_after_seconds)],
            )
        if spec.kind == "status":
            code = GRPC_FOR_HTTP.get(spec.status, Status.UNKNOWN)
            raise GRPCError(code, f"injected fault {fault.id}: the sandbox answers {code.name}")
        if spec.kind == "delay":
            await asyncio.sleep(spec.delay_seconds)

    def _authenticate(self, metadata: Any) -> None:
        token_id = _meta(metadata, "x-modal-token-id").encode()
        token_secret = _meta(metadata, "x-modal-token-secret").encode()
        if not token_id or not token_secret:
            raise GRPCError(Status.UNAUTHENTICATED, "Token missing: no token id and secret sent")
        if not (
            hmac.compare_digest(token_id, self._token_id)
            and hmac.compare_digest(token_secret, self._token_secret)
        ):
            raise GRPCError(Status.UNAUTHENTICATED, "Token validation failed: invalid token")

    # ---- apps ------------------------------------------------------------------------------

    async def _client_hello(self, _request: Any, _call: Call) -> Message:
        return api_pb2.ClientHelloResponse(image_builder_version=platform.IMAGE_BUILDER_VERSION)

    async def _environment_get_or_create(self, _request: Any, _call: Call) -> Message:
        return api_pb2.EnvironmentGetOrCreateResponse(
            environment_id=self.state.environment_id,
            metadata=api_pb2.EnvironmentMetadata(
                name=platform.ENVIRONMENT,
                settings=api_pb2.EnvironmentSettings(
                    image_builder_version=platform.IMAGE_BUILDER_VERSION,
                    webhook_suffix="modal.run",
                ),
            ),
        )

    async def _app_get_by_deployment_name(
        self, request: api_pb2.AppGetByDeploymentNameRequest, _call: Call
    ) -> Message:
        app = self.state.deployed_app(request.name, request.environment_name)
        return api_pb2.AppGetByDeploymentNameResponse(app_id=app.id if app else "")

    async def _app_create(self, request: api_pb2.AppCreateRequest, _call: Call) -> Message:
        app = self.state.create_app(request.description, request.environment_name)
        return api_pb2.AppCreateResponse(
            app_id=app.id, app_page_url=f"{self.state.web_url}/_sandbox/state"
        )

    async def _app_get_layout(self, request: api_pb2.AppGetLayoutRequest, _call: Call) -> Message:
        app = self.state.app(request.app_id)
        return api_pb2.AppGetLayoutResponse(
            app_layout=api_pb2.AppLayout(function_ids=dict(app.functions))
        )

    async def _app_heartbeat(self, request: api_pb2.AppHeartbeatRequest, _call: Call) -> Message:
        self.state.heartbeat(request.app_id)
        return empty_pb2.Empty()

    async def _app_client_disconnect(
        self, request: api_pb2.AppClientDisconnectRequest, _call: Call
    ) -> Message:
        self.state.disconnect(request.app_id)
        return empty_pb2.Empty()

    async def _app_publish(self, request: api_pb2.AppPublishRequest, _call: Call) -> Message:
        deployed_at = self.state.publish(
            request.app_id,
            request.name,
            request.deployment_tag,
            list(request.function_ids.values()),
        )
        return api_pb2.AppPublishResponse(
            url=f"{self.state.web_url}/_sandbox/state", deployed_at=deployed_at
        )

    async def _app_get_or_create(
        self, request: api_pb2.AppGetOrCreateRequest, _call: Call
    ) -> Message:
        create = request.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING
        app = self.state.lookup_app(request.app_name, request.environment_name, create)
        return api_pb2.AppGetOrCreateResponse(app_id=app.id)

    async def _app_stop(self, request: api_pb2.AppStopRequest, _call: Call) -> Message:
        self.state.stop_app(request.app_id)
        return empty_pb2.Empty()

    # ---- functions -------------------------------------------------------------------------

    def _handle(self, fn: platform.Function) -> api_pb2.FunctionHandleMetadata:
        return api_pb2.FunctionHandleMetadata(
            function_name=fn.tag,
            function_type=fn.function_type,  # type: ignore[arg-type]
            web_url=fn.web_url,
            app_id=fn.app_id,
            definition_id=f"de-{fn.id.removeprefix('fu-')}-{fn.version}",
        )

    async def _function_precreate(
        self, request: api_pb2.FunctionPrecreateRequest, _call: Call
    ) -> Message:
        fn = self.state.precreate(
            request.app_id,
            request.function_name,
            request.existing_function_id,
            request.function_type,
            request.webhook_config,
        )
        return api_pb2.FunctionPrecreateResponse(
            function_id=fn.id, handle_metadata=self._handle(fn)
        )

    async def _function_create(
        self, request: api_pb2.FunctionCreateRequest, _call: Call
    ) -> Message:
        data = request.function_data
        if request.HasField("function"):
            data = platform.function_data(request.function)
        fn = self.state.create_function(request.app_id, request.existing_function_id, data)
        shown = api_pb2.FunctionData()
        shown.CopyFrom(data)
        shown.web_url = fn.web_url
        return api_pb2.FunctionCreateResponse(
            function_id=fn.id, handle_metadata=self._handle(fn), function_data=shown
        )

    async def _function_get(self, request: api_pb2.FunctionGetRequest, _call: Call) -> Message:
        fn = self.state.deployed_function(
            request.app_name, request.object_tag, request.environment_name
        )
        assert fn.data is not None
        shown = api_pb2.FunctionData()
        shown.CopyFrom(fn.data)
        shown.web_url = fn.web_url
        return api_pb2.FunctionGetResponse(
            function_id=fn.id, handle_metadata=self._handle(fn), function=shown
        )

    async def _function_get_scheduling_params(
        self, request: api_pb2.FunctionGetSchedulingParamsRequest, _call: Call
    ) -> Message:
        settings = self.state.settings(request.function_id)
        return api_pb2.FunctionGetSchedulingParamsResponse(
            autoscaler_configuration=api_pb2.AutoscalerConfiguration(settings=settings)
        )

    async def _function_update_scheduling_params(
        self, request: api_pb2.FunctionUpdateSchedulingParamsRequest, _call: Call
    ) -> Message:
        settings = self.state.update_settings(request.function_id, request.settings)
        return api_pb2.FunctionUpdateSchedulingParamsResponse(current_settings=settings)

    async def _function_get_current_stats(
        self, request: api_pb2.FunctionGetCurrentStatsRequest, _call: Call
    ) -> Message:
        stats = self.state.stats(request.function_id)
        return api_pb2.FunctionStats(
            backlog=stats.backlog,
            num_total_tasks=stats.total,
            num_running_inputs=stats.running,
            input_headroom=stats.headroom,
        )

    # ---- images, secrets, mounts -----------------------------------------------------------

    async def _image_get_or_create(
        self, request: api_pb2.ImageGetOrCreateRequest, _call: Call
    ) -> Message:
        image_id = self.state.image(request.image)
        return api_pb2.ImageGetOrCreateResponse(
            image_id=image_id,
            result=api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS),
            metadata=api_pb2.ImageMetadata(image_builder_version=platform.IMAGE_BUILDER_VERSION),
        )

    async def _secret_get_or_create(
        self, request: api_pb2.SecretGetOrCreateRequest, _call: Call
    ) -> Message:
        return api_pb2.SecretGetOrCreateResponse(secret_id=self.state.secret(request))

    async def _mount_get_or_create(
        self, request: api_pb2.MountGetOrCreateRequest, _call: Call
    ) -> Message:
        name = request.deployment_name or ",".join(sorted(f.sha256_hex for f in request.files))
        return api_pb2.MountGetOrCreateResponse(
            mount_id=self.state.mount(name), handle_metadata=api_pb2.MountHandleMetadata()
        )

    async def _mount_batched_check_existence(
        self, _request: api_pb2.MountBatchedCheckExistenceRequest, _call: Call
    ) -> Message:
        return api_pb2.MountBatchedCheckExistenceResponse()

    async def _mount_put_file(self, _request: api_pb2.MountPutFileRequest, _call: Call) -> Message:
        return api_pb2.MountPutFileResponse(exists=True)


# Every RPC the fake does not implement answers UNIMPLEMENTED (generated, not hand-written).
for _name in sorted(api_grpc.ModalClientBase.__abstractmethods__):
    if _name not in ModalServicer.__dict__:
        setattr(ModalServicer, _name, _unimplemented(_name))
ModalServicer.__abstractmethods__ = frozenset()
