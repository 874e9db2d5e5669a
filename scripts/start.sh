#!/usr/bin/env bash
# Install everything, prepare the database, create the demo client and start the service on :8000.
# Without CHATFLOW_URL in the environment or .env, local fakes of ChatFlow and Telegram stand in for
# the real gateways, so a reply "sent to WhatsApp" can be seen without touching a real phone.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
scripts/ensure-services.sh
PY=.venv/bin/python
PORT=${PORT:-8000}

# Tokens are stored encrypted with SECRETS_KEY: on a fresh machine, generate one into .env (kept private).
if ! $PY -c 'import sys; from app.config import settings; sys.exit(0 if settings.secrets_key else 1)'; then
  touch .env
  chmod 600 .env
  sed -i '/^SECRETS_KEY=/d' .env
  echo "SECRETS_KEY=$($PY -m app.cli secrets generate-key)" >> .env
  echo "generated SECRETS_KEY into .env: keep it (and back it up), stored tokens cannot be read without it"
fi

$PY -m app.cli db init
configured=$($PY -c 'from app.config import settings; print("yes" if settings.chatflow_url else "")')
if [ -z "$configured" ]; then
  # FAKES_PORT: the first of four ports (OpenAI, ChatFlow, Telegram, ElevenLabs)
  F=${FAKES_PORT:-18001}
  echo "CHATFLOW_URL is not set: starting local fakes of ChatFlow, Telegram, OpenAI-compatible and ElevenLabs APIs"
  $PY -m fakes --openai-port "$F" --chatflow-port $((F + 1)) --telegram-port $((F + 2)) --elevenlabs-port $((F + 3)) >/dev/null &
  fakes_pid=$!
  trap 'kill $fakes_pid 2>/dev/null || true' EXIT
  export CHATFLOW_URL=http://127.0.0.1:$((F + 1))/api/v1/send-text
  export TELEGRAM_API_URL=http://127.0.0.1:$((F + 2))
  export ELEVENLABS_BASE_URL=http://127.0.0.1:$((F + 3))
  export MEDIA_ALLOWED_HOSTS=127.0.0.1
  # Without a key of your own the fake model answers, from the knowledge passages it is given
  if ! $PY -c 'import sys; from app.config import settings; sys.exit(0 if settings.openai_api_key else 1)'; then
    export OPENAI_BASE_URL=http://127.0.0.1:$F/v1 OPENAI_API_KEY=sk-local-fake
    echo "OPENAI_API_KEY is not set: the fake model answers with the best line of the knowledge it is given"
  fi
  # The fake gateway downloads managers' files from this service, on this machine
  export PUBLIC_BASE_URL=${PUBLIC_BASE_URL:-http://127.0.0.1:$PORT}
  $PY -m app.cli demo --chatflow-token demo-local-fake --local-telegram --public-url "http://127.0.0.1:$PORT"
else
  $PY -m app.cli demo --public-url "http://127.0.0.1:$PORT"
fi

echo "service: http://127.0.0.1:$PORT  (health: /health); the first ten minutes: README.md"
echo "try it:  .venv/bin/python -m app.cli simulate --phone 77010000001 \"Сколько стоит маникюр?\""
$PY -m uvicorn app.main:app --host 127.0.0.1 --port "$PORT" --loop uvloop --http httptools
