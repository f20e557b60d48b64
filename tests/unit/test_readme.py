"""The README documents every interface a newcomer uses: each setting, each CLI command, each REST
route. A new one added without its line in the README fails here (docs drift otherwise)."""

from __future__ import annotations

import re
from pathlib import Path

from ivrserver import cli, config
from tests.cli_harness import leaf_commands

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [key for key, _, _ in config.describe() if f"`{key}`" not in README]
    assert not missing, f"settings missing from the README's Configuration table: {missing}"


def test_every_cli_command_is_in_the_command_line_table() -> None:
    table = README[README.index("## Command line"):README.index("## IVR menus")]
    missing = [" ".join(path) for path, _ in leaf_commands(cli.build_parser())
               if f"ivrserver {' '.join(path)}" not in table and not _listed_with_a_slash(table, path)]
    assert not missing, f"commands missing from the README's Command line table: {missing}"


def _listed_with_a_slash(table: str, path: tuple[str, ...]) -> bool:
    """`ivrserver customers import FILE` / `export …` / `show ID`: siblings share one row."""
    if len(path) < 2:
        return False
    row = next((line for line in table.splitlines()
                if line.startswith("|") and f"ivrserver {' '.join(path[:-1])} " in line), "")
    return re.search(rf"/ `{re.escape(path[-1])}\b", row) is not None


def test_every_rest_route_is_in_the_rest_table() -> None:
    import yaml

    document = yaml.safe_load((Path(cli.__file__).parent / "web" / "openapi.yaml").read_text(encoding="utf-8"))
    table = README[README.index("## REST API"):README.index("## Tests")]
    missing = []
    for path, operations in document["paths"].items():
        for method in operations:
            if method.startswith("x-") or method == "parameters":
                continue
            shown = re.sub(r"\{[^}]+\}", "{…}", path)
            if not any(_documents(row, method.upper(), shown) for row in table.splitlines() if row.startswith("| `")):
                missing.append(f"{method.upper()} {path}")
    assert not missing, f"routes missing from the README's REST API table: {missing}"


def _documents(row: str, method: str, path: str) -> bool:
    """Whether the first cell of a table row names `method path` (`GET/PUT /x`, `GET /a`, `GET /b`)."""
    cell = re.sub(r"\{[^}]+\}", "{…}", row.split("|")[1])
    for span in re.findall(r"`([^`]+)`", cell):
        methods, _, where = span.partition(" ")
        if method in methods.split("/") and where.split("?")[0] == path:
            return True
    return False
