"""Device protocol adapters: sans-IO codecs, one package per protocol (docs/architecture.md).

Each adapter turns a box's bytes into typed frames and typed replies back into bytes; none does
I/O, and none imports anything of gp8 outside ``protocol/``.

- ``protocol.gp8``: the GP8 wire protocol v1 of the GP8000/GP8500 boxes (docs/protocol.md).
- ``protocol.teltonika``: Teltonika's TCP protocol, Codec 8, 8 Extended, 16 and 12, of the
  FMB/FMC/FMM trackers (docs/teltonika.md).
"""
