"""Chunked, vectorised reading of delimited text files with exact line accounting.

Files are read in blocks cut at line ends and each block is parsed by Arrow's C++ CSV parser, so
reading is not a Python loop per row. Every line is accounted for: it becomes a row, a blank line,
or a :class:`RejectedRow` naming the file, line and reason. The same block parser serves the
in-process readers and the Beam ExampleGen.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from cmml.data.records import RejectedRow
from cmml.errors import DataFormatError

# Arrow's parser takes one-byte delimiters; multi-byte ones ('::') are mapped to this byte first.
_UNIT_SEPARATOR = "\x1f"
DEFAULT_BLOCK_BYTES = 16 << 20

UNBALANCED_QUOTE = "unbalanced quote"  # rejection kind (the reason's text before ':')

_SEPARATOR_NAMES = {"\t": "tabs", ",": "commas", "::": "'::'", "|": "'|'", ";": "';'"}


@dataclasses.dataclass(frozen=True)
class DelimitedFormat:
    """How a delimited text file is laid out.

    Attributes:
      delimiter: field separator, one or more characters ('::' for MovieLens 1M).
      columns: field names in file order. With ``header=True`` they are the names the header
        line must carry (the check is exact for fixed formats; see ``header_is_mapping``).
      header: whether the first line is a header.
      header_is_mapping: the header defines the column order (generic CSV); ``columns`` then lists
        the names that must be present and the table keeps the header's names.
      encoding: 'utf-8', 'latin-1', or 'auto' (UTF-8, falling back to latin-1 per block).
      quoted: fields may be enclosed in double quotes (CSV).
    """

    delimiter: str
    columns: tuple[str, ...]
    header: bool = False
    header_is_mapping: bool = False
    encoding: str = "utf-8"
    quoted: bool = False

    def describe_separator(self) -> str:
        return _SEPARATOR_NAMES.get(self.delimiter, repr(self.delimiter))


@dataclasses.dataclass
class ParsedBlock:
    """One block of a file: the rows as string columns, plus what was rejected or skipped."""

    path: str
    first_line: int  # 1-based line number of the block's first line
    n_lines: int
    table: pa.Table  # all columns pa.string(); blank lines already removed
    rejects: list[RejectedRow]
    blank_lines: int
    _row_lines: np.ndarray | None = None

    def row_lines(self) -> np.ndarray:
        """1-based file line number of every row of ``table``."""
        if self._row_lines is None:
            raise AssertionError("row_lines are set by parse_block")
        return self._row_lines


def _guess_separator(text: str, expected: str) -> str:
    for sep in ("::", "\t", ",", "|", ";"):
        if sep != expected and sep in text and not (expected == "::" and sep == ":"):
            return f" (the line looks separated by {_SEPARATOR_NAMES.get(sep, repr(sep))})"
    return ""


def parse_block(
    data: bytes, fmt: DelimitedFormat, path: str, first_line: int, columns: Sequence[str] | None = None
) -> ParsedBlock:
    """Parses whole lines in ``data`` (which must end at a line end or at the end of file)."""
    names = list(columns or fmt.columns)
    if not data:
        return ParsedBlock(path, first_line, 0, _empty(names), [], 0, np.zeros(0, np.int64))
    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    data = _to_utf8(data, fmt, path, first_line)
    line_rejects: list[RejectedRow] = []
    kept_lines = None  # 0-based block line of every line handed to the parser, when some were taken out
    if fmt.quoted and b'"' in data:
        data, kept_lines, line_rejects = _take_out_unbalanced_quotes(data, fmt, path, first_line)
        if not data:
            return ParsedBlock(path, first_line, n_lines, _empty(names), line_rejects, 0, np.zeros(0, np.int64))
    delimiter = fmt.delimiter
    if len(delimiter.encode()) > 1:
        data = data.replace(delimiter.encode(), _UNIT_SEPARATOR.encode())
        delimiter = _UNIT_SEPARATOR

    invalid: list[tuple[int, str, int]] = []

    def on_invalid(row) -> str:
        invalid.append((row.number, row.text, row.actual_columns))
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(
                column_names=names, use_threads=False, block_size=max(len(data) + 1, 1 << 20)
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter,
                quote_char='"' if fmt.quoted else False,
                double_quote=fmt.quoted,
                ignore_empty_lines=False,
                newlines_in_values=False,
                invalid_row_handler=on_invalid,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:  # e.g. an unterminated quote
        raise DataFormatError(path, f"cannot parse block starting at line {first_line}: {exc}") from exc

    def block_line(number: int) -> int:  # parser's 1-based line number -> 0-based line of the block
        return number - 1 if kept_lines is None else int(kept_lines[number - 1])

    rejects = []
    for number, text, actual in invalid:
        text = (text or "").replace(_UNIT_SEPARATOR, fmt.delimiter)
        line = first_line + block_line(number) if number is not None else -1
        if actual <= 1 and text.strip() == "":
            rejects.append(RejectedRow(path, line, text, "blank line"))
            continue
        reason = (
            f"wrong field count: expected {len(names)} fields separated by {fmt.describe_separator()}, found {actual}"
        )
        rejects.append(RejectedRow(path, line, text, reason + _guess_separator(text, fmt.delimiter)))

    # Arrow turns a blank line into a row of empty strings; drop those rows and count them.
    blank_mask = None
    for name in names:
        empty = pc.equal(pc.utf8_length(table[name]), 0)
        blank_mask = empty if blank_mask is None else pc.and_(blank_mask, empty)
    rejected_idx = [block_line(n) for n, _, _ in invalid if n is not None]
    rejected_idx += [r.line - first_line for r in line_rejects]
    row_idx = np.delete(np.arange(n_lines, dtype=np.int64), np.array(sorted(rejected_idx), dtype=np.int64))
    blank_rejects = [r for r in rejects if r.reason == "blank line"]
    rejects = sorted([r for r in rejects if r.reason != "blank line"] + line_rejects, key=lambda r: r.line)
    blank_lines = len(blank_rejects)
    if len(row_idx) != table.num_rows:
        raise DataFormatError(
            path,
            f"line accounting failed in block at line {first_line}: {n_lines} lines, {table.num_rows} rows, "
            f"{len(rejected_idx)} rejected",
        )
    if blank_mask is not None and table.num_rows:
        blank = np.asarray(blank_mask.to_numpy(), dtype=bool)
        if blank.any():
            blank_lines += int(blank.sum())
            table = table.filter(pa.array(~blank))
            row_idx = row_idx[~blank]
    return ParsedBlock(path, first_line, n_lines, table, rejects, blank_lines, row_idx + first_line)


def _take_out_unbalanced_quotes(
    data: bytes, fmt: DelimitedFormat, path: str, first_line: int
) -> tuple[bytes, np.ndarray | None, list[RejectedRow]]:
    """Quarantines lines with an odd number of quote characters before Arrow parses the block.

    Values cannot span lines (``newlines_in_values`` is off), so such a line can never parse; left in,
    its open quote would swallow the following lines. Returns the remaining bytes, the 0-based block
    line of each remaining line (None if nothing was taken out) and the rejected lines.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == ord("\n"))
    if not len(ends) or ends[-1] != len(buf) - 1:
        ends = np.append(ends, len(buf))  # last line without a line end
    quotes = np.flatnonzero(buf == ord('"'))
    per_line = np.bincount(np.searchsorted(ends, quotes), minlength=len(ends))
    odd = np.flatnonzero(per_line % 2 == 1)
    if not len(odd):
        return data, None, []
    starts = np.r_[0, ends[:-1] + 1]
    rejects = []
    for k in odd:
        text = data[starts[k] : ends[k]].decode("utf-8", errors="replace").rstrip("\r")
        text = text.replace(_UNIT_SEPARATOR, fmt.delimiter)
        rejects.append(RejectedRow(path, first_line + int(k), text, f"{UNBALANCED_QUOTE}: a '\"' is not closed"))
    keep_line = np.ones(len(ends), dtype=bool)
    keep_line[odd] = False
    line_bytes = np.minimum(ends + 1, len(buf)) - starts  # each line with its line end
    return buf[np.repeat(keep_line, line_bytes)].tobytes(), np.flatnonzero(keep_line), rejects


def _empty(names: Sequence[str]) -> pa.Table:
    return pa.table({n: pa.array([], pa.string()) for n in names})


def _to_utf8(data: bytes, fmt: DelimitedFormat, path: str, first_line: int) -> bytes:
    if fmt.encoding == "latin-1":
        return data.decode("latin-1").encode("utf-8")
    try:
        data.decode("utf-8")
        return data
    except UnicodeDecodeError as exc:
        if fmt.encoding == "auto":
            return data.decode("latin-1").encode("utf-8")
        line = first_line + data.count(b"\n", 0, exc.start)
        raise DataFormatError(
            path,
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x}); if the file is latin-1, read it with encoding 'latin-1'",
            line=line,
        ) from exc


def read_header(path: str, fmt: DelimitedFormat) -> tuple[list[str], int]:
    """Reads and checks the header line. Returns (column names, header length in bytes)."""
    with open(path, "rb") as f:
        raw = f.readline()
    if not raw.strip():
        raise DataFormatError(path, "file is empty" if not raw else "header line is empty", line=1)
    text = raw.decode("utf-8", errors="replace").strip().lstrip("\ufeff")
    names = [c.strip().strip('"') for c in text.split(fmt.delimiter)]
    if fmt.header_is_mapping:
        missing = [c for c in fmt.columns if c not in names]
        if missing:
            raise DataFormatError(
                path,
                f"header has no column(s) {', '.join(repr(m) for m in missing)}; "
                f"found {', '.join(repr(n) for n in names)}" + _guess_separator(text, fmt.delimiter),
                line=1,
            )
    elif names != list(fmt.columns):
        raise DataFormatError(
            path,
            f"header is {fmt.delimiter.join(names)!r}, expected {fmt.delimiter.join(fmt.columns)!r}"
            + _guess_separator(text, fmt.delimiter),
            line=1,
        )
    return names, len(raw)


@dataclasses.dataclass(frozen=True)
class BlockRange:
    """Where one block of a file lies: whole lines from ``offset`` (``length`` bytes), starting at ``first_line``.

    Blocks can be read in any order and in other processes (:func:`read_block`): a distributed
    reader ships these few numbers, not the data.
    """

    path: str
    offset: int
    length: int
    first_line: int
    columns: tuple[str, ...]


def block_ranges(
    path: str | os.PathLike, fmt: DelimitedFormat, block_bytes: int = DEFAULT_BLOCK_BYTES
) -> list[BlockRange]:
    """Cuts a file into blocks of about ``block_bytes`` at line ends (one pass counting line ends).

    Raises DataFormatError for a missing or empty file or a bad header.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataFormatError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise DataFormatError(path, "file is empty")
    columns = tuple(fmt.columns)
    offset, line = 0, 1
    if fmt.header:
        names, offset = read_header(path, fmt)
        columns, line = tuple(names), 2
    ranges = []
    with open(path, "rb") as f:
        carry = 0  # bytes after the last line end, read again with the next chunk
        while True:
            f.seek(offset + carry)
            chunk = f.read(block_bytes)
            if not chunk:
                break
            cut = chunk.rfind(b"\n")
            if cut < 0:
                carry += len(chunk)
                continue
            length = carry + cut + 1
            lines = chunk.count(b"\n", 0, cut + 1)  # the carried bytes hold no line end
            ranges.append(BlockRange(path, offset, length, line, columns))
            offset, line, carry = offset + length, line + lines, 0
        if carry:
            ranges.append(BlockRange(path, offset, carry, line, columns))
    return ranges


def read_block(block: BlockRange, fmt: DelimitedFormat) -> ParsedBlock:
    """Reads and parses one block of :func:`block_ranges`."""
    with open(block.path, "rb") as f:
        f.seek(block.offset)
        data = f.read(block.length)
    return parse_block(data, fmt, block.path, block.first_line, block.columns)


def iter_blocks(
    path: str | os.PathLike, fmt: DelimitedFormat, block_bytes: int = DEFAULT_BLOCK_BYTES
) -> Iterator[ParsedBlock]:
    """Yields the parsed blocks of a file, in order. Raises DataFormatError for an empty file."""
    for block in block_ranges(path, fmt, block_bytes):
        yield read_block(block, fmt)
