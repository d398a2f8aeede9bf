"""Checks requests and responses against a published OpenAPI spec (openapi-core, 3.0/3.1).

A fake validates every request body and query string of a spec route before acting on it, so
a body the real platform would refuse (an unknown field, a missing `scaling`, a bad enum) is
refused here too, with a detail naming the field. With response validation on (tests), every
answer is checked as well: a fake whose answer drifts from the spec fails loudly instead of
teaching the operator a shape the platform never sends. Routes beyond the spec are never
passed here. Used by `http.Surface`; the specs live in `specs/`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema.exceptions
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.exceptions import OpenAPIError
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPECS = Path(__file__).resolve().parent / "specs"


class SpecViolation(Exception):
    """A request or response does not match the spec.

    `detail` is one sentence naming the first field at fault; `errors` lists every failure as
    `$.path: message` (the shape RunPod's problem bodies use).
    """

    def __init__(self, detail: str, errors: list[str]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


@dataclass
class _Request:
    """openapi-core's Request protocol over plain values."""

    host_url: str
    path: str
    method: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters = field(default_factory=RequestParameters)


@dataclass
class _Response:
    """openapi-core's Response protocol over plain values."""

    status_code: int
    content_type: str
    headers: Headers
    data: bytes | None


class SpecValidator:
    """One published spec, loaded once; `server_url` is the spec's server the fake stands in for."""

    def __init__(
        self,
        spec_file: str,
        server_url: str,
        *,
        adapt: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        spec = json.loads((SPECS / spec_file).read_text())
        # A published file the validator cannot load as it stands is adapted in memory by
        # the fake that uses it, which says why; the file in specs/ stays the published one.
        spec = adapt(spec) if adapt is not None else spec
        config = Config(
            extra_media_type_deserializers={"application/problem+json": _json_loads},
        )
        self._api = OpenAPI.from_dict(spec, config=config)
        self._server_url = server_url.rstrip("/")

    def _request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes | None,
        content_type: str,
    ) -> _Request:
        params = RequestParameters(
            query=ImmutableMultiDict(list(query.items())),
            header=Headers(list(headers.items())),
        )
        return _Request(
            host_url=self._server_url,
            path=path,
            method=method.lower(),
            body=body,
            content_type=content_type or "application/octet-stream",
            parameters=params,
        )

    def check_request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes | None,
        content_type: str,
    ) -> None:
        """Raise SpecViolation when the request's body or parameters break the spec."""
        req = self._request(method, path, query, headers, body, content_type)
        try:
            self._api.validate_request(req)
        except OpenAPIError as exc:
            raise _violation(exc, "request") from None

    def check_response(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str],
        request_headers: Mapping[str, str],
        status: int,
        headers: Mapping[str, str],
        body: bytes | None,
    ) -> None:
        """Raise SpecViolation when a response breaks the spec for this operation and status."""
        req = self._request(method, path, query, request_headers, None, "")
        content_type = headers.get("content-type", "")
        resp = _Response(
            status_code=status,
            content_type=content_type,
            headers=Headers(list(headers.items())),
            data=body if body else None,
        )
        try:
            self._api.validate_response(req, resp)
        except OpenAPIError as exc:
            raise _violation(exc, "response") from None


def _json_loads(raw: bytes | str) -> Any:
    return json.loads(raw)


def _violation(exc: BaseException, what: str) -> SpecViolation:
    """Turn openapi-core's exception chain into one sentence plus a list of failures."""
    schema_errors: list[jsonschema.exceptions.ValidationError] = []
    cause: BaseException | None = exc
    while cause is not None:
        found = getattr(cause, "schema_errors", None)
        if found:
            schema_errors = list(found)
            break
        cause = cause.__cause__
    if not schema_errors:
        message = str(exc).strip() or type(exc).__name__
        if "deserial" in type(exc).__name__.lower() or "Failed to deserialize" in message:
            message = f"{what} body is not valid JSON"
        return SpecViolation(message, [f"$: {message}"])
    errors = [_describe(e) for e in _leaves(schema_errors)]
    # A nested failure also makes the enclosing `allOf` leave its properties "unevaluated";
    # that echo names the wrong fields, so it is kept only when it is the only failure.
    real = [e for e in errors if "nevaluated properties" not in e]
    errors = real or errors
    parameter = _parameter_name(exc)
    if parameter is not None:
        errors = [e.replace("$", parameter, 1) for e in errors]
        return SpecViolation(f"query parameter {errors[0]}", errors)
    return SpecViolation(f"{what} body does not match the API spec: {errors[0]}", errors)


def _parameter_name(exc: BaseException) -> str | None:
    cause: BaseException | None = exc
    while cause is not None:
        name = getattr(cause, "name", None)
        if isinstance(name, str) and name:
            return name
        cause = cause.__cause__
    return None


def _leaves(
    errors: list[jsonschema.exceptions.ValidationError],
) -> list[jsonschema.exceptions.ValidationError]:
    """Replace `oneOf`/`anyOf` failures by the most relevant failure inside them."""
    out: list[jsonschema.exceptions.ValidationError] = []
    for error in errors:
        if error.context:
            best = jsonschema.exceptions.best_match(error.context)
            out.append(best if best is not None else error)
        else:
            out.append(error)
    return out


def _describe(error: jsonschema.exceptions.ValidationError) -> str:
    path = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"{path}: {error.message}"
