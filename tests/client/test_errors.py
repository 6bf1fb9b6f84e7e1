"""Every problem type the service defines (service/errors.py) maps to its own typed exception,
carrying type, status, title, detail and field; unknown types fall back by status."""

from __future__ import annotations

import inspect

import httpx
import pytest

from facegen_client import errors
from service import errors as service_errors
from service.errors import PROBLEM_CONTENT_TYPE, FacegenError

SERVICE_ERRORS = [
    cls
    for _, cls in inspect.getmembers(service_errors, inspect.isclass)
    if issubclass(cls, FacegenError) and cls.__module__ == service_errors.__name__
]


def _instance(cls: type[FacegenError]) -> FacegenError:
    if cls is service_errors.QueueFullError:
        return cls("The server is busy: 9 rows are queued for the model.", retry_after_s=3)
    return cls(f"A sentence about {cls.__name__} that a client developer can act on.", field="image[1]")


def _response(exc: FacegenError) -> httpx.Response:
    headers = {"content-type": PROBLEM_CONTENT_TYPE, **exc.headers}
    return httpx.Response(exc.status, json=exc.to_problem(), headers=headers)


def test_the_service_defines_the_types_we_map() -> None:
    slugs = {cls.slug for cls in SERVICE_ERRORS}
    assert len(SERVICE_ERRORS) >= 15 and "queue-full" in slugs and "internal" in slugs
    # The client names no type the service does not send. A type the service adds later (e.g.
    # API-key errors) still gets the class of its status (next test) until it gets its own.
    assert set(errors.BY_SLUG) <= slugs, set(errors.BY_SLUG) - slugs


@pytest.mark.parametrize("cls", SERVICE_ERRORS, ids=lambda c: c.slug)
def test_every_problem_type_maps_to_its_exception(cls: type[FacegenError]) -> None:
    exc = _instance(cls)
    err = errors.error_for(_response(exc))
    expected = errors.BY_SLUG.get(cls.slug) or errors.BY_STATUS[cls.status]
    assert type(err) is expected and type(err) is not errors.APIError
    assert (err.type, err.status, err.title, err.detail) == (exc.type, cls.status, cls.title, exc.detail)
    assert err.problem == exc.to_problem()
    if cls is service_errors.QueueFullError:
        assert isinstance(err, errors.ServiceUnavailableError) and err.retry_after_s == 3.0
    else:
        assert err.field == "image[1]" and "image[1]" in str(err)
    assert isinstance(err, errors.APIError) and isinstance(err, errors.FacegenError)


def test_unknown_types_fall_back_by_status() -> None:
    auth = httpx.Response(401, json={"type": "/problems/unauthorized", "status": 401, "detail": "No key."})
    assert type(errors.error_for(auth)) is errors.AuthenticationError
    limited = httpx.Response(
        429, json={"type": "/problems/rate-limited", "status": 429}, headers={"Retry-After": "2"}
    )
    err = errors.error_for(limited)
    assert type(err) is errors.RateLimitedError and err.type == "/problems/rate-limited"
    odd = errors.error_for(httpx.Response(418, json={"type": "/problems/teapot", "status": 418}))
    assert type(odd) is errors.APIError and odd.status == 418


def test_a_proxys_html_error_is_still_typed() -> None:
    r = httpx.Response(
        502, text="<html><body>502 Bad Gateway</body></html>", headers={"content-type": "text/html"}
    )
    err = errors.error_for(r)
    assert type(err) is errors.APIError and err.status == 502 and err.type == "about:blank"
    assert "Bad Gateway" in err.detail
    busy = errors.error_for(httpx.Response(503, text="busy"))
    assert type(busy) is errors.ServiceUnavailableError and busy.retry_after_s is None


def test_retry_after_in_seconds_and_as_a_date() -> None:
    assert errors.parse_retry_after("7") == 7.0
    assert errors.parse_retry_after(None) is None and errors.parse_retry_after("soon") is None
    assert errors.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    future = errors.parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT")
    assert future is not None and future > 1e9
