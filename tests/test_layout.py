"""The project's shape: package boundaries as the design fixes them, the
feature folders inside fallback/ and the directions they may import in, no
import circles anywhere, and an appliance image whose COPY sources exist (no
Docker engine runs in CI)."""

from __future__ import annotations

import ast
import glob
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fallback", "sync", "printing", "cloudsim")

# package -> the project modules it may import (a package name allows the
# modules inside it too)
ALLOWED = {
    "sync": set(),
    "printing": set(),
    "fallback": {"sync", "printing"},
    # cloudsim speaks the contract through sync.contract, and draws its
    # register from sync.synthetic: the generator is part of Sonae because
    # the appliance's drills load their synthetic register from the same
    # model, and the production image ships without cloudsim.
    "cloudsim": {"sync.contract", "sync.synthetic"},
}

# Inside fallback/: the shared base, the shell that collects the features,
# and the features from the bottom up. A feature's services may import the
# base and the features listed before it; its faces (web views, the JSON
# API, CLI commands, the report a feature writes) may import any feature's
# services, never another feature's faces. The README's architecture section shows the same table.
BASE = {"config", "errors", "keys", "ops", "audit", "audit_writer", "anchor", "db", "paper", "documents", "cli_support", "access", "disk", "clock"}
SHELL = {"app", "cli", "banner", "filters", "serve", "connection_shares", "worker", "worker_command", "key_commands", "ops_commands"}
FEATURES = ("staff", "mirror", "deferred", "drills", "modes", "holds", "counter", "filings", "monitoring", "runbooks", "residents",
            "reentry", "maintenance", "recovery", "verification")
NEVER_IMPORTED = {"demo"}
FACE = re.compile(r"^(views|api|commands|report|\w+_views|\w+_commands)$")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules one file imports: `from a.b import c` is a.b.c
    when that is a module, else a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def module_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: {m for m in imports_of(path, modules) if m in modules and m != name} for name, path in modules.items()}


def project_imports(package: str) -> set[str]:
    modules = all_modules()
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        found |= {name for name in imports_of(path, modules) if name.split(".")[0] != package}
    return found


def allowed_import(name: str, allowed: set[str]) -> bool:
    return any(name == entry or name.startswith(entry + ".") for entry in allowed)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_design_allows(package):
    wrong = {name for name in project_imports(package) if not allowed_import(name, ALLOWED[package])}
    assert not wrong, f"{package} must not import {sorted(wrong)}"


def test_an_allowed_package_allows_its_modules_and_nothing_beside_it():
    assert allowed_import("sync.synthetic.synth", ALLOWED["cloudsim"]) and allowed_import("sync.contract", ALLOWED["cloudsim"])
    assert not allowed_import("sync.loader", ALLOWED["cloudsim"]) and not allowed_import("sync.synthetics", ALLOWED["cloudsim"])
    assert not allowed_import("fallback.drills", ALLOWED["cloudsim"])


def test_nothing_imports_cloudsim():
    for package in ("fallback", "sync", "printing"):
        assert not {n for n in project_imports(package) if n.startswith("cloudsim")}


def test_the_sonae_distribution_ships_the_synthetic_register_and_its_data():
    """Drills draw their register in the appliance, whose image has no
    cloudsim: the generator and its reference data are sonae's own (the
    package-data patterns are globbed as setuptools globs them)."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert any(re.fullmatch(pattern.replace(".", r"\.").replace("*", ".*"), "sync.synthetic")
               for pattern in setuptools["packages"]["find"]["include"])
    package = ROOT / "sync" / "synthetic"
    shipped = {Path(path) for pattern in setuptools["package-data"]["*"] for path in glob.glob(str(package / pattern), recursive=True)}
    data = {path for path in (package / "data").rglob("*") if path.is_file()}
    assert data and data <= shipped, f"not shipped: {sorted(map(str, data - shipped))}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_circle_and_only_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_module_imports_itself_through_others():
    """Type-checking-only imports count too: a circle is a circle for the
    reader whether or not Python executes it."""
    cycle = find_cycle(module_graph())
    assert cycle is None, "import circle: " + " → ".join(cycle)


def place(module: str) -> tuple[str, str]:
    """(area, kind) of a fallback module: area is a feature, 'base',
    'shell' or 'demo'; kind is 'face' or 'service'."""
    parts = module.split(".")[1:]
    if not parts:
        return "base", "service"
    if parts[0] in BASE:
        return "base", "service"
    if parts[0] in SHELL:
        return "shell", "face"
    area = parts[0]
    kind = "face" if len(parts) > 1 and FACE.match(parts[-1]) else "service"
    return area, kind


def test_every_fallback_module_has_a_place():
    for name in module_graph():
        if name.startswith("fallback."):
            area, _ = place(name)
            assert area in ("base", "shell", *FEATURES, *NEVER_IMPORTED), f"{name} is in no known area of fallback/"
    folders = {p.name for p in (ROOT / "fallback").iterdir() if (p / "__init__.py").exists()}
    assert folders == set(FEATURES) | NEVER_IMPORTED, "feature folders and the table above differ"


def fallback_import_violations(graph: dict[str, set[str]]) -> list[str]:
    rank = {feature: i for i, feature in enumerate(FEATURES)}
    wrong = []
    for source, targets in graph.items():
        if not source.startswith("fallback."):
            continue
        src_area, src_kind = place(source)
        for target in sorted(t for t in targets if t.startswith("fallback.")):
            dst_area, dst_kind = place(target)
            if dst_area in NEVER_IMPORTED and src_area not in NEVER_IMPORTED:
                wrong.append(f"{source} imports {target}: nothing in the appliance imports the demo")
            elif src_area == "base" and dst_area != "base":
                wrong.append(f"{source} imports {target}: the base stands under every feature")
            elif dst_area == "shell" and src_area not in ("shell", *NEVER_IMPORTED):
                wrong.append(f"{source} imports {target}: features do not import the shell that collects them")
            elif src_area in rank and dst_area in rank and src_area != dst_area:
                if dst_kind == "face":
                    wrong.append(f"{source} imports {target}: another feature's face")
                elif src_kind == "service" and rank[dst_area] > rank[src_area]:
                    wrong.append(f"{source} imports {target}: {src_area} stands below {dst_area}")
    return wrong


def test_fallback_features_import_in_the_allowed_directions():
    wrong = fallback_import_violations(module_graph())
    assert not wrong, "\n".join(wrong)


def test_the_direction_check_catches_each_kind_of_wrong_import():
    graph = {
        "fallback.ops": {"fallback.counter.issuance"},
        "fallback.drills": {"fallback.counter.lookup"},
        "fallback.recovery.views": {"fallback.counter.views"},
        "fallback.counter.lookup": {"fallback.app"},
        "fallback.counter.issuance": {"fallback.demo.site"},
        "fallback.counter.views": {"fallback.recovery"},
    }
    wrong = fallback_import_violations(graph)
    assert len(wrong) == 5, wrong  # a face may import a higher feature's service: the last is allowed
    assert not [w for w in wrong if w.startswith("fallback.counter.views")]


def test_dockerfile_copies_what_exists():
    dockerfile = (ROOT / "Dockerfile").read_text()
    sources = []
    for line in dockerfile.splitlines():
        match = re.match(r"^COPY\s+(?!--from)(.+)\s+\S+$", line.strip())
        if match:
            sources += match.group(1).split()
    assert sources, "the Dockerfile copies nothing"
    missing = [s for s in sources if not (ROOT / s).exists()]
    assert not missing, f"COPY sources missing: {missing}"
    assert re.search(r"^USER\s+(?!root)\S+", dockerfile, re.M), "the image must run as a non-root user"
    assert 'VOLUME ["/var/lib/sonae"]' in dockerfile
    assert re.search(r'^CMD \["sonae", "serve"\]$', dockerfile, re.M), "the port and address come from web.port and web.host"
    # A base named by a build argument (a ward's registry mirror) is pinned by that argument's default.
    defaults = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", dockerfile, re.M))
    bases = [re.sub(r"^\$\{(\w+)\}$", lambda m: defaults.get(m.group(1), m.group(0)), base)
             for base in re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)]
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, re.M))
    external = [base for base in bases if base not in stages]
    assert external and all(re.search(r"@sha256:[0-9a-f]{64}$", base) for base in external), f"base images not pinned by digest: {external}"


def test_readme_has_exactly_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    before, block = readme.split("## Two commands", 1)[1].split("```sh", 1)
    block = block.split("```", 1)[0]
    # the prerequisites a minimal Debian 12 lacks come first, in one line
    prerequisites = re.search(r"`apt-get update && apt-get install -y ([^`]+)`", before)
    assert prerequisites and {"make", "git", "python3"} <= set(prerequisites.group(1).split())
    commands = [line for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert [c.split("#")[0].strip() for c in commands] == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_import_table_matches_the_test():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Inside fallback/", 1)[1].split("| folder |", 1)[1].split("\n\n", 1)[0]
    rows = [re.match(r"\| `(\w+)/?`", line).group(1) for line in table.splitlines() if line.startswith("| `")]
    assert rows == ["base", *FEATURES, "shell", "demo"]

