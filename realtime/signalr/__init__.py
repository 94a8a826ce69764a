"""The SignalR-compatible campaign hub's pieces, apart from its consumer (realtime.consumers.signalr):

- ``protocol``: the JSON hub protocol as pure functions (records, handshake, parsing);
- ``families``: events rendered as the two method families' client calls;
- ``http``: negotiate, the refused HTTP transports, connection tokens, the shutdown flag.
"""
