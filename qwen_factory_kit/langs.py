"""Language codes found in the wild (OPUS, Moses, FLORES, Tatoeba) and the kit's canonical tags.

One table: :func:`normalize_code` maps ``zh_tw``, ``zh-TW``, ``zht``, ``cmn_Hant``, ``zho_Hant``,
``jp`` ... to ``zh_TW``, ``ja`` and friends; :data:`LANG_NAMES` gives the English names used in
prompts and reports; :func:`tag` gives the tag written into instructions (``<zh_TW>``).
"""

from __future__ import annotations

LANG_NAMES = {
    "en": "English",
    "zh_TW": "Traditional Chinese",
    "zh_CN": "Simplified Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
}

_ALIASES = {
    "en": "en", "eng": "en", "en_us": "en", "en_gb": "en", "eng_latn": "en",
    "ja": "ja", "jp": "ja", "jpn": "ja", "jpn_jpan": "ja", "ja_jp": "ja",
    # DATASETS.md: in this project's Moses layouts a bare ".zh" file is Traditional Chinese.
    "zh": "zh_TW", "zh_tw": "zh_TW", "zht": "zh_TW", "zh_hant": "zh_TW", "cmn_hant": "zh_TW",
    "zho_hant": "zh_TW", "zh_hk": "zh_TW", "cht": "zh_TW",
    "zh_cn": "zh_CN", "zhs": "zh_CN", "zh_hans": "zh_CN", "cmn_hans": "zh_CN", "zho_hans": "zh_CN",
    "zh_sg": "zh_CN", "chs": "zh_CN",
    "ko": "ko", "kor": "ko", "kor_hang": "ko",
    "fr": "fr", "fra": "fr", "fre": "fr", "fra_latn": "fr",
    "de": "de", "deu": "de", "ger": "de", "deu_latn": "de",
    "es": "es", "spa": "es", "spa_latn": "es",
}

#: Languages written without spaces between words (sentence length is counted in characters).
UNSEGMENTED = {"zh_TW", "zh_CN", "ja"}


def normalize_code(code: str, extra: dict[str, str] | None = None) -> str | None:
    """Canonical tag for ``code`` (case, ``-``/``_`` insensitive), or None when unknown."""
    key = code.strip().lower().replace("-", "_")
    if extra:
        for k, v in extra.items():
            if k.lower().replace("-", "_") == key:
                return v
    return _ALIASES.get(key)


def known_codes() -> list[str]:
    return sorted(set(_ALIASES))


def tag(lang: str) -> str:
    return f"<{lang}>"


def name(lang: str) -> str:
    return LANG_NAMES.get(lang, lang)
