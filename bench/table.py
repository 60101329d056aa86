"""``python -m bench.table [results.json]``: the README's Markdown table of the latest figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.common import ROOT, fmt


def table(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Taken {results['started'][:10]} with `make bench` ({results['seconds'] / 60:.1f} min) on "
        f"{m['nproc']} x {m['cpu']}, {m['memory_mb'] / 1024:.0f} GB RAM, Python {m['python']}, "
        f"Airflow {m.get('apache-airflow')}, PostgreSQL {m['postgresql'].split()[0] if m['postgresql'] else 'n/a'}, "
        f"msgspec {m.get('msgspec')}, curl {m['curl']}.",
        "",
        "| figure | value | baseline (same run, same data) | goal | met |",
        "|---|---|---|---|---|",
    ]
    for f in results["figures"]:
        value = "n/a" if f["value"] is None else f"{fmt(f['value'])} {f['unit']}"
        met = "" if f["met"] is None else ("yes" if f["met"] else "**no**")
        baseline = f["baseline"].replace("|", "/")
        lines.append(f"| `{f['name']}` | {value} | {baseline} | {f['goal']} | {met} |")
    for note in results.get("notes", []):
        if "failed" in note:
            lines.append(f"\nNote: {note}")
    return "\n".join(lines)


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench" / "results.json"
    print(table(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
