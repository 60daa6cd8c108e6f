"""The demo's VAEL UI process: a Flask app under gunicorn with Antibody's reload companion, so a
reloadFlask plan applies the config in place in every worker and Antibody sees it acknowledged
(PatchApplied only then). GET /pid answers the worker's pid and the config generation it runs.
"""
import os

from flask import Flask

from antibody_reload import Companion

app = Flask(__name__)
companion = Companion(app)
generation = {"value": None}


@companion.on_reload
def remember(changed, new_generation):
    generation["value"] = new_generation


@app.get("/pid")
def pid():
    return {"pid": os.getpid(), "generation": generation["value"]}
