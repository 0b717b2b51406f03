"""mkdocs hook: one API reference page per top-level module or package of textgym and agents.

The pages are generated at build time (``::: module``, packages with their submodules), so a
new module appears in the reference without anyone listing it; the modules are found on disk,
nothing is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("textgym", "agents")


def modules() -> list[str]:
    """``textgym``, ``textgym.env``, ... : each package, then its top-level modules and
    subpackages in name order (private ones, ``_x``, left out)."""
    names = []
    for package in PACKAGES:
        names.append(package)
        for path in sorted((ROOT / package).iterdir()):
            if path.name.startswith("_"):
                continue
            if path.suffix == ".py" or (path / "__init__.py").is_file():
                names.append(f"{package}.{path.stem}")
    return names


def page(module: str) -> str:
    submodules = (ROOT / module.replace(".", "/") / "__init__.py").is_file()
    options = "\n    options:\n      show_submodules: true" if submodules and "." in module else ""
    return f"# `{module}`\n\n::: {module}{options}\n"


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    sections: dict[str, list[dict[str, str]]] = {p: [] for p in PACKAGES}
    for module in modules():
        sections[module.split(".")[0]].append({module: f"reference/{module}.md"})
    config.nav.append({"API reference": [{p: sections[p]} for p in PACKAGES]})
    return config


def on_files(files: Files, config: MkDocsConfig, **_: Any) -> Files:
    for module in modules():
        files.append(File.generated(config, f"reference/{module}.md", content=page(module)))
    return files
