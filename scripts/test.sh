#!/usr/bin/env bash
# The whole test suite on the real PostgreSQL and Redis of this machine (pytest args pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
scripts/ensure-services.sh
exec .venv/bin/python -m pytest "$@"
