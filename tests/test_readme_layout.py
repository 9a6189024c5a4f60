"""The README's layout block lists exactly the files of the package (as ``ls -R paddle_quant`` shows them)."""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "paddle_quant"


def layout_block(readme: str) -> list[str]:
    """The lines of the fenced block under ``## Layout`` that describe ``paddle_quant/``."""
    section = readme.split("## Layout", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1).splitlines()
    start = block.index(f"{PACKAGE}/")
    lines = [block[start]]
    for line in block[start + 1:]:
        if not line.startswith("  "):  # back at column 0: tests/, demos/, ...
            break
        lines.append(line)
    return lines


def listed_paths(lines: list[str]) -> dict[str, str]:
    """Path relative to the repo (folders end in ``/``) -> its description, from an indented tree
    (two spaces per level). A folder stands for a package: its ``__init__.py`` is implied.
    """
    paths, stack = {}, [PACKAGE]
    for line in lines[1:]:
        indent = len(line) - len(line.lstrip(" "))
        if indent % 2:
            raise ValueError(f"odd indentation in layout line {line!r}")
        depth = indent // 2
        name, _, description = line.strip().partition(" ")
        del stack[depth:]
        path = "/".join(stack + [name])
        paths[path] = description.strip()
        if name.endswith("/"):
            paths[path + "__init__.py"] = "(the package's docstring)"
            stack.append(name.rstrip("/"))
    return paths


def package_files(root: pathlib.Path) -> set[str]:
    """Every file and folder (with a trailing ``/``) under ``paddle_quant/``, relative to the repo,
    bytecode caches left out."""
    return {p.relative_to(root).as_posix() + ("/" if p.is_dir() else "") for p in (root / PACKAGE).rglob("*")
            if "__pycache__" not in p.parts}


def test_readme_layout_lists_every_file_of_the_package_and_nothing_else():
    listed = listed_paths(layout_block((REPO / "README.md").read_text(encoding="utf-8")))
    actual = package_files(REPO)
    assert sorted(set(listed) - actual) == [], "listed in README.md's layout but not in the package"
    assert sorted(actual - set(listed)) == [], "in the package but not in README.md's layout"


def test_every_layout_entry_says_what_it_holds():
    listed = listed_paths(layout_block((REPO / "README.md").read_text(encoding="utf-8")))
    assert [path for path, text in listed.items() if not text] == []


def test_layout_parser_sees_a_missing_and_an_extra_file(tmp_path):
    lines = ["paddle_quant/", "  __init__.py   api", "  sub/          a folder", "    a.py        one module"]
    listed = listed_paths(lines)
    assert set(listed) == {"paddle_quant/__init__.py", "paddle_quant/sub/", "paddle_quant/sub/__init__.py",
                           "paddle_quant/sub/a.py"}
    (tmp_path / PACKAGE / "sub").mkdir(parents=True)
    for name in ("__init__.py", "sub/__init__.py", "sub/b.py"):
        (tmp_path / PACKAGE / name).write_text("")
    actual = package_files(tmp_path)
    assert set(listed) - actual == {"paddle_quant/sub/a.py"}
    assert actual - set(listed) == {"paddle_quant/sub/b.py"}


@pytest.mark.parametrize("line", ["   odd.py  three spaces"])
def test_layout_parser_refuses_odd_indentation(line):
    with pytest.raises(ValueError, match="odd indentation"):
        listed_paths(["paddle_quant/", line])
