"""What the proxy and the target agree on, kept apart from both so that running the
proxy with ``python -m`` does not import it twice."""

from __future__ import annotations

#: response header naming the version that served the request
VERSION_HEADER = "x-shiplog-version"
#: the proxy's own paths: its loaded routing table (with generation), its metrics
CONTROL_PATH = "/_shiplog/routing"
METRICS_PATH = "/metrics"
