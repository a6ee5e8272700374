"""``python -m loadtests [SCENARIO ...]``: run load scenarios and write a report."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from loadtests import cli_start, gateway_calls, hey_calls, pool_calls, runtime_start, scale

SCENARIOS: dict[str, Callable[[int, Path, str], str]] = {
    "cli-start": cli_start.run,
    "cold-start": runtime_start.run,
    "gateway-calls": gateway_calls.run,
    "hey-calls": hey_calls.run,
    "pool-calls": pool_calls.run,
    "scale": scale.run,
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtests", description=__doc__)
    parser.add_argument("scenario", nargs="*", choices=[*SCENARIOS, []], help="default: all")
    parser.add_argument("--runs", type=int, default=30, help="runs per variant (default 30)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    names = args.scenario or list(SCENARIOS)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    sections = []
    failed = []
    for name in names:
        clock = time.monotonic()
        try:
            sections.append(SCENARIOS[name](args.runs, args.out, stamp))
        except Exception as exc:  # the report keeps the other scenarios, and says this
            traceback.print_exc()
            failed.append(name)
            sections.append(f"## {name}: failed\n\n```\n{type(exc).__name__}: {exc}\n```\n")
        print(f"{name}: {time.monotonic() - clock:.0f}s", file=sys.stderr)
    sections.append(f"Whole run: {time.monotonic() - started:.0f}s.\n")
    path = args.out / f"{stamp}.md"
    text = f"# scow load tests, {stamp}\n\n" + "\n".join(sections)
    path.write_text(text)
    print(text)
    print(f"written to {path}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
