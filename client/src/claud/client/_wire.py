"""What each SDK method sends and how each answer is read, shared by both clients.

A :class:`Call` describes a request without naming a master, so one call can
be sent to several masters in turn (failover) unchanged, idempotency key
included. Turning an answer into a model or into a typed exception happens
here too, so :class:`~claud.client.Client` and
:class:`~claud.client.AsyncClient` cannot drift apart.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from claud.api.chaos import ChaosAction, ChaosRequest
from claud.api.errors import ErrorBody
from claud.api.jobs import (
    MAX_BATCH_JOBS,
    ExecRequest,
    JobBatch,
    JobSpec,
    JobState,
    JobView,
    PortSpec,
    RevertRequest,
    ScaleRequest,
)
from claud.api.protocol import EVENT_ID, TRACE_CURSOR
from claud.client.errors import (
    ClaudError,
    Conflict,
    InvalidSpec,
    JobNotFound,
    NoLeader,
    NotFound,
    ServerError,
    Unauthorized,
    Unreachable,
)

#: Statuses that mean "this master cannot serve now, another one might":
#: 503 is the masters' own "no leader / no quorum"; 502 and 504 come from a
#: proxy in front of a master that is down.
RETRY_STATUSES = frozenset({502, 503, 504})
#: A master's own 502s: the job's slave is unreachable. Every master would say
#: the same, so these are answers, not reasons to try another master.
SLAVE_ERROR_CODES = frozenset({"slave_unreachable", "slave_error"})
#: A master's 502s about a ``claud chaos`` target: not retried elsewhere, as a
#: fault must not be taken twice (a kill whose answer was lost did kill).
CHAOS_ERROR_CODES = frozenset({"target_unreachable", "target_error"})
#: A master's 504 for a command that ran out of time (``exec``): it ran, so it is not sent again.
EXEC_ERROR_CODES = frozenset({"exec_timeout"})
#: A master's 503 for a write the leader took but whose fate it cannot tell: resent only
#: with an idempotency key (a submit), never for a ``once`` call (it may have been applied).
OUTCOME_UNKNOWN = "outcome_unknown"

IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Items asked for per page when the SDK walks a list (the masters allow 1..1000).
PAGE_SIZE = 500

#: An attempt in these states has no container output yet (an image may be pulling).
_NOT_STARTED = frozenset({JobState.SCHEDULED, JobState.STARTING})

_ModelT = TypeVar("_ModelT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Call:
    """One API request, independent of the master that will receive it."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    json: Any = None
    headers: Mapping[str, str] | None = None
    #: Raised on 404, so a missing job is a JobNotFound and not a generic NotFound.
    not_found: type[NotFound] = NotFound
    #: A raw body (a backup to restore), sent instead of ``json``.
    content: bytes | None = None
    #: Streams stay open while idle (a quiet container, no cluster events), so
    #: they get no read timeout; connecting still times out.
    streaming: bool = False
    #: Seconds to wait for the answer, when it may take longer than the client's timeout (``exec``).
    read_timeout: float | None = None
    #: Not idempotent (``exec`` runs a command; ``update``, ``scale`` and ``revert`` each make a
    #: version, and may start a rollout): once the request may have reached a master, a lost
    #: answer is an error, never a reason to send it to another master.
    once: bool = False


def _segment(value: str) -> str:
    # Ids come from the masters, but a user types them: never let one add a path segment.
    return quote(str(value), safe="")


def submit(spec: JobSpec | Mapping[str, Any], idempotency_key: str | None) -> Call:
    spec = coerce_spec(spec)
    if idempotency_key and spec.idempotency_key and idempotency_key != spec.idempotency_key:
        raise ValueError(
            f"idempotency_key={idempotency_key!r} contradicts the spec's {spec.idempotency_key!r}"
        )
    # Generated once per submit() and then reused by every failover attempt:
    # a retry after a lost answer returns the job the first attempt created.
    key = idempotency_key or spec.idempotency_key or str(uuid.uuid4())
    return Call(
        "POST",
        "/v1/jobs",
        json=spec.model_dump(mode="json", exclude_unset=True),
        headers={IDEMPOTENCY_HEADER: key},
    )


def submit_batch(specs: Sequence[JobSpec | Mapping[str, Any]], idempotency_key: str | None) -> Call:
    """``POST /v1/jobs:batch``, each spec checked here first (InvalidSpec names ``jobs.<i>.<field>``).

    The batch gets one key for every failover attempt, as a submit does; the
    masters key job ``i`` as ``<key>/<i>``, so the jobs must carry none of their own."""
    if not 1 <= len(specs) <= MAX_BATCH_JOBS:
        raise InvalidSpec(f"a batch holds 1-{MAX_BATCH_JOBS} jobs, got {len(specs)}", field="jobs")
    coerced = []
    for i, spec in enumerate(specs):
        try:
            job = coerce_spec(spec)
        except InvalidSpec as exc:
            field = f"jobs.{i}.{exc.field}" if exc.field else f"jobs.{i}"
            raise InvalidSpec(exc.message, field=field) from None
        if job.idempotency_key is not None:
            raise InvalidSpec("a batch keys its jobs itself (<key>/<i>): leave idempotency_key out",
                              field=f"jobs.{i}.idempotency_key")
        coerced.append(job)
    batch = JobBatch.model_construct(jobs=coerced)  # every job validated just above
    return Call(
        "POST",
        "/v1/jobs:batch",
        json=batch.model_dump(mode="json", exclude_unset=True),
        headers={IDEMPOTENCY_HEADER: idempotency_key or str(uuid.uuid4())},
    )


def _page_params(limit: int | None, cursor: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if limit is not None:
        if not 1 <= limit <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        params["limit"] = str(limit)
    if cursor is not None:
        params["next"] = cursor
    return params


def list_jobs(state: JobState | str | None, limit: int | None = None, cursor: str | None = None) -> Call:
    params = _page_params(limit, cursor)
    if state is not None:
        params["state"] = JobState(state).value
    return Call("GET", "/v1/jobs", params=params or None)


def get_job(job_id: str) -> Call:
    return Call("GET", f"/v1/jobs/{_segment(job_id)}", not_found=JobNotFound)


def job_events(job_id: str, limit: int | None = None, cursor: str | None = None) -> Call:
    return Call("GET", f"/v1/jobs/{_segment(job_id)}/events", params=_page_params(limit, cursor) or None,
                not_found=JobNotFound)


def stop_job(job_id: str) -> Call:
    return Call("DELETE", f"/v1/jobs/{_segment(job_id)}", not_found=JobNotFound)


def update_job(job_id: str, spec: JobSpec | Mapping[str, Any]) -> Call:
    """``PUT /v1/jobs/{id}``: the job's next version, the spec checked here first (InvalidSpec names the field).

    Only what the spec sets goes on the wire, as for a submit: the masters own the
    defaults. Sent once: a second PUT of a spec that did reach the leader would be one
    more version, and maybe one more rollout."""
    body = coerce_spec(spec).model_dump(mode="json", exclude_unset=True)
    return Call("PUT", f"/v1/jobs/{_segment(job_id)}", json=body, not_found=JobNotFound, once=True)


def _version_write(job_id: str, action: str, model: type[ScaleRequest | RevertRequest], value: int) -> Call:
    """``POST /v1/jobs/{id}/<action>`` with one number, checked here first (InvalidSpec names its field):
    sent once, as a new version is not a write to repeat blindly."""
    (field,) = model.model_fields
    try:
        body = model.model_validate({field: value})
    except ValidationError as exc:
        raise invalid_spec_from(exc) from None
    return Call("POST", f"/v1/jobs/{_segment(job_id)}/{action}", json=body.model_dump(mode="json"),
                not_found=JobNotFound, once=True)


def scale_job(job_id: str, count: int) -> Call:
    """``POST /v1/jobs/{id}/scale``."""
    return _version_write(job_id, "scale", ScaleRequest, count)


def job_versions(job_id: str) -> Call:
    return Call("GET", f"/v1/jobs/{_segment(job_id)}/versions", not_found=JobNotFound)


def revert_job(job_id: str, version: int) -> Call:
    """``POST /v1/jobs/{id}/revert``."""
    return _version_write(job_id, "revert", RevertRequest, version)


def job_logs(job_id: str, follow: bool, tail: int | None, attempt: int | None = None) -> Call:
    params: dict[str, str] = {}
    if follow:
        params["follow"] = "true"
    if tail is not None:
        if tail < 0:
            raise ValueError("tail must be >= 0")
        params["tail"] = str(tail)
    if attempt is not None:
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValueError("attempt must be an integer >= 1")
        params["attempt"] = str(attempt)
    return Call(
        "GET",
        f"/v1/jobs/{_segment(job_id)}/logs",
        params=params or None,
        not_found=JobNotFound,
        streaming=True,
    )


#: Seconds the client waits beyond an exec's timeout for the master's answer.
EXEC_ANSWER_SLACK = 15.0


def exec_job(job_id: str, command: Sequence[str], alloc: str | None, timeout: float) -> Call:
    """``POST /v1/jobs/{id}/exec``, checked here first (InvalidSpec names the field)."""
    try:
        body = ExecRequest.model_validate({"command": list(command), "alloc": alloc, "timeout": timeout})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidSpec(f"{field}: {first['msg']}", field=field) from None
    return Call(
        "POST", f"/v1/jobs/{_segment(job_id)}/exec", json=body.model_dump(mode="json", exclude_none=True),
        not_found=JobNotFound, read_timeout=body.timeout + EXEC_ANSWER_SLACK, once=True,
    )


def list_nodes(limit: int | None = None, cursor: str | None = None) -> Call:
    return Call("GET", "/v1/nodes", params=_page_params(limit, cursor) or None)


def next_page(cursor: str | None, previous: str | None, response: httpx.Response) -> str | None:
    """The cursor to ask with next, None at the end; a master that hands back the same one is an error, not a loop."""
    if cursor is not None and cursor == previous:
        raise ClaudError(
            f"{response.request.url} answered the cursor it was given: the list would never end",
            status_code=response.status_code,
        )
    return cursor


def drain(node_id: str, deadline: float | None = None) -> Call:
    body = None if deadline is None else {"deadline": deadline}
    return Call("POST", f"/v1/nodes/{_segment(node_id)}/drain", json=body)


def undrain(node_id: str) -> Call:
    return Call("POST", f"/v1/nodes/{_segment(node_id)}/undrain")


def chaos(action: ChaosAction | str, target: str, seconds: float | None) -> Call:
    """``POST /v1/chaos``, checked here first: a typo is an InvalidSpec before any request."""
    body: dict[str, Any] = {"action": str(action), "target": target}
    if seconds is not None:
        body["seconds"] = seconds
    try:
        request = ChaosRequest.model_validate(body)
    except ValidationError as exc:
        raise invalid_spec_from(exc) from None
    return Call("POST", "/v1/chaos", json=request.model_dump(mode="json", exclude_none=True))


def cluster() -> Call:
    return Call("GET", "/v1/cluster")


def members() -> Call:
    return Call("GET", "/v1/operator/members")


def add_member(member_id: int, address: str) -> Call:
    return Call("POST", "/v1/operator/members", json={"id": member_id, "address": address})


def remove_member(member_id: int) -> Call:
    return Call("DELETE", f"/v1/operator/members/{member_id}")


def system_gc() -> Call:
    return Call("POST", "/v1/system/gc")


def save_snapshot() -> Call:
    # Streamed: a big backup takes longer than one read timeout to arrive.
    return Call("GET", "/v1/operator/snapshot", streaming=True)


def restore_snapshot(data: bytes) -> Call:
    # No read timeout either: the master checks every record before it answers.
    return Call(
        "POST", "/v1/operator/snapshot", content=data,
        headers={"Content-Type": "application/octet-stream"}, streaming=True,
    )


def events(after: str | None = None) -> Call:
    headers = {"Accept": "text/event-stream"}
    if after is not None:
        if not isinstance(after, str) or not EVENT_ID.fullmatch(after):
            raise ValueError(f"after must be an event id (INDEX.K, as each event's id), not {str(after)[:40]!r}")
        headers["Last-Event-ID"] = after
    return Call("GET", "/v1/events", headers=headers, streaming=True)


def trace(after: int | str | None, all_masters: bool = False) -> Call:
    headers = {"Accept": "text/event-stream"}
    if after is not None:
        if all_masters:
            if not isinstance(after, str) or not after.isascii() or not TRACE_CURSOR.fullmatch(after):
                raise ValueError("with all_masters, after must be the merged trace's id (MASTER:ID,...)")
        elif isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError("after must be a trace id (an integer >= 0)")
        headers["Last-Event-ID"] = str(after)  # as a browser's EventSource resumes
    params = {"masters": "all"} if all_masters else None
    return Call("GET", "/v1/cluster/trace", params=params, headers=headers, streaming=True)


def auth_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def streaming_timeout(timeout: httpx.Timeout) -> httpx.Timeout:
    return httpx.Timeout(connect=timeout.connect, read=None, write=timeout.write, pool=timeout.pool)


# --- specs -----------------------------------------------------------------


def coerce_spec(spec: JobSpec | Mapping[str, Any]) -> JobSpec:
    """Validate a spec locally, so a typo is an :class:`InvalidSpec` before any request."""
    if type(spec) is JobSpec:
        return spec
    if isinstance(spec, JobSpec):  # e.g. a JobView being submitted again: keep the spec part
        spec = spec.model_dump(include=set(JobSpec.model_fields), exclude_unset=True)
        if "ports" in spec:  # a view's ports carry where they were published: not the spec's to say
            spec["ports"] = [{k: v for k, v in port.items() if k in PortSpec.model_fields} for port in spec["ports"]]
    try:
        return JobSpec.model_validate(spec)
    except ValidationError as exc:
        raise invalid_spec_from(exc) from None


def invalid_spec_from(exc: ValidationError) -> InvalidSpec:
    """One InvalidSpec naming the first bad field; the others follow in the message."""
    problems = [(_dotted(error["loc"]), _clean(error["msg"])) for error in exc.errors()]
    (field, message), rest = problems[0], problems[1:]
    if rest:
        message += "; " + "; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in rest)
    return InvalidSpec(message, field=field or None)


def _dotted(loc: Any) -> str:
    return ".".join(str(part) for part in loc)


def _clean(message: str) -> str:
    # pydantic prefixes our validators' messages with "Value error, ".
    return message.removeprefix("Value error, ")


# --- answers ---------------------------------------------------------------


def parse(model: type[_ModelT], response: httpx.Response) -> _ModelT:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise ClaudError(
            f"unexpected answer from {response.request.url}: {exc.errors()[0]['msg']}",
            status_code=response.status_code,
        ) from None


def job_changed(before: JobView | None, after: JobView) -> bool:
    """Whether a poll saw something worth reporting (a transition, a new event)."""
    if before is None:
        return True

    def progress(view: JobView) -> tuple[Any, ...]:
        return (
            view.state,
            view.attempts,
            view.node_id,
            view.pending_reason,
            len(view.events or ()),
            view.version,
            view.running,
            view.rollout.state if view.rollout else None,
        )

    return progress(before) != progress(after)


def should_retry(response: httpx.Response, call: Call) -> bool:
    """Whether another master might serve what this one could not (see RETRY_STATUSES).

    A ``once`` call only after a 503 that says the write was not taken: a 503
    ``outcome_unknown`` may have been applied, and a proxy's 502 or 504 may hide a
    master that took the request and then failed to answer."""
    if response.status_code not in RETRY_STATUSES:
        return False
    if call.once:
        return response.status_code == 503 and _error_fields(response)[0] != OUTCOME_UNKNOWN
    if response.status_code == 502:
        code, _, _ = _error_fields(response)
        return code not in SLAVE_ERROR_CODES and code not in CHAOS_ERROR_CODES
    if response.status_code == 504:
        code, _, _ = _error_fields(response)
        return code not in EXEC_ERROR_CODES
    return True


def request_timeout(call: Call, timeout: httpx.Timeout, stream_timeout: httpx.Timeout) -> httpx.Timeout | Any:
    """The timeout of one request: none to read a stream, the call's own read timeout, or the client's."""
    if call.streaming:
        return stream_timeout
    if call.read_timeout is not None:
        return httpx.Timeout(connect=timeout.connect, read=call.read_timeout, write=timeout.write, pool=timeout.pool)
    return httpx.USE_CLIENT_DEFAULT


def may_resend(call: Call, exc: httpx.TransportError) -> bool:
    """Whether a call that failed in transport may go to another master: always, unless it is
    not idempotent and the request may have been sent (anything but a failure to connect)."""
    return not call.once or isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def not_resent(url: str, exc: httpx.TransportError) -> ClaudError:
    """The error for a ``once`` call whose answer was lost after it may have reached a master."""
    return ClaudError(f"{url}: {describe(exc)} (not sent again: it may have taken effect)")


def attempt_ended(error: ClaudError) -> bool:
    """Whether a logs error only means this attempt has no (more) output to serve.

    Following a job, that is no failure: its container is gone (404), the job
    was never placed (409) or its slave is unreachable (it will be rescheduled).
    """
    return isinstance(error, NotFound | Conflict) or error.code in SLAVE_ERROR_CODES


def attempt_to_follow(view: JobView, streamed: str | None) -> bool:
    """Whether ``logs(follow=True)`` should stream the job's current attempt now.

    Only an attempt other than the one just streamed (``streamed``), and only
    once its container has started: a later state means it ran (and may have
    ended), which is fine, its whole output is still served.
    """
    return (
        view.alloc_id is not None
        and view.alloc_id != streamed
        and view.state not in _NOT_STARTED
    )


def error_from(response: httpx.Response, call: Call) -> ClaudError:
    """The typed exception for an error answer, from its code first, then its status."""
    status = response.status_code
    code, message, field = _error_fields(response)
    if not message:
        message = f"{status} {response.reason_phrase} from {response.request.url}"
    by_code: dict[str, type[ClaudError]] = {
        "invalid_spec": InvalidSpec,
        "not_found": call.not_found,
        "conflict": Conflict,
        "no_leader": NoLeader,
        "unauthorized": Unauthorized,
        "forbidden": Unauthorized,
        # A cluster not started with --demo-faults: no token would help (exit 1, not 5).
        "chaos_disabled": ClaudError,
    }
    if code == OUTCOME_UNKNOWN and call.once:
        # The master's advice (retry with the same key) is a submit's: this call has no key.
        message = message.removesuffix("; retry with the same idempotency key")
        return ServerError(f"{message} (not sent again: it may have taken effect)", code=code, status_code=status)
    kind = by_code.get(code or "") or _kind_by_status(status, call)
    if kind is InvalidSpec:
        return InvalidSpec(message, field=field, code=code or "invalid_spec", status_code=status)
    if kind is NoLeader:
        return NoLeader(message, retry_after=retry_after(response), code=code, status_code=status)
    return kind(message, code=code, status_code=status)


def _kind_by_status(status: int, call: Call) -> type[ClaudError]:
    if status in (400, 422):
        return InvalidSpec
    if status in (401, 403):
        return Unauthorized
    if status == 404:
        return call.not_found
    if status == 409:
        return Conflict
    if status == 503:
        return NoLeader
    if status >= 500:
        return ServerError
    return ClaudError


def _error_fields(response: httpx.Response) -> tuple[str | None, str, str | None]:
    """(code, message, field) from our error body, FastAPI's default one, or plain text."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return None, response.text.strip()[:300], None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        try:
            detail = ErrorBody.model_validate(body).error
        except ValidationError:
            pass
        else:
            return detail.code, detail.message, detail.field
    if isinstance(body, dict) and "detail" in body:  # FastAPI's own errors
        detail = body["detail"]
        if isinstance(detail, str):
            return None, detail, None
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            loc = [str(p) for p in detail[0].get("loc", ())]
            if loc and loc[0] in ("body", "query", "path", "header"):
                loc = loc[1:]
            return None, _clean(str(detail[0].get("msg", ""))), ".".join(loc) or None
    return None, json.dumps(body)[:300], None


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (it may be a number or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def describe(exc: httpx.HTTPError) -> str:
    """A short reason for an address that failed, for Unreachable's message."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out ({type(exc).__name__})"
    return str(exc) or type(exc).__name__


def stream_lost(response: httpx.Response, exc: httpx.HTTPError) -> Unreachable:
    origin = f"{response.request.url.scheme}://{response.request.url.netloc.decode()}"
    return Unreachable(
        f"lost the stream from {origin}: {describe(exc)}", reasons={origin: describe(exc)}
    )


class LineBuffer:
    """Cuts a text stream into lines that keep their ``\\n``, holding a partial last line.

    Logs are written back verbatim, so the line endings must survive; a final
    line without a newline comes out of :meth:`flush`.
    """

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, text: str) -> list[str]:
        parts = (self._partial + text).split("\n")
        self._partial = parts.pop()
        return [part + "\n" for part in parts]

    def flush(self) -> list[str]:
        rest, self._partial = self._partial, ""
        return [rest] if rest else []
