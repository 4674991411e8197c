#!/usr/bin/env python3
# Copied from the workplace's shared tools (../shared/tools/modcycles.py) so that a fresh clone can run it;
# scripts/test.sh fails the run on any import cycle between the host's top-level modules.
"""Import cycles between the top-level modules of host/src (crate::X references), and the files that make them.
Usage: modcycles.py HOST_SRC   -> prints the cycles; exit 1 if any."""
import os, re, sys, itertools
root = sys.argv[1]
mods = {}
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.endswith(".rs"): continue
        p = os.path.join(dirpath, f); rel = os.path.relpath(p, root)
        top = rel.split(os.sep)[0].removesuffix(".rs")
        if top in ("main", "lib"): continue
        text = open(p).read()
        text = re.split(r"#\[cfg\(test\)\]", text)[0]  # unit tests may reach anywhere
        for m in re.finditer(r"crate::(\w+)", text):
            if m.group(1) != top: mods.setdefault(top, {}).setdefault(m.group(1), set()).add(rel)
        for m in re.finditer(r"use crate::\{([^}]*)\}", text):
            for name in re.findall(r"(?:^|,)\s*(\w+)", m.group(1)):
                if name != top: mods.setdefault(top, {}).setdefault(name, set()).add(rel)
graph = {a: set(b) for a, b in mods.items()}
# strongly connected components (Tarjan)
index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
def visit(v):
    index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
    for w in graph.get(v, ()):
        if w not in index: visit(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
for v in list(graph): 
    if v not in index: visit(v)
for comp in sccs:
    print("cycle among:", " ".join(comp))
    for a, b in itertools.permutations(comp, 2):
        if b in graph.get(a, ()): print(f"  {a} -> {b}: {', '.join(sorted(mods[a][b]))[:200]}")
print(f"{len(sccs)} import cycle(s) among host/src's top-level modules")
sys.exit(1 if sccs else 0)
