"""The module graph of src/: no import cycle (imports inside functions count), and src/utils.py, the
paper's API, is imported by no module of src/ (so it can never be part of a cycle)."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _graph():
    mods = {p.stem: p for p in SRC.glob("*.py") if p.stem != "__init__"}
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = [node.module] if node.module else [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("src"):
                rest = node.module.split(".")[1:]
                targets = rest[:1] if rest else [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("src.")]
            else:
                continue
            graph[m] |= {t.split(".")[0] for t in targets if t and t.split(".")[0] in mods and t != m}
    return graph


def test_no_import_cycle_in_src():
    graph, state, cycles = _graph(), {}, []

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_utils_is_imported_by_no_module_of_src():
    graph = _graph()
    assert "utils" in graph and not [m for m, deps in graph.items() if "utils" in deps]
    assert {"cka", "local_cka", "matching", "retrieval", "draws", "baselines"} <= graph["utils"]
