"""Device protocol adapters: sans-IO codecs, one package per protocol (docs/architecture.md).

Each adapter turns a box's bytes into typed frames and typed replies back into bytes; none does
I/O, and none imports anything of gp8 outside ``protocol/``.

- ``protocol.gp8``: the GP8 wire protocol v1 of the GP8000/GP8500 boxes (docs/protocol.md).
"""
