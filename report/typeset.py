"""The Typst source: its prose (for the word limit) and compiling it to ``report.pdf``.

:func:`count_words` counts the prose words of a Typst source for the report's word limit
(:data:`WORD_LIMIT`); :func:`compile_pdf` compiles it with the ``typst`` Python package.
"""

from __future__ import annotations

import re
from pathlib import Path

#: Word limit of the report (issue 7).
WORD_LIMIT = 3000


_LABEL = re.compile(r"<[\w\-.:]+>")
_REF = re.compile(r"@[\w\-.:]*\w")  # a trailing '.' or ':' is punctuation, not label
_RULE = re.compile(r"(let|set|show|import|include)\b")
_CONTROL = re.compile(r"(if|for|while)\b")
_ELSE = re.compile(r"\s*else\s*")
_NAME = re.compile(r"[A-Za-z_][\w\-]*")
_FIELD = re.compile(r"\.[A-Za-z_][\w\-]*")


class _Scanner:
    """A small Typst reader that keeps only the prose (markup and content blocks).

    Each reading method takes a position in the source and returns the position after what
    it read; prose is appended to ``out`` where ``count`` is true.
    """

    def __init__(self, src: str) -> None:
        self.s = src
        self.out: list[str] = []

    def emit(self, text: str, count: bool) -> None:
        """Keep ``text`` as prose if ``count``."""
        if count:
            self.out.append(text)

    def skip_until(self, i: int, end: str) -> int:
        """The position after the next ``end`` from ``i`` (the source's end if none)."""
        j = self.s.find(end, i)
        return len(self.s) if j < 0 else j + len(end)

    def quoted_end(self, i: int, quote: str) -> int:
        """The position after the ``quote`` closing the one at ``i`` (backslash escapes)."""
        j = i + 1
        while j < len(self.s) and self.s[j] != quote:
            j += 2 if self.s[j] == "\\" else 1
        return j + 1

    def _not_prose(self, i: int) -> tuple[int, str] | None:
        """Where a comment, raw text, math, escape, label or reference at ``i`` ends.

        Returns:
            ``(end, text standing for it in the prose)``, or ``None`` if none starts at ``i``.
        """
        s, c = self.s, self.s[i]
        if s.startswith("//", i) and (i == 0 or s[i - 1] != ":"):
            return self.skip_until(i, "\n") - 1, ""  # the newline itself stays
        if s.startswith("/*", i):
            return self.skip_until(i + 2, "*/"), ""
        if s.startswith("```", i):
            return self.skip_until(i + 3, "```"), " "
        if c == "`":
            return self.skip_until(i + 1, "`"), " "
        if c == "$":
            return self.quoted_end(i, "$"), " "
        if c == "\\" and i + 1 < len(s):
            return i + 2, " " if s[i + 1] in " \n" else s[i + 1]
        if c == "<" and (m := _LABEL.match(s, i)):
            return m.end(), ""
        if c == "@" and (m := _REF.match(s, i)):
            return m.end(), " ref "
        return None

    def markup(self, i: int, count: bool, closing: bool) -> int:
        """Read markup from ``i`` until an unbalanced ``]`` (if ``closing``) or the end."""
        s, depth = self.s, 0
        while i < len(s):
            skipped = self._not_prose(i)
            if skipped is not None:
                i, text = skipped
                self.emit(text, count)
                continue
            c = s[i]
            if c == "#":
                i = self.code_expr(i + 1, count)
                continue
            if c == "[":
                depth += 1
            elif c == "]":
                if depth == 0 and closing:
                    return i + 1
                depth = max(0, depth - 1)
            self.emit(c, count)
            i += 1
        return i

    def code_until(self, i: int, closer: str, count: bool) -> int:
        """Read code from ``i`` to the matching ``closer``; content blocks are markup."""
        s = self.s
        while i < len(s):
            c = s[i]
            if c == closer:
                return i + 1
            if c == '"':
                i = self.quoted_end(i, '"')
            elif s.startswith("//", i):
                i = self.skip_until(i, "\n")
            elif s.startswith("/*", i):
                i = self.skip_until(i + 2, "*/")
            elif c in "([{":
                i = self.block(i, count)
            else:
                i += 1
        return i

    def block(self, i: int, count: bool) -> int:
        """Read the block opening at ``i``: ``[...]`` as markup, ``(...)``/``{...}`` as code."""
        c = self.s[i]
        if c == "[":
            self.emit(" ", count)
            i = self.markup(i + 1, count, True)
            self.emit(" ", count)
            return i
        return self.code_until(i + 1, ")" if c == "(" else "}", count)

    def code_expr(self, i: int, count: bool) -> int:
        """Read one embedded code expression after ``#``."""
        s = self.s
        if m := _RULE.match(s, i):  # definitions and rules: not prose
            return self._rule_end(m.end())
        if m := _CONTROL.match(s, i):
            return self._control(m.end(), count)
        if i < len(s) and s[i] in "([{":
            return self.block(i, count)
        if not (m := _NAME.match(s, i)):
            return i
        j = m.end()  # a call chain: name(args)[content].field(args)...
        while j < len(s):
            if s[j] in "([":
                j = self.block(j, count)
            elif s[j] == "." and (m := _FIELD.match(s, j)):
                j = m.end()
            else:
                break
        return j

    def _rule_end(self, j: int) -> int:
        """Skip a ``#let``/``#set``/... line to its end (brackets balanced, no prose)."""
        s = self.s
        while j < len(s) and s[j] != "\n":
            if s[j] in "([{":
                j = self.block(j, False)
            elif s[j] == '"':
                j = self.quoted_end(j, '"')
            else:
                j += 1
        return j

    def _head_end(self, j: int) -> int:
        """Skip an ``#if``/``#for``/``#while`` head to its body or the end of the line."""
        s = self.s
        while j < len(s) and s[j] not in "[{\n":
            if s[j] == '"':
                j = self.quoted_end(j, '"')
            elif s[j] == "(":
                j = self.code_until(j + 1, ")", False)
            else:
                j += 1
        return j

    def _control(self, j: int, count: bool) -> int:
        """Read ``#if``/``#for``/``#while`` with its bodies; every ``else`` branch is read."""
        s = self.s
        while True:
            j = self._head_end(j)
            if j >= len(s) or s[j] == "\n":
                return j
            j = self.block(j, count)
            rest = _ELSE.match(s, j)
            if not rest:
                return j
            j = rest.end()
            if s.startswith("if", j):
                j += 2
                continue
            return self.block(j, count) if j < len(s) and s[j] in "[{" else j


def prose_text(src: str) -> str:
    """The prose of a Typst source: markup and content blocks, without code, math or raw.

    Comments, ``#let``/``#set``/``#show``/``#import`` lines, math (``$...$``), raw text
    (backticks), labels and function arguments other than content blocks are dropped;
    a ``@reference`` counts as one word; both branches of an ``#if`` are kept (an upper
    bound). Values inserted from data (``#num("...")``) are not words.

    Args:
        src: Typst source.

    Returns:
        The prose as plain text.
    """
    sc = _Scanner(src)
    sc.markup(0, True, False)
    return "".join(sc.out)


def count_words(src: str) -> int:
    """Count the prose words of a Typst source (see :func:`prose_text`).

    A word is a whitespace-separated token holding at least one letter or digit, so list
    markers, heading ``=`` and lone punctuation do not count.

    Args:
        src: Typst source.

    Returns:
        The word count.
    """
    return sum(1 for tok in prose_text(src).split() if re.search(r"[^\W_]", tok))


def compile_pdf(report_dir: str | Path, source: str = "report.typ") -> Path:
    """Compile the Typst source to ``report.pdf`` with the ``typst`` Python package.

    Args:
        report_dir: The report folder (Typst's root: data and figures are read from it).
        source: The source file inside ``report_dir``.

    Returns:
        The PDF path.

    Raises:
        ValueError: If the ``typst`` package is missing (install the ``report`` extra), or
            the source does not compile (the message is typst's).
    """
    try:
        import typst
    except ImportError:
        raise ValueError(
            "building the PDF needs the typst package: pip install -e '.[report]' "
            "(or pip install 'typst>=0.11')."
        ) from None
    report_dir = Path(report_dir)
    pdf = report_dir / (Path(source).stem + ".pdf")
    try:
        typst.compile(str(report_dir / source), output=str(pdf), root=str(report_dir))
    except Exception as err:  # typst.TypstError: the source does not compile
        raise ValueError(f"{report_dir / source} does not compile: {err}") from None
    return pdf
