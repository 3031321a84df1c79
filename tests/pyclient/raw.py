"""Sends raw frames to a vpoller frontend with a pyzmq REQ socket and
prints each reply, one per line: how the wire treats what a real client
could send."""
import json, sys
import zmq

endpoint = sys.argv[1]
frames = [
    b"this is not json",
    json.dumps([1, 2, 3]).encode(),
    json.dumps("a string").encode(),
    json.dumps({}).encode(),
    json.dumps({"method": 42, "hostname": []}).encode(),
    b"\xff\xfe not utf-8",
    b"{" + b'"x": "' + b"y" * (2 << 20) + b'"}',
]
ctx = zmq.Context()
for frame in frames:
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    s.send(frame)
    if s.poll(10000):
        print(s.recv().decode("utf-8", "replace"))
    else:
        print("<no reply>")
    s.close()
