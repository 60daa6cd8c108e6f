"""The WebSocket target for issue 14: a Flask-SocketIO app on a Redis message queue, with
Antibody's reload companion.

- on connect: `hello` {pid, value} to that client (value = app.config[WS_APP_KEY], default
  VAEL_MODE, as read from ANTIBODY_ENV_FILE);
- after an in-place reload: `config` {pid, value} to this worker's own clients;
- everything else it sends comes from the queue (the broadcaster publishes there).

    WS_APP_MESSAGE_QUEUE=redis://127.0.0.1:R/0 ANTIBODY_STATE_DIR=D ANTIBODY_ENV_FILE=F \
        gunicorn --worker-class gthread --threads 80 --workers 1 ws_app:app
"""
import os

from flask import Flask, request
from flask_socketio import SocketIO
from socketio.manager import Manager

from antibody_reload import Companion

KEY = os.environ.get("WS_APP_KEY", "VAEL_MODE")

app = Flask(__name__)
socketio = SocketIO(
    app,
    message_queue=os.environ["WS_APP_MESSAGE_QUEUE"],
    channel=os.environ.get("WS_APP_CHANNEL", "flask-socketio"),
    # threading under gunicorn's gthread worker; WS_APP_ASYNC_MODE=gevent under `-k gevent`.
    async_mode=os.environ.get("WS_APP_ASYNC_MODE", "threading"),
    # Accept the connection before the connect handler runs, so `hello` (and replayed
    # events) reach the client after its CONNECT packet.
    always_connect=True,
)
companion = Companion(app, socketio=socketio)


def _value():
    return app.config.get(KEY, os.environ.get(KEY))


@app.get("/healthz")
def healthz():
    return {"pid": os.getpid(), "value": _value()}


@socketio.on("connect")
def on_connect(auth=None):
    socketio.server.emit("hello", {"pid": os.getpid(), "value": _value()}, to=request.sid,
                         ignore_queue=True)


@companion.on_reload
def announce(changed, generation):
    # Local clients only: through the queue every worker would relay it with this pid.
    Manager.emit(socketio.server.manager, "config",
                 {"pid": os.getpid(), "value": _value(), "generation": generation},
                 namespace="/")
