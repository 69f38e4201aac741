"""Server-Sent Events: a small parser (the `event`, `id`, `data` and `retry` fields and
comments, per the WHATWG spec) and the resume loop `watch()` and `follow_build()` share:
reconnect with `Last-Event-ID` after a dropped connection so nothing is missed or seen
twice, and poll instead when the server cannot stream."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from dockyard_client.errors import (
    APIConnectionError,
    ClientError,
    DockyardError,
    RateLimited,
    ServerError,
)

if TYPE_CHECKING:
    from dockyard_client.client import Client

__all__ = ["Frame", "follow", "parse"]

#: Stream endings the server sends when the stream's token ended: reconnect (refreshing).
TOKEN_ENDINGS = frozenset({"token_expired", "token_revoked", "token_unverifiable"})
#: Consecutive failed connections after which watching falls back to polling.
MAX_STREAM_FAILURES = 3
_NO_STREAM_STATUSES = frozenset({404, 405, 501})


@dataclass(frozen=True)
class Frame:
    """One dispatched SSE event: its type (`message` by default), id, data and the
    reconnection delay the server asked for (ms), if it did."""

    event: str
    data: str
    id: str | None
    retry: int | None = None


def parse(lines: Iterable[str]) -> Iterator[Frame]:
    """The events in a stream of lines (line endings already stripped). An event is
    dispatched at a blank line; comments (`:`) are skipped; a frame with no data is not
    dispatched (a bare `retry:` frame only updates the delay, reported on the next one)."""
    event, event_id, retry = "", None, None
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if line == "":
            if data:
                yield Frame(event or "message", "\n".join(data), event_id, retry)
            event, data, event_id = "", [], None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id" and "\0" not in value:
            event_id = value
        elif name == "retry" and value.isdigit():
            retry = int(value)


def follow(
    client: Client,
    *,
    stream_path: str,
    make_item: Callable[[Frame], dict[str, Any]],
    is_end: Callable[[dict[str, Any]], bool],
    poll: Callable[[int], list[dict[str, Any]]] | None = None,
    ended: Callable[[], bool] | None = None,
    poll_interval: float = 1.0,
    timeout: float | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield a resource's events from its first one until `is_end(item)`, across dropped
    connections: each reconnection sends the last id seen as Last-Event-ID, and ids at or
    below it are skipped (an ending item is always let through). The stream answering
    404/405/501, 429 (too many streams) or failing to connect MAX_STREAM_FAILURES times in
    a row switches to `poll(after_id)` every `poll_interval` s (when a poll is given;
    `ended()` says when polling may stop). TimeoutError past `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last_id = 0
    failures = 0
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{stream_path}: not ended after {timeout} s")
        try:
            response = client.open_stream(
                stream_path, last_id, read_timeout=_read_timeout(deadline)
            )
        except DockyardError as error:
            if _stream_unavailable(error) and poll is not None:
                yield from _poll(poll, is_end, ended, last_id, poll_interval, deadline)
                return
            if not isinstance(error, (APIConnectionError, ServerError)):
                raise
            failures += 1
            if failures < MAX_STREAM_FAILURES:
                time.sleep(client.reconnect_delay)
                continue
            if poll is None:
                raise
            yield from _poll(poll, is_end, ended, last_id, poll_interval, deadline)
            return
        if response.status_code == 204:  # ended, and nothing after last_id
            response.close()
            return
        received, reconnect_now = False, False
        try:
            for frame in parse(response.iter_lines()):
                if frame.event in TOKEN_ENDINGS:
                    reconnect_now = True
                    break  # reconnect: the request refreshes the token (or raises)
                if frame.id is None and frame.event != "output":
                    continue
                item = make_item(frame)
                if frame.id is not None and frame.id.isdigit():
                    event_id = int(frame.id)
                    if event_id <= last_id and not is_end(item):
                        continue
                    last_id = max(last_id, event_id)
                received, failures = True, 0
                yield item
                if is_end(item):
                    return
        except httpx.ReadTimeout:
            reconnect_now = True  # not a failure: reconnect (the deadline is checked above)
        except httpx.TransportError:
            pass  # dropped: counted below unless events came through
        finally:
            response.close()
        if received or reconnect_now:
            continue
        # Dropped, or ended by the server, without a single new event: back off, and give
        # up on streaming (poll, or raise) when it keeps happening.
        failures += 1
        if failures >= MAX_STREAM_FAILURES:
            if poll is None:
                raise APIConnectionError(f"{stream_path}: the stream keeps breaking")
            yield from _poll(poll, is_end, ended, last_id, poll_interval, deadline)
            return
        time.sleep(client.reconnect_delay)


def _read_timeout(deadline: float | None) -> float:
    """Longer than the server's keep-alive interval (15 s), shorter than what is left."""
    if deadline is None:
        return 60.0
    return max(0.5, min(60.0, deadline - time.monotonic()))


def _stream_unavailable(error: DockyardError) -> bool:
    """The server cannot stream this to us right now, but polling will work."""
    if isinstance(error, RateLimited):
        return error.code == "too_many_streams"
    return isinstance(error, ClientError) and error.status in _NO_STREAM_STATUSES


def _poll(
    poll: Callable[[int], list[dict[str, Any]]],
    is_end: Callable[[dict[str, Any]], bool],
    ended: Callable[[], bool] | None,
    last_id: int,
    poll_interval: float,
    deadline: float | None,
) -> Iterator[dict[str, Any]]:
    """The polling fallback: the items after `last_id`, until an ending one (or, with no
    ending item, until `ended()` holds and one last poll found nothing new)."""
    while True:
        finished = ended() if ended is not None else False
        for item in poll(last_id):
            last_id = max(last_id, int(item["id"]))
            yield item
            if is_end(item):
                return
        if finished:
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError("not ended before the timeout")
        time.sleep(poll_interval)


def job_event(frame: Frame) -> dict[str, Any]:
    """A job stream's frame as the event dict GET /jobs/{id}/events returns."""
    item: dict[str, Any] = json.loads(frame.data)
    return item


def log_line(frame: Frame) -> dict[str, Any]:
    """A deployment log stream's frame: {"id", "event", "data"} (data: {text, step, at};
    an outcome's text is itself JSON, decoded into data["outcome"])."""
    data: dict[str, Any] = json.loads(frame.data)
    if frame.event == "outcome":
        try:
            data["outcome"] = json.loads(data.get("text") or "{}")
        except ValueError:
            data["outcome"] = {}
    event_id = int(frame.id) if frame.id is not None and frame.id.isdigit() else None
    return {"id": event_id, "event": frame.event, "data": data}
