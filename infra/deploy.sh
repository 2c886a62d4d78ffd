#!/usr/bin/env bash
# Create or update the whole Synq environment in a Google Cloud project (see docs/deploy.md).
#
#   infra/deploy.sh PROJECT REGION [--dry-run] [--bucket NAME] [--export-days 30] [--payload-days 7] ...
#
# A thin wrapper: the plan lives in infra/deploy.py because it is read from the code (main.py's
# targets, infra/stack.py's wiring, common/config.py's settings), which needs the project's Python
# and its dependencies. It runs from the repository root because that is the functions' source.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
if [[ ! -x "$python" ]]; then
    echo "deploy: $python not found; run 'make install' first (or set PYTHON)" >&2
    exit 2
fi
cd "$root"
exec "$python" -m infra.deploy "$@"
