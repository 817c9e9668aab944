"""The rules file: it loads, every id it and the structure checks give has an extension, and a
broken file is refused with a message saying where."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest

from azuld.identify import IDENTIFY_VERSION
from azuld.identify.engine import resolve_signatures
from azuld.identify.rules import RULES, load_rules

SOURCE = (files("azuld.identify") / "rules.toml").read_text()


def test_the_shipped_rules_load() -> None:
    assert RULES.version == IDENTIFY_VERSION == 2
    assert load_rules(SOURCE.encode()) == RULES
    png = next(s for s in RULES.signatures if s.id == "image/png")
    assert png.prefixes == (b"\x89PNG\r\n\x1a\n",)
    (tar,) = (s for s in RULES.signatures if s.id == "archive/tar")
    assert (tar.prefixes, tar.offset) == ((b"ustar",), 257)


def test_every_id_the_structure_checks_give_has_an_extension() -> None:
    # The checks' ids are written in structure.py, not in the rules file: find them there.
    structure = (files("azuld.identify") / "structure.py").read_text()
    produced = set(
        re.findall(r'"((?:executable|archive|code|document|android|ios|java)/[\w/-]+)"', structure)
    )
    produced |= {
        f"executable/windows/{kind}{width}" for kind in ("pe", "dll") for width in (32, 64)
    }
    produced |= {f"executable/linux/{kind}{width}" for kind in ("elf", "so") for width in (32, 64)}
    assert "archive/cart" in produced
    assert produced <= RULES.extensions.keys(), produced - RULES.extensions.keys()


def _broken(old: str, new: str) -> bytes:
    assert old in SOURCE
    return SOURCE.replace(old, new, 1).encode()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("version = 2", "version = 2\nverson = 3", "unknown field"),
        (
            'id = "image/png"',
            'id = "image/pong"',
            r"without an \[extensions\] entry: \['image/pong'\]",
        ),
        ("{ bytes = ['CART'], check = \"cart\" }", "{ bytes = ['CART'] }", r"signatures\[7\]"),
        ("['ITSF']", "['ITSF\u00e9']", "not ASCII bytes"),
        ("magic = 'sgml'", "magic = 'sgml('", r"rules\[\d+\] \(code/sgml\): bad pattern"),
        ("'(?im)\\$_\\.'", "'(?im)\\$_\\.['", r"text.ps_weak\[2\]: bad pattern"),
    ],
)
def test_a_broken_rules_file_is_refused(old: str, new: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_rules(_broken(old, new))


def test_a_signature_with_an_unknown_check_is_refused() -> None:
    rules = load_rules(_broken('check = "cart"', 'check = "carton"'))
    with pytest.raises(ValueError, match=r"unknown checks \['carton'\]"):
        resolve_signatures(rules)
