#!/usr/bin/env python3
"""What the HTTP tests ask a real HTTP client and the Prometheus parser.

    http_probe.py request METHOD URL [BODY] [TOKEN]
        prints {"status": ..., "body": ..., "content_type": ...}
    http_probe.py metrics URL [TOKEN]
        prints the samples parsed by prometheus_client:
        [{"name": ..., "labels": {...}, "value": ...}, ...]
"""
import json, os, ssl, sys, urllib.error, urllib.request

# HTTPS: trust the CA file PROBE_CAFILE names.
CONTEXT = ssl.create_default_context(cafile=os.environ["PROBE_CAFILE"]) if os.environ.get("PROBE_CAFILE") else None


def fetch(method, url, body=None, token=None):
    data = body.encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=20, context=CONTEXT) as r:
            return r.status, r.read().decode(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers.get("Content-Type", "")


def main():
    what = sys.argv[1]
    if what == "request":
        method, url = sys.argv[2], sys.argv[3]
        body = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None
        token = sys.argv[5] if len(sys.argv) > 5 else None
        if body == "@big":
            body = "x" * (2 << 20)
        status, text, content_type = fetch(method, url, body, token)
        print(json.dumps({"status": status, "body": text, "content_type": content_type}))
    elif what == "metrics":
        from prometheus_client.parser import text_string_to_metric_families
        token = sys.argv[3] if len(sys.argv) > 3 else None
        status, text, _ = fetch("GET", sys.argv[2], None, token)
        if status != 200:
            sys.exit(f"metrics answered {status}: {text}")
        samples = [{"name": s.name, "labels": s.labels, "value": s.value}
                   for family in text_string_to_metric_families(text) for s in family.samples]
        print(json.dumps(samples))


if __name__ == "__main__":
    main()
