"""Compare the instruction counts of the last `cargo bench --bench instructions`
(gungraun's summary.json files) with the committed ones in benches/instructions.json;
exit 1 when one is more than 10 % above. `--update` writes the new counts instead."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "benches/instructions.json"
TOLERANCE = 0.10


def measured():
    counts = {}
    for summary in sorted((ROOT / "target/gungraun").rglob("summary.json")):
        data = json.loads(summary.read_text())
        name = f"{data['function_name']}.{data['id']}"
        metrics = data["profiles"][0]["summaries"]["total"]["summary"]["Callgrind"]["Ir"]["metrics"]
        # One side when there is no earlier run to compare with, both when there is:
        # the first is this run's.
        side = next(iter(metrics.values()))
        counts[name] = side[0]["Int"] if isinstance(side, list) else side["Int"]
    if not counts:
        sys.exit("no gungraun summaries under target/gungraun; run scripts/instructions.sh")
    return counts


def main():
    counts = measured()
    if "--update" in sys.argv[1:]:
        COMMITTED.write_text(json.dumps(counts, indent=2, sort_keys=True) + "\n")
        print(f"wrote {COMMITTED.relative_to(ROOT)}")
        return
    committed = json.loads(COMMITTED.read_text())
    failed = []
    print(f"\n{'benchmark':<24} {'committed':>12} {'now':>12} {'change':>8}")
    for name in sorted(set(committed) | set(counts)):
        before, now = committed.get(name), counts.get(name)
        if before is None or now is None:
            failed.append(f"{name}: {'not committed' if before is None else 'not measured'}")
            print(f"{name:<24} {before or '—':>12} {now or '—':>12}")
            continue
        change = now / before - 1
        print(f"{name:<24} {before:>12,} {now:>12,} {change:>+8.1%}")
        if change > TOLERANCE:
            failed.append(f"{name}: {now:,} instructions, {change:+.1%} over the committed {before:,}")
    if failed:
        print("\nmore instructions than committed (limit +10 %):\n  " + "\n  ".join(failed), file=sys.stderr)
        print("if the change is meant, commit the new counts: bash scripts/instructions.sh --update", file=sys.stderr)
        sys.exit(1)
    print("\nwithin +10 % of the committed counts")


if __name__ == "__main__":
    main()
