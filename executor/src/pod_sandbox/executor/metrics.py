"""Prometheus metrics of one executor process, in its own registry (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .. import __version__, wire

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
RSS_BUCKETS = tuple(float(m << 20) for m in (64, 128, 192, 256, 384, 512, 768, 1024, 2048, 4096, 8192))


class Metrics:
    """The counters, gauges and histograms ``GET /metrics`` exposes."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.executions = Counter("pandasai_executor_executions", "Executions by final status",
                                  ["status"], registry=r)
        for status in wire.STATUSES:
            self.executions.labels(status=status)
        self.duration = Histogram("pandasai_executor_execution_duration_seconds",
                                  "Wall time of executions (child start to exit)",
                                  buckets=DURATION_BUCKETS, registry=r)
        self.inflight = Gauge("pandasai_executor_inflight", "Executions running now", registry=r)
        self.timeouts = Counter("pandasai_executor_timeouts", "Executions killed at their timeout", registry=r)
        self.truncations = Counter("pandasai_executor_output_truncated",
                                   "Executions whose stdout/stderr was cut at the cap", ["stream"], registry=r)
        self.peak_rss = Histogram("pandasai_executor_child_peak_rss_bytes",
                                  "Peak resident memory of execution children", buckets=RSS_BUCKETS, registry=r)
        self.rejected = Counter("pandasai_executor_rejected_requests",
                                "Requests refused before running (busy, unauthorized, invalid)",
                                ["reason"], registry=r)
        self.upload_bytes = Counter("pandasai_executor_upload_bytes", "Bytes accepted by PUT /v1/files",
                                    registry=r)
        self.ready = Gauge("pandasai_executor_ready", "1 when the executor accepts executions", registry=r)
        self.build = Info("pandasai_executor_build", "Executor version", registry=r)
        self.build.info({"version": __version__})

    def observe_execution(self, response: dict) -> None:
        """Count one finished execution."""
        self.executions.labels(status=response["status"]).inc()
        self.duration.observe(response["duration_ms"] / 1000.0)
        if response["status"] == "timeout":
            self.timeouts.inc()
        for stream in ("stdout", "stderr"):
            if response.get(f"{stream}_truncated"):
                self.truncations.labels(stream=stream).inc()
        if response.get("peak_rss_bytes"):
            self.peak_rss.observe(response["peak_rss_bytes"])

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
