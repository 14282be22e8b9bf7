"""The API error tree. Every error answer has one shape: {"error": {"code", "message", "field"?}}.

ApiError
 ├── BadRequest            400 invalid_json, invalid_request
 ├── Unauthorized          401 unauthorized
 ├── Forbidden             403 forbidden (a valid signature without the route's scope)
 ├── NotFound              404 not_found
 ├── MethodNotAllowed      405 method_not_allowed
 ├── RequestTimeout        408 body_timeout (the body did not arrive in time; the connection is closed)
 ├── PayloadTooLarge       413 payload_too_large
 ├── UnsupportedMediaType  415 unsupported_media_type, unsupported_encoding
 ├── HeadersTooLarge       431 headers_too_large (the request line or a header field)
 ├── ClientClosedRequest   499 client_closed (the client went away mid-request: counted, never answered)
 ├── Unprocessable         422 invalid_field, missing_field, unknown_field, event_id_conflict
 ├── TooManyRequests       429 rate_limited (Retry-After)
 └── ServiceUnavailable    503 unavailable (Retry-After)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar


class ApiError(Exception):
    """An error answered to the caller. Messages never hold secrets, account numbers or openids."""

    status: ClassVar[int] = 400
    default_code: ClassVar[str] = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class BadRequest(ApiError):
    status = 400
    default_code = "invalid_request"


class Unauthorized(ApiError):
    status = 401
    default_code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    default_code = "forbidden"


class NotFound(ApiError):
    status = 404
    default_code = "not_found"


class MethodNotAllowed(ApiError):
    status = 405
    default_code = "method_not_allowed"


class RequestTimeout(ApiError):
    status = 408
    default_code = "body_timeout"


class PayloadTooLarge(ApiError):
    status = 413
    default_code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    default_code = "unsupported_media_type"


class HeadersTooLarge(ApiError):
    status = 431
    default_code = "headers_too_large"


class ClientClosedRequest(ApiError):
    """nginx's 499: the client closed its connection before its request was complete; nobody reads it."""

    status = 499
    default_code = "client_closed"


class Unprocessable(ApiError):
    status = 422
    default_code = "invalid_field"


class TooManyRequests(ApiError):
    status = 429
    default_code = "rate_limited"


class ServiceUnavailable(ApiError):
    status = 503
    default_code = "unavailable"
