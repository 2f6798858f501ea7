"""Import cycles inside fastes/: every import, at module level or inside a function.

    python tools/make/import_cycles.py      # prints each cycle, then "N cycles"; exit 1 if any
"""
import ast, sys
from pathlib import Path
root = Path("fastes")
mods = {}
for p in root.rglob("*.py"):
    name = ".".join(p.with_suffix("").parts)
    if name.endswith(".__init__"): name = name[:-9]
    mods[name] = p
def resolve(cur, node):
    pkg = cur if mods[cur].name == "__init__.py" else cur.rsplit(".", 1)[0]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = pkg
            for _ in range(node.level - 1): base = base.rsplit(".", 1)[0]
            mod = base + ("." + node.module if node.module else "")
        else: mod = node.module or ""
        out = []
        for a in node.names:
            if f"{mod}.{a.name}" in mods: out.append(f"{mod}.{a.name}")
            elif mod in mods: out.append(mod)
        return out
    return [a.name for a in node.names if a.name in mods]
g = {m: set() for m in mods}
for m, p in mods.items():
    for node in ast.walk(ast.parse(p.read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for t in resolve(m, node):
                if t != m and not (t == "fastes" and True): g[m].add(t)
# cycles via DFS (ignore edges to the package root 'fastes', which only re-exports)
import itertools
def cycles():
    found = set()
    def dfs(start, node, path):
        for n in g[node]:
            if n == "fastes": continue
            if n == start: found.add(tuple(path))
            elif n not in path and n > start: dfs(start, n, path + [n])
    for s in g: dfs(s, s, [s])
    return found
cs = cycles()
for c in sorted(cs, key=len): print(" -> ".join(c + (c[0],)))
print(len(cs), "cycles")
sys.exit(1 if cs else 0)
