"""`python -m bench [--quick] [--llm-latency-ms 800] [--conversations 500] [--json]`: see docs/benchmarks.md."""

from bench.run import main

raise SystemExit(main())
