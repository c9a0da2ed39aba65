"""The import structure: no cycle in bot/, the contracts hold, the docs draw the contracts.

grimp builds the graph the way import-linter does, counting imports under TYPE_CHECKING
and inside functions: a cycle hidden in either still makes the modules depend on each
other, so it counts here too.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def bot_graph() -> grimp.ImportGraph:
    return grimp.build_graph("bot")


def cycles(graph: grimp.ImportGraph, package: str = "bot") -> list[list[str]]:
    """Strongly connected groups of more than one module (or a module importing itself), by Tarjan."""
    modules = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    edges = {m: sorted(d for d in graph.find_modules_directly_imported_by(m) if d in modules) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        # Iterative, so a long chain of imports cannot hit the recursion limit.
        work = [(start, 0)]
        while work:
            module, position = work.pop()
            if position == 0:
                index[module] = low[module] = counter
                counter += 1
                stack.append(module)
                on_stack.add(module)
            targets = edges[module]
            if position < len(targets):
                work.append((module, position + 1))
                target = targets[position]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[module] = min(low[module], index[target])
                continue
            if low[module] == index[module]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == module:
                        break
                if len(group) > 1 or module in edges[module]:
                    found.append(sorted(group))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])

    for module in modules:
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_in_bot() -> None:
    assert cycles(bot_graph()) == []


def test_the_graph_counts_type_checking_and_function_level_imports() -> None:
    graph = bot_graph()
    # bot/background.py imports the core only under TYPE_CHECKING.
    assert graph.direct_import_exists(importer="bot.background", imported="bot.core")
    # bot/context.py imports the Kubernetes adapter inside the property that creates it.
    assert graph.direct_import_exists(importer="bot.context", imported="bot.adapters.kubernetes")


def test_a_cycle_is_found() -> None:
    graph = bot_graph()
    # The kind of circle the layers removed: an interface reaching up to the service behind it.
    graph.add_import(importer="bot.ports", imported="bot.escalation.service", line_number=1,
                     line_contents="from bot.escalation.service import EscalationService")
    found = cycles(graph)
    assert len(found) == 1
    assert {"bot.ports", "bot.escalation.service"} <= set(found[0])


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "0 broken" in done.stdout


def contract_layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (core,) = [c for c in contracts if c.get("containers") == ["bot"]]
    assert core["type"] == "layers" and core["exhaustive"] is True
    return list(core["layers"])


def test_the_architecture_diagram_draws_the_contract() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Layers", 1)[1].split("```mermaid", 1)[1].split("```", 1)[0]
    drawn = re.findall(r'^\s*L\d+\["([^"]+)"\]', section, re.MULTILINE)
    assert drawn == contract_layers()
    chain = re.search(r"^\s*(L1(?: --> L\d+)+)\s*$", section, re.MULTILINE)
    assert chain is not None
    assert chain.group(1) == " --> ".join(f"L{i}" for i in range(1, len(drawn) + 1))
