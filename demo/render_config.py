"""Render the demo's antibody.yml from the shipped one (structured edits, no text patching):
every target in the demo namespace, plans there too, and every reload through the companion of
the demo's gunicorn.

    python demo/render_config.py antibody.yml NAMESPACE PYTHON STATE_DIR > demo.yml
"""
import copy
import sys

import yaml


def main():
    source, namespace, python, state_dir = sys.argv[1:5]
    with open(source) as f:
        config = yaml.safe_load(f)
    for target in config.get("targets", {}).values():
        target["namespace"] = namespace
    companion = {"command": [python, "-m", "antibody_reload"], "state_dir": state_dir}
    for name in config.get("actions", {}).get("reload_flask", []):
        target = config["targets"][name]
        target.pop("reload_command", None)
        target["reload_mode"] = "companion"
        target["companion"] = copy.deepcopy(companion)  # no YAML anchors in the output
    config.setdefault("defaults", {})["plan_namespace"] = namespace
    yaml.safe_dump(config, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
