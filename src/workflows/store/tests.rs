//! The run store's tests: round trips, filters, durability across reopen, pruning.
use serde_json::json;

use super::*;

fn step(name: &str, status: StepStatus) -> StepRecord {
    StepRecord {
        status,
        ..StepRecord::pending(name, "tool")
    }
}

fn run(id: &str, workflow: &str, tenant: &str, created_at: i64) -> RunRecord {
    RunRecord {
        id: id.to_owned(),
        workflow: workflow.to_owned(),
        tenant: tenant.to_owned(),
        trigger: Trigger::Api,
        status: RunStatus::Running,
        inputs: json!({"city": "Oslo", "days": 3}),
        error: None,
        created_at,
        finished_at: None,
        steps: vec![
            step("fetch", StepStatus::Pending),
            step("chart", StepStatus::Pending),
            step("report", StepStatus::Pending),
        ],
        artifacts: Vec::new(),
    }
}

fn svg(step: &str) -> Artifact {
    let data = b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec();
    Artifact {
        meta: ArtifactMeta {
            step: step.to_owned(),
            name: "chart.svg".to_owned(),
            content_type: "image/svg+xml".to_owned(),
            bytes: data.len() as u64,
        },
        data,
    }
}

fn ids(runs: &[RunRecord]) -> Vec<&str> {
    runs.iter().map(|r| r.id.as_str()).collect()
}

/// Runs a whole run: steps succeed, an artefact, the run succeeds. Returns the
/// record as the store should give it back.
async fn complete(store: &Store, id: &str) -> RunRecord {
    let mut r = run(id, "weather", "acme", 1_000);
    store.insert_run(&r).await.unwrap();
    for s in &mut r.steps {
        s.status = StepStatus::Succeeded;
        s.attempts = 1;
        s.started_at = Some(1_001);
        s.finished_at = Some(1_002);
        s.output = Some(json!({"step": s.name, "values": [1, 2.5, null]}));
        store.update_step(id, s).await.unwrap();
    }
    store.put_artifact(id, &svg("chart")).await.unwrap();
    store
        .finish_run(id, RunStatus::Succeeded, None, 1_003)
        .await
        .unwrap();
    r.status = RunStatus::Succeeded;
    r.finished_at = Some(1_003);
    r.artifacts = vec![svg("chart").meta];
    r
}

#[tokio::test]
async fn round_trip_of_a_run_with_steps_outputs_and_artefact() {
    let store = Store::in_memory().unwrap();
    let inserted = run("wfr_1", "weather", "acme", 1_000);
    store.insert_run(&inserted).await.unwrap();
    assert_eq!(store.get_run("wfr_1").await.unwrap(), Some(inserted));

    let want = complete(&store, "wfr_2").await;
    let got = store.get_run("wfr_2").await.unwrap().unwrap();
    assert_eq!(got, want);
    let art = store.artifact("wfr_2", "chart").await.unwrap().unwrap();
    assert_eq!(art, svg("chart"));
    assert_eq!(store.artifact("wfr_2", "report").await.unwrap(), None);
    assert_eq!(store.get_run("wfr_nope").await.unwrap(), None);

    // A second artefact of the same step replaces the first.
    let mut other = svg("chart");
    other.data = b"# report".to_vec();
    other.meta.name = "report.md".to_owned();
    store.put_artifact("wfr_2", &other).await.unwrap();
    let got = store.get_run("wfr_2").await.unwrap().unwrap();
    assert_eq!(got.artifacts.len(), 1);
    assert_eq!(got.artifacts[0].name, "report.md");
    assert_eq!(got.artifacts[0].bytes, 8);
}

#[tokio::test]
async fn update_step_changes_that_step_and_keeps_the_order() {
    let store = Store::in_memory().unwrap();
    store
        .insert_run(&run("wfr_1", "weather", "acme", 1))
        .await
        .unwrap();
    let mut chart = step("chart", StepStatus::Failed);
    chart.attempts = 3;
    chart.error = Some("boom".to_owned());
    store.update_step("wfr_1", &chart).await.unwrap();
    store
        .update_step("wfr_1", &step("late", StepStatus::Skipped))
        .await
        .unwrap();
    let got = store.get_run("wfr_1").await.unwrap().unwrap();
    let names: Vec<_> = got.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["fetch", "chart", "report", "late"]);
    assert_eq!(got.steps[1], chart);
    assert_eq!(got.steps[0].status, StepStatus::Pending);
    assert_eq!(got.steps[2].status, StepStatus::Pending);

    let err = store.update_step("wfr_x", &chart).await.unwrap_err();
    assert_eq!(err, StoreError::NoSuchRun("wfr_x".to_owned()));
    let err = store
        .finish_run("wfr_x", RunStatus::Failed, None, 2)
        .await
        .unwrap_err();
    assert_eq!(err, StoreError::NoSuchRun("wfr_x".to_owned()));
    assert!(store.put_artifact("wfr_x", &svg("chart")).await.is_err());
}

#[tokio::test]
async fn a_cut_output_round_trips_with_its_flag() {
    let store = Store::in_memory().unwrap();
    store
        .insert_run(&run("wfr_1", "weather", "acme", 1))
        .await
        .unwrap();
    let mut s = step("fetch", StepStatus::Succeeded);
    s.output = Some(json!("{\"text\":\"ééé"));
    s.output_truncated = true;
    store.update_step("wfr_1", &s).await.unwrap();
    let got = store.get_run("wfr_1").await.unwrap().unwrap();
    assert_eq!(got.steps[0], s);
}

#[tokio::test]
async fn list_filters_pages_and_orders_newest_first() {
    let store = Store::in_memory().unwrap();
    for (id, wf, tenant, at) in [
        ("wfr_a", "weather", "acme", 10),
        ("wfr_b", "weather", "acme", 20),
        ("wfr_c", "report", "acme", 30),
        ("wfr_d", "weather", "globex", 40),
        ("wfr_e", "weather", "acme", 40),
    ] {
        store.insert_run(&run(id, wf, tenant, at)).await.unwrap();
    }
    store.put_artifact("wfr_b", &svg("chart")).await.unwrap();
    let all = RunFilter::default();
    let list = store.list_runs(&all, 100).await.unwrap();
    assert_eq!(ids(&list), ["wfr_e", "wfr_d", "wfr_c", "wfr_b", "wfr_a"]);
    assert!(list.iter().all(|r| r.steps.len() == 3));
    assert_eq!(list[3].artifacts, vec![svg("chart").meta]);
    assert!(list[0].artifacts.is_empty());
    assert_eq!(
        ids(&store.list_runs(&all, 2).await.unwrap()),
        ["wfr_e", "wfr_d"]
    );

    let weather = RunFilter {
        workflow: Some("weather"),
        ..Default::default()
    };
    let got = store.list_runs(&weather, 100).await.unwrap();
    assert_eq!(ids(&got), ["wfr_e", "wfr_d", "wfr_b", "wfr_a"]);
    let acme = RunFilter {
        tenant: Some("acme"),
        ..Default::default()
    };
    let got = store.list_runs(&acme, 100).await.unwrap();
    assert_eq!(ids(&got), ["wfr_e", "wfr_c", "wfr_b", "wfr_a"]);
    let both = RunFilter {
        workflow: Some("weather"),
        tenant: Some("acme"),
        before: None,
    };
    assert_eq!(
        ids(&store.list_runs(&both, 100).await.unwrap()),
        ["wfr_e", "wfr_b", "wfr_a"]
    );

    // Pages: the cursor is the last id of the previous page (ties on time by id).
    let page = RunFilter {
        before: Some("wfr_e"),
        ..Default::default()
    };
    assert_eq!(
        ids(&store.list_runs(&page, 2).await.unwrap()),
        ["wfr_d", "wfr_c"]
    );
    let page = RunFilter {
        before: Some("wfr_c"),
        ..weather.clone()
    };
    assert_eq!(
        ids(&store.list_runs(&page, 100).await.unwrap()),
        ["wfr_b", "wfr_a"]
    );
    let page = RunFilter {
        before: Some("wfr_e"),
        ..both
    };
    assert_eq!(
        ids(&store.list_runs(&page, 100).await.unwrap()),
        ["wfr_b", "wfr_a"]
    );
    // An unknown cursor, or another tenant's, gives nothing.
    let page = RunFilter {
        before: Some("wfr_zz"),
        ..Default::default()
    };
    assert!(store.list_runs(&page, 100).await.unwrap().is_empty());
    let page = RunFilter {
        before: Some("wfr_d"),
        ..acme
    };
    assert!(store.list_runs(&page, 100).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_finished_run_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/runs.db");
    let (store, marked) = Store::open(&path).await.unwrap();
    assert_eq!(marked, 0);
    let want = complete(&store, "wfr_1").await;
    let mode: String = {
        let conn = store.conn.lock().unwrap();
        conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(mode, "wal");
    // Never closed, like a killed process: the commits are in the WAL only.
    std::mem::forget(store);

    let (store, marked) = Store::open(&path).await.unwrap();
    assert_eq!(marked, 0);
    assert_eq!(store.get_run("wfr_1").await.unwrap(), Some(want));
    let art = store.artifact("wfr_1", "chart").await.unwrap().unwrap();
    assert_eq!(art.data, svg("chart").data);
}

#[tokio::test]
async fn runs_left_running_are_interrupted_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let (store, _) = Store::open(&path).await.unwrap();
    let mut r = run("wfr_1", "weather", "acme", 1);
    r.steps = vec![
        step("fetch", StepStatus::Succeeded),
        step("chart", StepStatus::Running),
    ];
    r.steps[1].started_at = Some(2);
    r.steps.push(step("report", StepStatus::Pending));
    store.insert_run(&r).await.unwrap();
    complete(&store, "wfr_2").await;
    drop(store);

    let before = now_ms();
    let (store, marked) = Store::open(&path).await.unwrap();
    assert_eq!(marked, 1);
    let got = store.get_run("wfr_1").await.unwrap().unwrap();
    assert_eq!(got.status, RunStatus::Interrupted);
    assert_eq!(got.error.as_deref(), Some(INTERRUPTED_ERROR));
    assert!(got.finished_at.is_some_and(|t| t >= before));
    let statuses: Vec<_> = got.steps.iter().map(|s| s.status).collect();
    use StepStatus::{Interrupted, Succeeded};
    assert_eq!(statuses, [Succeeded, Interrupted, Interrupted]);
    assert!(got.steps[1].finished_at.is_some() && got.steps[2].finished_at.is_some());
    assert_eq!(got.steps[1].error.as_deref(), Some(STEP_INTERRUPTED_ERROR));
    assert_eq!(got.steps[2].error.as_deref(), Some(STEP_NOT_RUN_ERROR));
    let done = store.get_run("wfr_2").await.unwrap().unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    drop(store);
    assert_eq!(Store::open(&path).await.unwrap().1, 0);
}

#[tokio::test]
async fn prune_keeps_the_newest_finished_per_workflow_and_every_running_run() {
    let store = Store::in_memory().unwrap();
    for (i, wf) in ["weather", "report"].into_iter().enumerate() {
        for n in 0..4 {
            let id = format!("wfr_{wf}_{n}");
            store
                .insert_run(&run(&id, wf, "acme", 100 * i as i64 + n))
                .await
                .unwrap();
            if n != 3 {
                store
                    .finish_run(&id, RunStatus::Succeeded, None, 500)
                    .await
                    .unwrap();
            }
        }
    }
    store
        .put_artifact("wfr_weather_0", &svg("chart"))
        .await
        .unwrap();
    // The newest of each is still running: it stays and does not count.
    assert_eq!(store.prune(2).await.unwrap(), 2);
    let left = store.list_runs(&RunFilter::default(), 100).await.unwrap();
    assert_eq!(
        ids(&left),
        [
            "wfr_report_3",
            "wfr_report_2",
            "wfr_report_1",
            "wfr_weather_3",
            "wfr_weather_2",
            "wfr_weather_1"
        ]
    );
    assert_eq!(
        store.artifact("wfr_weather_0", "chart").await.unwrap(),
        None
    );
    assert_eq!(store.prune(0).await.unwrap(), 4);
    let left = store.list_runs(&RunFilter::default(), 100).await.unwrap();
    assert_eq!(ids(&left), ["wfr_report_3", "wfr_weather_3"]);
    // Steps went with their runs.
    let conn = store.conn.lock().unwrap();
    let steps: i64 = conn
        .query_row("SELECT COUNT(*) FROM steps", [], |r| r.get(0))
        .unwrap();
    assert_eq!(steps, 6);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 7)
        .unwrap();
    let err = Store::open(&path).await.unwrap_err();
    assert_eq!(
        err,
        StoreError::SchemaTooNew {
            found: 7,
            supported: SCHEMA_VERSION
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("schema version 7") && text.contains("newer"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unknown_stored_status_is_an_error() {
    let store = Store::in_memory().unwrap();
    store
        .insert_run(&run("wfr_1", "weather", "acme", 1))
        .await
        .unwrap();
    store
        .conn
        .lock()
        .unwrap()
        .execute("UPDATE runs SET status = 'paused'", [])
        .unwrap();
    let err = store.get_run("wfr_1").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt(ref m) if m.contains("paused")),
        "{err}"
    );
    assert!(store.list_runs(&RunFilter::default(), 10).await.is_err());
}
