"""Read a Parquet file from an untrusted sandbox into pandas within :class:`AnswerLimits`.

Nothing is allocated for the data before it is bounded:

1. the footer is parsed by pyarrow with thrift size limits derived from the file's own size;
2. its metadata (rows, columns, row groups, codecs, column types and their nesting) is checked;
3. every page header of every column chunk is read (Thrift compact protocol, below) and its
   declared sizes checked: pyarrow decompresses a page into a buffer of the size the header
   declares and refuses any other outcome, so bounding those sizes bounds decompression in
   every codec (a "bomb" can only declare what it expands to);
4. the frame's size in pandas is estimated from the types and counts (fixed-width cells,
   boxed cells for dates, decimals and nested values, a bound on text from its pages); string
   and binary columns whose bound does not fit are read as dictionaries (indices and distinct
   values, both bounded by the pages), their size once decoded computed from the dictionary,
   and only then are they decoded and converted to pandas.

``tests/test_answer_limits.py`` checks the page walk against pyarrow's own sizes and that every
codec refuses a page header that understates its size.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from .limits import AnswerLimits, LimitExceeded

FIELD = "result.value.data"
#: Bytes a pandas object cell costs beyond its characters (the pointer and the str header).
OBJECT_CELL_BYTES = 64
#: Bytes per cell charged for types pandas holds as Python objects (dates, decimals, nested).
BOXED_CELL_BYTES = 128
CODECS = frozenset({"UNCOMPRESSED", "SNAPPY", "GZIP", "BROTLI", "ZSTD", "LZ4", "LZ4_RAW"})
_MAX_HEADER_BYTES = 1 << 16
_DATA_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 2, 3


class _Malformed(ValueError):
    """A page header that is not Thrift compact protocol as Parquet writes it."""


@dataclass
class PageHeader:
    """The fields of a Parquet ``PageHeader`` that size what reading the page allocates."""

    page_type: int = -1
    uncompressed: int = -1
    compressed: int = -1
    num_values: int = 0
    header_bytes: int = 0


class _Compact:
    """Just enough of Thrift's compact protocol to read a PageHeader and skip what it does not need."""

    def __init__(self, buf: memoryview, pos: int, end: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise _Malformed("page header runs past its column chunk")
        value = self.buf[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise _Malformed("varint longer than 64 bits")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def skip(self, ftype: int, depth: int) -> None:
        if depth > 16:
            raise _Malformed("page header nested too deeply")
        if ftype in (1, 2):  # bool in a field header: the value is the type
            return
        if ftype == 3:
            self.byte()
        elif ftype in (4, 5, 6):
            self.varint()
        elif ftype == 7:
            self._advance(8)
        elif ftype == 8:
            self._advance(self.varint())
        elif ftype in (9, 10):
            head = self.byte()
            size = head >> 4 if head >> 4 != 15 else self.varint()
            for _ in range(size):
                self._element(head & 0x0F, depth + 1)
        elif ftype == 11:
            size = self.varint()
            if size:
                kinds = self.byte()
                for _ in range(size):
                    self._element(kinds >> 4, depth + 1)
                    self._element(kinds & 0x0F, depth + 1)
        elif ftype == 12:
            self.struct(lambda fid, t: self.skip(t, depth + 1))
        else:
            raise _Malformed(f"unknown thrift type {ftype}")

    def _element(self, ftype: int, depth: int) -> None:
        if ftype in (1, 2):  # bool as a list element: one byte
            self.byte()
        else:
            self.skip(ftype, depth)

    def _advance(self, n: int) -> None:
        if n < 0 or self.pos + n > self.end:
            raise _Malformed("page header runs past its column chunk")
        self.pos += n

    def struct(self, on_field: Any) -> None:
        last = 0
        while True:
            head = self.byte()
            if head == 0:
                return
            delta, ftype = head >> 4, head & 0x0F
            fid = last + delta if delta else self.zigzag()
            on_field(fid, ftype)
            last = fid


def read_page_header(buf: memoryview, pos: int, end: int) -> PageHeader:
    """Parse the PageHeader at ``pos``; ``end`` is where its column chunk ends."""
    reader = _Compact(buf, pos, min(end, pos + _MAX_HEADER_BYTES))
    header = PageHeader()

    def sub_header(fid: int, ftype: int) -> None:
        if fid == 1 and ftype == 5:  # num_values of data, dictionary and v2 data page headers
            header.num_values = reader.zigzag()
        else:
            reader.skip(ftype, 1)

    def on_field(fid: int, ftype: int) -> None:
        if fid in (1, 2, 3) and ftype == 5:
            value = reader.zigzag()
            if fid == 1:
                header.page_type = value
            elif fid == 2:
                header.uncompressed = value
            else:
                header.compressed = value
        elif fid in (5, 7, 8) and ftype == 12:
            reader.struct(sub_header)
        else:
            reader.skip(ftype, 1)

    reader.struct(on_field)
    header.header_bytes = reader.pos - pos
    if header.uncompressed < 0 or header.compressed < 0 or header.num_values < 0:
        raise _Malformed("page header without valid sizes")
    return header


def _type_cost(arrow_type: Any, depth: int, limits: AnswerLimits, name: str) -> int | None:
    """Bytes per cell once in pandas for fixed-width types; None for strings/binary (measured)."""
    import pyarrow as pa  # noqa: PLC0415

    types = pa.types
    if depth > limits.max_type_depth:
        raise LimitExceeded(FIELD, f"column {name!r}: type nested deeper than {limits.max_type_depth}",
                            "max_type_depth")
    if types.is_dictionary(arrow_type):
        _type_cost(arrow_type.value_type, depth + 1, limits, name)
        return 8
    if types.is_nested(arrow_type):
        for i in range(arrow_type.num_fields):
            _type_cost(arrow_type.field(i).type, depth + 1, limits, name)
        return None
    if (types.is_string(arrow_type) or types.is_large_string(arrow_type)
            or types.is_binary(arrow_type) or types.is_large_binary(arrow_type)):
        return None
    if types.is_fixed_size_binary(arrow_type):
        return arrow_type.byte_width + OBJECT_CELL_BYTES
    if (types.is_date(arrow_type) or types.is_time(arrow_type) or types.is_decimal(arrow_type)
            or types.is_null(arrow_type)):
        return BOXED_CELL_BYTES
    return 9  # numbers, booleans, timestamps, durations: 8 bytes and a mask bit


def _walk_pages(data: memoryview, meta: Any, limits: AnswerLimits) -> tuple[int, list[int], list[int]]:
    """Check every page header.

    Returns the bytes decompression allocates, each leaf column's number of values, and a bound
    on each leaf's bytes once decoded (a dictionary-encoded chunk: its values times its whole
    dictionary page, an upper bound; else its pages).
    """
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    total = 0
    leaf_values = [0] * meta.num_columns
    leaf_bound = [0] * meta.num_columns
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            where = f"row group {g}, column {chunk.path_in_schema!r}"
            if chunk.compression not in CODECS:
                raise LimitExceeded(FIELD, f"{where}: codec {chunk.compression} is not accepted")
            if chunk.num_values <= 0:
                continue  # pyarrow reads no page of it
            start = chunk.data_page_offset  # where pyarrow starts reading the chunk
            if chunk.has_dictionary_page and 0 < chunk.dictionary_page_offset < start:
                start = chunk.dictionary_page_offset
            end = start + chunk.total_compressed_size
            if start < 4 or chunk.total_compressed_size < 0 or end > footer_start:
                raise LimitExceeded(FIELD, f"{where}: the column chunk lies outside the file")
            pos, values, dictionary, plain = start, 0, 0, 0
            try:
                while pos < end and values < chunk.num_values:
                    page = read_page_header(data, pos, end)
                    pos += page.header_bytes + page.compressed
                    if pos > end:
                        raise _Malformed("page runs past its column chunk")
                    total += page.uncompressed
                    if page.page_type in (_DATA_PAGE, _DATA_PAGE_V2):
                        values += page.num_values
                        plain += page.uncompressed
                    elif page.page_type == _DICTIONARY_PAGE:
                        dictionary = max(dictionary, page.uncompressed)
                    if total > limits.max_frame_bytes:
                        raise LimitExceeded(
                            FIELD, f"{where}: pages decompress to more than {limits.max_frame_bytes} bytes",
                            "max_frame_bytes")
            except _Malformed as exc:
                raise LimitExceeded(FIELD, f"{where}: {exc}") from None
            leaf_values[c] += values
            leaf_bound[c] += values * dictionary + plain
    return total, leaf_values, leaf_bound


def _check_metadata(pf: Any, limits: AnswerLimits) -> None:
    meta = pf.metadata
    rows, columns = meta.num_rows, len(pf.schema_arrow)
    for value, limit, what in ((rows, "max_rows", "rows"), (columns, "max_columns", "columns"),
                               (meta.num_row_groups, "max_row_groups", "row groups"),
                               (rows * max(columns, 1), "max_cells", "cells")):
        if value < 0 or value > getattr(limits, limit):
            raise LimitExceeded(FIELD, f"{value} {what} declared, at most {getattr(limits, limit)}", limit)
    if sum(meta.row_group(g).num_rows for g in range(meta.num_row_groups)) != rows:
        raise LimitExceeded(FIELD, "the row groups' rows do not add up to the file's")


def read_frame(raw: bytes, limits: AnswerLimits) -> Any:
    """The pandas DataFrame in Parquet file ``raw``, or :class:`LimitExceeded` before allocating."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    if len(raw) < 12 or raw[:4] != b"PAR1" or raw[-4:] != b"PAR1":
        raise LimitExceeded(FIELD, "not a Parquet file (no PAR1 magic)")
    footer = int.from_bytes(raw[-8:-4], "little")
    if footer <= 0 or footer > len(raw) - 12:
        raise LimitExceeded(FIELD, f"footer length {footer} does not fit the {len(raw)}-byte file")
    opts = {"thrift_string_size_limit": len(raw), "thrift_container_size_limit": 4 * limits.max_columns + 1024}
    pf = pq.ParquetFile(io.BytesIO(raw), **opts)
    _check_metadata(pf, limits)
    schema = pf.schema_arrow
    rows = pf.metadata.num_rows
    page_bytes, leaf_values, leaf_bound = _walk_pages(memoryview(raw), pf.metadata, limits)
    if sum(leaf_values) > limits.max_cells:
        raise LimitExceeded(FIELD, f"{sum(leaf_values)} values in the pages, at most {limits.max_cells}",
                            "max_cells")
    fixed = 0
    measured: list[str] = []
    for f in schema:
        cost = _type_cost(f.type, 1, limits, f.name)
        if cost is None and not pa.types.is_nested(f.type):
            measured.append(f.name)
        elif cost is None:  # nested: every leaf value boxed, strings at most their pages' bytes
            fixed += BOXED_CELL_BYTES * max(rows, 1)
        else:
            fixed += cost * rows
    nested_leaves = sum(leaf_values) if any(pa.types.is_nested(f.type) for f in schema) else 0
    estimate = fixed + page_bytes + nested_leaves * BOXED_CELL_BYTES + 4 * rows * len(measured)
    if estimate > limits.max_frame_bytes:
        raise LimitExceeded(FIELD, f"the frame would take about {estimate} bytes, at most {limits.max_frame_bytes}",
                            "max_frame_bytes")
    # Text whose bound from the pages fits needs no measuring; the rest is read as dictionaries.
    leaf_of = {pf.metadata.schema.column(c).path: c for c in range(pf.metadata.num_columns)}
    unknown = limits.max_frame_bytes + 1  # a name that is not one leaf: measure it
    bounded = fixed + sum(OBJECT_CELL_BYTES * rows + (leaf_bound[leaf_of[n]] if n in leaf_of else unknown)
                          for n in measured)
    if bounded <= limits.max_frame_bytes:
        measured = []
    table = pq.ParquetFile(io.BytesIO(raw), read_dictionary=measured, **opts).read(use_pandas_metadata=True)
    if table.num_rows != rows:
        raise LimitExceeded(FIELD, f"{table.num_rows} rows read where the metadata declares {rows}")
    strings = 0
    for name in measured:
        column = table.column(name)
        for chunk in column.chunks:
            if pa.types.is_dictionary(chunk.type) and len(chunk):
                lengths = pc.binary_length(chunk.dictionary)
                strings += pc.sum(pc.take(lengths, chunk.indices)).as_py() or 0
        strings += OBJECT_CELL_BYTES * len(column)
        if fixed + strings > limits.max_frame_bytes:
            raise LimitExceeded(FIELD, f"column {name!r}: the frame would take more than "
                                f"{limits.max_frame_bytes} bytes once its text is decoded", "max_frame_bytes")
    if measured:
        table = table.cast(schema)
    _check_pandas_metadata(schema, limits)
    return table.to_pandas()


def _check_pandas_metadata(schema: Any, limits: AnswerLimits) -> None:
    """pandas casts column labels and cells to the dtypes its metadata names: only small ones.

    (``column_indexes`` naming ``S1000000000`` made pandas allocate 1 GB per column label.)
    """
    from .wire import loads, small_cell_dtype  # noqa: PLC0415

    text = (schema.metadata or {}).get(b"pandas")
    if text is None:
        return
    meta = loads(text, limits, f"{FIELD} pandas metadata")
    entries = [e for key in ("columns", "column_indexes") for e in (meta.get(key) or [])] if isinstance(meta, dict) else []
    for entry in entries:
        dtype = entry.get("numpy_type") if isinstance(entry, dict) else None
        if dtype is not None and dtype != "object" and not small_cell_dtype(dtype):
            name = str(entry.get("name"))[:80]
            raise LimitExceeded(FIELD, f"pandas metadata: column {name!r} names dtype {str(dtype)[:40]!r} "
                                "(a cell of at most 16 bytes is accepted)")
