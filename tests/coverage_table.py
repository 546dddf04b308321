#!/usr/bin/python3
"""Prints line and branch coverage per module (top-level folder) from an
lcov tracefile, as a Markdown table, then the functions of the modules
given with --functions under a branch-coverage threshold.

Usage: tests/coverage_table.py build-cov/coverage.info [--root DIR]
"""
import argparse
import os
import sys


def parse(path, root):
    """{file: dict(lf, lh, brf, brh, fn=[(start line, name)], br=[(line, taken)])}
    for the files under root, from the DA and BRDA records (lcov 1.16 wrote
    no LF/LH summaries with branch coverage on)."""
    files, cur = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("SF:"):
                name = os.path.relpath(line[3:], root)
                cur = None if name.startswith("..") or "/gen/" in name or name.startswith(
                    ("tests/", "bench/", "build")) else files.setdefault(
                        name, dict(lf=0, lh=0, brf=0, brh=0, fn=[], br=[], da={}))
            elif cur is None:
                continue
            elif line.startswith("DA:"):
                ln, cnt = line[3:].split(",")[:2]
                cur["da"][int(ln)] = max(cur["da"].get(int(ln), 0), int(cnt))
            elif line.startswith("BRDA:"):
                ln, _, _, taken = line[5:].split(",")
                cur["br"].append((int(ln), taken not in ("-", "0")))
            elif line.startswith("FN:"):
                ln, name = line[3:].split(",", 1)
                cur["fn"].append((int(ln), name))
    for c in files.values():
        c["lf"] = len(c["da"])
        c["lh"] = sum(1 for v in c["da"].values() if v > 0)
        c["brf"] = len(c["br"])
        c["brh"] = sum(1 for _, t in c["br"] if t)
    return files


def functions(c):
    """[(name, branches, taken)] of one file: a branch belongs to the
    function whose first line is the closest one above it."""
    fns = sorted(set(c["fn"]))
    out = {}
    for ln, taken in c["br"]:
        owner = None
        for start, name in fns:
            if start <= ln:
                owner = name
            else:
                break
        if owner:
            f = out.setdefault(owner, [0, 0])
            f[0] += 1
            f[1] += taken
    return [(n, v[0], v[1]) for n, v in out.items()]


def pct(h, f):
    return "%.1f%%" % (100.0 * h / f) if f else "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("info")
    ap.add_argument("--root", default=os.getcwd())
    ap.add_argument("--functions", nargs="*", default=[],
                    help="files whose functions (10+ branches) under --below %% of branches "
                    "are listed")
    ap.add_argument("--below", type=float, default=80.0)
    a = ap.parse_args()
    files = parse(a.info, os.path.abspath(a.root))
    if not files:
        sys.exit("coverage_table: no source files of this tree in %s" % a.info)
    mods = {}
    for name, c in files.items():
        m = mods.setdefault(name.split("/", 1)[0], dict(lf=0, lh=0, brf=0, brh=0))
        for k in m:
            m[k] += c[k]
    total = {k: sum(m[k] for m in mods.values()) for k in ("lf", "lh", "brf", "brh")}
    print("| module | lines | line coverage | branches | branch coverage |")
    print("|---|---:|---:|---:|---:|")
    for name in sorted(mods):
        m = mods[name]
        print("| %s | %d | %s | %d | %s |" % (name, m["lf"], pct(m["lh"], m["lf"]), m["brf"],
                                            pct(m["brh"], m["brf"])))
    print("| **all** | %d | **%s** | %d | **%s** |" % (total["lf"], pct(total["lh"], total["lf"]),
                                                      total["brf"],
                                                      pct(total["brh"], total["brf"])))
    low = []
    for path in a.functions:
        c = files.get(path)
        if c is None:
            print("(%s: not in the tracefile)" % path)
            continue
        for name, n, hit in functions(c):
            if n >= 10 and 100.0 * hit / n < a.below:
                low.append((100.0 * hit / n, path, name, n))
    if a.functions:
        print()
        print("functions of %s under %.0f%% of branches:" % (", ".join(a.functions), a.below))
        for p_, path, name, n in sorted(low):
            print("  %5.1f%% of %3d  %s %s" % (p_, n, path, name))
        if not low:
            print("  none")


if __name__ == "__main__":
    main()
