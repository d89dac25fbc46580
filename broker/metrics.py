"""Prometheus metrics, one registry per app (tests build many apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Counters of decisions, transitions and approvals, and a gauge of long-poll waiters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter("jitgate_decisions", "Policy decisions on proposals", ["outcome"], registry=self.registry)
        self.transitions = Counter("jitgate_transitions", "State transitions", ["to"], registry=self.registry)
        self.approvals = Counter("jitgate_approvals", "Approvals counted", ["channel"], registry=self.registry)
        self.redecided = Counter("jitgate_redecided", "Requests the policies refused when deciding again "
                                 "(denied or revoked), by the step that asked", ["stage"], registry=self.registry)
        self.break_glass = Counter("jitgate_break_glass", "Break-glass grants", ["subject"], registry=self.registry)
        self.kill_switch = Counter("jitgate_kill_switch", "Requests and grants ended by the kill switch",
                                   registry=self.registry)
        self.auth_failures = Counter("jitgate_auth_failures", "Refused agent or resource-server assertions", registry=self.registry)
        self.http_errors = Counter("jitgate_http_errors", "Problem responses", ["code"], registry=self.registry)
        # One label value per configured JITGATE_AUDIT_EXPORT destination (a fixed, small set).
        self.audit_exported = Counter("jitgate_audit_exported", "Sealed audit entries an export destination took",
                                      ["destination"], registry=self.registry)
        self.audit_export_failures = Counter("jitgate_audit_export_failures",
                                             "Export batches a destination did not take (retried with backoff)",
                                             ["destination"], registry=self.registry)
        self.audit_export_gaps = Counter("jitgate_audit_export_gaps",
                                         "Audit entries trimmed before they were exported", ["destination"],
                                         registry=self.registry)
        self.audit_export_lag_entries = Gauge("jitgate_audit_export_lag_entries",
                                              "Sealed audit entries not yet taken by an export destination",
                                              ["destination"], registry=self.registry)
        self.audit_export_lag_seconds = Gauge("jitgate_audit_export_lag_seconds",
                                              "Age of the oldest sealed entry an export destination has not taken",
                                              ["destination"], registry=self.registry)
        self.credentials_issued = Counter("jitgate_credentials_issued", "Credentials issued in target systems",
                                          ["plugin"], registry=self.registry)
        self.credentials_revoked = Counter("jitgate_credentials_revoked", "Credentials revoked in target systems",
                                           ["plugin"], registry=self.registry)
        self.credential_failures = Counter("jitgate_credential_failures",
                                           "Failed credential operations (each revocation retry counts)",
                                           ["op", "plugin"], registry=self.registry)
        self.credential_orphans = Counter("jitgate_credential_orphans",
                                          "Credentials the reconciler found with no active grant", ["plugin"],
                                          registry=self.registry)
        self.revocations_pending = Gauge("jitgate_credential_revocations_pending",
                                         "Credentials whose revocation failed and is being retried",
                                         registry=self.registry)
        self.rate_limited = Counter("jitgate_proposals_rate_limited",
                                    "Proposals refused with 429 before anyone was asked", ["scope"],
                                    registry=self.registry)
        self.deduplicated = Counter("jitgate_proposals_deduplicated",
                                    "Proposals that joined the agent's pending request for the same task",
                                    registry=self.registry)
        self.denied_by_memory = Counter("jitgate_proposals_denied_by_memory",
                                        "Proposals denied at once because a person had just denied the same",
                                        registry=self.registry)
        # The approvers' load (issue 19, item 7).
        self.absorbed = Counter("jitgate_proposals_absorbed",
                                "Proposals that reached no person, by the protection that absorbed them "
                                "(dedupe, denial_memory, rate_limit)", ["which"], registry=self.registry)
        self.time_to_decision = Histogram("jitgate_time_to_decision_seconds",
                                          "Seconds from proposal to a person's decision (approved or denied), "
                                          "by the approver group the policy asked", ["group"],
                                          buckets=(10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 86400),
                                          registry=self.registry)
        self.open_requests = Gauge("jitgate_open_requests", "Requests waiting for people, by approver group "
                                   "(read from Redis at each scrape: every replica's)", ["group"], registry=self.registry)
        self.alternate_path_alerts = Counter("jitgate_alternate_path_alerts",
                                             "Security alerts raised for attempts linked to denials", registry=self.registry)
        self.ssf_sets = Counter("jitgate_ssf_sets", "Security Event Tokens queued for SSF streams", ["event"],
                                registry=self.registry)
        self.ssf_deliveries = Counter("jitgate_ssf_deliveries", "SET deliveries by result (pushed, polled, "
                                      "refused by the receiver, failed and retried, dropped by the queue cap)",
                                      ["result"], registry=self.registry)
        self.audit_unsealed_age = Gauge("jitgate_audit_unsealed_age_seconds",
                                        "Age of the oldest audit entry not sealed yet (0: none)", registry=self.registry)
        self.audit_ok = Gauge("jitgate_audit_ok", "1 while audit records (sealing keeps up, a sink works); 0: new grants refused",
                              registry=self.registry)
        self.shadow_disagreements = Counter(
            "jitgate_policy_shadow_disagreements",
            "Decisions the shadow policies would have made otherwise (outcome or obligations), by the shadow "
            "policy that decided", ["policy"], registry=self.registry)
        self.waiters = Gauge("jitgate_longpoll_waiters", "Agents waiting on a long poll", registry=self.registry)
        # Bounded: label values come from small fixed sets (outcomes, states, channels, error codes).
        self._children: dict[tuple, object] = {}
        self._waiting_groups: set[str] = set()

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        key = (name, *labels.items())
        child = self._children.get(key)
        if child is None:  # prometheus_client's labels() costs more than the increment
            metric = getattr(self, name)
            child = self._children[key] = metric.labels(**labels) if labels else metric
        child.inc(n)

    def observe_decision(self, group: str, seconds: float) -> None:
        """A person's decision ``seconds`` after the proposal, for a request of ``group``."""
        self.time_to_decision.labels(group=group).observe(max(0.0, seconds))

    def set_waiting(self, waiting: dict[str, int]) -> None:
        """The requests waiting per group now (groups seen before and now empty read 0)."""
        for labels in list(self._waiting_groups - set(waiting)):
            self.open_requests.labels(group=labels).set(0)
        for group, n in waiting.items():
            self.open_requests.labels(group=group).set(n)
        self._waiting_groups |= set(waiting)
    def shadow_disagreement(self, decision) -> None:
        """Count one disagreement of the shadow set (``decision.shadow``) under each shadow
        policy that decided it (label values: the loaded shadow policies' ids, a bounded set)."""
        shadow = decision.shadow or {}
        for policy in shadow.get("policies") or ["(default deny)"]:
            self.count("shadow_disagreements", policy=str(policy))

    def render(self) -> bytes:
        return generate_latest(self.registry)
