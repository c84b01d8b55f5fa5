"""Protocol adapters of the gateway: what the device-session core (gateway/core.py) needs of
each device protocol — the frame table, record conversion, login and replies — on top of that
protocol's sans-IO codec in ``protocol/``. Adding a protocol adds one module here."""
