"""Mean and spread over seeds from several sections of bench/results.md (issue 13, "Measure").

`bench/scanner_robustness.py` can run some seeds now and others later (``--first-seed``); each run
writes its per-seed table into bench/results.md. This reads the per-seed tables of the sections
whose heading contains one of ``--section`` (a seed that appears in two sections is taken from
the first one given) and prints `scanner_robustness.summary_table` over all of them. The share of
the oracle's gain is recomputed from the printed metric and oracle (three decimals each: the share
is within about 0.3 points of the run's own).

    python bench/combine_scanner_seeds.py --section "07:36 UTC: scanner" --section "06:41-07:03 UTC"
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scanner_robustness import RESULTS, share, summary_table  # noqa: E402

ROW = re.compile(
    r"^\| (?P<seed>\d+) \| (?P<candidate>\w+) \| (?P<task>\w+) \| (?P<arm>[^|]+?) \| (?P<n>\d+) \| [^|]* \| "
    r"(?:C-index|AUC) (?P<metric>[-\d.]+) \| (?P<oracle>[-\d.]+) \| [^|]* \|$"
)


def section_rows(text: str, marker: str) -> list[dict[str, Any]]:
    """Per-seed rows of the first ``## `` section whose heading contains ``marker``."""
    for block in text.split("\n## ")[1:]:
        heading, _, body = block.partition("\n")
        if marker in heading:
            rows = []
            for line in body.splitlines():
                match = ROW.match(line)
                if match:
                    metric, oracle = float(match["metric"]), float(match["oracle"])
                    rows.append(
                        {
                            "seed": int(match["seed"]),
                            "candidate": match["candidate"],
                            "task": match["task"],
                            "arm": match["arm"],
                            "share": share(metric, oracle),
                        }
                    )
            if not rows:
                raise ValueError(f"section '{heading}' of {RESULTS} has no per-seed table")
            return rows
    raise ValueError(f"no section of {RESULTS} has '{marker}' in its heading")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", action="append", required=True, help="text in a section heading")
    args = parser.parse_args(argv)
    text = RESULTS.read_text()
    rows: list[dict[str, Any]] = []
    seen: set[tuple[int, str]] = set()
    for marker in args.section:
        found = section_rows(text, marker)
        new = [r for r in found if (r["seed"], r["candidate"]) not in seen]
        seen |= {(r["seed"], r["candidate"]) for r in found}
        rows += new
        seeds = sorted({r["seed"] for r in new})
        print(f"section '{marker}': seeds {seeds}, {len(new)} rows", file=sys.stderr)
    print(summary_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
