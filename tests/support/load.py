"""Client load for tests and benchmarks: continuous submits that remember what was acknowledged."""

from __future__ import annotations

import random
import threading
import time
import uuid

import httpx

from support.cluster import Cluster


class Submitter:
    """Submits jobs continuously to random masters and remembers what was acknowledged."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.acked: dict[str, str] = {}  # idempotency key -> job id
        self.ack_times: list[float] = []  # time.monotonic() of each acknowledgement
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Submitter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.cluster.token}"}
        master = None
        with httpx.Client(headers=headers, timeout=2) as http:
            while not self._stop.is_set():
                key = uuid.uuid4().hex
                # Retry one key until acknowledged or stopped: a retry must never make a second job.
                while not self._stop.is_set():
                    # Stay with a master while it answers, like the SDK; on trouble try another.
                    if master is None or not master.alive:
                        master = random.choice([m for m in self.cluster.masters if m.alive])
                    try:
                        resp = http.post(f"{master.url}/v1/jobs", json={"name": "chaos", "image": "claud/busybox"},
                                         headers={"Idempotency-Key": key})
                    except httpx.HTTPError as exc:
                        self.errors.append(type(exc).__name__)
                        master = None
                        continue
                    if resp.status_code in (200, 201):
                        self.acked[key] = resp.json()["id"]
                        self.ack_times.append(time.monotonic())
                        break
                    self.errors.append(str(resp.status_code))
                    master = None
                    time.sleep(0.05)

    def count(self) -> int:
        return len(self.acked)
