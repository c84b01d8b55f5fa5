"""Teltonika TCP framing: streaming decoders and an encoder (docs/teltonika.md, "Framing").

What a box sends over TCP: first its IMEI (two-byte length, then ASCII digits), then packets:

    00000000 | data length (u32) | codec id | ... | CRC (u32: 0000 + CRC-16/IBM)
    preamble   bytes of the data    └── the data: what the length counts and the CRC covers

An AVL data packet's data is ``codec id, record count, records, record count again`` (Codec 8,
8 Extended, 16); a Codec 12 packet's is ``0C, 01, type, text size (u32), text, 01``. What the
server sends: one byte for the IMEI (01 accepted, 00 refused), the record count of each packet
as a u32 once it has taken the records, and Codec 12 commands.

Strategy. Each decoder keeps one receive buffer and a read offset; ``feed`` only appends and
never raises, and ``next_frame`` follows the reader contract of h11's readers:

* it returns a decoded frame and consumes its bytes,
* it returns ``None`` when the buffer holds no complete frame yet ("need more bytes"),
* it raises a :class:`~protocol.teltonika.errors.FrameError` when the input is wrong.

Unlike GP8, every error is final. The framing has no start marker (the preamble is four zero
bytes, which data is full of) and no sequence number, so once a length, CRC or layout is wrong
nothing says where the next packet starts. The decoder drops its buffer, ignores whatever it is
fed afterwards, and the caller closes the link; the box keeps every record that was not
acknowledged and sends it again on its next connection. Errors are detected as early as the
bytes allow: a wrong preamble byte at once, an impossible length from the 8-byte header, without
waiting for the bytes it announces. A packet is parsed once, when it is complete, so decoding
costs time linear in the bytes however they were cut.

Records are parsed and serialised through one table of layouts, a row per codec (`LAYOUTS`),
and parsed by shape (see "record shapes" below); frames through one table per direction
(`_PACKET_PARSERS`, `_ENCODERS`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from operator import itemgetter
from typing import Any, NamedTuple

from protocol.teltonika.crc import crc16
from protocol.teltonika.errors import (
    BadCrc,
    BadImei,
    BadLength,
    BadPreamble,
    EncodeError,
    FrameError,
    FrameTooLarge,
    MalformedPacket,
    UnknownCodec,
)
from protocol.teltonika.frames import (
    AvlPacket,
    AvlRecord,
    Codec,
    Command,
    Frame,
    Imei,
    ImeiReply,
    IoVariable,
    MessageType,
    RecordsAck,
    Response,
)

PREAMBLE = b"\x00\x00\x00\x00"
_HEADER = struct.Struct(">II")  # preamble, data length
HEADER_SIZE = _HEADER.size  # 8
CRC_SIZE = 4
# Largest whole packet accepted, header and CRC included. Teltonika documents 1,280 bytes as the
# largest AVL packet of its FMB devices (512 for the FMB64x); 16 KiB leaves room for Codec 8
# Extended packets carrying large variable-size elements and for long Codec 12 texts, and bounds
# what one connection can make us hold, as GP8's MAX_FRAME_SIZE does.
MAX_PACKET_SIZE = 16 * 1024
# The smallest data of any packet: a codec id and two counts.
MIN_DATA_LENGTH = 3
MAX_RECORDS = 255  # the count is one byte
# An IMEI is 15 digits; some firmware sends the 16-digit IMEISV. The bound also caps what we wait
# for before the first frame.
MAX_IMEI_LENGTH = 16
_IMEI_HEAD = struct.Struct(">H")
_U32 = struct.Struct(">I")
_CODEC12_HEAD = struct.Struct(">BBBI")  # codec id, quantity, type, text size
_NX_HEAD = struct.Struct(">HH")  # Codec 8 Extended variable-size element: id, length
_LATIN1 = "latin-1"  # Codec 12 text: ASCII in practice; latin-1 maps every byte, so it round-trips

# The GPS element and what precedes it, common to every AVL codec: timestamp, priority,
# longitude, latitude, altitude, angle, satellites, speed.
_GPS = ">QBiihHBH"


class Layout(NamedTuple):
    """How one AVL codec lays out a record's IO elements."""

    head: struct.Struct  # GPS element, event IO id, [generation type], total IO count
    counter: struct.Struct  # the per-size element counts
    ident: str  # struct code of an element id
    variable: bool  # carries NX (variable-size) elements after the 8-byte ones
    generation: bool  # carries a generation type (Codec 16)

    @property
    def pair_sizes(self) -> tuple[int, int, int, int]:
        """Bytes of one (id, value) pair of each value size."""
        ident = struct.calcsize(">" + self.ident)
        return (ident + 1, ident + 2, ident + 4, ident + 8)


LAYOUTS: dict[Codec, Layout] = {
    Codec.CODEC_8: Layout(struct.Struct(_GPS + "BB"), struct.Struct(">B"), "B", False, False),
    Codec.CODEC_8E: Layout(struct.Struct(_GPS + "HH"), struct.Struct(">H"), "H", True, False),
    Codec.CODEC_16: Layout(struct.Struct(_GPS + "HBB"), struct.Struct(">B"), "H", False, True),
}
_SIZES = "BHIQ"  # 1-, 2-, 4- and 8-byte values, in wire order
_GROUPS: dict[tuple[str, str, int], struct.Struct] = {}
# What the walk of a codec's records needs (head size, wide counts, NX elements, pair sizes),
# looked up once per packet.
_WALKS = {
    codec: (layout.head.size, layout.counter.size == 2, layout.variable, *layout.pair_sizes)
    for codec, layout in LAYOUTS.items()
}
_CODECS = {codec.value: codec for codec in Codec}  # a dict lookup, where Codec(byte) runs Python


def _group(ident: str, size: str, n: int) -> struct.Struct:
    """The Struct of ``n`` (id, value) pairs, made once per shape."""
    key = (ident, size, n)
    s = _GROUPS.get(key)
    if s is None:
        s = _GROUPS[key] = struct.Struct(">" + (ident + size) * n)
    return s


# --- record shapes -------------------------------------------------------------------------------
#
# A record's shape is its codec and how many elements of each value size it carries. A box's
# records come in a handful of shapes, and everything but the values follows from the shape: one
# Struct unpacks a record's fixed-size part (all but its NX elements) in one call, and a builder
# turns that row into a record. The builder starts as a loop over the element groups (`_one`,
# the definition); once it has built COMPILE_AFTER records of a shape, it is replaced by code
# compiled for that shape (as namedtuple and dataclasses do) that builds a record as one tuple
# display: no loop, no call per group. Parsing is then mostly C: the Struct, the tuples.
# tests/protocol/teltonika/test_shapes.py checks the compiled builders against the loop.
#
# Shapes are chosen by whoever sends the bytes, so the cache is bounded in entries and in what
# each may hold (a shape with more elements is made afresh for each packet, in time linear in
# its size, like the rest of the parse), and compiling (some 0.2 ms for 11 elements, 0.9 ms for
# 64) waits until a shape has proved common, so that a sender changing shapes at every packet
# costs loops, not compilations.
MAX_SHAPES = 256
MAX_SHAPE_ELEMENTS = 64
COMPILE_AFTER = 64  # records built by the loop

_ShapeKey = tuple[Codec, int, int, int, int]  # codec, then the element count of each value size
_Row = tuple[Any, ...]  # a record's fixed-size part, as its shape's Struct unpacks it


class _Shape:
    """What the records of one shape have in common."""

    __slots__ = (
        "compiled", "counts", "elements", "expected", "fields", "generation", "key", "many", "one",
        "seen", "spans", "struct",
    )  # fmt: skip

    def __init__(self, key: _ShapeKey) -> None:
        layout = LAYOUTS[key[0]]
        counter = layout.counter.format[-1]
        fmt = [layout.head.format]
        spans: list[tuple[int, int]] = []
        field = len(layout.head.format) - 1  # the first count's, in a row
        for size, n in zip(_SIZES, key[1:], strict=True):
            fmt.append(counter + (layout.ident + size) * n)
            spans.append((field + 1, field + 1 + 2 * n))
            field += 1 + 2 * n
        if layout.variable:
            fmt.append(counter)  # the NX count
            field += 1
        self.key = key
        self.struct = struct.Struct("".join(fmt))
        self.fields = field  # in a row
        self.spans = tuple(spans)  # per value size, the fields of its (id, value, ...) in a row
        self.elements = sum(key[1:])  # what the total says when there is no NX element
        # For _alike: the fields that say where a record ends, the total, and what they say in a
        # record of this shape without NX elements.
        ends = [a - 1 for a, _ in spans] + [field - 1] * layout.variable
        self.counts = itemgetter(*ends, len(layout.head.format) - 2)
        self.expected = (*key[1:], *[0] * layout.variable, self.elements)
        self.generation = 9 if layout.generation else None  # its field in a row
        self.one: Callable[[_Row, IoVariable], AvlRecord] = self._cold_one
        self.many: Callable[[Iterable[_Row]], list[AvlRecord]] = self._cold_many
        self.seen = 0  # records built by the loop so far
        self.compiled = False

    def _cold_one(self, row: _Row, iox: IoVariable) -> AvlRecord:
        """`one` until compiled: the loop, counted."""
        self._count(1)
        return self._one(row, iox)

    def _cold_many(self, rows: Iterable[_Row]) -> list[AvlRecord]:
        """`many` until compiled: the loop, counted."""
        records = self._many(rows)
        self._count(len(records))
        return records

    def _count(self, records: int) -> None:
        """Compile once the loop has built COMPILE_AFTER records (only the loop pays for counting).

        `compiled` is checked because a walk goes on with the builder it took before.
        """
        self.seen += records
        if self.seen >= COMPILE_AFTER and not self.compiled and self.elements <= MAX_SHAPE_ELEMENTS:
            self._compile()

    def _one(self, row: _Row, iox: IoVariable) -> AvlRecord:
        """The definition of a record from its row: what the compiled builders must give."""
        pairs = [tuple(zip(row[a:b:2], row[a + 1 : b : 2], strict=True)) for a, b in self.spans]
        generation = None if self.generation is None else row[self.generation]
        return AvlRecord._make((*row[:9], *pairs, iox, generation))

    def _many(self, rows: Iterable[_Row]) -> list[AvlRecord]:
        """Records without NX elements, from their rows."""
        return [self._one(row, ()) for row in rows]

    def _compile(self) -> None:
        """`_one` and `_many` for this shape as straight-line code: the row unpacked into names
        ``f0, f1, ...``, the record written as one tuple display, ``(f0, ..., ((f10, f11), ...``.

        The source is made of field numbers only, nothing taken from the bytes.
        """
        row = ", ".join(f"f{i}" for i in range(self.fields))
        head = "".join(f"f{i}, " for i in range(9))
        groups = "".join(
            "(" + "".join(f"(f{i}, f{i + 1}), " for i in range(a, b, 2)) + "), "
            for a, b in self.spans
        )
        generation = "None" if self.generation is None else f"f{self.generation}"
        source = (
            "def one(row, iox):\n"
            f"    ({row},) = row\n"
            f"    return new(R, ({head}{groups}iox, {generation}))\n"
            "def many(rows):\n"
            f"    return [new(R, ({head}{groups}(), {generation})) for ({row},) in rows]\n"
        )
        # tuple.__new__ makes an AvlRecord of a tuple in C, where AvlRecord(...) runs Python.
        namespace: dict[str, Any] = {"new": tuple.__new__, "R": AvlRecord}
        exec(compile(source, f"<Teltonika record shape {self.key}>", "exec"), namespace)
        self.one, self.many = namespace["one"], namespace["many"]
        self.compiled = True


_SHAPES: dict[_ShapeKey, _Shape] = {}


def _new_shape(key: _ShapeKey) -> _Shape:
    """A shape not in the cache (use ``_SHAPES.get(key) or _new_shape(key)``)."""
    shape = _Shape(key)
    if shape.elements <= MAX_SHAPE_ELEMENTS:
        if len(_SHAPES) >= MAX_SHAPES:
            _SHAPES.clear()
        _SHAPES[key] = shape
    return shape


# --- parsers: the data of a CRC-valid packet -> frame (raise ValueError/struct.error) ----------


def _parse_records(codec: Codec, data: bytes, count: int) -> tuple[AvlRecord, ...]:
    """``count`` records from offset 2 of ``data``, which must end exactly after the last.

    Each record is walked by its counts (each says how far the next is), its NX elements read
    and its total checked; its fixed-size part is then unpacked by its shape's Struct and built
    by its shape's builder.

    A box's records mostly look alike, so when the first record's shape, repeated, fills the data
    exactly, `_alike` checks the counts and totals of all the records at once, and if each is the
    first one's, the walk would find what the first record's Struct finds: all are unpacked and
    built in one go. Otherwise the walk goes on: a wrong guess costs one unpack of the packet.
    """
    hsize, wide, variable, s1, s2, s4, s8 = _WALKS[codec]
    end = len(data)
    records: list[AvlRecord] = []
    last = None
    iox: IoVariable = ()
    pos = 2  # after the codec id and the first count
    for i in range(count):
        p = pos + hsize
        if wide:
            total = data[p - 2] << 8 | data[p - 1]
            n1 = data[p] << 8 | data[p + 1]
            p += 2 + n1 * s1
            n2 = data[p] << 8 | data[p + 1]
            p += 2 + n2 * s2
            n4 = data[p] << 8 | data[p + 1]
            p += 2 + n4 * s4
            n8 = data[p] << 8 | data[p + 1]
            p += 2 + n8 * s8
        else:
            total = data[p - 1]
            n1 = data[p]
            p += 1 + n1 * s1
            n2 = data[p]
            p += 1 + n2 * s2
            n4 = data[p]
            p += 1 + n4 * s4
            n8 = data[p]
            p += 1 + n8 * s8
        nx_count = 0
        if variable:
            if p + 2 > end:
                raise ValueError("record cut short before its NX count")
            nx_count = data[p] << 8 | data[p + 1]
            p += 2
            if nx_count:
                nx: list[tuple[int, bytes]] = []
                for _ in range(nx_count):
                    io_id, length = _NX_HEAD.unpack_from(data, p)
                    p += 4
                    if p + length > end:
                        raise ValueError(f"IO element {io_id} of {length} bytes runs past the data")
                    nx.append((io_id, data[p : p + length]))
                    p += length
                iox = tuple(nx)
            else:
                iox = ()
        carried = n1 + n2 + n4 + n8 + nx_count
        if total != carried:
            raise ValueError(f"record {i} announces {total} IO elements and carries {carried}")
        key = (codec, n1, n2, n4, n8)
        if key != last:
            if not i and count > 1 and not nx_count and (p - 2) * count == end - 2:
                alike = _alike(key, data, count)
                if alike is not None:
                    return alike
            shape = _SHAPES.get(key) or _new_shape(key)
            unpack, build, last = shape.struct.unpack_from, shape.one, key
        records.append(build(unpack(data, pos), iox))  # unpack: struct.error if cut short
        pos = p
    if pos != end:
        raise ValueError(f"{end - pos} bytes left after {count} records")
    return tuple(records)


def _alike(key: _ShapeKey, data: bytes, count: int) -> tuple[AvlRecord, ...] | None:
    """The records if every one has the counts and total of the first, which has no NX element
    and whose shape, repeated ``count`` times, fills the data: else None."""
    shape = _SHAPES.get(key) or _new_shape(key)
    rows = list(shape.struct.iter_unpack(memoryview(data)[2:]))
    if list(map(shape.counts, rows)) != [shape.expected] * count:
        return None
    return tuple(shape.many(rows))


def _parse_avl(data: bytes) -> AvlPacket:
    codec = _CODECS[data[0]]
    count = data[1]
    if count == 0:
        raise ValueError("a packet without records")
    if data[-1] != count:
        raise ValueError(f"record counts differ: {count} and {data[-1]}")
    # The data stops before the second count, so a record cut short cannot read it as data
    # (a copy, but bytes index faster than a memoryview, once per byte read of the records).
    return AvlPacket(codec, _parse_records(codec, bytes(data[:-1]), count))


def _parse_codec12(data: bytes) -> Command | Response:
    _, quantity, type_, size = _CODEC12_HEAD.unpack_from(data)
    if quantity != 1 or data[-1] != 1:
        raise ValueError(f"command quantities {quantity} and {data[-1]}: only 1 is defined")
    if _CODEC12_HEAD.size + size + 1 != len(data):
        raise ValueError(f"text of {size} bytes in {len(data)} bytes of data")
    text = data[_CODEC12_HEAD.size : -1].decode(_LATIN1)
    kind = MessageType(type_)
    return Command(text) if kind is MessageType.COMMAND else Response(text)


_PACKET_PARSERS: dict[int, Callable[[bytes], AvlPacket | Command | Response]] = {
    Codec.CODEC_8: _parse_avl,
    Codec.CODEC_8E: _parse_avl,
    Codec.CODEC_16: _parse_avl,
    Codec.CODEC_12: _parse_codec12,
}


# --- serialisers: frame -> bytes ---------------------------------------------------------------


def _pack_record(codec: Codec, layout: Layout, r: AvlRecord) -> bytes:
    groups = (r.io1, r.io2, r.io4, r.io8)
    total = sum(map(len, groups)) + len(r.iox)
    if r.iox and not layout.variable:
        raise EncodeError(f"{codec.name} has no variable-size IO elements")
    if (r.generation is not None) != layout.generation:
        # The decoder gives None for codecs without it: anything else would not round-trip.
        raise EncodeError(
            f"{codec.name} records {'need' if layout.generation else 'have no'} generation type"
        )
    head = (*r[:9], r.generation, total) if layout.generation else (*r[:9], total)
    parts = [layout.head.pack(*head)]
    for size, group in zip(_SIZES, groups, strict=True):
        parts.append(layout.counter.pack(len(group)))
        if group:
            parts.append(_group(layout.ident, size, len(group)).pack(*chain.from_iterable(group)))
    if layout.variable:
        parts.append(layout.counter.pack(len(r.iox)))
        for io_id, value in r.iox:
            parts.append(_NX_HEAD.pack(io_id, len(value)))
            parts.append(bytes(value))
    return b"".join(parts)


def _wrap(data: bytes) -> bytes:
    """Header, data, CRC: a whole packet."""
    if HEADER_SIZE + len(data) + CRC_SIZE > MAX_PACKET_SIZE:
        raise EncodeError(f"packet of {len(data) + 12} bytes exceeds MAX_PACKET_SIZE")
    return _HEADER.pack(0, len(data)) + data + _U32.pack(crc16(data))


def _encode_avl(packet: AvlPacket) -> bytes:
    codec = Codec(packet.codec)
    layout = LAYOUTS.get(codec)
    if layout is None:
        raise EncodeError(f"{codec.name} carries no records")
    count = len(packet.records)
    if not 1 <= count <= MAX_RECORDS:
        raise EncodeError(f"a packet carries 1..{MAX_RECORDS} records, not {count}")
    body = b"".join(_pack_record(codec, layout, r) for r in packet.records)
    return _wrap(bytes((codec, count)) + body + bytes((count,)))


def _encode_codec12(type_: MessageType, text: str) -> bytes:
    try:
        raw = text.encode(_LATIN1)
    except UnicodeEncodeError as exc:
        raise EncodeError(f"Codec 12 text must be latin-1 (ASCII in practice): {exc}") from exc
    return _wrap(_CODEC12_HEAD.pack(Codec.CODEC_12, 1, type_, len(raw)) + raw + b"\x01")


def _valid_imei(imei: str) -> bool:
    # isascii: str.isdigit() also accepts "²" and other scripts' digits.
    return 1 <= len(imei) <= MAX_IMEI_LENGTH and imei.isascii() and imei.isdigit()


def _encode_imei(frame: Imei) -> bytes:
    if not _valid_imei(frame.imei):
        raise EncodeError(f"an IMEI is 1..{MAX_IMEI_LENGTH} ASCII digits: {frame.imei!r}")
    return _IMEI_HEAD.pack(len(frame.imei)) + frame.imei.encode("ascii")


_ENCODERS: dict[type[Any], Callable[[Any], bytes]] = {
    Imei: _encode_imei,
    AvlPacket: _encode_avl,
    Response: lambda f: _encode_codec12(MessageType.RESPONSE, f.text),
    ImeiReply: lambda f: b"\x01" if f.accepted else b"\x00",
    RecordsAck: lambda f: _U32.pack(f.count),
    Command: lambda f: _encode_codec12(MessageType.COMMAND, f.text),
}


def encode(frame: Frame) -> bytes:
    """The bytes of ``frame`` on the wire. Raises EncodeError for what the codec cannot carry."""
    try:
        encoder = _ENCODERS[type(frame)]
    except KeyError:
        raise EncodeError(f"not a Teltonika frame: {type(frame).__name__}") from None
    try:
        return encoder(frame)
    except (struct.error, ValueError, OverflowError) as exc:  # ValueError: a value outside an enum
        raise EncodeError(str(exc)) from exc


# --- decoders ----------------------------------------------------------------------------------


class _Buffer:
    """A receive buffer with a read offset; consumed bytes are dropped in amortised O(1)."""

    def __init__(self, max_packet_size: int) -> None:
        self.max_packet_size = max_packet_size
        self._buf = bytearray()
        self._pos = 0
        self.failed = False  # set by the first error: nothing more is decoded

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes (dropped once the stream has failed). Never raises."""
        if self.failed:
            return
        if self._pos and self._pos >= len(self._buf) // 2:
            # Compact only when at least half is consumed, so the copy is amortised O(1).
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def _take(self, n: int) -> bytes:
        out = bytes(self._buf[self._pos : self._pos + n])
        self._skip(n)
        return out

    def _skip(self, n: int) -> None:
        self._pos += n
        if self._pos >= len(self._buf):
            self._buf.clear()
            self._pos = 0

    def _fail(self) -> None:
        self.failed = True
        self._buf = bytearray()
        self._pos = 0

    def _packet(self) -> AvlPacket | Command | Response | None:
        """The next packet (preamble, length, data, CRC), or None for "need more bytes"."""
        buf, pos = self._buf, self._pos
        avail = len(buf) - pos
        if avail >= HEADER_SIZE:
            preamble, length = _HEADER.unpack_from(buf, pos)
        else:  # a wrong preamble byte fails as soon as it comes
            preamble, length = any(buf[pos : pos + 4]), 0
        if preamble:
            raise BadPreamble(f"preamble {bytes(buf[pos : pos + 4]).hex()} is not 00000000")
        if avail < HEADER_SIZE:
            return None
        if length < MIN_DATA_LENGTH:
            raise BadLength(f"data length {length} is below the minimum {MIN_DATA_LENGTH}")
        total = HEADER_SIZE + length + CRC_SIZE
        if total > self.max_packet_size:
            raise FrameTooLarge(f"packet of {total} bytes exceeds {self.max_packet_size}")
        if avail < total:
            return None
        start = pos + HEADER_SIZE
        data = bytes(buf[start : start + length])
        (crc,) = _U32.unpack_from(buf, start + length)
        self._skip(total)
        if crc != crc16(data):
            raise BadCrc(f"CRC {crc:08x}, the data's is {crc16(data):08x}")
        parser = _PACKET_PARSERS.get(data[0])
        if parser is None:
            raise UnknownCodec(f"codec 0x{data[0]:02x}")
        try:
            return parser(data)
        except (ValueError, IndexError, struct.error) as exc:  # IntEnum lookups: ValueError
            raise MalformedPacket(f"{Codec(data[0]).name}: {exc}") from exc

    def next_frame(self) -> Frame | None:
        """The next frame, or None for "need more bytes"; raises FrameError (final)."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame | FrameError]:
        """Drain the buffer: frames, then the error that ended the stream, if one did."""
        while True:
            try:
                frame = self.next_frame()
            except FrameError as exc:
                yield exc
                return
            if frame is None:
                return
            yield frame

    def _guarded(self, read: Callable[[], Frame | None]) -> Frame | None:
        if self.failed:
            return None
        try:
            return read()
        except FrameError:
            self._fail()
            raise


class FrameDecoder(_Buffer):
    """What a box sends, as the server reads it: the IMEI first, then packets.

    Memory is bounded: the decoder never holds more than ``max_packet_size`` bytes of an
    incomplete frame, because a header announcing more is rejected at once.
    """

    def __init__(self, *, expect_imei: bool = True, max_packet_size: int = MAX_PACKET_SIZE):
        super().__init__(max_packet_size)
        self.expect_imei = expect_imei

    def next_frame(self) -> Frame | None:
        """The next frame, or None for "need more bytes"; raises FrameError (final) on bad input."""
        return self._guarded(self._imei if self.expect_imei else self._packet)

    def _imei(self) -> Imei | None:
        if self.buffered < 2:
            return None
        (length,) = _IMEI_HEAD.unpack_from(self._buf, self._pos)
        if not 1 <= length <= MAX_IMEI_LENGTH:
            raise BadImei(f"IMEI length {length}, expected 1..{MAX_IMEI_LENGTH}")
        if self.buffered < 2 + length:
            return None
        digits = self._take(2 + length)[2:]
        if not digits.isdigit():  # bytes.isdigit: ASCII digits only
            raise BadImei(f"IMEI {digits!r} is not ASCII digits")
        self.expect_imei = False
        return Imei(digits.decode("ascii"))


class DeviceDecoder(_Buffer):
    """What the server sends, as a box reads it: the IMEI reply, record counts, commands.

    Four bytes of count and a packet's four-byte zero preamble cannot be told apart by their
    bytes (a count of 0 *is* 00000000), so the box says when it waits for a count, as a real one
    does after each packet: ``expect_ack``. A server must then not put a command between a packet
    and its count; gp8's does not (gateway/adapters/teltonika.py).
    """

    def __init__(self, *, max_packet_size: int = MAX_PACKET_SIZE) -> None:
        super().__init__(max_packet_size)
        self.awaiting_reply = True  # the IMEI reply comes first
        self.acks_due = 0

    def expect_ack(self) -> None:
        """A packet went out: the next four bytes are its record count."""
        self.acks_due += 1

    def next_frame(self) -> Frame | None:
        """The next frame, or None for "need more bytes"; raises FrameError (final) on bad input."""
        return self._guarded(self._read)

    def _read(self) -> Frame | None:
        if self.awaiting_reply:
            if not self.buffered:
                return None
            (byte,) = self._take(1)
            if byte > 1:
                raise MalformedPacket(f"IMEI reply 0x{byte:02x}, expected 00 or 01")
            self.awaiting_reply = False
            return ImeiReply(bool(byte))
        if self.acks_due:
            if self.buffered < 4:
                return None
            self.acks_due -= 1
            return RecordsAck(_U32.unpack(self._take(4))[0])
        return self._packet()
