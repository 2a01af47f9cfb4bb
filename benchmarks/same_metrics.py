"""Whether two runs' `report/metrics.json` are the same in every field but `seconds` (a refactoring's check).

    python benchmarks/same_metrics.py OLD/report/metrics.json NEW/report/metrics.json

Prints each differing field by its path (`stages.ppo.held_out.exact_match: 0.6 != 0.4`), or that they are identical;
exits 1 when they differ.
"""

from __future__ import annotations

import json
import sys

LEFT_OUT = {"seconds"}  # wall-clock times differ from run to run


def differences(old, new, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            if not path and key in LEFT_OUT:
                continue
            where = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                found.append(f"{where}: only in {'new' if key not in old else 'old'}")
            else:
                found += differences(old[key], new[key], where)
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for n, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{path}[{n}]")]
    return [] if old == new else [f"{path}: {old!r} != {new!r}"]


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    old, new = (json.loads(open(path).read()) for path in sys.argv[1:])
    found = differences(old, new)
    for line in found:
        print(line)
    fields = len(json.dumps(old))
    print(f"{'differ in ' + str(len(found)) + ' fields' if found else 'identical'} (every field but "
          f"{', '.join(sorted(LEFT_OUT))}; {fields:,} characters of JSON)")  # fmt: skip
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
