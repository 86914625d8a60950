#!/usr/bin/env python3
"""Writes the release link's symbol order (link-order.txt) from callgrind profiles.

    scripts/link_order.py BINARY OUT CALLGRIND_FILE...

Keeps every function of BINARY that ran in any profile, hottest first (instructions spent in
the function itself, summed over the profiles). Functions that ran never sit among ones that
never do, so the pages of code the worker touches are few and contiguous: the kernel maps
code 64 KiB around each page it faults in, and with the runtime's hot functions scattered
over 10 MB of text that made ~7 MiB of the binary resident.
"""
import re
import subprocess
import sys
from collections import Counter


def defined_functions(binary: str) -> set[str]:
    out = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout
    return {parts[2] for parts in (line.split() for line in out.splitlines()) if len(parts) == 3 and parts[1] in "tTwW"}


def self_costs(path: str) -> Counter:
    """Instructions per function (self cost) from a callgrind file (`--compress-strings` ids,
    `--dump-line=no`: cost lines are `<line> <Ir>`; the line after `calls=` is a call's
    inclusive cost and belongs to the callee, not to the function that made the call)."""
    names: dict[str, str] = {}
    costs: Counter = Counter()
    current = None
    skip_next = False
    name_ref = re.compile(r"^\((\d+)\)(?: (.*))?$")

    def resolve(ref: str) -> str:
        m = name_ref.match(ref)
        if not m:
            return ref
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), "")

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("fn="):
                current = resolve(line[3:])
                costs.setdefault(current, 0)
            elif line.startswith("cfn="):
                costs.setdefault(resolve(line[4:]), 0)  # ran, even if its cost sits elsewhere
            elif line.startswith("calls="):
                skip_next = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if current is not None and len(parts) >= 2 and parts[1].isdigit():
                    costs[current] += int(parts[1])
    return costs


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    binary, out, profiles = sys.argv[1], sys.argv[2], sys.argv[3:]
    functions = defined_functions(binary)
    total: Counter = Counter()
    for path in profiles:
        for name, cost in self_costs(path).items():
            total[name] += cost
    ran = sorted((name for name in total if name in functions), key=lambda n: (-total[n], n))
    with open(out, "w") as f:
        for name in ran:
            f.write(name + "\n")
    print(f"link_order: {len(ran)} functions that ran (of {len(functions)} in the binary) -> {out}")


if __name__ == "__main__":
    main()
