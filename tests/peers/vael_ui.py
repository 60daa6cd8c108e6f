"""The VAEL UI stand-in: a Flask-SocketIO server on a Redis message queue, as the real UI runs.

Anything that publishes on the queue's channel makes this server broadcast the event to its
Socket.IO clients; Antibody is such a publisher. Run under gunicorn's threaded worker:

    VAEL_UI_MESSAGE_QUEUE=redis://127.0.0.1:6379/0 gunicorn --threads 16 vael_ui:app
"""
import os

from flask import Flask
from flask_socketio import SocketIO

app = Flask(__name__)
socketio = SocketIO(
    app,
    message_queue=os.environ["VAEL_UI_MESSAGE_QUEUE"],
    channel=os.environ.get("VAEL_UI_CHANNEL", "flask-socketio"),
    async_mode="threading",
    logger=True,
)


@app.get("/healthz")
def healthz():
    return "ok"
