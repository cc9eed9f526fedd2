//! Scheduled workflow runs on tokio's paused clock: a workflow with `schedule =
//! "0 7 * * *"` runs at 07:00 in its zone and is recorded with trigger `schedule`;
//! after a long pause (sluice suspended for days) the missed runs are skipped and
//! counted, not piled up, and the next 07:00 runs normally.

use std::sync::Arc;
use std::time::Duration;

use sluice::metrics::Metrics;
use sluice::tools::Registry;
use sluice::workflows::schedule::Clock;
use sluice::workflows::{RunFilter, RunRecord, Trigger, Workflows};
use tokio_util::sync::CancellationToken;

fn config(store: &std::path::Path) -> sluice::config::Config {
    let toml = format!(
        r#"
[backends.unused]
kind = "openai"
url = "http://127.0.0.1:9/v1"

[[models]]
name = "unused"
backend = "unused"

[workflows]
store = "{}"
timezone = "Europe/Paris"

[workflows.jobs.morning]
schedule = "0 7 * * *"
tenant = "ops"
schedule_inputs = {{ who = "the team" }}

[workflows.jobs.morning.inputs.who]
type = "string"
default = "nobody"

[[workflows.jobs.morning.steps]]
name = "greet"
template = "good morning {{{{ inputs.who }}}}, it is {{{{ now }}}}"
"#,
        store.display()
    );
    sluice::config::load_str(&toml, Vec::new()).unwrap()
}

/// Let spawned runs finish: yield (on paused time a 1 ms sleep moves the clock by 1 ms).
async fn runs(workflows: &Workflows, want: usize) -> Vec<RunRecord> {
    let filter = RunFilter {
        workflow: Some("morning"),
        ..RunFilter::default()
    };
    for _ in 0..2000 {
        let runs = workflows.list(&filter, 10).await.unwrap();
        if runs.len() >= want && runs.iter().all(|r| r.status.is_final()) {
            return runs;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    workflows.list(&filter, 10).await.unwrap()
}

fn paris(text: &str) -> jiff::Timestamp {
    text.parse::<jiff::civil::DateTime>()
        .unwrap()
        .in_tz("Europe/Paris")
        .unwrap()
        .timestamp()
}

#[tokio::test(start_paused = true)]
async fn fires_at_the_minute_and_skips_what_a_long_pause_missed() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new().unwrap());
    let stop = CancellationToken::new();
    let clock = Clock::starting_at(paris("2026-12-01T06:59:30"));
    let workflows = Workflows::start(
        &config(&dir.path().join("runs.db")),
        Arc::new(Registry::default()),
        metrics.clone(),
        clock,
        stop.clone(),
    )
    .await
    .unwrap();
    let job = workflows.job("morning").unwrap().clone();
    assert_eq!(
        workflows.next_fire(&job),
        Some(paris("2026-12-01T07:00:00"))
    );

    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(runs(&workflows, 0).await.is_empty(), "nothing before 07:00");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = runs(&workflows, 1).await;
    assert_eq!(first.len(), 1);
    let run = &first[0];
    assert_eq!(run.trigger, Trigger::Schedule);
    assert_eq!(run.tenant, "ops");
    assert_eq!(run.inputs["who"], "the team");
    let fired = jiff::Timestamp::from_millisecond(run.created_at).unwrap();
    let late = fired.duration_since(paris("2026-12-01T07:00:00"));
    assert!(
        late >= jiff::SignedDuration::ZERO && late < jiff::SignedDuration::from_secs(1),
        "fired at {fired}"
    );
    let output = run.steps[0].output.as_ref().unwrap().as_str().unwrap();
    assert!(
        output.starts_with("good morning the team, it is 2026-12-01T07:00:00+01:00"),
        "{output}"
    );

    // Suspended for three days and two hours: the 07:00 runs of the 2nd, 3rd and 4th
    // are skipped (and counted), not run one after another on wake-up.
    tokio::time::advance(Duration::from_secs((3 * 24 + 2) * 3600)).await;
    assert_eq!(runs(&workflows, 1).await.len(), 1);
    let skipped = metrics
        .workflow_schedule_skips
        .with_label_values(&["morning", "late"])
        .get();
    assert_eq!(skipped, 3);

    // The schedule goes on: the next 07:00 (the 5th) runs.
    tokio::time::sleep(Duration::from_secs(22 * 3600)).await;
    let all = runs(&workflows, 2).await;
    assert_eq!(all.len(), 2);
    let fired = jiff::Timestamp::from_millisecond(all[0].created_at).unwrap();
    assert_eq!(
        fired.duration_since(paris("2026-12-05T07:00:00")).as_secs(),
        0
    );
    stop.cancel();
    workflows.wait_stopped(Duration::from_secs(5)).await;
}
