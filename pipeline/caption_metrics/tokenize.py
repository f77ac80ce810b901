"""Tokenisation as the COCO caption evaluation does it: Stanford's PTB tokenizer, lower-cased, punctuation removed.

``pycocoevalcap.tokenizer.PTBTokenizer`` runs Stanford CoreNLP 3.4.1's ``PTBTokenizer -preserveLines
-lowerCase`` over every caption and drops the tokens in ``PUNCTUATIONS``. capsearch does exactly that when
Java is present (``JavaPtbTokenizer``: same jar, same options, same punctuation list, input on stdin, no
temporary file in site-packages). Without Java, ``PythonPtbTokenizer`` applies the same rules in Python
for the English that captions are written in: punctuation split off words, ``n't``/``'s``/``'re``/
``'ve``/``'ll``/``'d``/``'m`` split from their word (``can't`` -> ``ca n't``, ``cannot`` -> ``can not``),
abbreviations and acronyms kept whole (``mr.``, ``u.s.``), numbers kept whole (``3.5``, ``1,000``,
``10:30``), ``$``, ``%`` and ``#`` split from numbers, brackets written ``-lrb-``/``-rrb-``... (lower-cased,
so pycocoevalcap's upper-case ``-LRB-`` entries never remove them), quotes as ``` `` ```/``''``.
Beyond ASCII it follows what the jar's lexer does (``_unicode``): en and em dashes are ``--`` and ``…`` is
``...`` (both then removed as punctuation), angle quotes are quotes, ``¢ £ € ½`` are ``cents # $ 1/2``, a
combining accent belongs to the letter before it (``cafe`` + U+0301 is one word, as the jar keeps it), a
soft hyphen inside a word disappears, and what the lexer has no rule for is dropped and ends the token it
is in: every character outside the Basic Multilingual Plane (emoji, flags, skin tones), variation
selectors, zero-width and direction marks, the keycap mark, most of General Punctuation's rarer signs.
Tests check that both give the same tokens on the demo world's captions, on a list of harder cases, and on
every character of the blocks named in ``UNICODE_BLOCKS``, alone and inside a word (with Java present).
Apostrophes inside a word (``o'clock`` but ``a ' b``) follow word lists of the jar that these rules only
approximate; other scripts' blocks are not covered.
"""
from __future__ import annotations

import re
import threading
from typing import Protocol, Sequence

from pipeline.caption_metrics.java import JavaProcess, jar, java_path

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS (the COCO evaluation removes exactly these tokens)
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-",
                          "--", "...", ";"])
PTB_JAR = ("tokenizer", "stanford-corenlp-3.4.1.jar")
PTB_CLASS = "edu.stanford.nlp.process.PTBTokenizer"


class Tokenizer(Protocol):
    name: str
    rules: int            # changes when the tokens it gives change (part of every caption-metrics row hash)

    def tokenize(self, texts: Sequence[str]) -> list[str]:
        """Each text as space-separated lower-case tokens without punctuation."""


def _finish(line: str) -> str:
    return " ".join(w for w in line.rstrip().split(" ") if w and w not in PUNCTUATIONS)


def _one_line(text: str) -> str:
    # pycocoevalcap replaces newlines by spaces; other line breaks would also split a caption in two
    return re.sub(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]", " ", text)


class JavaPtbTokenizer:
    """Stanford CoreNLP's PTBTokenizer, as pycocoevalcap runs it (one Java process per call)."""

    name = "ptb-java"
    rules = 1

    def tokenize(self, texts: Sequence[str]) -> list[str]:
        if not texts:
            return []
        data = "".join(_one_line(t) + "\n" for t in texts).encode("utf-8")
        path = jar(*PTB_JAR)
        with JavaProcess(["-cp", path.name, PTB_CLASS, "-preserveLines", "-lowerCase"], path.parent,
                         "PTB tokenizer") as proc:
            errors: list[BaseException] = []

            def feed() -> None:
                try:
                    proc.stdin.write(data)
                    proc.stdin.close()
                except OSError as exc:  # the program died; reported below
                    errors.append(exc)

            writer = threading.Thread(target=feed, name="ptb-feed", daemon=True)
            writer.start()
            out = proc.stdout.read().decode("utf-8", errors="replace")
            writer.join()
            code = proc.proc.wait() if proc.proc is not None else 0
            if code != 0 or errors:
                raise proc.fail("could not tokenise the captions")
        lines = out.split("\n")
        if len(lines) < len(texts):
            raise proc.fail(f"returned {len(lines)} lines for {len(texts)} captions")
        return [_finish(line) for line in lines[:len(texts)]]


# -- the same rules in Python ----------------------------------------------------------------------------

_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr prof mt ft vs etc inc ltd co corp bros no vol ave rd blvd dept est fig gen gov "
    "sgt capt col lt rev hon messrs jan feb mar apr jun jul aug sep sept oct nov dec".split())
_SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"), "wanna": ("wan", "na"),
                "lemme": ("lem", "me"), "gimme": ("gim", "me"), "d'ye": ("d'", "ye")}
_NT_SPECIAL = {"can't": ("ca", "n't"), "won't": ("wo", "n't"), "ain't": ("ai", "n't"), "shan't": ("sha", "n't")}
_CLITICS = ("'s", "'re", "'ve", "'ll", "'d", "'m")
_NUMBER = re.compile(r"\d+(?:[.,:/\u2044]\d+)*")
_LETTER = r"(?:[^\W_]|[\u0300-\u036f])"         # a combining accent is part of the word it is written in
_WORD = re.compile(rf"{_LETTER}+(?:(?:[-/.&\u2010\u2011]|'(?={_LETTER})){_LETTER}+)*'?", re.UNICODE)
_ACRONYM = re.compile(r"(?:[^\W\d_]\.){2,}", re.UNICODE)      # u.s. a.m. e.g.


def _split_word(word: str) -> list[str]:
    """One word (no spaces, no outer punctuation) into PTB tokens: contractions and clitics split off."""
    low = word.lower()
    if low in _SPLIT_WORDS:
        a, b = _SPLIT_WORDS[low]
        return [word[:len(a)], word[len(a):]]
    if low in _NT_SPECIAL:
        a, _ = _NT_SPECIAL[low]
        return [word[:len(a)], word[len(a):]]
    if low.endswith("n't") and len(low) > 3:
        return [word[:-3], word[-3:]]
    for clitic in _CLITICS:
        if low.endswith(clitic) and len(low) > len(clitic):
            return [word[:-len(clitic)], word[-len(clitic):]]
    if low.endswith("'") and len(low) > 1:          # plural possessive: dogs' -> dogs '
        return [word[:-1], "'"]
    return [word]


def _quote(ch: str, prev: str) -> str:
    opening = prev == "" or prev.isspace() or prev in "([{"
    if ch == '"':
        return "``" if opening else "''"
    return "`" if opening else "'"


_TYPOGRAPHIC = str.maketrans({"\u2019": "'", "\u2018": "`", "\u201c": "``", "\u201d": "''"})

# -- beyond ASCII, as the jar's lexer does it (measured against the jar: tests/test_caption_metrics.py) --------
RULES_VERSION = 2        # 1: emoji and dashes kept, combining accents split off; 2: the jar's behaviour below
# Blocks whose every character, alone or inside a word, gets the jar's tokens (the test sweeps them all).
UNICODE_BLOCKS = ((0x00A0, 0x024F), (0x0300, 0x036F), (0x2000, 0x206F), (0x20A0, 0x20FF), (0x2150, 0x218F),
                  (0x2190, 0x21FF), (0x2300, 0x23FF), (0x25A0, 0x27BF), (0x2B00, 0x2BFF), (0x3000, 0x303F),
                  (0xFE00, 0xFE0F), (0x1F000, 0x1FAFF), (0xE0000, 0xE007F))
# Characters the lexer has no rule for: it drops them, and they end the token they are in as a space would.
_DROPPED = re.compile(
    "[\x81-\x84\x86-\x90\x95\x98-\x9f"                      # C1 controls with no Windows-1252 meaning
    "\u200b-\u200f\u2012\u2024\u2025\u2027\u202a-\u202e"       # zero-width and direction marks, figure dash, leaders
    "\u203c\u203d\u2043\u2045-\u2064\u2066-\u206f"               # rarer General Punctuation, invisible operators
    "\u20a1-\u20a3\u20a5-\u20ab\u20ad-\u20cf"                   # currency signs but the euro-currency, lira and euro
    "\u20d0-\u20ff"                                            # combining marks for symbols (the keycap in 1\ufe0f\u20e3)
    "\u2150-\u2152\u215f-\u2182\u2185-\u218f"                   # number forms without an ASCII spelling, roman numerals
    "\u3003\u3004\u3007-\u3011\u3013-\u3030\u3036-\u303a\u303d-\u303f"   # CJK symbols and brackets
    "\ufe00-\ufe0f"                                            # variation selectors (the emoji form of \u2600\ufe0f)
    "\U00010000-\U0010ffff]")                                   # outside the BMP: emoji, flags, skin tones, tags
# Characters that are a token of their own, spelt as the jar spells them.
_SPELT = {"\x80": "$", "\x91": "`", "\x92": "'", "\x93": "``", "\x94": "''", "\x96": "--", "\x97": "--",
          "\u00a2": "cents", "\u00a3": "#", "\u00a4": "$", "\u00ab": "``", "\u00bb": "''", "\u00bc": "1/4",
          "\u00bd": "1/2", "\u00be": "3/4", "\u2013": "--", "\u2014": "--", "\u2015": "--", "\u201b": "`",
          "\u2026": "...", "\u2039": "`", "\u203a": "'", "\u20a0": "$", "\u20ac": "$", "\u2153": "1/3",
          "\u2154": "2/3"}
# Characters that are a token of their own even inside a word (Python counts them as letters or digits).
_OWN = "\u00b2\u00b3\u00b9" + "".join(map(chr, range(0x2155, 0x215f))) + "".join(map(chr, range(0x2776, 0x2794)))
_APART = str.maketrans({ch: f" {ch} " for ch in [*_SPELT, *_OWN]})
_SOFT_HYPHEN_ALONE = re.compile(r"(?<!\S)\xad+(?!\S)")       # a soft hyphen between spaces is '-'; in a word, nothing
_WORD_HYPHENS = "\u2010\u2011"                                 # part of a word (well\u2010known); alone, dropped


def _unicode(text: str) -> str:
    """The jar's treatment of non-ASCII characters: drop what it drops, set apart what is a token of its own."""
    if text.isascii():
        return text
    text = _SOFT_HYPHEN_ALONE.sub(" - ", text).replace("\xad", "")
    return _DROPPED.sub(" ", text).translate(_APART)


_TAG = re.compile(r"</?[^\W_][^<>\s]*>", re.UNICODE)        # <angle>: an SGML-like tag is one token


def ptb_tokens(text: str) -> list[str]:
    """PTB tokens of one line, lower-cased (punctuation still in)."""
    text = _unicode(_one_line(text).translate(_TYPOGRAPHIC))
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        prev = text[i - 1] if i else ""
        if ch.isspace() or ch in _WORD_HYPHENS:
            i += 1
            continue
        if ch in _SPELT:
            out.append(_SPELT[ch])
            i += 1
            continue
        if text.startswith("...", i):
            j = i
            while j < n and text[j] == ".":
                j += 1
            out.append("...")
            i = j
            continue
        if text.startswith("--", i):
            j = i
            while j < n and text[j] == "-":
                j += 1
            out.append("--")
            i = j
            continue
        if ch in "?!":
            j = i
            while j < n and text[j] in "?!":
                j += 1
            out.append(text[i:j])
            i = j
            continue
        if ch in _BRACKETS:
            out.append(_BRACKETS[ch])
            i += 1
            continue
        if ch in "\"`":
            if text.startswith("``", i):
                out.append("``")
                i += 2
            else:
                out.append(_quote(ch, prev) if ch == '"' else "`")
                i += 1
            continue
        if ch == "'":
            if text.startswith("''", i):
                out.append("''")
                i += 2
                continue
            m = re.match(r"'(?:s|re|ve|ll|d|m|n't)\b", text[i:], re.IGNORECASE)
            if m and prev and not prev.isspace():
                out.append(m.group(0))
                i += len(m.group(0))
                continue
            if re.match(r"'n'(?![^\W_])", text[i:]):
                out.append("'n'")
                i += 3
                continue
            out.append(_quote(ch, prev))
            i += 1
            continue
        m = _TAG.match(text, i) if ch == "<" else None
        if m:
            out.append(m.group(0))
            i = m.end()
            continue
        if ch in ",;:$%#":
            out.append(ch)
            i += 1
            continue
        m = _NUMBER.match(text, i)
        if m and not (m.end() < n and (text[m.end()].isalpha() or text[m.end()] in "-'")):
            out.append(m.group(0))
            i = m.end()
            continue
        m = _ACRONYM.match(text, i)
        if m and not (m.end() < n and text[m.end()].isalnum()):
            out.append(m.group(0))
            i = m.end()
            continue
        m = _WORD.match(text, i)
        if m:
            word = m.group(0)
            end = m.end()
            # a trailing period inside the match belongs to the sentence, not the word
            while word.endswith("."):
                word, end = word[:-1], end - 1
            abbreviation = word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())   # mr. / initials
            if end < n and text[end] == "." and not text.startswith("...", end) and abbreviation:
                word, end = word + ".", end + 1
            if "'n'" in word.lower():                               # rock'n'roll -> rock 'n' roll
                parts = re.split(r"('n')", word, flags=re.IGNORECASE)
                out.extend(p for p in parts if p)
            else:
                out.extend(_split_word(word))
            i = end
            continue
        if ch == ".":
            out.append(".")
            i += 1
            continue
        if ch == "-":
            out.append("-")
            i += 1
            continue
        # any other symbol (@, &, +, emoji...) is a token of its own, as the lexer makes it
        j = i + 1
        while j < n and not text[j].isspace() and not text[j].isalnum() and text[j] not in "\"'`([{)]}.,;:?!$%#-":
            j += 1
        out.append(text[i:j])
        i = j
    return [t.lower() for t in out]


class PythonPtbTokenizer:
    """The PTB rules above, in Python (used when there is no Java runtime)."""

    name = "ptb-python"
    rules = RULES_VERSION

    def tokenize(self, texts: Sequence[str]) -> list[str]:
        return [_finish(" ".join(ptb_tokens(t))) for t in texts]


def default_tokenizer() -> Tokenizer:
    """Stanford's tokenizer when Java is present (what published numbers used), else the Python rules."""
    return JavaPtbTokenizer() if java_path() is not None else PythonPtbTokenizer()


def normalise(text: str) -> str:
    """A caption as compared for copying: PTB tokens, lower case, no punctuation, single spaces."""
    return _finish(" ".join(ptb_tokens(text)))
