"""Reads a SQL script the way psql reads it, so what pgdr learns from a dump is what psql will do with it.

A dump is written by everyone who can create a table, and psql runs it as the superuser. Any guess about where a
statement, a COPY block or a meta-command starts that differs from psql's lets table names, values or comments
steer the restore. This lexer follows psql's own rules (PostgreSQL's ``src/fe_utils/psqlscan.l``):

- quoted text: ``'...'`` (``''`` inside; backslash escapes too when standard_conforming_strings is off, tracked from
  the script's own ``SET``), ``E'...'`` (backslash escapes), ``"..."`` identifiers (newlines allowed), dollar quotes
  ``$tag$...$tag$`` (a ``$`` inside an identifier or after a number starts none), and a string continued after a
  newline by another ``'...'`` (SQL's quote continuation);
- comments: ``--`` to the end of the line (``\\n`` or ``\\r``), nested ``/* */``;
- a statement ends at a ``;`` outside parentheses and outside the ``BEGIN ... END`` body of ``CREATE FUNCTION`` /
  ``CREATE PROCEDURE`` (psql's heuristic, followed word for word);
- a backslash outside quotes and comments starts a meta-command that runs to the end of the line (``\\;`` and
  ``\\:`` excepted);
- after a ``COPY ... FROM stdin`` statement, the lines that follow are data up to a line ``\\.`` (psql reads them
  from the next line on), however the statement itself was laid out over lines.

It is linear in its input: quoted texts and COPY rows are skipped with ``bytes.find`` and possessive patterns,
never scanned twice, and only a few bytes wait between chunks; memory stays flat on a single huge row or string.
A listener hears what psql would act on: complete statements (offsets, and for the statements whose first two
words it watches, their words), meta-commands, ``--`` comments, COPY rows and the end of each COPY block.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

WORD_LIMIT = 512  # first words kept per captured statement (the last three are always kept)
TEXT_LIMIT = 64 * 1024  # bytes kept per captured string, comment or meta-command
PIECE_SIZE = 64 * 1024  # bytes lexed at a time (pgdr.streams.buffers.PIECE_SIZE)
# Client encodings whose multibyte characters can hold bytes that look like quotes or backslashes. pg_dump never
# writes them (it dumps in the database's encoding); a script that switches to one is not lexed as pgdr reads it.
UNSAFE_ENCODINGS = {"sjis", "shiftjis", "shiftjis2004", "big5", "gbk", "uhc", "gb18030", "johab", "win932",
                    "win936", "win949", "win950", "cp932", "cp936", "cp949", "cp950"}

WORD_BYTE = rb"A-Za-z\x80-\xff_0-9$"
IDENTIFIER = rb"[A-Za-z\x80-\xff_][A-Za-z\x80-\xff_0-9$]*"
NUMBER = rb"[0-9][0-9A-Za-z_\x80-\xff]*"  # digits, and the letters psql would take as part of the number token
TOKEN = re.compile(
    rb"(?P<space>[ \t\n\r\f\v]+)"
    rb"|(?P<estring>[eE]')"
    rb"|(?P<bitstring>[bBxX]')"  # bit strings take no backslash escapes, whatever standard_conforming_strings
    rb"|(?P<ident>" + IDENTIFIER + rb")"
    rb"|(?P<number>" + NUMBER + rb")"
    rb"|(?P<special>--|/\*|['\"$\\;()])"
    rb"|(?P<other>[^ \t\n\r\f\vA-Za-z\x80-\xff_0-9'\"$\\;()\-/]+|[-/])"
)
# What changes nothing psql tracks once a statement's first words are known: identifiers, numbers, whitespace,
# operators other than comment starts. Skipped in one match.
RUN = re.compile(
    rb"(?:" + IDENTIFIER + rb"|" + NUMBER + rb"|[ \t\n\r\f\v]+"
    rb"|[^A-Za-z\x80-\xff_0-9$'\"\\;()\-/ \t\n\r\f\v]+|-(?!-)|/(?!\*))+"
)
QUOTE_BODY = {
    "xq": re.compile(rb"[^']*+(?:''[^']*+)*+"),
    "xe": re.compile(rb"[^'\\]*+(?:(?:''|\\[\s\S])[^'\\]*+)*+"),
    "xd": re.compile(rb'[^"]*+(?:""[^"]*+)*+'),
}
BLOCK_COMMENT_MARK = re.compile(rb"/\*|\*/")
DOLLAR_TAG = re.compile(rb"\$(?:[A-Za-z\x80-\xff_][A-Za-z\x80-\xff_0-9]*)?\$")
DOLLAR_TAG_PREFIX = re.compile(rb"\$(?:[A-Za-z\x80-\xff_][A-Za-z\x80-\xff_0-9]*)?\Z")
# After a closing quote: whitespace holding a newline (comments allowed after it), then a quote, continues the string
QUOTE_CONTINUATION = re.compile(
    rb"(?:[ \t\f\v]++|--[^\n\r]*+)*+[\n\r](?:[ \t\n\r\f\v]++|--[^\n\r]*+[\n\r])*+'"
)
QUOTE_CONTINUATION_PREFIX = re.compile(
    rb"(?:[ \t\f\v]++|--[^\n\r]*+)*+(?:[\n\r](?:[ \t\n\r\f\v]++|--[^\n\r]*+[\n\r])*+(?:--[^\n\r]*+)?)?-?\Z"
)
# A line that may end COPY data. Searched with a regular expression rather than bytes.find: for this needle, whose
# bytes are common in rows, CPython's find is about twice as slow as the re module's literal search (measured on
# the bench dump, bench/README.md "Issue 17").
COPY_END = re.compile(rb"\n\\\.")
FUNCTION_WORDS = {b"create", b"function", b"procedure", b"or", b"replace"}
LEXER_WATCHES = {"copy", "set", "reset"}  # statements that change how psql reads what follows, always captured


@dataclass(frozen=True)
class Word:
    """One token of a captured statement: kind is ident (unquoted, as written), quoted ("..." decoded), string
    (decoded for standard and dollar-quoted strings, raw for E'...'), number, symbol or other (operators)."""

    kind: str
    text: str

    def is_keyword(self, keyword: str) -> bool:
        return self.kind == "ident" and self.text.lower() == keyword


@dataclass
class Statement:
    offset: int  # stream offset of its first byte (after leading whitespace and -- comments)
    end: int  # just after its ';'
    words: list[Word]  # the first WORD_LIMIT words, when the statement was watched; else []
    last_words: list[Word]  # its last three words, when watched
    truncated: bool = False  # words were left out, or a string was cut at TEXT_LIMIT

    def keyword(self, index: int) -> str:
        """The index-th word in lower case if it is an unquoted word, else ''."""
        if index < len(self.words) and self.words[index].kind == "ident":
            return self.words[index].text.lower()
        return ""


class Listener(Protocol):
    def statement(self, statement: Statement) -> None: ...

    def meta_command(self, offset: int, end: int, text: str) -> None: ...

    def comment(self, offset: int, end: int, text: str, in_statement: bool) -> None: ...

    def copy_rows(self, rows: int) -> None: ...

    def copy_end(self) -> None: ...


class QuietListener:
    """A Listener that ignores everything: subclass it and override only what you need."""

    def statement(self, statement: Statement) -> None:
        """A statement the lexer was asked to capture (see `watch`)."""

    def meta_command(self, offset: int, end: int, text: str) -> None:
        """A backslash command, to the end of its line."""

    def comment(self, offset: int, end: int, text: str, in_statement: bool) -> None:
        """A `--` or `/* */` comment."""

    def copy_rows(self, rows: int) -> None:
        """Rows of COPY data seen since the last call."""

    def copy_end(self) -> None:
        """The `\\.` line that ends COPY data."""


def watch_every_statement(first: Word, second: Word) -> bool:
    return True


@dataclass
class _Quote:
    kind: str  # "xq" standard, "xe" with backslash escapes, "xd" identifier, "dollar"
    tag: bytes = b""
    pieces: list[bytes] | None = None  # captured content, None when not captured
    size: int = 0


@dataclass
class _StatementState:
    """psql's query buffer: what it tracks until the statement ends."""

    start: int | None = None
    paren_depth: int = 0
    begin_depth: int = 0
    identifier_count: int = 0
    function_words: list[bytes] = field(default_factory=list)
    is_function: bool = False
    words: list[Word] | None = field(default_factory=list)  # None: not watched
    last_words: deque[Word] = field(default_factory=lambda: deque(maxlen=3))
    named: int = 0  # identifiers and quoted identifiers seen, up to two (the watch decision)
    truncated: bool = False

    @property
    def fast(self) -> bool:
        """Words no longer matter: decided not to capture, and psql's function heuristic cannot apply."""
        return (self.words is None and not self.is_function
                and (self.identifier_count >= 4 or self.function_words[:1] != [b"create"]
                     or self.function_words[1:2] not in ([b"or"], [])))


@dataclass
class PsqlLexer:
    """Feed the script chunk by chunk, then call finish(); the listener hears each event where psql acts on it.

    watch(first, second) chooses, from a statement's first two words, whether its words are captured; the others
    are skipped at full speed.
    """

    listener: Listener
    watch: Callable[[Word, Word], bool] = watch_every_statement
    standard_strings: bool = True
    anomalies: list[str] = field(default_factory=list)  # things psql would do that pg_dump never writes
    _offset: int = 0  # stream offset of the buffer being lexed
    _carry: bytes = b""
    _state: str = "initial"
    _quote: _Quote | None = None
    _comment_depth: int = 0
    _text: list[bytes] = field(default_factory=list)  # the -- comment or meta-command being read
    _text_start: int = 0
    _copy_line_begin: bool = True
    _statement: _StatementState = field(default_factory=_StatementState)
    _eof: bool = False

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """The next bytes of the script, any length, cut anywhere. Lexed in pieces of at most PIECE_SIZE bytes:
        each piece (and the few bytes carried before it) is a bytes object below malloc's mmap threshold, which
        malloc reuses, where a 1 MiB copy would cost fresh pages from the OS every time (pgdr.memory)."""
        if isinstance(chunk, bytes) and len(chunk) <= PIECE_SIZE:
            self._feed(chunk)
            return
        view = memoryview(chunk)
        for start in range(0, len(view), PIECE_SIZE):
            self._feed(bytes(view[start : start + PIECE_SIZE]))

    def _feed(self, chunk: bytes) -> None:
        buffer = self._carry + chunk if self._carry else chunk
        self._offset -= len(self._carry)
        self._carry = b""
        position = 0
        try:
            while position < len(buffer):
                advanced = getattr(self, "_lex_" + self._state)(buffer, position)
                if advanced < 0:  # undecidable before more input: keep the rest (a few bytes) for the next chunk
                    self._carry = buffer[position:]
                    break
                position = advanced
        finally:
            self._offset += len(buffer)

    def finish(self) -> None:
        """End of the stream: what waited for more input is decided as psql decides at end of file."""
        self._eof = True
        carry, self._carry = self._carry, b""
        if carry:
            self._offset -= len(carry)
            self.feed(carry)
        if self._state == "line_comment":
            self._finish_line_comment(self._offset)
        elif self._state == "meta":
            self._finish_meta(self._offset)
        elif self._state == "after_quote":
            self._close_quote()

    @property
    def at_top_level(self) -> bool:
        """Outside quotes, comments, meta-commands and COPY data, with psql's query buffer empty."""
        return self._state == "initial" and self._statement.start is None and not self._carry

    @property
    def settled(self) -> int:
        """Stream offset before which every byte is lexed and belongs to no watched statement still being read (a
        statement the listener may still want to act on)."""
        lexed = self._offset - len(self._carry)
        start = self._statement.start
        return min(start, lexed) if start is not None and self._statement.words is not None else lexed

    @property
    def in_copy(self) -> bool:
        return self._state in ("copy", "copy_line")

    # ---- outside quotes -----------------------------------------------------------------------------------
    def _lex_initial(self, buffer: bytes, position: int) -> int:
        if self._statement.fast:
            end = self._skip_run(buffer, position)
            if end != position:
                return end
        return self._lex_token(buffer, position)

    def _skip_run(self, buffer: bytes, position: int) -> int:
        """Past bytes that change nothing; position when a token must be looked at; -1: wait for more."""
        run = RUN.match(buffer, position)
        if run is None:
            return position
        end = run.end()
        if end == len(buffer) and not self._eof:
            end = _last_token_boundary(buffer, position, end)
            if end <= position:
                return -1
        elif buffer[end : end + 1] == b"'" and buffer[end - 1 : end] in (b"e", b"E", b"b", b"B", b"x", b"X") and (
            end - 1 == position or not _is_word_byte(buffer[end - 2])
        ):
            end -= 1  # a lone E, B or X before a quote starts a string of its own kind: leave it to the token lexer
        if end > position:
            self._touch(position)
        return end

    def _lex_token(self, buffer: bytes, position: int) -> int:
        token = TOKEN.match(buffer, position)
        assert token is not None  # every byte matches one alternative
        kind, end = token.lastgroup, token.end()
        text = buffer[position:end]
        if end == len(buffer) and not self._eof and kind != "space" and (
            kind != "special" or text in (b"$", b"\\", b"-", b"/")
        ):
            return -1  # the token may go on in the next chunk
        if kind == "space":
            return end
        if kind == "special":
            return self._special(buffer, position, end, text)
        if kind == "estring":
            return self._open_quote(position, end, "xe")
        if kind == "bitstring":
            return self._open_quote(position, end, "xq")
        self._touch(position)
        if kind == "ident":
            self._identifier(text)
        else:
            self._capture(Word(kind or "other", text.decode("utf-8", "replace")))
        return end

    def _special(self, buffer: bytes, position: int, end: int, text: bytes) -> int:
        if text == b"--":
            self._state, self._text_start, self._text = "line_comment", self._offset + position, []
            return end
        if text == b"/*":
            self._touch(position)
            self._state, self._comment_depth = "block_comment", 0
            return end
        if text == b"'":
            return self._open_quote(position, end, "xq" if self.standard_strings else "xe")
        if text == b'"':
            return self._open_quote(position, end, "xd")
        if text == b"$":
            return self._dollar(buffer, position)
        if text == b"\\":
            return self._backslash(buffer, position)
        self._touch(position)
        self._capture(Word("symbol", text.decode()))
        statement = self._statement
        if text == b"(":
            statement.paren_depth += 1
        elif text == b")" and statement.paren_depth > 0:
            statement.paren_depth -= 1
        elif text == b";" and statement.paren_depth == 0 and statement.begin_depth == 0:
            self._end_statement(end)
        return end

    def _touch(self, position: int) -> None:
        """Something other than whitespace or a -- comment: psql's query buffer is no longer empty."""
        if self._statement.start is None:
            self._statement.start = self._offset + position

    def _identifier(self, text: bytes) -> None:
        """psql counts the first words to spot CREATE [OR REPLACE] FUNCTION|PROCEDURE, whose BEGIN ... END body
        (with CASE ... END inside) holds semicolons that do not end the statement."""
        statement, lower = self._statement, text.lower()
        if statement.identifier_count < 4:
            statement.function_words.append(lower if lower in FUNCTION_WORDS else b"")
            words = statement.function_words + [b""] * 3
            statement.is_function = words[0] == b"create" and (
                words[1] in (b"function", b"procedure")
                or (words[1] == b"or" and words[2] == b"replace" and words[3] in (b"function", b"procedure")))
        statement.identifier_count += 1
        if statement.is_function and statement.paren_depth == 0:
            if lower == b"begin":
                statement.begin_depth += 1
            elif lower == b"case" and statement.begin_depth >= 1:
                statement.begin_depth += 1
            elif lower == b"end" and statement.begin_depth > 0:
                statement.begin_depth -= 1
        self._named(Word("ident", text.decode("utf-8", "replace")))

    def _named(self, word: Word) -> None:
        """An identifier or quoted identifier: the first two decide whether the statement's words are kept."""
        statement = self._statement
        self._capture(word)
        statement.named += 1
        if statement.named == 2 and statement.words is not None:
            first, second = [item for item in statement.words if item.kind in ("ident", "quoted")][:2]
            if not self.watch(first, second) and first.text.lower() not in LEXER_WATCHES:
                statement.words = None

    def _capture(self, word: Word) -> None:
        statement = self._statement
        if statement.words is None:
            return
        statement.last_words.append(word)
        if len(statement.words) < WORD_LIMIT:
            statement.words.append(word)
        else:
            statement.truncated = True

    def _end_statement(self, end: int) -> None:
        state = self._statement
        start = state.start if state.start is not None else self._offset + end - 1
        statement = Statement(start, self._offset + end, state.words or [],
                              list(state.last_words) if state.words is not None else [], state.truncated)
        self._statement = _StatementState()
        self._track_settings(statement)
        self.listener.statement(statement)
        if is_copy_from_stdin(statement):
            self._state = "copy_line"

    def _track_settings(self, statement: Statement) -> None:
        """psql follows the server's standard_conforming_strings and client_encoding; so does the lexer."""
        verb = statement.keyword(0)
        if verb == "reset" and len(statement.words) > 1:
            if statement.words[1].text.lower() in ("standard_conforming_strings", "all"):
                self.standard_strings = True
            return
        if verb != "set":
            return
        words = statement.words[2:] if statement.keyword(1) in ("session", "local") else statement.words[1:]
        if len(words) < 2:
            return
        name = words[0].text.lower()
        values = [word for word in words[1:] if word.kind != "symbol" and word.text not in ("=",)
                  and not word.is_keyword("to")]
        value = values[0].text.lower() if values else ""
        if name == "standard_conforming_strings":
            self.standard_strings = value in ("on", "true", "yes", "1", "default", "o")
        elif name in ("client_encoding", "names") and value.replace("_", "").replace("-", "") in UNSAFE_ENCODINGS:
            self.anomalies.append(f"client_encoding {value}")

    # ---- quoted text --------------------------------------------------------------------------------------
    def _open_quote(self, position: int, end: int, kind: str, tag: bytes = b"") -> int:
        self._touch(position)
        self._quote = _Quote(kind, tag, [] if self._statement.words is not None else None)
        self._state = "quote"
        return end

    def _lex_quote(self, buffer: bytes, position: int) -> int:
        quote = self._quote
        assert quote is not None
        if quote.kind == "dollar":
            return self._lex_dollar_body(buffer, position, quote)
        end = QUOTE_BODY[quote.kind].match(buffer, position).end()  # type: ignore[union-attr]
        self._keep(quote, buffer[position:end])
        if end == len(buffer):
            return end
        if buffer[end : end + 1] == b"\\":  # an escape string's backslash cut from what it escapes
            return end if end > position else (len(buffer) if self._eof else -1)
        if end + 1 == len(buffer) and not self._eof:  # a quote that may be the first of a doubled pair
            return end if end > position else -1
        if quote.kind == "xd":
            self._close_quote()
        else:
            self._state = "after_quote"
        return end + 1

    def _lex_after_quote(self, buffer: bytes, position: int) -> int:
        """A closing quote, then whitespace holding a newline, then a quote: the same string goes on."""
        continued = QUOTE_CONTINUATION.match(buffer, position)
        if continued is not None:
            self._state = "quote"
            return continued.end()
        if not self._eof and QUOTE_CONTINUATION_PREFIX.match(buffer, position):
            return -1
        self._close_quote()
        return position

    def _close_quote(self) -> None:
        quote, self._quote = self._quote, None
        assert quote is not None
        self._state = "initial"
        raw = b"".join(quote.pieces or [])
        if quote.size > TEXT_LIMIT:
            self._statement.truncated = True
        if quote.kind == "xd":
            self._named(Word("quoted", raw.replace(b'""', b'"').decode("utf-8", "replace")))
        elif quote.pieces is not None:
            text = raw.replace(b"''", b"'") if quote.kind == "xq" else raw
            self._capture(Word("string", text.decode("utf-8", "replace")))

    @staticmethod
    def _keep(quote: _Quote, data: bytes) -> None:
        if quote.pieces is not None and data and quote.size < TEXT_LIMIT:
            quote.pieces.append(data[: TEXT_LIMIT - quote.size])
        quote.size += len(data)

    def _dollar(self, buffer: bytes, position: int) -> int:
        tag = DOLLAR_TAG.match(buffer, position)
        if tag is not None:
            return self._open_quote(position, tag.end(), "dollar", tag.group(0))
        if not self._eof and DOLLAR_TAG_PREFIX.match(buffer, position):
            return -1  # `$abc` at the end of the chunk: the closing `$` may follow
        self._touch(position)  # `$1`, or `$abc` without a closing `$`: psql takes the `$` alone and goes on
        self._capture(Word("symbol", "$"))
        return position + 1

    def _lex_dollar_body(self, buffer: bytes, position: int, quote: _Quote) -> int:
        end = buffer.find(quote.tag, position)
        if end < 0:
            cut = len(buffer) if self._eof else max(position, len(buffer) - len(quote.tag) + 1)
            self._keep(quote, buffer[position:cut])
            return cut if cut > position else -1
        self._keep(quote, buffer[position:end])
        self._close_quote()
        return end + len(quote.tag)

    # ---- comments -----------------------------------------------------------------------------------------
    def _lex_line_comment(self, buffer: bytes, position: int) -> int:
        return self._read_to_line_end(buffer, position, _line_end(buffer, position), self._finish_line_comment)

    def _read_to_line_end(self, buffer: bytes, position: int, end: int, finish: Callable[[int], None]) -> int:
        """The text up to end (where the line ends; -1: not in this chunk) is kept; at the end, finish(offset)."""
        self._keep_text(buffer[position : end if end >= 0 else len(buffer)])
        if end < 0:
            return len(buffer)
        finish(self._offset + end)
        return end

    def _finish_line_comment(self, end: int) -> None:
        self._state = "initial"
        text = "--" + b"".join(self._text).decode("utf-8", "replace")
        self._text = []
        self.listener.comment(self._text_start, end, text, self._statement.start is not None)

    def _keep_text(self, data: bytes) -> None:
        kept = sum(len(piece) for piece in self._text)
        if kept < TEXT_LIMIT:
            self._text.append(data[: TEXT_LIMIT - kept])

    def _lex_block_comment(self, buffer: bytes, position: int) -> int:
        mark = BLOCK_COMMENT_MARK.search(buffer, position)
        if mark is None:
            if not self._eof and buffer.endswith((b"/", b"*")):
                return len(buffer) - 1 if len(buffer) - 1 > position else -1
            return len(buffer)
        if mark.group(0) == b"/*":
            self._comment_depth += 1
        elif self._comment_depth == 0:
            self._state = "initial"
        else:
            self._comment_depth -= 1
        return mark.end()

    # ---- meta-commands ------------------------------------------------------------------------------------
    def _backslash(self, buffer: bytes, position: int) -> int:
        if buffer[position + 1 : position + 2] in (b";", b":"):  # psql passes `\;` and `\:` on as text
            self._touch(position)
            return position + 2
        self._state, self._text_start, self._text = "meta", self._offset + position, []
        return position + 1

    def _lex_meta(self, buffer: bytes, position: int) -> int:
        return self._read_to_line_end(buffer, position, buffer.find(b"\n", position), self._finish_meta)

    def _finish_meta(self, end: int) -> None:
        self._state = "initial"
        text = ("\\" + b"".join(self._text).decode("utf-8", "replace")).rstrip("\r")
        self._text = []
        if "\\\\" in text:
            self.anomalies.append("a meta-command line holding \\\\")
        self.listener.meta_command(self._text_start, end, text)

    # ---- COPY data ----------------------------------------------------------------------------------------
    def _lex_copy_line(self, buffer: bytes, position: int) -> int:
        """The rest of the COPY statement's line: psql reads the data from the next line on."""
        newline = buffer.find(b"\n", position)
        if buffer[position : newline if newline >= 0 else len(buffer)].strip(b" \t\r\f\v"):
            self.anomalies.append("text after COPY ... FROM stdin; on the same line")
        if newline < 0:
            return len(buffer)
        self._state, self._copy_line_begin = "copy", True
        return newline + 1

    def _lex_copy(self, buffer: bytes, position: int) -> int:
        """Rows up to a line `\\.` (psql also takes `\\.` followed by CR LF): counted, never copied."""
        if self._copy_line_begin:
            head = buffer[position : position + 4]
            if head[:3] == b"\\.\n":
                return self._end_copy(position + 3)
            if head == b"\\.\r\n":
                return self._end_copy(position + 4)
            if not self._eof and len(head) < 4 and (b"\\.\n".startswith(head) or b"\\.\r\n".startswith(head)):
                return -1
        found = COPY_END.search(buffer, position)  # the same as buffer.find, about twice as fast on COPY rows
        marker = found.start() if found is not None else -1
        if marker >= 0:  # a line that may be the end: count up to it, then look at it from its start
            self.listener.copy_rows(buffer.count(b"\n", position, marker + 1))
            self._copy_line_begin = True
            return marker + 1
        end = len(buffer)
        if not self._eof and buffer.endswith(b"\n\\"):
            end -= 1  # a line starting with a backslash, cut: look at it again with the next chunk
        self.listener.copy_rows(buffer.count(b"\n", position, end))
        self._copy_line_begin = buffer[end - 1 : end] == b"\n"
        return end if end > position else -1

    def _end_copy(self, end: int) -> int:
        self._state, self._copy_line_begin = "initial", True
        self.listener.copy_end()
        return end


def _is_word_byte(byte: int) -> bool:
    return byte >= 0x80 or chr(byte).isalnum() or byte in b"_$"


def _last_token_boundary(buffer: bytes, position: int, end: int) -> int:
    """Where the run can be cut safely at the end of a chunk: after its last byte that cannot begin or continue a
    token with the next chunk (whitespace, or an operator byte other than - and /)."""
    cut = end
    while cut > position:
        byte = buffer[cut - 1]
        if not _is_word_byte(byte) and byte not in b"-/":
            return cut
        cut -= 1
    return position


def _line_end(buffer: bytes, position: int) -> int:
    """Where a -- comment ends: psql's lexer stops it at a newline or a carriage return."""
    newline = buffer.find(b"\n", position)
    carriage = buffer.find(b"\r", position, newline if newline >= 0 else len(buffer))
    return carriage if carriage >= 0 else newline


def is_copy_from_stdin(statement: Statement) -> bool:
    """COPY ... FROM stdin; the server then asks psql for the data, which psql reads from the following lines."""
    last = statement.last_words
    return (statement.keyword(0) == "copy" and len(last) == 3 and last[0].is_keyword("from")
            and last[1].is_keyword("stdin") and last[2] == Word("symbol", ";"))
