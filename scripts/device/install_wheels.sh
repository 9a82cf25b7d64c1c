#!/usr/bin/env bash
# For this team's sessions on the lent H100: installs the carried wheels of one folder into /tmp/site
# (then `export PYTHONPATH=/tmp/site`). Usage: bash install_wheels.sh .gpu-wheels/a
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$1"/*.whl
