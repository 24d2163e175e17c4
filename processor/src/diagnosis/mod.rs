//! Error diagnosis: how healthy sites and web servers are, read from the `health_minute`
//! rollup and, for one site's errors, from `access_log`.

pub mod health;
