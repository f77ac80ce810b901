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
A test checks that both give the same tokens on the demo world's captions and on a list of harder cases.
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
_NUMBER = re.compile(r"\d+(?:[.,:/]\d+)*")
_WORD = re.compile(r"[^\W_]+(?:(?:[-/.&]|'(?=[^\W_]))[^\W_]+)*'?", re.UNICODE)
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
_TAG = re.compile(r"</?[^\W_][^<>\s]*>", re.UNICODE)        # <angle>: an SGML-like tag is one token


def ptb_tokens(text: str) -> list[str]:
    """PTB tokens of one line, lower-cased (punctuation still in)."""
    text = _one_line(text).translate(_TYPOGRAPHIC)
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        prev = text[i - 1] if i else ""
        if ch.isspace():
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

    def tokenize(self, texts: Sequence[str]) -> list[str]:
        return [_finish(" ".join(ptb_tokens(t))) for t in texts]


def default_tokenizer() -> Tokenizer:
    """Stanford's tokenizer when Java is present (what published numbers used), else the Python rules."""
    return JavaPtbTokenizer() if java_path() is not None else PythonPtbTokenizer()


def normalise(text: str) -> str:
    """A caption as compared for copying: PTB tokens, lower case, no punctuation, single spaces."""
    return _finish(" ".join(ptb_tokens(text)))
