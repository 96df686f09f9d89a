"""Writing systems: which Chinese script a text is in, and whether a text is written in its
language's script at all. The one place for these rules: the converters reject with their codes
and ``qfk lint`` reports them under the same ids.

* :func:`chinese_script`: traditional / simplified / mixed / both / none, with the characters that
  decided it. Only characters that exist in one script decide (CC-CEDICT's character lists, as
  the ``hanzidentifier`` package reads them): most Han characters are both, and a text of shared
  characters only is ``both``, which is fine for either script.
* :func:`has_own_script`: whether a text holds at least one character of its language's script
  (ja: kana or kanji; zh: Han; en, fr, de, es: Latin letters; ko: hangul). A text without any
  letter at all (numbers, punctuation, emoji) is neither in nor out of a script, and passes.
* :func:`problem`: both rules on one text, as ``language_mismatch`` or ``script_mismatch`` with a
  detail that names the characters (``simplified characters 们, 这 in a zh_TW line``).
* :func:`to_traditional`: OpenCC's Taiwan profile ``s2twp`` (characters, variants and phrases).

Language codes are the canonical tags of :mod:`qwen_factory_kit.langs` (other spellings are
normalised through it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Callable, NamedTuple

from .langs import normalize_code

#: reason / rule ids (converter rejects and lint findings)
SCRIPT_MISMATCH = "script_mismatch"
LANGUAGE_MISMATCH = "language_mismatch"
#: the note a conversion counts for each text written after :func:`to_traditional`
CONVERTED_TO_TRADITIONAL = "converted_to_traditional"

TRADITIONAL, SIMPLIFIED, MIXED, BOTH, NONE = "traditional", "simplified", "mixed", "both", "none"
#: the values of ``--script`` (the Chinese script every text must be in)
SCRIPT_CHOICES = (TRADITIONAL,)
#: the OpenCC configuration of :func:`to_traditional` (Simplified to Taiwan standard, with phrases)
OPENCC_CONFIG = "s2twp"

#: the character classes of each script (regular-expression ranges)
_RANGES = {
    "han": "\u3005\u3007\u3021-\u3029\u3038-\u303b\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f",
    "kana": "\u3041-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9d\U0001b000-\U0001b16f",
    "hangul": "\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff",
    "latin": "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff\uff21-\uff3a\uff41-\uff5a",
    "cyrillic": "\u0400-\u04ff",
    "greek": "\u0370-\u03ff",
    "arabic": "\u0600-\u06ff",
}
_SCRIPT_RE = {name: re.compile(f"[{chars}]") for name, chars in _RANGES.items()}
#: how a script reads in a message
_SCRIPT_WORDS = {"han": "Chinese characters", "kana": "kana", "hangul": "hangul", "latin": "Latin letters",
                 "cyrillic": "Cyrillic letters", "greek": "Greek letters", "arabic": "Arabic letters"}
#: a letter of any script (alphanumeric, not a digit or underscore)
_LETTER = re.compile(r"[^\W\d_]")

#: canonical language -> the scripts of which a text needs at least one character
LANG_SCRIPTS: dict[str, tuple[str, ...]] = {
    "en": ("latin",), "fr": ("latin",), "de": ("latin",), "es": ("latin",),
    "ja": ("kana", "han"),
    "zh_TW": ("han",), "zh_CN": ("han",),
    "ko": ("hangul",),
}
#: canonical language -> the Chinese script its texts must be in
LANG_CHINESE_SCRIPT: dict[str, str] = {"zh_TW": TRADITIONAL}

#: characters listed in the message before "and N more"
_SHOWN = 8


class Problem(NamedTuple):
    """A text outside its script: ``code`` (:data:`SCRIPT_MISMATCH` or :data:`LANGUAGE_MISMATCH`),
    the characters that decided it (for a script mismatch) and the message."""

    code: str
    chars: str
    detail: str


@dataclass(frozen=True)
class ChineseScript:
    """What :func:`chinese_script` says of a text: the script, and the characters of the text that
    exist in one script only (in order of first appearance)."""

    script: str  # TRADITIONAL | SIMPLIFIED | MIXED | BOTH | NONE
    simplified: str = ""
    traditional: str = ""


@cache
def _only(script: str) -> re.Pattern:
    """The characters that exist in ``script`` only (one of them), from CC-CEDICT's lists as
    ``hanzidentifier`` reads them. A character class: searched without making a string of each
    character, five times faster than a set test on CJK text."""
    from hanzidentifier import helpers

    simp, trad = helpers.SIMPLIFIED_CHARACTERS, helpers.TRADITIONAL_CHARACTERS
    only = simp - trad if script == SIMPLIFIED else trad - simp
    return re.compile("[" + "".join(map(re.escape, sorted(only))) + "]")


def simplified_chars(text: str) -> str:
    """The characters of ``text`` that exist only in Simplified Chinese, each once, in order."""
    return "".join(dict.fromkeys(_only(SIMPLIFIED).findall(text)))


def traditional_chars(text: str) -> str:
    """The characters of ``text`` that exist only in Traditional Chinese, each once, in order."""
    return "".join(dict.fromkeys(_only(TRADITIONAL).findall(text)))


def chinese_script(text: str) -> ChineseScript:
    """The Chinese script of ``text``: ``traditional`` or ``simplified`` when characters of one
    script only decide it, ``mixed`` when both kinds are there, ``both`` when every Chinese
    character is shared by the two scripts, ``none`` without Chinese characters. The same verdict
    as ``hanzidentifier.identify`` (tested), with the characters that decided it."""
    simp, trad = simplified_chars(text), traditional_chars(text)
    if simp and trad:
        return ChineseScript(MIXED, simp, trad)
    if simp:
        return ChineseScript(SIMPLIFIED, simp)
    if trad:
        return ChineseScript(TRADITIONAL, "", trad)
    return ChineseScript(BOTH if _SCRIPT_RE["han"].search(text) else NONE)


def canonical(lang: str | None) -> str | None:
    """``lang`` as :mod:`~qwen_factory_kit.langs` tags it (``zh-TW``, ``cmn_Hant`` -> ``zh_TW``), else as given."""
    if lang is None:
        return None
    return normalize_code(lang) or lang


def scripts_of(lang: str | None) -> tuple[str, ...]:
    """The scripts a text of ``lang`` is written in (empty for a language the kit does not know)."""
    return LANG_SCRIPTS.get(canonical(lang) or "", ())


def chinese_script_of(lang: str | None) -> str | None:
    """The Chinese script texts of ``lang`` must be in (``traditional`` for zh_TW), or None."""
    return LANG_CHINESE_SCRIPT.get(canonical(lang) or "")


def has_own_script(text: str, lang: str) -> bool | None:
    """True when ``text`` holds a character of ``lang``'s script, or no letter at all (numbers,
    punctuation, emoji); False when it has letters, none of them of that script; None when the
    kit does not know ``lang``'s script."""
    scripts = scripts_of(lang)
    if not scripts:
        return None
    return any(_SCRIPT_RE[s].search(text) for s in scripts) or not _LETTER.search(text)


def letters_of(text: str) -> list[str]:
    """The scripts of the letters in ``text``, in the words of a message (``Latin letters``)."""
    found = [_SCRIPT_WORDS[name] for name, pattern in _SCRIPT_RE.items() if pattern.search(text)]
    return found or ["letters of another script"]


def _listed(chars: str) -> str:
    shown = ", ".join(chars[:_SHOWN])
    return shown + (f" and {len(chars) - _SHOWN} more" if len(chars) > _SHOWN else "")


def problem(text: str, lang: str | None = None, *, script: str | None = None, where: str | None = None) -> Problem | None:
    """Why ``text`` is not written the way it should be, or None.

    ``lang`` (a language code): :data:`LANGUAGE_MISMATCH` when the text has letters but none of
    the language's script; the language also gives the Chinese script (zh_TW: traditional).
    ``script`` (:data:`SCRIPT_CHOICES`; default: the language's): :data:`SCRIPT_MISMATCH` when the
    text holds characters that exist only in the other script. ``where`` names the text in the
    message (default: ``a LANG line``)."""
    lang = canonical(lang)
    where = where or (f"{'an' if lang[0] in 'aeiou' else 'a'} {lang} line" if lang else "the text")
    if lang is not None and has_own_script(text, lang) is False:
        wants = " or ".join("kanji" if lang == "ja" and s == "han" else _SCRIPT_WORDS[s] for s in scripts_of(lang))
        return Problem(LANGUAGE_MISMATCH, "", f"no {wants} in {where} (only {', '.join(letters_of(text))}): not {lang} text")
    script = script or chinese_script_of(lang)
    if script == TRADITIONAL:
        chars = simplified_chars(text)
        if chars:
            mixed = " (mixed with traditional ones)" if traditional_chars(text) else ""
            return Problem(SCRIPT_MISMATCH, chars, f"simplified characters {_listed(chars)} in {where}{mixed}")
    elif script is not None:
        raise ValueError(f"script {script!r} is not one of {SCRIPT_CHOICES}")
    return None


Check = Callable[[str], "Problem | None"]


@lru_cache(maxsize=1024)
def checker(lang: str | None = None, script: str | None = None, where: str | None = None) -> Check | None:
    """:func:`problem` for many texts of one language (or ``script``): a function of the text, fast
    on a text without a problem (a search of the language's characters, one of the other script's); None when
    there is nothing to check (a language the kit knows no script of, and no Chinese script)."""
    lang = canonical(lang)
    scripts = scripts_of(lang)
    script = script or chinese_script_of(lang)
    if script is not None and script not in SCRIPT_CHOICES:
        raise ValueError(f"script {script!r} is not one of {SCRIPT_CHOICES}")
    if not scripts and script is None:
        return None
    own = re.compile("[" + "".join(_RANGES[s] for s in scripts) + "]").search if scripts else None
    letter = _LETTER.search
    simp = _only(SIMPLIFIED).search if script == TRADITIONAL else None

    def check(text: str) -> Problem | None:
        if (own is not None and own(text) is None and letter(text) is not None) or (simp is not None and simp(text) is not None):
            return problem(text, lang, script=script, where=where)
        return None

    return check


def resolve(text: str, check: Check, *, convert: bool = False) -> tuple[str, Problem | None, bool]:
    """``(text, problem, converted)``: the text as it is to be written. With ``convert``, a text
    in Simplified Chinese (or mixed) is converted with :func:`to_traditional`, and its problem is
    what is left after that (characters OpenCC has no mapping for)."""
    found = check(text)
    if found is None or not convert or found.code != SCRIPT_MISMATCH:
        return text, found, False
    converted = to_traditional(text)
    left = check(converted)
    if left is not None:
        return text, left._replace(detail=f"{left.detail}, left so by OpenCC {OPENCC_CONFIG}"), False
    return converted, None, True


@cache
def _converter():
    import opencc

    return opencc.OpenCC(OPENCC_CONFIG)


def to_traditional(text: str) -> str:
    """``text`` in Traditional Chinese as written in Taiwan (OpenCC ``s2twp``: characters, Taiwan
    variants and phrases such as 软件 -> 軟體). Characters OpenCC has no mapping for stay as they
    are: check the result with :func:`problem` again."""
    return _converter().convert(text)
