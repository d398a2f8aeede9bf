"""The one table that maps domain errors to HTTP responses (OpenAI error format)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from ferry_server.errors import (
    Draining,
    FerryError,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    Unauthorized,
)

RETRY_AFTER_S = "5"

# exception type -> (status, OpenAI error type, extra headers)
ERROR_TABLE: dict[type[FerryError], tuple[int, str, dict[str, str]]] = {
    InvalidInput: (400, "invalid_request_error", {}),
    Unauthorized: (401, "authentication_error", {"WWW-Authenticate": "Bearer"}),
    ModelNotFound: (404, "not_found_error", {}),
    Overloaded: (429, "rate_limit_error", {"Retry-After": "1"}),
    ModelLoadError: (500, "model_load_error", {}),
    ModelNotReady: (503, "model_not_ready", {"Retry-After": RETRY_AFTER_S}),
    Draining: (503, "draining", {"Retry-After": RETRY_AFTER_S}),
}


def error_body(message: str, kind: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI-style error payload."""
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


def _lookup(exc: FerryError) -> tuple[int, str, dict[str, str]]:
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return 500, "internal_error", {}


def error_kind(exc: FerryError) -> str:
    """The OpenAI error `type` for a domain error."""
    return _lookup(exc)[1]


def error_response(exc: FerryError) -> JSONResponse:
    """Render a domain error with the status and headers from ERROR_TABLE."""
    status, kind, headers = _lookup(exc)
    param = exc.param if isinstance(exc, InvalidInput) else None
    return JSONResponse(error_body(str(exc), kind, param), status_code=status, headers=headers)
