"""A Flask app run under gunicorn by the tests: the process a reloadFlask action signals.

GET /pid answers the worker's pid, so a test sees the workers change after SIGHUP.
"""
import os

from flask import Flask

app = Flask(__name__)


@app.get("/pid")
def pid():
    return {"pid": os.getpid(), "ppid": os.getppid()}


@app.get("/healthz")
def healthz():
    return "ok"
