"""Prometheus metrics of one ivrserver process, on a private registry served at /metrics."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.agi_calls = Counter("ivrserver_agi_calls", "FastAGI connections handled", ["script", "result"],
                                 registry=r)
        self.agi_active = Gauge("ivrserver_agi_active_calls", "FastAGI calls in progress", registry=r)
        self.agi_command_seconds = Histogram(
            "ivrserver_agi_command_seconds", "Round trip of one AGI command", ["command"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5, 30))
        self.ami_connected = Gauge("ivrserver_ami_connected", "1 when logged in to AMI", registry=r)
        self.ami_events = Counter("ivrserver_ami_events", "AMI events received", ["event"], registry=r)
        self.ami_reconnects = Counter("ivrserver_ami_reconnects", "AMI connections re-established",
                                      registry=r)
        self.ami_dropped = Counter("ivrserver_ami_events_dropped", "AMI events dropped: consumer too slow",
                                   registry=r)
        self.ami_parse_errors = Counter("ivrserver_ami_parse_errors", "AMI events that failed strict parsing",
                                        ["event"], registry=r)
        self.menu_reloads = Counter("ivrserver_menu_reloads", "Menu reloads", ["result"], registry=r)
        self.policy_reloads = Counter("ivrserver_policy_reloads", "Policy file reloads (SIGHUP, REST) by file "
                                      "(cases, incidents, reminders, webhooks, routing) and result (ok, rejected)",
                                      ["file", "result"], registry=r)
        self.routes = Counter("ivrserver_routes", "Routing decisions", ["action"], registry=r)
        self.pops = Counter("ivrserver_pops_published", "Screen-pops published", ["phase"], registry=r)
        self.callbacks = Counter("ivrserver_callbacks_attempts", "Callback dial attempts", ["result"], registry=r)
        self.ws_clients = Gauge("ivrserver_agent_sockets", "Connected agent websockets", registry=r)
        self.task_restarts = Counter("ivrserver_task_restarts", "Background tasks restarted after a crash",
                                     ["task"], registry=r)
        self.web_connections = Gauge("ivrserver_web_connections", "Open HTTP connections", registry=r)
        self.web_rejected = Counter("ivrserver_web_connections_rejected",
                                    "HTTP connections closed at once: web.max_connections reached", registry=r)
        self.web_header_timeouts = Counter("ivrserver_web_header_timeouts",
                                           "HTTP connections closed: request headers late (web.header_timeout)",
                                           registry=r)
        self.webhook_attempts = Counter("ivrserver_webhook_attempts", "Outgoing webhook attempts by outcome "
                                        "(delivered, retry, dead)", ["outcome"], registry=r)
        self.case_followup_dead = Counter("ivrserver_case_followup_dead_letters", "Case changes a follow-up "
                                          "handler gave up on (moved to the dead letters), by handler",
                                          ["handler"], registry=r)
        self.sms = Counter("ivrserver_sms", "SMS sends by outcome (sent, failed:<why>: services/sms.py)",
                           ["outcome"], registry=r)
        self.reminders = Counter("ivrserver_reminders", "Reminder notices by result (scheduled, cancelled, "
                                 "skipped, failed: services/reminders.py)", ["result"], registry=r)
        self._children: dict[tuple[int, str], Any] = {}

    def child(self, metric: Counter | Histogram, label: str) -> Any:
        """`metric.labels(label)`, cached: labels() takes a lock and checks the label each time, and
        the per-AGI-command and per-AMI-event paths ask for the same few children all day long."""
        key = (id(metric), label)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(label)
        return found
