"""Hypothesis strategies for every GP8 message, over each field's full wire range."""

from __future__ import annotations

from hypothesis import strategies as st

from protocol.gp8 import (
    Ack,
    Challenge,
    Command,
    CommandFailure,
    CommandResult,
    CommandStatus,
    CommandType,
    Event,
    EventCode,
    Heartbeat,
    Ident,
    Login,
    LoginResult,
    LoginStatus,
    Message,
    Model,
    Nack,
    NackReason,
    Position,
    PositionRecord,
)


def _uint(bits: int) -> st.SearchStrategy[int]:
    return st.integers(0, 2**bits - 1)


def _sint(bits: int) -> st.SearchStrategy[int]:
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


seqs = _uint(32)
u8, u16, u32, u64 = _uint(8), _uint(16), _uint(32), _uint(64)

records: st.SearchStrategy[PositionRecord] = st.builds(
    PositionRecord,
    time_ms=u64,
    lat_e7=_sint(32),
    lon_e7=_sint(32),
    altitude_m=_sint(16),
    speed_dkmh=u16,
    heading_ddeg=u16,
    satellites=u8,
    hdop_d=u8,
    flags=u16,
    odometer_m=u32,
    ext_power_mv=u16,
    battery_mv=u16,
    gsm_signal=u8,
    warnings=u16,
    badge=u64,
)

imeis = st.text(alphabet="0123456789", min_size=15, max_size=15)

logins = st.builds(
    Login,
    seq=seqs,
    imei=imeis,
    model=st.sampled_from(Model),
    firmware=st.tuples(u8, u8, u8),
    proof=st.binary(min_size=32, max_size=32),
)
idents = st.builds(
    Ident, seq=seqs, imei=imeis, model=st.sampled_from(Model), firmware=st.tuples(u8, u8, u8)
)
# Up to 255 records fit a frame; generating that many per example is slow, and the 255-record
# frame has its own fixed case in cases.py.
positions = st.builds(
    Position, seq=seqs, records=st.lists(records, min_size=1, max_size=12).map(tuple)
)
events = st.builds(Event, seq=seqs, code=st.sampled_from(EventCode), detail=u32, record=records)
heartbeats = st.builds(Heartbeat, seq=seqs)
command_results = st.builds(
    CommandResult,
    seq=seqs,
    command_seq=seqs,
    status=st.sampled_from(CommandStatus),
    failure=st.sampled_from(CommandFailure),
    state=u16,
)
challenges = st.builds(
    Challenge, seq=seqs, nonce=st.binary(min_size=16, max_size=16), server_time_ms=u64
)
login_results = st.builds(
    LoginResult, seq=seqs, status=st.sampled_from(LoginStatus), server_time_ms=u64
)
commands = st.builds(Command, seq=seqs, command=st.sampled_from(CommandType), param=u32)
acks = st.builds(Ack, seq=seqs, acked_seq=seqs)
nacks = st.builds(Nack, seq=seqs, nacked_seq=seqs, reason=st.sampled_from(NackReason))

# One strategy per message class; test_properties checks it names every class in the codec.
BY_CLASS: dict[type, st.SearchStrategy[Message]] = {
    Login: logins,
    Ident: idents,
    Position: positions,
    Event: events,
    Heartbeat: heartbeats,
    CommandResult: command_results,
    Challenge: challenges,
    LoginResult: login_results,
    Command: commands,
    Ack: acks,
    Nack: nacks,
}
messages: st.SearchStrategy[Message] = st.one_of(*BY_CLASS.values())
