#!/usr/bin/env python3
"""A sagad participant over HTTP/JSON, with nothing but Python's standard
library: `http.server` serves the two endpoints, `json` reads and writes the
contract's bodies, `sqlite3` keeps the charges and the barrier table.

    python3 examples/python/payments.py --listen 127.0.0.1:7003 --db payments.sqlite3
    sagad participants register payments --protocol http \\
        --forward http://127.0.0.1:7003/charge --compensate http://127.0.0.1:7003/refund

The contract is docs/participant.md, "The HTTP contract". What makes this
participant safe is its barrier: one row per (saga, step, action), written in
the same SQLite transaction as the charge or refund it records, so

- a repeated call (same idempotency key) gets the first answer again and
  charges nothing more;
- a refund whose charge never arrived records "nothing to undo" and answers OK;
- a charge that arrives after its refund does nothing and answers rejected
  (409), so it can never charge a saga that was already undone.

Answers: 200 with {"output": ...} for a charge, 409 {"reason": ...} for a card
declined (payload "card": "declined"), 503 with Retry-After: 1 for the first
attempt of a "card": "flaky" (not recorded: the next attempt gets a fresh try).
GET /charges lists the charges, to see the net effect.
"""

import argparse
import base64
import json
import sqlite3
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCHEMA = """
CREATE TABLE IF NOT EXISTS barrier (
    saga_id TEXT NOT NULL,
    step TEXT NOT NULL,
    action TEXT NOT NULL,            -- 'forward' or 'compensate'
    idempotency_key TEXT NOT NULL UNIQUE,
    status INTEGER NOT NULL,         -- the HTTP status first answered
    answer TEXT NOT NULL,            -- the JSON body first answered
    PRIMARY KEY (saga_id, step, action)
);
CREATE TABLE IF NOT EXISTS charges (
    saga_id TEXT NOT NULL,
    step TEXT NOT NULL,
    charge_id TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    refunded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (saga_id, step)
);
"""


def unembed(value, encoding):
    """The bytes sagad sent, per the contract's encodings."""
    if encoding == "json":
        return json.dumps(value).encode()
    if encoding == "text":
        return value.encode()
    if encoding == "base64":
        return base64.b64decode(value)
    raise ValueError("unknown encoding %r" % (encoding,))


class Payments:
    """The business and its barrier, over one SQLite file."""

    def __init__(self, path):
        self.path = path
        # One writer at a time: each call is one short transaction, and
        # BEGIN IMMEDIATE makes the barrier check and the write atomic.
        with self.connect() as db:
            db.executescript(SCHEMA)

    def connect(self):
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    def call(self, action, body):
        """(status, answer dict, extra headers) for one call."""
        saga, step, key = body["saga_id"], body["step"], body["idempotency_key"]
        db = self.connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            seen = db.execute(
                "SELECT status, answer FROM barrier WHERE idempotency_key = ?", (key,)
            ).fetchone()
            if seen is not None:
                # A repeat: the first answer, and nothing done again.
                db.execute("COMMIT")
                return seen["status"], json.loads(seen["answer"]), {}
            if action == "forward":
                status, answer, headers = self.charge(db, saga, step, body)
            else:
                status, answer, headers = self.refund(db, saga, step)
            if status < 500:
                # A final answer is kept in the same transaction as the
                # effect; a "retry later" is not, so the retry runs afresh.
                db.execute(
                    "INSERT INTO barrier VALUES (?, ?, ?, ?, ?, ?)",
                    (saga, step, action, key, status, json.dumps(answer)),
                )
            db.execute("COMMIT")
            return status, answer, headers
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def charge(self, db, saga, step, body):
        undone = db.execute(
            "SELECT 1 FROM barrier WHERE saga_id = ? AND step = ? AND action = 'compensate'",
            (saga, step),
        ).fetchone()
        if undone is not None:
            return 409, {"reason": "already compensated: this charge arrived late"}, {}
        try:
            payload = json.loads(unembed(body["payload"], body["payload_encoding"]))
        except ValueError:
            payload = {}  # not JSON (or empty): an order with no details
        if not isinstance(payload, dict):
            payload = {}
        card = payload.get("card")
        if card == "declined":
            return 409, {"reason": "card declined by the issuer"}, {}
        if card == "flaky" and body["attempt"] == 1:
            return 503, {"reason": "the card network is busy"}, {"Retry-After": "1"}
        amount = int(payload.get("amount_cents", 0))
        count = db.execute("SELECT COUNT(*) FROM charges").fetchone()[0]
        charge_id = "ch_%d" % (count + 1)
        db.execute(
            "INSERT INTO charges (saga_id, step, charge_id, amount_cents) VALUES (?, ?, ?, ?)",
            (saga, step, charge_id, amount),
        )
        return 200, {"output": {"charge": charge_id, "amount_cents": amount}}, {}

    def refund(self, db, saga, step):
        charged = db.execute(
            "SELECT charge_id FROM charges WHERE saga_id = ? AND step = ?", (saga, step)
        ).fetchone()
        if charged is None:
            # The charge never arrived (or was declined): nothing to undo. The
            # barrier row written now bars a late charge for good.
            return 200, {"reason": "nothing to undo"}, {}
        db.execute(
            "UPDATE charges SET refunded = 1 WHERE saga_id = ? AND step = ?", (saga, step)
        )
        return 200, {"output": {"refunded": charged["charge_id"]}}, {}

    def charges(self):
        db = self.connect()
        try:
            rows = db.execute(
                "SELECT saga_id, charge_id, amount_cents, refunded FROM charges ORDER BY rowid"
            ).fetchall()
            return [dict(row) for row in rows]
        finally:
            db.close()


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps sagad's pooled connection open between calls.
    protocol_version = "HTTP/1.1"
    payments = None  # set before serving
    endpoints = {"/charge": "forward", "/refund": "compensate"}

    def do_POST(self):
        action = self.endpoints.get(self.path)
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        if action is None:
            return self.send(404, {"reason": "no endpoint %s" % self.path})
        try:
            body = json.loads(raw)
        except ValueError as e:
            return self.send(400, {"reason": "not JSON: %s" % e})
        if body.get("action") != action:
            return self.send(400, {"reason": "%s is the %s endpoint" % (self.path, action)})
        status, answer, headers = self.payments.call(action, body)
        self.send(status, answer, headers)

    def do_GET(self):
        if self.path == "/charges":
            return self.send(200, {"charges": self.payments.charges()})
        self.send(404, {"reason": "no page %s" % self.path})

    def send(self, status, answer, headers=None):
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        sys.stderr.write("payments: %s\n" % (format % args))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:7003", help="HOST:PORT (port 0: any free one)")
    parser.add_argument("--db", default="payments.sqlite3", help="the SQLite file")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    Handler.payments = Payments(args.db)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    # The address actually bound, so a caller that asked for port 0 learns it.
    print("payments listening on %s:%d" % server.server_address[:2], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
