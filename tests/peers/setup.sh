#!/usr/bin/env bash
# Create (or reuse) the Python environment for the test peers, outside the repo.
# It lives under /opt so the unprivileged uid that kwok's exec runs as can read it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# redis-server (Debian) for the notify tests; each test starts its own on a loopback port.
if ! command -v redis-server >/dev/null; then
  echo "[peers] installing redis-server" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi

venv="${ANTIBODY_PYENV:-/opt/antibody-py}"
stamp="$venv/.requirements.sha256"
companion="$(cd "$here/../.." && pwd)/companion"
# The stamp covers the requirements and the companion's sources, so a change to either
# rebuilds the environment.
want="$( (sha256sum "$here/requirements.txt";
          cd "$companion" && find pyproject.toml README.md antibody_reload -type f -name '*' \
            ! -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "[peers] python env ready in $venv" >&2
  exit 0
fi
python=/usr/bin/python3
[[ -x $python ]] || python="$(command -v python3)"
echo "[peers] creating python env in $venv from $python" >&2
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
# The reload companion (issue 14): a real install, not editable, so uid 65534 (kwok's exec)
# can import it from /opt whatever the checkout's permissions.
# Built from a copy: setuptools would leave build/ and *.egg-info in the checkout.
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
cp -r "$companion/pyproject.toml" "$companion/README.md" "$companion/antibody_reload" "$src/"
find "$src" -name __pycache__ -prune -exec rm -rf {} +
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$src"
chmod -R a+rX "$venv"
echo "$want" > "$stamp"
echo "[peers] python env ready in $venv" >&2
