"""docs/configuration.md is generated from the settings' declarations and kept current; every
setting is declared once, and every variable the code or the scripts read is declared."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from shared.config import ENVIRONMENT_ONLY, RULES, SETTINGS, Setting, Settings, load_settings
from shared.config_docs import PAGE, SCRIPT_VARIABLES, main, render

ROOT = Path(__file__).resolve().parents[2]
ALL_NAMES = [
    *(s.env for s in SETTINGS),
    *(v.env for v in ENVIRONMENT_ONLY),
    *(v.env for v in SCRIPT_VARIABLES),
]


def page_rows(text: str) -> dict[str, list[str]]:
    """The page's table rows by variable: `| \\`NAME\\` | cell | ... |` -> [cell, ...]."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = re.match(r"\| `([A-Z][A-Z0-9_]*)` \|(.*)\|$", line)
        if match:
            cells = re.split(r"(?<!\\)\|", match[2])
            rows[match[1]] = [cell.strip().replace("\\|", "|") for cell in cells]
    return rows


def test_the_page_is_current() -> None:
    assert PAGE.read_text() == render(), (
        "docs/configuration.md is stale: run `python -m shared.config_docs` (or `make docs`)"
    )


def test_check_mode_fails_on_a_stale_page_and_passes_on_a_fresh_one(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    assert main(["--check", "--output", str(page)]) == 1  # missing
    page.write_text(render().replace("`QUOTA_ACTIVE_JOBS` | integer | `20`", "x"))
    assert main(["--check", "--output", str(page)]) == 1  # edited by hand
    assert main(["--output", str(page)]) == 0
    assert main(["--check", "--output", str(page)]) == 0
    assert page.read_text() == render()


def test_every_declared_variable_has_one_row() -> None:
    text = render()
    rows = page_rows(text)
    assert sorted(rows) == sorted(ALL_NAMES)
    for name in ALL_NAMES:
        assert len(re.findall(rf"^\| `{name}` \|", text, re.MULTILINE)) == 1, name


def test_every_settings_field_is_declared_exactly_once() -> None:
    """Each field is one declaration; no variable is declared twice, in any table."""
    assert [s.attribute for s in SETTINGS] == [f.name for f in fields(Settings)]
    duplicates = {name for name in ALL_NAMES if ALL_NAMES.count(name) > 1}
    assert not duplicates


def test_declarations_are_complete() -> None:
    for declared in [*SETTINGS, *ENVIRONMENT_ONLY, *SCRIPT_VARIABLES]:
        assert declared.description.strip(), declared.env
        assert "\n" not in declared.description, declared.env
    for setting in SETTINGS:
        assert setting.parser.kind, setting.env
    assert {rule.env for rule in RULES} <= {s.env for s in SETTINGS}


@pytest.mark.parametrize(
    "setting", [s for s in SETTINGS if not s.shown_default], ids=lambda s: s.env
)
def test_the_shown_default_is_what_an_operator_gets(setting: Setting) -> None:
    """The page's default, set as the variable, gives the default the code uses (settings
    whose default is worked out at load time say so in words instead)."""
    loaded = getattr(load_settings({}), setting.attribute)
    assert setting.default == loaded
    shown = setting.parser.show(loaded)
    row = page_rows(PAGE.read_text())[setting.env]
    assert row[1] == (f"`{shown}`" if shown else "(none)")
    if shown:
        assert setting.parser(setting.env, shown) == loaded


def _read_by_code() -> set[str]:
    """Variables the processes' code reads from the environment by name (os.environ, or a
    mapping named `environ` standing for it; not a WSGI request's environ)."""
    pattern = re.compile(
        r"""(?:(?:os\.|(?<![\w.]))environ(?:\.get\(|\[)|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']"""
    )
    paths = [ROOT / "celeryconfig.py"]
    for package in ("api", "workers", "shared"):
        paths += sorted((ROOT / package).rglob("*.py"))
    return {name for path in paths for name in pattern.findall(path.read_text())}


def _read_by_scripts() -> set[str]:
    """Variables the shell scripts and compose files read with a default or a demand
    (`${NAME:-...}`, `${NAME:?...}`), except those a script only sets for itself."""
    paths = [*sorted((ROOT / "scripts").glob("*.sh")), ROOT / "docker-compose.yml"]
    paths += sorted((ROOT / "deploy" / "compose").glob("*.yml"))
    names: set[str] = set()
    for path in paths:
        text = path.read_text()
        for name in set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):?[-?=]", text)):
            own = re.search(rf"^\s*(?:export\s+)?{name}=(.*)$", text, re.MULTILINE)
            if own and "${" + name not in own[1]:
                continue  # set by the script itself (NO_BUILD), not read from the caller
            names.add(name)
    return names


def test_every_variable_the_code_reads_is_declared() -> None:
    code = _read_by_code()
    assert {"DOCKER_HOST", "PROMETHEUS_MULTIPROC_DIR", "FLOWER_BASIC_AUTH"} <= code  # the scan
    assert code - set(ALL_NAMES) == set()


def test_every_variable_the_scripts_read_is_declared() -> None:
    scripts = _read_by_scripts()
    assert {"API_WORKERS", "TEST_DATABASE_URL", "PLATFORM_IMAGE"} <= scripts  # the scan works
    assert scripts - set(ALL_NAMES) == set()


def test_script_defaults_are_the_scripts_own() -> None:
    """A script variable's default on the page is the one its scripts and compose files
    fall back to (`${NAME:-default}`), wherever that default is a literal."""
    paths = [*sorted((ROOT / "scripts").glob("*.sh")), ROOT / "docker-compose.yml"]
    paths += sorted((ROOT / "deploy" / "compose").glob("*.yml"))
    texts = [path.read_text() for path in paths]
    checked = 0
    for variable in SCRIPT_VARIABLES:
        if not re.fullmatch(r"`[^`]+`", variable.shown_default):
            continue
        for text in texts:
            for default in re.findall(rf"\$\{{{variable.env}:-([^}}$]*)\}}", text):
                assert f"`{default}`" == variable.shown_default, variable.env
                checked += 1
    assert checked >= 20


def test_no_other_page_documents_a_setting_by_hand() -> None:
    """The README and the other docs pages link to the configuration page rather than keep
    their own table of settings (a row whose first cell is a declared variable)."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for path in pages:
        if path == PAGE or not path.exists():
            continue
        tabled = sorted(set(page_rows(path.read_text())) & set(ALL_NAMES))
        assert not tabled, f"{path.relative_to(ROOT)} has its own rows for {tabled}"
