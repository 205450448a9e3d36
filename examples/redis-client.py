#!/usr/bin/env python3
"""Faultline's client program for Redis: one JSON request a line on stdin, one JSON reply a
line on stdout (docs/targets.md). Speaks RESP itself, so it needs nothing but Python 3.

Requests: {"id", "node": "IP:PORT", "op": "get"|"put"|"cas"|"delete", "key", "value" | "from",
"to"}. Replies: {"id", "outcome": "ok"|"fail"|"unknown", ...}: a get's "value" (null when the
key is absent), a put's "previous", a cas's "ok". A refused connection or an error reply is
"fail" (Redis rejected the command whole); a connection lost after the request went out is
"unknown".
"""
import json
import socket
import sys

CAS = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "redis.call('SET', KEYS[1], ARGV[2]) return 1 else return 0 end"
)

connections = {}


class Rejected(Exception):
    """Redis answered with an error: the command did not run."""


def connection(node):
    if node not in connections:
        host, port = node.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
        connections[node] = (sock, sock.makefile("rb"))
    return connections[node]


def encode(*words):
    out = [b"*%d\r\n" % len(words)]
    for word in words:
        data = word.encode() if isinstance(word, str) else word
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def read_reply(stream):
    line = stream.readline()
    if not line:
        raise ConnectionError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise Rejected(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        length = int(rest)
        if length < 0:
            return None
        data = stream.read(length + 2)
        return data[:-2].decode()
    if kind == b"*":
        return [read_reply(stream) for _ in range(int(rest))]
    raise ConnectionError("not RESP: %r" % line)


def command(node, *words, read_only=False):
    # A connection kept from before the node restarted fails at once; a read, which changes
    # nothing, is then sent again on a new one.
    for attempt in range(2 if read_only else 1):
        try:
            sock, stream = connection(node)
        except OSError:
            return "fail", None
        try:
            sock.sendall(encode(*words))
            return "ok", read_reply(stream)
        except Rejected:
            return "fail", None
        except (OSError, ConnectionError):
            connections.pop(node, None)
    return ("fail" if read_only else "unknown"), None


def handle(request):
    node, key, op = request["node"], request["key"], request["op"]
    if op == "get":
        outcome, value = command(node, "GET", key, read_only=True)
        return {"outcome": outcome, "value": value}
    if op == "put":
        outcome, previous = command(node, "SET", key, request["value"], "GET")
        return {"outcome": outcome, "previous": previous}
    if op == "cas":
        outcome, done = command(node, "EVAL", CAS, "1", key, request["from"], request["to"])
        return {"outcome": outcome, "ok": done == 1}
    if op == "delete":
        outcome, _ = command(node, "DEL", key)
        return {"outcome": outcome}
    return {"outcome": "fail", "error": "unknown op %r" % op}


for line in sys.stdin:
    request = json.loads(line)
    reply = handle(request)
    reply["id"] = request["id"]
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
