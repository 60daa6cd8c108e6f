"""Client side of event replay, for python-socketio clients.

    from antibody_reload.client import ReplayTracker
    tracker = ReplayTracker(field="seq", auth_key="last_seq")
    sio = socketio.Client()                      # reconnection on (the default)

    @sio.on("vael_event")
    @tracker.dedup
    def on_event(data): ...

    sio.connect(url, auth=tracker.auth, transports=["websocket"])

`tracker.auth` is a callable: python-socketio calls it again on every reconnect, so the new
server learns the last sequence value this client saw and replays what it missed; `dedup`
drops events already seen (a replayed event may also arrive live).
"""
import threading


class ReplayTracker:
    def __init__(self, field="seq", auth_key="last_seq", extra_auth=None, remember=10000):
        self.field = field
        self.auth_key = auth_key
        self.extra_auth = dict(extra_auth or {})
        self.last = None
        self._seen = set()
        self._order = []
        self._remember = remember
        self._lock = threading.Lock()

    def auth(self):
        payload = dict(self.extra_auth)
        with self._lock:
            if self.last is not None:
                payload[self.auth_key] = self.last
        return payload

    def accept(self, data):
        """True the first time an event's sequence value is seen (always True without one)."""
        value = data.get(self.field) if isinstance(data, dict) else None
        if value is None:
            return True
        with self._lock:
            if value in self._seen:
                return False
            self._seen.add(value)
            self._order.append(value)
            if len(self._order) > self._remember:
                self._seen.discard(self._order.pop(0))
            if self.last is None or value > self.last:
                self.last = value
            return True

    def dedup(self, handler):
        def wrapped(data, *args):
            if self.accept(data):
                return handler(data, *args)
            return None

        return wrapped
