"""Text encodings of line-oriented files (Moses corpora): UTF-8 (with or without BOM) first, then
a charset-normalizer guess among the legacy CJK encodings (Big5, GB18030, Shift-JIS, EUC-JP...).

Detection reads a sample; every line is still decoded strictly, so a wrong guess shows up as
counted rejects rather than mojibake in the output.
"""

from __future__ import annotations

import codecs

from ..errors import QfkError

SAMPLE_BYTES = 1 << 18
#: charset-normalizer names -> the superset codec that decodes them safely
_SUPERSETS = {"big5": "cp950", "big5hkscs": "big5hkscs", "cp950": "cp950", "gb2312": "gb18030", "gbk": "gb18030",
              "gb18030": "gb18030", "hz": "gb18030", "shift_jis": "cp932", "cp932": "cp932", "euc_jp": "euc_jp",
              "euc_kr": "cp949", "cp949": "cp949", "utf_8": "utf-8", "ascii": "utf-8"}


def normalize_encoding(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise QfkError(f"unknown encoding '{name}'", "use a Python codec name such as utf-8, big5, cp950, gb18030, shift_jis") from None


def wide_encoding(sample: bytes) -> str | None:
    """``UTF-16`` or ``UTF-32`` when ``sample`` (a file's first bytes) is text in one of them, by its
    byte-order mark or, without one, by the NUL byte beside every ASCII character; else None."""
    if sample.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "UTF-32"
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    head = sample[:512]
    if len(head) >= 4:
        even, odd = head[0::2], head[1::2]
        for zeros, chars in ((odd, even), (even, odd)):
            if zeros.count(0) >= 0.9 * len(zeros) and chars.count(0) <= 0.1 * len(chars):
                return "UTF-16"
    return None


def refuse_wide_encoding(sample: bytes, display: str) -> None:
    """Raise a :class:`QfkError` when ``sample`` (the first bytes of ``display``) is UTF-16/UTF-32 text,
    which the line readers cannot split into lines."""
    wide = wide_encoding(sample)
    if wide:
        raise QfkError(f"{display} is {wide}", f"convert it first: iconv -f {wide} -t UTF-8 {display} > {display}.utf8")


def detect_encoding(sample: bytes, display: str) -> str:
    """Best encoding for ``sample`` (the first bytes of ``display``)."""
    refuse_wide_encoding(sample, display)
    if sample.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start >= len(sample) - 4:  # a character cut by the sample's end
            try:
                sample[: exc.start].decode("utf-8")
                return "utf-8"
            except UnicodeDecodeError:
                pass
    from charset_normalizer import from_bytes

    best = from_bytes(sample, cp_isolation=["big5", "cp950", "gb18030", "gbk", "gb2312", "shift_jis", "cp932",
                                            "euc_jp", "euc_kr", "cp949", "utf_8"]).best()
    if best is None:
        raise QfkError(f"cannot tell the text encoding of {display}",
                       "pass it explicitly, for example --encoding big5 or --encoding gb18030")
    return _SUPERSETS.get(best.encoding, best.encoding)
