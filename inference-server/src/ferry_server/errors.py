"""Domain errors raised by the engine and data plane; the HTTP layer maps them in one table."""


class FerryError(Exception):
    """Base class for errors the server reports to clients or operators."""


class InvalidInput(FerryError):
    """The request is well-formed JSON but asks for something the server will not do."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ModelNotReady(FerryError):
    """The model is still loading (or failed to load)."""


class Draining(FerryError):
    """The server is shutting down and accepts no new requests."""


class Unauthorized(FerryError):
    """The request lacks the bearer token the server was configured with."""


class ModelLoadError(FerryError):
    """The model could not be found or loaded."""


class ModelTooLarge(ModelLoadError):
    """The model's weights do not fit in the target device's free memory."""


class ModelNotFound(FerryError):
    """The request names a model this server does not serve."""


class Overloaded(FerryError):
    """The request queue is full."""
