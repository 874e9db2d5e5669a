"""`dramatiq app.worker`: more worker processes for the same queue (on this machine or others, against the
same Redis and PostgreSQL). Dramatiq's CLI imports this module and takes the broker wired here. The API
process runs a worker of its own unless WORKER_MODE=off."""

from app import bootstrap

broker = bootstrap.worker_process()
