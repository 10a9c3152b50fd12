"""Fan-out latency: the gateway with real SDK devices vs. a bare websockets broadcast.

N real ``TidingsClient`` devices (default 2,000) spread over worker processes connect to a
gateway process; one message goes to all of them through the admin API; every device records
``receive time - sent_at`` (stamped when the gateway starts writing the fan-out). In the same run
and harness a bare ``websockets`` server broadcasts one frame of the same size to N raw clients.
This is ``tidings loadtest --scenario broadcast --baseline`` with a benchmark's defaults.

Usage::

    .venv/bin/python benchmarks/fanout.py --devices 2000
    .venv/bin/python benchmarks/fanout.py --devices 10000 --json out.json
"""

from __future__ import annotations

import argparse
import sys

from tidings.simulator.engine import run_loadtest


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    # Plain devices (no personas): this measures the delivery path itself.
    report = run_loadtest(devices=args.devices, scenario="broadcast", baseline=True,
                          workers=args.workers, personas=False)  # fmt: skip
    print(report.table())
    if args.json:
        report.write_json(args.json)
    return 1 if report.lost or report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
