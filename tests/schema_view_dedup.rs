//! A batch retried after a ClickHouse restart is dropped as a repeat in every rollup, not only
//! in `access_log`.
//!
//! ClickHouse derives a materialized view's deduplication block id from the insert's token and
//! the view's identity as the server holds it in memory. After `ALTER TABLE … MODIFY QUERY`
//! (migration 6 changes `usage_daily_mv` so) that in-memory identity differs from the one the
//! server loads from its metadata at the next start: an insert committed before a restart and
//! retried after it (the processor was killed between storing rows and recording progress) was
//! dropped in `access_log` but counted a second time in `usage_daily`. Seen in
//! `process_exactly_once` (1 run in 15 with two suites at once: the C1 or C2 usage one batch of
//! 1,000 too high, raw rows exact). The migrator therefore re-attaches every view it modifies
//! (`DETACH` + `ATTACH`, as a restart would load it), so ids stay the same across restarts.
//!
//! Before that fix this test stored 2 × 500 requests in `usage_daily` for 500 raw rows.

mod support;

use sitelog_processor::store::migrate::migrate;
use sitelog_schema::migrations::Retention;

const TOKEN: &str = "sitelog.access/3/100-140";

/// 500 rows of one host, the same each time (as a retried batch is).
async fn insert_batch(client: &clickhouse::Client) {
    client
        .query(
            "INSERT INTO access_log (ts, site_host, customer_id, site_id, client_ip, client_net, status, bytes_sent, \
             source_fingerprint, source_offset) \
             SELECT toDateTime64('2026-11-30 10:00:00', 6, 'UTC') + number, 'kahvila.fi', 'C1', 'S1', \
             toIPv6('192.0.2.1'), toIPv6('192.0.2.0'), 200, 100, 77, number * 100 FROM numbers(500)",
        )
        .with_setting("insert_deduplicate", "1")
        .with_setting("insert_deduplication_token", TOKEN)
        .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1")
        .execute()
        .await
        .unwrap();
}

async fn counts(client: &clickhouse::Client) -> (u64, u64) {
    let raw = client.query("SELECT count() FROM access_log").fetch_one::<u64>().await.unwrap();
    let usage = client.query("SELECT sum(requests) FROM usage_daily").fetch_one::<u64>().await.unwrap();
    (raw, usage)
}

#[test]
fn a_batch_retried_after_a_restart_is_a_repeat_in_the_rollups_too() {
    let mut stack = support::own_stack("view-dedup");
    let db = support::unique_name("viewdedup");
    let ch = support::clickhouse_config(&stack, &db);
    support::block_on(migrate(&ch.server_client().unwrap(), &db, &Retention::default())).unwrap();

    let client = ch.client().unwrap();
    support::block_on(insert_batch(&client));
    assert_eq!(support::block_on(counts(&client)), (500, 500), "the batch once");
    support::block_on(insert_batch(&client));
    assert_eq!(support::block_on(counts(&client)), (500, 500), "a retry before the restart is a repeat");

    stack.stop_clickhouse();
    stack.start_clickhouse().unwrap();
    let client = ch.client().unwrap();
    support::block_on(insert_batch(&client));
    assert_eq!(
        support::block_on(counts(&client)),
        (500, 500),
        "a retry after the restart is a repeat in access_log and in usage_daily"
    );
}
