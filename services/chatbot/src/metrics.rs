//! The bot's own metrics, served on the admin port.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlatformLabel {
    platform: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabel {
    platform: String,
    command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// Counters and gauges of the bot.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    signature_failures: Family<PlatformLabel, Counter>,
    commands: Family<CommandLabel, Counter>,
    approvals: Family<OutcomeLabel, Counter>,
    alerts: Family<KindLabel, Counter>,
    alerts_dropped: Counter,
    alert_leader: Gauge,
    alerts_version: Gauge,
    chat_api_errors: Family<PlatformLabel, Counter>,
}

impl Metrics {
    /// Registers every metric under `mesh_chatbot_`.
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("mesh_chatbot");
        r.register(
            "signature_failures",
            "Requests refused for a bad or stale signature",
            self.signature_failures.clone(),
        );
        r.register("commands", "Commands received", self.commands.clone());
        r.register(
            "approvals",
            "Approval steps by outcome (requested, applied, rejected, stale, ...)",
            self.approvals.clone(),
        );
        r.register("alerts_sent", "Alert messages sent", self.alerts.clone());
        r.register(
            "alerts_rate_limited",
            "Alert messages not sent because a channel's rate limit was reached",
            self.alerts_dropped.clone(),
        );
        r.register(
            "alert_leader",
            "1 when this replica holds the alert lease and sends alerts",
            self.alert_leader.clone(),
        );
        r.register(
            "alerts_graph_version",
            "Version of the last mesh graph the alert loop has fully handled (alerts sent, or \
             tracked while standing by)",
            self.alerts_version.clone(),
        );
        r.register(
            "chat_api_errors",
            "Calls to the Slack or Discord API that failed",
            self.chat_api_errors.clone(),
        );
    }

    /// A request with a bad signature.
    pub fn signature_failure(&self, platform: &str) {
        self.signature_failures
            .get_or_create(&PlatformLabel {
                platform: platform.into(),
            })
            .inc();
    }

    /// A command received.
    pub fn command(&self, platform: &str, command: &str) {
        self.commands
            .get_or_create(&CommandLabel {
                platform: platform.into(),
                command: command.into(),
            })
            .inc();
    }

    /// An approval step.
    pub fn approval(&self, outcome: &str) {
        self.approvals
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// An alert sent.
    pub fn alert(&self, kind: &str) {
        self.alerts
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// An alert held back by the rate limit.
    pub fn alert_dropped(&self) {
        self.alerts_dropped.inc();
    }

    /// Whether this replica sends alerts.
    pub fn set_alert_leader(&self, leader: bool) {
        self.alert_leader.set(i64::from(leader));
    }

    /// The alert loop has handled graph `version`.
    pub fn set_alerts_version(&self, version: u64) {
        self.alerts_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// A failed call to a chat API.
    pub fn chat_api_error(&self, platform: &str) {
        self.chat_api_errors
            .get_or_create(&PlatformLabel {
                platform: platform.into(),
            })
            .inc();
    }
}
