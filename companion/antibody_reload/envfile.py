"""The dotenv file the app reads (ANTIBODY_ENV_FILE): parsing and value digests.

Format: KEY=VALUE lines, `#` comment lines, optional `export ` prefix, values optionally in
single or double quotes (double quotes understand \\n, \\" and \\\\). Lines that are not
KEY=VALUE are ignored, as dotenv loaders do.
"""
import hashlib
import re

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def digest(value):
    """sha256 hex of a value's UTF-8 bytes: what worker files and --expect-env carry."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _unquote(raw):
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return raw[1:-1]
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        inner = raw[1:-1]
        return re.sub(r'\\(["\\n])', lambda m: "\n" if m.group(1) == "n" else m.group(1), inner)
    # Unquoted: an inline comment starts at " #".
    cut = raw.find(" #")
    return (raw[:cut] if cut >= 0 else raw).strip()


def parse(text):
    """KEY -> VALUE for every well-formed line; later lines win."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, raw = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            continue
        values[key] = _unquote(raw)
    return values


def read(path):
    """Parsed values of the file, or None when it cannot be read (not there yet)."""
    try:
        with open(path, encoding="utf-8") as f:
            return parse(f.read())
    except OSError:
        return None


def digests(values):
    return {key: digest(value) for key, value in values.items()}
