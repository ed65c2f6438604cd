"""The layering rules of DESIGN.md, checked by package prefix.

Every module under C{sipproxy/} is found by walking the tree, so a new
module is checked the day it is added, with no list to keep:

- C{sipproxy.sip} (pure) imports nothing from Twisted, zope or the rest of
  the package;
- the logic packages (proxy, registrar, access, ua) never import the
  transport, the stores or the app, and never load the reactor;
- nothing imports C{sipproxy.app} but C{sipproxy.app} itself (the twistd
  plugin names it by string, and C{sipproxy}'s lazy names import it only
  when asked).
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator

from twisted.trial.unittest import SynchronousTestCase

import sipproxy

PACKAGE_DIR = os.path.dirname(os.path.abspath(sipproxy.__file__))
PURE = "sipproxy.sip"
LOGIC = ("sipproxy.proxy", "sipproxy.registrar", "sipproxy.access", "sipproxy.ua")
EDGES = ("sipproxy.transport", "sipproxy.stores", "sipproxy.app")
APP = "sipproxy.app"
#: the safe logger, log fields and counter labels every layer above the pure one uses
OBSERVE = "sipproxy.observe"


def within(module: str, prefixes: "str | tuple[str, ...]") -> bool:
    """Whether C{module} is one of C{prefixes} or inside one of them."""
    if isinstance(prefixes, str):
        prefixes = (prefixes,)
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def all_modules() -> Iterator[tuple[str, str]]:
    """(dotted name, path) of every module of the package."""
    for folder, dirs, files in os.walk(PACKAGE_DIR):
        dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
        relative = os.path.relpath(folder, os.path.dirname(PACKAGE_DIR))
        package = relative.replace(os.sep, ".")
        for name in sorted(files):
            if name.endswith(".py"):
                stem = name[:-3]
                yield (package if stem == "__init__" else f"{package}.{stem}"), os.path.join(folder, name)


def imports_of(module: str, path: str) -> set[str]:
    """Every module C{module} imports, at the top or inside a function."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            # "from sipproxy.nat import relay" imports sipproxy.nat.relay
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def arrows() -> dict[str, set[str]]:
    """Each sipproxy module to the sipproxy modules it imports."""
    graph = {}
    for module, path in all_modules():
        graph[module] = {name for name in imports_of(module, path) if within(name, "sipproxy")}
    return graph


def modules_after_import(names: list[str]) -> list[str]:
    """What a fresh interpreter has loaded after importing C{names}."""
    code = ("import json, sys\n" + "".join(f"import {name}\n" for name in names)
            + "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


class LayerTests(SynchronousTestCase):
    def test_walk_finds_every_layer(self) -> None:
        """The walk sees the layers the design draws (a check that the
        other checks are looking at something)."""
        modules = {m for m, _ in all_modules()}
        for package in (PURE, *LOGIC[:3], *EDGES, "sipproxy.nat"):
            self.assertIn(package, modules)
        self.assertGreater(len(modules), 40)

    def test_pure_layer_imports_only_itself(self) -> None:
        wrong = {m: sorted(n for n in targets if not within(n, PURE) and n != "sipproxy")
                 for m, targets in arrows().items() if within(m, PURE)}
        self.assertEqual({m: t for m, t in wrong.items() if t}, {})

    def test_pure_layer_loads_no_twisted(self) -> None:
        pure = sorted(m for m, _ in all_modules() if within(m, PURE))
        loaded = modules_after_import(pure)
        self.assertEqual([m for m in loaded if m.startswith(("twisted", "zope"))], [])
        self.assertEqual([m for m in loaded if within(m, "sipproxy") and not within(m, PURE) and m != "sipproxy"], [])

    def test_observe_imports_only_the_pure_layer_and_the_interfaces(self) -> None:
        """What every layer logs and counts with sits just above the pure
        layer: it must not reach up into logic, edges or wiring."""
        allowed = (PURE, OBSERVE, "sipproxy.interfaces")
        wrong = {m: sorted(n for n in targets if not within(n, allowed) and n != "sipproxy")
                 for m, targets in arrows().items() if within(m, OBSERVE)}
        self.assertEqual({m: t for m, t in wrong.items() if t}, {})
        loaded = modules_after_import(sorted(m for m, _ in all_modules() if within(m, OBSERVE)))
        self.assertNotIn("twisted.internet.reactor", loaded)

    def test_nothing_but_packages_sits_flat(self) -> None:
        """A reader sees the architecture from C{ls sipproxy/}: every
        module lives in its layer's folder but the seams and the fakes."""
        flat = sorted(m for m, _ in all_modules() if m.count(".") == 1)
        folders = {m for m, p in all_modules() if p.endswith("__init__.py")}
        self.assertEqual([m for m in flat if m not in folders], ["sipproxy.interfaces", "sipproxy.testing"])

    def test_logic_never_imports_transport_stores_or_app(self) -> None:
        wrong = {m: sorted(n for n in targets if within(n, EDGES))
                 for m, targets in arrows().items() if within(m, LOGIC) and not within(m, "sipproxy.ua.media")}
        self.assertEqual({m: t for m, t in wrong.items() if t}, {})

    def test_logic_does_not_load_the_reactor(self) -> None:
        logic = sorted(m for m, _ in all_modules() if within(m, LOGIC) and not within(m, "sipproxy.ua.media"))
        loaded = modules_after_import(logic)
        self.assertNotIn("twisted.internet.reactor", loaded)
        self.assertEqual([m for m in loaded if within(m, EDGES)], [])

    def test_nothing_imports_the_app_but_the_app(self) -> None:
        wrong = {m: sorted(n for n in targets if within(n, APP))
                 for m, targets in arrows().items() if not within(m, APP)}
        self.assertEqual({m: t for m, t in wrong.items() if t}, {})

    def test_edges_never_import_each_others_wiring(self) -> None:
        """Transport and stores sit side by side: neither imports the other."""
        graph = arrows()
        for one, other in (("sipproxy.transport", "sipproxy.stores"), ("sipproxy.stores", "sipproxy.transport")):
            wrong = {m: sorted(n for n in t if within(n, other)) for m, t in graph.items() if within(m, one)}
            self.assertEqual({m: t for m, t in wrong.items() if t}, {})

    def test_the_checker_sees_a_wrong_arrow(self) -> None:
        """The import finder catches both spellings, at any depth."""
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "example.py")
            with open(path, "w") as f:
                f.write("def later():\n    from sipproxy.app import tap\n    import sipproxy.stores.sqlite\n")
            found = imports_of("sipproxy.proxy.example", path)
        self.assertIn("sipproxy.app.tap", found)
        self.assertIn("sipproxy.stores.sqlite", found)

    def test_top_level_names(self) -> None:
        for name in sipproxy.__all__:
            self.assertIsNotNone(getattr(sipproxy, name), name)
        with self.assertRaises(AttributeError):
            getattr(sipproxy, "NoSuchThing")
