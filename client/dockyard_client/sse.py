"""Server-Sent Events: a small parser (the `event`, `id`, `data` and `retry` fields and
comments, per the WHATWG spec) and the resume loop `watch()` and `follow_build()` share:
reconnect with `Last-Event-ID` after a dropped connection so nothing is missed or seen
twice, and poll instead when the server cannot stream."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from dockyard_client.errors import (
    APIConnectionError,
    ClientError,
    DockyardError,
    RateLimited,
    ServerError,
)

__all__ = ["Frame", "follow", "parse"]

#: Stream endings the server sends when the stream's token ended: reconnect (refreshing).
TOKEN_ENDINGS = frozenset({"token_expired", "token_revoked", "token_unverifiable"})
#: Consecutive failed connections after which watching falls back to polling.
MAX_STREAM_FAILURES = 3
_NO_STREAM_STATUSES = frozenset({404, 405, 501})


class StreamSource(Protocol):
    """What following a stream needs of the client (Client is one): declared here so that
    this module does not import client.py, which imports it."""

    reconnect_delay: float

    def open_stream(
        self, path: str, last_event_id: int | None, *, read_timeout: float = ...
    ) -> httpx.Response: ...


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
    client: StreamSource,
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
    follower = _Follower(client, stream_path, make_item, is_end, timeout)
    fallback = yield from follower.stream()
    if fallback is not None:
        if poll is None:
            raise fallback
        yield from _poll(poll, is_end, ended, follower.last_id, poll_interval, follower.deadline)


class _Follower:
    """One stream followed across reconnections: the last id seen and the failures in a row
    are the state every reconnection reads."""

    def __init__(
        self,
        client: StreamSource,
        stream_path: str,
        make_item: Callable[[Frame], dict[str, Any]],
        is_end: Callable[[dict[str, Any]], bool],
        timeout: float | None,
    ) -> None:
        self.client = client
        self.stream_path = stream_path
        self.make_item = make_item
        self.is_end = is_end
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.last_id = 0
        self.failures = 0

    def stream(self) -> Generator[dict[str, Any], None, DockyardError | None]:
        """Yield items until the ending one (returns None), or return the error to fall back
        to polling on (or to raise, when there is no poll)."""
        while True:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise TimeoutError(f"{self.stream_path}: not ended after {self.timeout} s")
            response = self._connect()
            if isinstance(response, DockyardError):
                return response
            if response is None:
                continue
            outcome = yield from self._read(response)
            if outcome == "ended":
                return None
            # Dropped, or ended by the server, without a single new event: back off, and
            # give up on streaming (poll, or raise) when it keeps happening.
            if outcome == "dropped" and self._failed():
                return APIConnectionError(f"{self.stream_path}: the stream keeps breaking")

    def _connect(self) -> httpx.Response | DockyardError | None:
        """Open the stream from the last id: the response, the error to fall back on, or
        None to try again (after the back-off of a failed connection)."""
        try:
            return self.client.open_stream(
                self.stream_path, self.last_id, read_timeout=_read_timeout(self.deadline)
            )
        except DockyardError as error:
            if _stream_unavailable(error):
                return error
            if not isinstance(error, (APIConnectionError, ServerError)):
                raise
            return error if self._failed() else None

    def _failed(self) -> bool:
        """Count a failure in a row; True once there were too many (else wait, then retry)."""
        self.failures += 1
        if self.failures >= MAX_STREAM_FAILURES:
            return True
        time.sleep(self.client.reconnect_delay)
        return False

    def _read(self, response: httpx.Response) -> Generator[dict[str, Any], None, str]:
        """Yield one connection's new items; returns "ended", "reconnect" (events came
        through, or the token or read timed out) or "dropped" (nothing new came)."""
        if response.status_code == 204:  # ended, and nothing after last_id
            response.close()
            return "ended"
        received = False
        try:
            for frame in parse(response.iter_lines()):
                if frame.event in TOKEN_ENDINGS:
                    return "reconnect"  # the next request refreshes the token (or raises)
                item = self._new_item(frame)
                if item is None:
                    continue
                received, self.failures = True, 0
                yield item
                if self.is_end(item):
                    return "ended"
        except httpx.ReadTimeout:
            return "reconnect"  # not a failure: the deadline is checked before reconnecting
        except httpx.TransportError:
            pass  # dropped: a failure unless events came through
        finally:
            response.close()
        return "reconnect" if received else "dropped"

    def _new_item(self, frame: Frame) -> dict[str, Any] | None:
        """The frame's item, or None when it carries nothing new (no id, or one seen)."""
        if frame.id is None and frame.event != "output":
            return None
        item = self.make_item(frame)
        if frame.id is not None and frame.id.isdigit():
            event_id = int(frame.id)
            if event_id <= self.last_id and not self.is_end(item):
                return None
            self.last_id = max(self.last_id, event_id)
        return item


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
