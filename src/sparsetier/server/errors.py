"""Every error the server sends, in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ContextLengthError, SparsetierError

log = logging.getLogger("sparsetier.server")


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers


def error_body(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def _reply(e: APIError) -> JSONResponse:
    body = error_body(e.message, e.type, e.param, e.code)
    return JSONResponse(body, status_code=e.status, headers=e.headers)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api(_: Request, e: APIError) -> JSONResponse:
        return _reply(e)

    @app.exception_handler(SparsetierError)
    async def _user(_: Request, e: SparsetierError) -> JSONResponse:
        code = "context_length_exceeded" if isinstance(e, ContextLengthError) else None
        return _reply(bad_request(str(e), code=code))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        # unknown routes (404) and wrong methods (405), still in the OpenAI shape
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return _reply(APIError(e.status_code, str(e.detail), code=code, headers=e.headers))

    @app.exception_handler(Exception)
    async def _bug(_: Request, e: Exception) -> JSONResponse:
        log.exception("internal error")
        return _reply(APIError(500, "internal server error", type="server_error"))
