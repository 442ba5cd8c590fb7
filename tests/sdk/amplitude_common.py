"""Shared harness for the amplitude_*.py scenarios: an official
`amplitude-analytics` client pointed at a running Sluice, which records
every event's final callback and every HTTP status the SDK saw."""

import json
import sys
import threading
import time

import amplitude.worker
from amplitude import Amplitude, Config

_http_lock = threading.Lock()
HTTP_CODES = []

_real_post = amplitude.worker.HttpClient.post


def _recording_post(url, payload, header=None):
    res = _real_post(url, payload, header)
    with _http_lock:
        HTTP_CODES.append(res.code)
    return res


# Observe (not change) what the SDK's worker sends and receives.
amplitude.worker.HttpClient.post = staticmethod(_recording_post)


class Harness:
    def __init__(self, server_url, api_key, **config):
        self.results = {}
        self._lock = threading.Lock()
        cfg = Config(server_url=server_url, flush_interval_millis=200, callback=self._callback, **config)
        self.client = Amplitude(api_key, cfg)

    def _callback(self, event, code, message=None):
        with self._lock:
            self.results[event.insert_id] = {"event_type": event.event_type, "code": code, "message": message}

    def wait(self, n, timeout=60):
        """Wait until n events have a final callback (success or drop)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.client.flush()
            with self._lock:
                if len(self.results) >= n:
                    break
            time.sleep(0.2)
        self.client.shutdown()

    def report(self):
        with _http_lock:
            codes = list(HTTP_CODES)
        print(json.dumps({"events": self.results, "http_codes": codes}))
        sys.stdout.flush()


def args():
    if len(sys.argv) != 3:
        sys.exit("usage: <script> SERVER_URL API_KEY")
    return sys.argv[1], sys.argv[2]
