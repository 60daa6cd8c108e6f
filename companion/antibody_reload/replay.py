"""Replay of broadcast events a reconnecting client missed.

Every worker keeps the events it received from the message queue for a few seconds. A client
that reconnects passes, in its Socket.IO `auth`, the last value it saw of a sequence field of
the events (default auth key `last_seq`, field `seq`); right after the connection is accepted
the worker re-sends, to that client only, the buffered broadcast events whose field is newer.
Clients drop duplicates by the same field (see antibody_reload.client).
"""
import collections
import threading
import time


class EventRing:
    def __init__(self, seconds=10.0, max_events=4000):
        self.seconds = seconds
        self._events = collections.deque(maxlen=max_events)
        self._lock = threading.Lock()

    def add(self, message):
        now = time.monotonic()
        with self._lock:
            self._events.append((now, message))
            while self._events and now - self._events[0][0] > self.seconds:
                self._events.popleft()

    def messages(self):
        with self._lock:
            return [m for _, m in self._events]

    def broadcasts_after(self, namespace, field, after, extra=()):
        """(event, data) of buffered broadcasts to `namespace` whose data[field] > after,
        in field order, once per (event, field value); `extra`: messages handed over by the
        worker this one replaced."""
        found = {}
        for message in list(extra) + self.messages():
            if message.get("room") is not None or message.get("skip_sid"):
                continue
            if (message.get("namespace") or "/") != namespace:
                continue
            data = message.get("data")
            if isinstance(data, list) and len(data) == 1:
                data = data[0]
            if not isinstance(data, dict):
                continue
            value = data.get(field)
            try:
                if value is not None and value > after:
                    found.setdefault((message.get("event"), value), data)
            except TypeError:
                continue
        try:
            keys = sorted(found, key=lambda k: k[1])
        except TypeError:
            keys = list(found)
        return [(k[0], found[k]) for k in keys]


def install(server, ring, field, auth_key, logger, handed_over=lambda: ()):
    """Hook python-socketio's server: record queue messages, replay after a connect.

    Uses two long-stable internals of python-socketio 5.x (PubSubManager._handle_emit and
    Server._handle_connect); when they are missing replay is disabled with a warning.
    """
    manager = server.manager
    handle_emit = getattr(manager, "_handle_emit", None)
    handle_connect = getattr(server, "_handle_connect", None)
    if handle_emit is None or handle_connect is None:
        logger.warning("antibody_reload: this python-socketio has no hooks for replay; disabled")
        return False

    def recording_handle_emit(message):
        if message.get("method", "emit") == "emit" and message.get("callback") is None:
            ring.add(message)
        return handle_emit(message)

    def replaying_handle_connect(eio_sid, namespace, data):
        result = handle_connect(eio_sid, namespace, data)
        after = data.get(auth_key) if isinstance(data, dict) else None
        if after is None:
            return result
        namespace = namespace or "/"
        sid = server.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not server.manager.is_connected(sid, namespace):
            return result
        for event, payload in ring.broadcasts_after(namespace, field, after, handed_over()):
            server.emit(event, payload, to=sid, namespace=namespace, ignore_queue=True)
        return result

    manager._handle_emit = recording_handle_emit
    server._handle_connect = replaying_handle_connect
    return True
