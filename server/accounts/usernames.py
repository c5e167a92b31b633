"""Look-alike usernames: the confusable skeleton of a name (after Unicode TR39).

Two names whose skeletons are equal look alike (``a1ice`` and ``alice``, ``rnallory`` and
``mallory``); the relay stores each account's skeleton under a unique index and refuses a
registration whose skeleton is taken (``docs/protocol-relay.md``, "Look-alike usernames").

``skeleton(name)`` follows UTS #39 §4 ("skeleton"): NFD, replace every character by its
prototype from the confusables table, NFD again. Then, because the relay compares names
case-insensitively, the result is lower-cased (so ``0`` → ``O`` → ``o``).

The table below is a vendored subset of ``confusables.txt`` (Unicode Security Mechanisms,
UTS #39, https://www.unicode.org/Public/security/latest/confusables.txt; © Unicode, Inc.,
Unicode License v3): every entry whose prototype is ASCII among ASCII, Latin, Cyrillic and
Greek characters that look like lowercase letters, digits or the capitals they map through.
``_VOX_EXTRA`` adds three multi-letter look-alikes that TR39 does not list (``w``/``vv``,
``d``/``cl``) — documented, and they only ever make the rule stricter. Usernames are
ASCII (``^[a-z0-9_.-]{3,32}$``) today; the non-ASCII entries keep the rule sound if that
ever widens, and are tested.
"""

from __future__ import annotations

import unicodedata

__all__ = ["CONFUSABLES", "skeleton"]

#: character → prototype (subset of UTS #39 confusables.txt, see the module docstring).
CONFUSABLES: dict[str, str] = {
    # ASCII
    "0": "O",  # DIGIT ZERO → LATIN CAPITAL LETTER O
    "1": "l",  # DIGIT ONE → LATIN SMALL LETTER L
    "I": "l",  # LATIN CAPITAL LETTER I → LATIN SMALL LETTER L
    "|": "l",  # VERTICAL LINE → LATIN SMALL LETTER L
    "m": "rn",  # LATIN SMALL LETTER M → r, n
    # Latin
    "\u0131": "i",  # LATIN SMALL LETTER DOTLESS I
    "\u0251": "a",  # LATIN SMALL LETTER ALPHA
    "\u0261": "g",  # LATIN SMALL LETTER SCRIPT G
    "\u2113": "l",  # SCRIPT SMALL L
    "\u01c0": "l",  # LATIN LETTER DENTAL CLICK
    # Cyrillic
    "\u0430": "a",  # а
    "\u0435": "e",  # е
    "\u043e": "o",  # о
    "\u0440": "p",  # р
    "\u0441": "c",  # с
    "\u0443": "y",  # у
    "\u0445": "x",  # х
    "\u0455": "s",  # ѕ
    "\u0456": "i",  # і
    "\u0458": "j",  # ј
    "\u0501": "d",  # ԁ
    "\u04bb": "h",  # һ
    "\u04cf": "l",  # ӏ
    "\u051b": "q",  # ԛ
    "\u051d": "w",  # ԝ
    "\u0410": "A",  # А
    "\u0412": "B",  # В
    "\u0415": "E",  # Е
    "\u041a": "K",  # К
    "\u041c": "M",  # М
    "\u041d": "H",  # Н
    "\u041e": "O",  # О
    "\u0420": "P",  # Р
    "\u0421": "C",  # С
    "\u0422": "T",  # Т
    "\u0425": "X",  # Х
    "\u0405": "S",  # Ѕ
    "\u0406": "l",  # І
    "\u0408": "J",  # Ј
    # Greek
    "\u03bf": "o",  # ο
    "\u03b1": "a",  # α
    "\u03b9": "i",  # ι
    "\u03bd": "v",  # ν
    "\u03c1": "p",  # ρ
    "\u0391": "A",  # Α
    "\u0392": "B",  # Β
    "\u0395": "E",  # Ε
    "\u0396": "Z",  # Ζ
    "\u0397": "H",  # Η
    "\u0399": "l",  # Ι
    "\u039a": "K",  # Κ
    "\u039c": "M",  # Μ
    "\u039d": "N",  # Ν
    "\u039f": "O",  # Ο
    "\u03a1": "P",  # Ρ
    "\u03a4": "T",  # Τ
    "\u03a5": "Y",  # Υ
    "\u03a7": "X",  # Χ
}

#: Vox additions (not in TR39): multi-letter look-alikes, mapped like TR39's ``m`` → ``rn``.
_VOX_EXTRA: dict[str, str] = {"w": "vv", "d": "cl"}

_TABLE = str.maketrans({**CONFUSABLES, **_VOX_EXTRA})


def skeleton(name: str) -> str:
    """The lower-cased TR39 skeleton of ``name``: equal skeletons mean look-alike names."""
    mapped = unicodedata.normalize("NFD", name).translate(_TABLE)
    # Prototypes may be capitals (0 → O): map again after lower-casing them (O → o, M → rn).
    lowered = unicodedata.normalize("NFD", mapped).lower().translate(_TABLE)
    return unicodedata.normalize("NFD", lowered).lower()
