//! `[clickhouse] cluster = "NAME"`: the DDL `schema migrate` runs on a cluster — every
//! migration's statements rewritten `ON CLUSTER` with Replicated engines and Distributed
//! tables, the runner's own bookkeeping, and the TTL changes retention makes — each checked
//! with ClickHouse's own parser (`formatQuery` on the local engine). The local engine has no
//! cluster, so the statements are parsed, not run; on one server the same migrations run in
//! every other integration test.

mod support;

use sitelog_processor::store::migrate::{bookkeeping_statements, migration_statements, ttl_alter};
use sitelog_schema::migrations::Retention;
use sitelog_schema::{cluster, ttl};

#[test]
fn cluster_ddl_of_every_migration_parses() {
    let stack = support::stack();
    let ch = support::clickhouse_config(stack, "default").client().unwrap();
    let db = "sitelog";
    let r = Retention::default();
    let mut statements = bookkeeping_statements(db, Some("logs")).unwrap();
    statements.extend(migration_statements(db, &r, Some("logs")).unwrap());
    statements.extend(ttl::targets(&r).iter().map(|t| ttl_alter(db, t, Some("logs"))));
    let single = migration_statements(db, &r, None).unwrap();
    assert!(statements.len() > single.len(), "Distributed tables and their columns come on top");
    for st in &statements {
        assert!(st.contains(" ON CLUSTER logs"), "{st}");
        let formatted: String = support::block_on(ch.query("SELECT formatQuery(?)").bind(st).fetch_one())
            .unwrap_or_else(|e| panic!("the engine's parser refuses:\n{st}\n{e}"));
        assert!(formatted.contains("ON CLUSTER logs"), "{formatted}");
    }
    // Every sharded table of the migrations gets its local table and its Distributed table;
    // the rollups read the local raw table on each shard.
    let text = statements.join("\n");
    for t in cluster::SHARDED.iter().filter(|t| single.iter().any(|s| s.contains(&format!("{db}.{t}\n")))) {
        assert!(text.contains(&format!("{db}.{t}_local ON CLUSTER logs")), "{t}");
        assert!(text.contains(&format!("Distributed(logs, {db}, {t}_local, cityHash64(site_host))")), "{t}");
    }
    assert!(text.contains("FROM sitelog.access_log_local"));
    assert!(!text.contains("non_replicated_deduplication_window"));
    println!("{} statements parsed", statements.len());
}
