//! The collector's metrics, through the `metrics` facade (the binary installs the Prometheus
//! exporter). Per-source handles are registered once so the per-line path does no label work.

use metrics::{counter, describe_counter, describe_gauge, gauge, Counter, Gauge, Unit};

pub const LINES: &str = "sitelog_collect_lines_total";
pub const BYTES_READ: &str = "sitelog_collect_read_bytes_total";
pub const RECORDS_ACKED: &str = "sitelog_collect_records_acked_total";
pub const MESSAGES_ACKED: &str = "sitelog_collect_messages_acked_total";
pub const DELIVERY_ERRORS: &str = "sitelog_collect_delivery_errors_total";
pub const PRODUCER_RESTARTS: &str = "sitelog_collect_producer_restarts_total";
pub const INFLIGHT_BYTES: &str = "sitelog_collect_inflight_bytes";
pub const INFLIGHT_MESSAGES: &str = "sitelog_collect_inflight_messages";
pub const LAG_BYTES: &str = "sitelog_collect_lag_bytes";
pub const CHECKPOINT_AGE: &str = "sitelog_collect_checkpoint_age_seconds";
pub const CHECKPOINT_ERRORS: &str = "sitelog_collect_checkpoint_errors_total";
pub const FILES_TRACKED: &str = "sitelog_collect_files_tracked";
pub const FILES_OPEN: &str = "sitelog_collect_files_open";
pub const ROTATIONS: &str = "sitelog_collect_rotations_total";
pub const FILES_COMPLETED: &str = "sitelog_collect_files_completed_total";
pub const FILES_LOST: &str = "sitelog_collect_files_lost_total";
pub const HOST_CAP_SEALS: &str = "sitelog_collect_host_cap_seals_total";
pub const HEARTBEAT_ERRORS: &str = "sitelog_collect_heartbeat_errors_total";
pub const HEARTBEATS_SENT: &str = "sitelog_collect_heartbeats_sent_total";
pub const DELIVERED_THROUGH: &str = "sitelog_collect_delivered_through_seconds";

/// Registers descriptions (shown as `# HELP` by the exporter).
pub fn describe() {
    describe_counter!(LINES, "Lines read, by source and outcome (parsed, rejected, empty).");
    describe_counter!(BYTES_READ, Unit::Bytes, "Bytes read from log files (decompressed).");
    describe_counter!(RECORDS_ACKED, "Records whose Kafka message was acknowledged.");
    describe_counter!(MESSAGES_ACKED, "Kafka messages acknowledged, by topic.");
    describe_counter!(DELIVERY_ERRORS, "Kafka messages that failed; each restarts the producer from the checkpoints.");
    describe_counter!(PRODUCER_RESTARTS, "Producer sessions restarted from the checkpoints.");
    describe_gauge!(INFLIGHT_BYTES, Unit::Bytes, "Bytes in open batches and unacknowledged messages.");
    describe_gauge!(INFLIGHT_MESSAGES, "Messages sent and not yet acknowledged.");
    describe_gauge!(LAG_BYTES, Unit::Bytes, "File size minus checkpoint, summed per source.");
    describe_gauge!(CHECKPOINT_AGE, Unit::Seconds, "Seconds since checkpoints were last written successfully.");
    describe_counter!(CHECKPOINT_ERRORS, "Failed checkpoint writes.");
    describe_gauge!(FILES_TRACKED, "Files being read or waiting for acknowledgements.");
    describe_gauge!(FILES_OPEN, "Open log file descriptors.");
    describe_counter!(ROTATIONS, "Rotations seen, by kind (rename, delete, truncate).");
    describe_counter!(FILES_COMPLETED, "Files read to the end with every line acknowledged.");
    describe_counter!(FILES_LOST, "Files that vanished before they were read to the end.");
    describe_counter!(
        HOST_CAP_SEALS,
        "Batches sent early because a file had limits.max_hosts open batches (many distinct Host values)."
    );
    describe_counter!(HEARTBEAT_ERRORS, "Heartbeats not delivered (their own producer; records unaffected).");
    describe_counter!(HEARTBEATS_SENT, "Heartbeats sent, by source.");
    describe_gauge!(
        DELIVERED_THROUGH,
        Unit::Seconds,
        "Event time (Unix seconds) up to which a source's records are acknowledged, as last heartbeat."
    );
}

/// Handles for one source.
#[derive(Clone)]
pub struct SourceMetrics {
    pub parsed: Counter,
    pub rejected: Counter,
    pub empty: Counter,
    pub bytes_read: Counter,
    pub records_acked: Counter,
    pub lag: Gauge,
    pub completed: Counter,
    pub lost: Counter,
    source: String,
}

impl SourceMetrics {
    pub fn new(source: &str) -> Self {
        let s = source.to_owned();
        SourceMetrics {
            parsed: counter!(LINES, "source" => s.clone(), "outcome" => "parsed"),
            rejected: counter!(LINES, "source" => s.clone(), "outcome" => "rejected"),
            empty: counter!(LINES, "source" => s.clone(), "outcome" => "empty"),
            bytes_read: counter!(BYTES_READ, "source" => s.clone()),
            records_acked: counter!(RECORDS_ACKED, "source" => s.clone()),
            lag: gauge!(LAG_BYTES, "source" => s.clone()),
            completed: counter!(FILES_COMPLETED, "source" => s.clone()),
            lost: counter!(FILES_LOST, "source" => s.clone()),
            source: s,
        }
    }

    pub fn rotation(&self, kind: &'static str) {
        counter!(ROTATIONS, "source" => self.source.clone(), "kind" => kind).increment(1);
    }
}
