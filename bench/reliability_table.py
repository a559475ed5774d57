"""Render the fault suite's report (FAULT_REPORT=file pytest -m fault) as a Markdown table."""

import json
import sys


def main(path):
    with open(path) as report:
        rows = [json.loads(line) for line in report if line.strip()]
    print("| fault | load | events sent | deliveries | stored | lost | duplicated | statuses |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        pace = f"{row['rate']:,} events/s" if row["rate"] else "unpaced"
        load = (
            f"{pace}, {row['concurrency']} senders, {row['duplicate_batches']} batches re-delivered"
        )
        statuses = ", ".join(f"{k}: {v}" for k, v in row["statuses"].items())
        lost = row["lost"] + row["extra"]
        print(
            f"| {row['fault']} | {load} | {row['events']:,} | {row['deliveries']:,} | "
            f"{row['stored']:,} | {lost} | {row['duplicated']} | {statuses} |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
