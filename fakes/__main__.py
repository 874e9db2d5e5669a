"""Run all four fakes for a local run or a benchmark: `python -m fakes [--llm-latency-ms 800]`, Ctrl-C to stop."""

import argparse
import sys
import threading

from fakes.chatflow import FakeChatFlow
from fakes.elevenlabs import FakeElevenLabs
from fakes.openai_api import FakeOpenAI, grounded_reply
from fakes.telegram import FakeTelegram


def main(argv: list[str] | None = None) -> None:
    """Start the fakes, print the env lines that point the service at them, serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m fakes", description=__doc__)
    parser.add_argument("--openai-port", type=int, default=18001)
    parser.add_argument("--chatflow-port", type=int, default=18002)
    parser.add_argument("--telegram-port", type=int, default=18003)
    parser.add_argument("--elevenlabs-port", type=int, default=18004)
    parser.add_argument("--llm-latency-ms", type=int, default=0, help="added to every OpenAI answer")
    parser.add_argument("--echo", action="store_true", help="the model echoes the customer instead of answering from the passages")
    args = parser.parse_args(argv)

    # By default the fake model answers from the best line of the knowledge passages it is given (deterministic).
    openai = FakeOpenAI(port=args.openai_port, latency=args.llm_latency_ms / 1000, reply=None if args.echo else grounded_reply)
    chatflow = FakeChatFlow(port=args.chatflow_port)
    telegram = FakeTelegram(port=args.telegram_port)
    elevenlabs = FakeElevenLabs(port=args.elevenlabs_port, api_key=None)
    fakes = [openai.start(), chatflow.start(), telegram.start(), elevenlabs.start()]
    # The output is meant to be pasted into .env; any key/token value is accepted by the fakes.
    sys.stdout.write(
        "\n".join(
            [
                f"OPENAI_BASE_URL={openai.base_url}",
                "OPENAI_API_KEY=sk-fake",
                f"CHATFLOW_URL={chatflow.send_text_url}",
                f"TELEGRAM_API_URL={telegram.url}",
                f"ELEVENLABS_BASE_URL={elevenlabs.url}",
                "ELEVENLABS_API_KEY=fake-elevenlabs-key",
                "",
            ]
        )
    )
    sys.stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        for fake in fakes:
            fake.stop()


if __name__ == "__main__":
    main()
