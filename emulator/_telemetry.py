"""The Telemetry API: subscription validation, per-subscriber batching by its buffering settings,
and delivery as POSTed JSON arrays to listeners in the environment, held while frozen, retried."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from emulator import _protocol as p
from emulator._processes import TaskSpawner

RETRY_FIRST_S: Final = 0.025
RETRY_MAX_S: Final = 0.5
POST_TIMEOUT_S: Final = 5.0
QUEUE_FACTOR: Final = 10  # a subscriber may fall this many batches behind before drops


class SubscriptionError(ValueError):
    """The subscription request is invalid; the message goes back as a ValidationError."""


@dataclass(frozen=True, kw_only=True)
class Subscription:
    """One extension's validated subscription."""

    types: frozenset[str]
    max_items: int
    max_bytes: int
    timeout_ms: int
    url: str  # where the emulator connects (loopback)
    host_header: str  # the host the subscriber named


def _bounded(buffering: Mapping[str, Any], key: str, bounds: tuple[int, int, int]) -> int:
    low, high, default = bounds
    value = buffering.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SubscriptionError(f"buffering.{key} must be an integer")
    if not low <= value <= high:
        raise SubscriptionError(f"buffering.{key} must be between {low} and {high}, got {value}")
    return value


def _loopback_host(host: str) -> str:
    if host in p.SANDBOX_HOSTS or host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise SubscriptionError(
            f"destination host {host!r} is not inside the execution environment "
            "(use sandbox.localdomain)"
        ) from None
    if not address.is_loopback:
        raise SubscriptionError(f"destination host {host} is not inside the execution environment")
    return host if address.version == 4 else f"[{host}]"


def parse_subscription(body: bytes) -> Subscription:
    """Validates a PUT /telemetry body as Lambda does; raises SubscriptionError."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SubscriptionError(f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise SubscriptionError("the request body must be a JSON object")
    problems: list[str] = []
    version = doc.get("schemaVersion")
    if version not in p.TELEMETRY_SCHEMA_VERSIONS:
        allowed = ", ".join(sorted(p.TELEMETRY_SCHEMA_VERSIONS))
        problems.append(f"schemaVersion must be one of {allowed}, got {version!r}")
    types = doc.get("types")
    if not isinstance(types, list) or not types:
        problems.append("types should not be empty")
        types = []
    elif not all(isinstance(t, str) and t in p.TELEMETRY_TYPES for t in types):
        problems.append("types may only contain platform, function and extension")
    buffering = doc.get("buffering", {})
    if not isinstance(buffering, dict):
        problems.append("buffering must be an object")
        buffering = {}
    limits: dict[str, int] = {}
    for key, bounds in (
        ("maxItems", p.BUFFER_MAX_ITEMS),
        ("maxBytes", p.BUFFER_MAX_BYTES),
        ("timeoutMs", p.BUFFER_TIMEOUT_MS),
    ):
        try:
            limits[key] = _bounded(buffering, key, bounds)
        except SubscriptionError as exc:
            problems.append(str(exc))
    url = host_header = ""
    destination = doc.get("destination")
    if not isinstance(destination, dict):
        problems.append("destination is required")
    elif destination.get("protocol") != "HTTP":
        problems.append(f"destination.protocol must be HTTP, got {destination.get('protocol')!r}")
    else:
        uri = destination.get("URI")
        parts = urlsplit(uri) if isinstance(uri, str) else None
        if parts is None or parts.scheme != "http" or not parts.hostname:
            problems.append("destination.URI must be an http:// URI")
        else:
            try:
                port = parts.port
            except ValueError:
                port = None
            if port is None:
                problems.append("URI port is not provided")
            else:
                try:
                    host = _loopback_host(parts.hostname)
                except SubscriptionError as exc:
                    problems.append(str(exc))
                else:
                    path = parts.path or "/"
                    query = f"?{parts.query}" if parts.query else ""
                    url = f"http://{host}:{port}{path}{query}"
                    host_header = parts.netloc
    if problems:
        raise SubscriptionError("; ".join(problems))
    return Subscription(
        types=frozenset(types),
        max_items=limits["maxItems"],
        max_bytes=limits["maxBytes"],
        timeout_ms=limits["timeoutMs"],
        url=url,
        host_header=host_header,
    )


def timestamp(epoch_s: float | None = None) -> str:
    """ISO 8601 in UTC with milliseconds, as Lambda writes event times."""
    moment = datetime.fromtimestamp(time.time() if epoch_s is None else epoch_s, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def category(event_type: str) -> str:
    return "platform" if event_type.startswith("platform.") else event_type


@dataclass(eq=False)
class _Subscriber:
    name: str
    subscription: Subscription
    queue: deque[bytes] = field(default_factory=deque)
    queued_bytes: int = 0
    dropped_records: int = 0
    dropped_bytes: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    urgent: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Telemetry:
    """Fans platform events and log lines out to the subscribers of one environment."""

    def __init__(self, tasks: TaskSpawner, log: Callable[[str], None]) -> None:
        self._tasks = tasks
        self._log = log
        self._subscribers: dict[str, _Subscriber] = {}
        self._backlog: list[tuple[str, bytes]] | None = None
        self._open = asyncio.Event()
        self._open.set()
        self._inflight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._session: aiohttp.ClientSession | None = None

    # ---- phases -----------------------------------------------------------------------------

    def begin_init(self) -> None:
        """Events from now until end_init also go to extensions that subscribe during init."""
        self._backlog = []

    def end_init(self) -> None:
        self._backlog = None

    def pause(self) -> None:
        """Holds deliveries (the environment is about to freeze)."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    async def quiesce(self, timeout_s: float) -> None:
        """Waits (bounded) for POSTs already under way, so none is cut by a freeze."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._quiet.wait()

    # ---- subscriptions ----------------------------------------------------------------------

    def subscribe(self, extension_id: str, name: str, subscription: Subscription) -> None:
        old = self._subscribers.pop(extension_id, None)
        if old is not None and old.task is not None:
            old.task.cancel()
        sub = _Subscriber(name=name, subscription=subscription)
        sub.idle.set()
        self._subscribers[extension_id] = sub
        for event_type, data in self._backlog or []:
            if category(event_type) in subscription.types:
                self._enqueue(sub, data)
        sub.task = self._tasks.spawn(self._deliver(sub), f"telemetry-{name}")
        self.emit(p.T_SUBSCRIPTION, {"name": name, "state": "Subscribed", "types": sorted(subscription.types)})

    def drop_all(self) -> None:
        """Ends every subscription (the environment was reset or shut down)."""
        for sub in self._subscribers.values():
            if sub.task is not None:
                sub.task.cancel()
        self._subscribers.clear()

    # ---- events -----------------------------------------------------------------------------

    def emit(self, event_type: str, record: Any, *, epoch_s: float | None = None) -> None:
        data = json.dumps(
            {"time": timestamp(epoch_s), "type": event_type, "record": record},
            separators=(",", ":"),
        ).encode()
        if self._backlog is not None:
            self._backlog.append((event_type, data))
        cat = category(event_type)
        for sub in self._subscribers.values():
            if cat in sub.subscription.types:
                self._enqueue(sub, data)

    def _enqueue(self, sub: _Subscriber, data: bytes) -> None:
        limit = sub.subscription.max_items * QUEUE_FACTOR
        while len(sub.queue) >= limit:
            lost = sub.queue.popleft()
            sub.queued_bytes -= len(lost)
            sub.dropped_records += 1
            sub.dropped_bytes += len(lost)
        sub.queue.append(data)
        sub.queued_bytes += len(data)
        sub.idle.clear()
        sub.wake.set()

    async def flush(self, timeout_s: float) -> None:
        """Delivers everything queued now, waiting at most timeout_s."""
        self.resume()
        for sub in self._subscribers.values():
            sub.urgent = True
            sub.wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(timeout_s, 0.0)):
                for sub in list(self._subscribers.values()):
                    await sub.idle.wait()

    # ---- delivery ---------------------------------------------------------------------------

    async def aclose(self) -> None:
        self.drop_all()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S),
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
            )
        return self._session

    async def _deliver(self, sub: _Subscriber) -> None:
        sub_conf = sub.subscription
        loop = asyncio.get_running_loop()
        while True:
            if not sub.queue:
                sub.idle.set()
                sub.urgent = False
                sub.wake.clear()
                await sub.wake.wait()
                continue
            # A batch closes when full (items or bytes) or when its oldest event is timeoutMs old.
            deadline = loop.time() + sub_conf.timeout_ms / 1000
            while (
                not sub.urgent
                and len(sub.queue) < sub_conf.max_items
                and sub.queued_bytes < sub_conf.max_bytes
                and loop.time() < deadline
            ):
                sub.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await sub.wake.wait()
            batch: list[bytes] = []
            size = 0
            while sub.queue and len(batch) < sub_conf.max_items:
                if batch and size + len(sub.queue[0]) > sub_conf.max_bytes:
                    break
                item = sub.queue.popleft()
                sub.queued_bytes -= len(item)
                size += len(item)
                batch.append(item)
            if sub.dropped_records:
                batch.insert(0, self._dropped_event(sub))
            await self._post_until_taken(sub, b"[" + b",".join(batch) + b"]")

    def _dropped_event(self, sub: _Subscriber) -> bytes:
        record = {
            "droppedBytes": sub.dropped_bytes,
            "droppedRecords": sub.dropped_records,
            "reason": "Consumer seems to have fallen behind as it has not acknowledged receipt of logs.",
        }
        sub.dropped_bytes = sub.dropped_records = 0
        return json.dumps(
            {"time": timestamp(), "type": p.T_LOGS_DROPPED, "record": record}, separators=(",", ":")
        ).encode()

    async def _post_until_taken(self, sub: _Subscriber, body: bytes) -> None:
        """POSTs one batch, retrying with backoff while the listener is not up (until cancelled)."""
        delay = RETRY_FIRST_S
        failures = 0
        headers = {"Content-Type": p.JSON_CONTENT_TYPE, "Host": sub.subscription.host_header}
        while True:
            await self._open.wait()
            self._inflight += 1
            self._quiet.clear()
            try:
                async with self._client().post(sub.subscription.url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status < 300:
                        return
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = type(exc).__name__
            finally:
                self._inflight -= 1
                if self._inflight == 0:
                    self._quiet.set()
            failures += 1
            if failures == 1:
                self._log(f"telemetry: delivery to {sub.name} failed ({problem}); retrying")
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
