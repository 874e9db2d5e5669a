#!/bin/sh
# Bring the schema up to date before the service starts (safe to run on every start).
set -e
alembic upgrade head
exec "$@"
