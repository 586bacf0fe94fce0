"""Typed dependencies: what a handler may ask for, as Annotated aliases."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.exceptions import RequestValidationError

from service.errors import ApiError
from service.indexing import Progress
from service.jobs.runner import JobRunner
from service.resources import Resources
from service.settings import Settings


@dataclass
class AppState:
    """What the lifespan loads; handlers get its parts through the aliases below."""

    settings: Settings
    resources: Resources
    jobs: JobRunner
    sample_catalogue: Progress | None


def get_state(request: Request) -> AppState:
    return request.app.state.service


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_resources(state: Annotated[AppState, Depends(get_state)]) -> Resources:
    return state.resources


def get_jobs(state: Annotated[AppState, Depends(get_state)]) -> JobRunner:
    return state.jobs


State = Annotated[AppState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
Res = Annotated[Resources, Depends(get_resources)]
Jobs = Annotated[JobRunner, Depends(get_jobs)]


def require_api_key(settings: SettingsDep,
                    x_api_key: Annotated[str | None, Header(description="required when DEEPHASH_API_KEY is set")]
                    = None) -> None:
    expected = settings.api_key
    if expected is None:
        return
    challenge = {"WWW-Authenticate": "X-API-Key"}
    if x_api_key is None:
        raise ApiError(401, "unauthorized", "this endpoint needs the X-API-Key header", challenge)
    if not secrets.compare_digest(x_api_key.encode(), expected.get_secret_value().encode()):
        raise ApiError(401, "unauthorized", "the X-API-Key header does not match", challenge)


def require_multipart(request: Request) -> None:
    """Uploads come as multipart/form-data; anything else is named, not left to fail as a missing field."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type",
                       f"expected a multipart/form-data upload, got {content_type or 'no Content-Type'}")


ApiKey = Depends(require_api_key)
Multipart = Depends(require_multipart)


def invalid(field: str, message: str, where: str = "query") -> RequestValidationError:
    """A validation error shaped like FastAPI's own, for checks that depend on settings."""
    return RequestValidationError([{"type": "value_error", "loc": (where, field), "msg": message, "input": None}])


@dataclass(frozen=True)
class SearchParams:
    k: int
    max_distance: int | None


def search_params(settings: SettingsDep,
                  k: Annotated[int, Query(ge=1, description="how many neighbours (at most DEEPHASH_MAX_K)")] = 10,
                  max_distance: Annotated[int | None, Query(ge=0, description="drop hits farther than this")] = None,
                  ) -> SearchParams:
    if k > settings.max_k:
        raise invalid("k", f"Input should be less than or equal to {settings.max_k} (DEEPHASH_MAX_K)")
    return SearchParams(k, max_distance)


Search = Annotated[SearchParams, Depends(search_params)]
