//! The cron scheduler for workflows: `schedule = "0 7 * * *"` in a configured IANA time
//! zone. [`Schedule`] answers "when next?" (croner walks the zone's civil time, jiff maps
//! it back to an instant); [`run`] is one task per scheduled workflow that sleeps until
//! that time and asks the runner ([`Fire`]) to start a run, skipping fire times that come
//! too late ([`Skip::Late`]) or while the previous run still goes ([`Skip::Busy`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime, Timelike as _};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A parsed cron expression in a time zone. Five fields (minute hour day-of-month month
/// day-of-week) or a nickname (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`);
/// a seconds or years field is refused.
///
/// Fire times are the expression's civil (wall clock) times in the zone, each mapped to
/// one instant the "compatible" way: a time in a spring-forward gap moves forward by the
/// gap (02:30 → 03:30), a time in a fall-back repeat fires once, at the earlier instant.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
    tz: TimeZone,
}

impl Schedule {
    /// Errors are plain words for a config error message.
    pub fn parse(expr: &str, timezone: &str) -> Result<Schedule, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| format!("not a cron expression: `{expr}`: {e}"))?;
        let tz = TimeZone::get(timezone).map_err(|_| format!("unknown time zone `{timezone}`"))?;
        let schedule = Schedule {
            expr: expr.to_string(),
            cron,
            tz,
        };
        // Without a years field the calendar repeats, so "not from now" means "never".
        match schedule.next_after(Timestamp::now()) {
            Some(_) => Ok(schedule),
            None => Err(format!("cron expression `{expr}` never fires")),
        }
    }

    /// The first fire time strictly after `t`; `None` if there is none (an impossible
    /// date such as `0 0 30 2 *`, or past croner's last year).
    ///
    /// Civil matches are walked in order and the smallest instant after `t` kept. The
    /// gap shift is the only way a later civil time maps to an earlier instant, so the
    /// walk starts early enough to see a shifted time that lands after `t`, and stops once
    /// no later civil time can map before the best instant found.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let day_before = t.checked_sub(SignedDuration::from_hours(25)).unwrap_or(t);
        let low = self.tz.to_offset(t).min(self.tz.to_offset(day_before));
        let mut cursor = to_naive(low.to_datetime(t))?;
        let mut best: Option<Timestamp> = None;
        loop {
            // An error here means no further occurrence (croner's year limit).
            let Ok(found) = self.cron.find_next_occurrence(&cursor, false) else {
                return best;
            };
            let civil = to_civil(found)?;
            if let Some(b) = best {
                if civil >= self.max_offset(t, b).to_datetime(b) {
                    return best;
                }
            }
            let at = self.tz.to_ambiguous_timestamp(civil).compatible().ok()?;
            if at > t && best.is_none_or(|b| at < b) {
                best = Some(at);
            }
            cursor = found;
        }
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The largest offset in force at any instant in `[from, to]`.
    fn max_offset(&self, from: Timestamp, to: Timestamp) -> Offset {
        self.tz
            .following(from)
            .take_while(|tr| tr.timestamp() <= to)
            .map(|tr| tr.offset())
            .fold(self.tz.to_offset(from), Offset::max)
    }
}

fn to_naive(dt: DateTime) -> Option<NaiveDateTime> {
    let (d, h, m, s) = (dt.date(), dt.hour(), dt.minute(), dt.second());
    NaiveDate::from_ymd_opt(
        d.year().into(),
        d.month().try_into().ok()?,
        d.day().try_into().ok()?,
    )?
    .and_hms_opt(h.try_into().ok()?, m.try_into().ok()?, s.try_into().ok()?)
}

fn to_civil(n: NaiveDateTime) -> Option<DateTime> {
    use chrono::Datelike as _;
    let small = |v: u32| i8::try_from(v).ok();
    let year = i16::try_from(n.year()).ok()?;
    let (month, day) = (small(n.month())?, small(n.day())?);
    let (hour, minute, second) = (small(n.hour())?, small(n.minute())?, small(n.second())?);
    DateTime::new(year, month, day, hour, minute, second, 0).ok()
}

/// Where "now" comes from. [`Clock::system`] reads the system wall clock afresh on every
/// call, so a clock step or a resume from suspend (when tokio's monotonic clock stood
/// still) shows up as lateness. [`Clock::starting_at`] is wall time that follows tokio's
/// clock, `wall + (Instant::now() - start)`: under tokio's paused time in tests it moves
/// only as tokio time advances.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor: Option<(Timestamp, Instant)>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock { anchor: None }
    }

    pub fn starting_at(wall: Timestamp) -> Clock {
        Clock {
            anchor: Some((wall, Instant::now())),
        }
    }

    pub fn now(&self) -> Timestamp {
        match self.anchor {
            None => Timestamp::now(),
            Some((wall, start)) => wall
                .saturating_add(start.elapsed())
                .unwrap_or(Timestamp::MAX),
        }
    }

    /// The tokio instant at which this clock will read `wall`; now if that is past.
    pub fn instant_at(&self, wall: Timestamp) -> Instant {
        let now = Instant::now();
        match Duration::try_from(wall.duration_since(self.now())) {
            Ok(ahead) => now
                .checked_add(ahead)
                .unwrap_or_else(|| later(now, RECHECK)),
            Err(_) => now,
        }
    }
}

/// `at + d`, or `at` if that overflows.
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d).unwrap_or(at)
}

/// How late a fire may be and still run; later ones are skipped and logged.
pub const MISFIRE_GRACE: Duration = Duration::from_secs(60);

/// The longest single sleep: the wall clock is read again at least this often, so a
/// clock step or a resume from suspend is seen within this time, inside the grace.
const RECHECK: Duration = Duration::from_secs(30);

/// Why fire times were skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Woke more than [`MISFIRE_GRACE`] after the time (process paused, machine
    /// suspended, clock jump).
    Late,
    /// The previous run of this workflow is still going.
    Busy,
}

/// What the scheduler drives (the workflow runner implements it).
pub trait Fire: Send + Sync + 'static {
    /// Start a run for `scheduled` (its nominal fire time). Return false if a previous
    /// run of the workflow is still going: a Busy skip, logged and reported via `skipped`.
    fn fire(&self, workflow: &str, scheduled: Timestamp) -> bool;
    /// `count` fire times at or before `scheduled` were skipped for `why`.
    fn skipped(&self, workflow: &str, scheduled: Timestamp, why: Skip, count: u64);
}

/// Run `workflow`'s schedule until `stop` is cancelled (or the schedule has no further
/// fire time). Sleeps until the next fire time and fires it; a wake more than
/// [`MISFIRE_GRACE`] late skips that time and every other one up to now (one `skipped`
/// call, one warning) and goes on from the next time after now. At most one fire per
/// wake-up: missed times never pile up.
pub async fn run(
    workflow: String,
    schedule: Schedule,
    clock: Clock,
    fire: Arc<dyn Fire>,
    stop: CancellationToken,
) {
    let mut next = schedule.next_after(clock.now());
    while let Some(at) = next {
        if !sleep_until(&clock, at, &stop).await {
            return;
        }
        let now = clock.now();
        let late = Duration::try_from(now.duration_since(at)).unwrap_or_default();
        if late > MISFIRE_GRACE {
            let (count, last, following) = missed(&schedule, at, now);
            tracing::warn!(
                workflow = %workflow, skipped = count, first = %at, last = %last,
                next = %following.map_or_else(|| "never".to_string(), |t| t.to_string()),
                "workflow schedule woke too late; skipped the missed fire times"
            );
            fire.skipped(&workflow, last, Skip::Late, count);
            next = following;
        } else {
            if fire.fire(&workflow, at) {
                tracing::info!(workflow = %workflow, scheduled = %at, "workflow schedule fired");
            } else {
                tracing::warn!(
                    workflow = %workflow, scheduled = %at,
                    "workflow schedule skipped a fire time: the previous run is still going"
                );
                fire.skipped(&workflow, at, Skip::Busy, 1);
            }
            next = schedule.next_after(at);
        }
    }
    let expr = schedule.expr();
    tracing::info!(workflow = %workflow, expr, "workflow schedule has no further fire times");
}

/// Sleeps until `clock` reads `at`, in steps of at most [`RECHECK`]. False if stopped.
async fn sleep_until(clock: &Clock, at: Timestamp, stop: &CancellationToken) -> bool {
    while clock.now() < at {
        let wake = clock.instant_at(at).min(later(Instant::now(), RECHECK));
        tokio::select! {
            biased;
            () = stop.cancelled() => return false,
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    !stop.is_cancelled()
}

/// Counts the fire times from `first` up to `now`: (how many, the last, the one after).
fn missed(
    schedule: &Schedule,
    first: Timestamp,
    now: Timestamp,
) -> (u64, Timestamp, Option<Timestamp>) {
    let (mut count, mut last) = (1, first);
    loop {
        match schedule.next_after(last) {
            Some(t) if t <= now => (count, last) = (count + 1, t),
            following => return (count, last, following),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::task::JoinHandle;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sched(expr: &str, tz: &str) -> Schedule {
        Schedule::parse(expr, tz).unwrap()
    }

    /// Asserts the fire times after `from`, in order.
    fn chain(s: &Schedule, from: &str, want: &[&str]) {
        let mut t = ts(from);
        for w in want {
            t = s.next_after(t).unwrap();
            assert_eq!(t, ts(w), "{}", s.expr());
        }
    }

    /// Records fires as (scheduled, wall clock at the call) and skips; refuses the
    /// first `busy` fires as if the previous run were still going.
    struct Recorder {
        clock: Clock,
        busy: Mutex<usize>,
        fires: Mutex<Vec<(Timestamp, Timestamp)>>,
        skips: Mutex<Vec<(Timestamp, Skip, u64)>>,
    }

    impl Fire for Recorder {
        fn fire(&self, _: &str, scheduled: Timestamp) -> bool {
            let mut busy = self.busy.lock().unwrap();
            if *busy > 0 {
                *busy -= 1;
                return false;
            }
            let wall = self.clock.now();
            self.fires.lock().unwrap().push((scheduled, wall));
            true
        }
        fn skipped(&self, _: &str, scheduled: Timestamp, why: Skip, count: u64) {
            self.skips.lock().unwrap().push((scheduled, why, count));
        }
    }

    impl Recorder {
        fn fired(&self) -> Vec<Timestamp> {
            self.fires.lock().unwrap().iter().map(|f| f.0).collect()
        }
        fn skips(&self) -> Vec<(Timestamp, Skip, u64)> {
            self.skips.lock().unwrap().clone()
        }
    }

    type Started = (Arc<Recorder>, CancellationToken, JoinHandle<()>);

    /// Starts `run` for "0 7 * * *" in Europe/Paris on a clock reading `wall`.
    async fn start(wall: &str, busy: usize) -> Started {
        let clock = Clock::starting_at(ts(wall));
        let (fires, skips) = (Mutex::default(), Mutex::default());
        let busy = Mutex::new(busy);
        let rec = Arc::new(Recorder {
            clock,
            busy,
            fires,
            skips,
        });
        let schedule = sched("0 7 * * *", "Europe/Paris");
        let stop = CancellationToken::new();
        let task = run("daily".into(), schedule, clock, rec.clone(), stop.clone());
        let task = tokio::spawn(task);
        tokio::task::yield_now().await; // let it reach its first sleep
        (rec, stop, task)
    }

    async fn sleep(secs: u64) {
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }

    const DAY: u64 = 86_400;
    const SEVEN: &str = "2025-01-15T07:00+01:00";
    const SEVEN_NEXT_DAY: &str = "2025-01-16T07:00+01:00";

    #[test]
    fn parse_errors_are_plain_words() {
        let err = |expr, tz| Schedule::parse(expr, tz).unwrap_err();
        let zone = err("0 7 * * *", "Mars/Olympus");
        assert_eq!(zone, "unknown time zone `Mars/Olympus`");
        let never = err("0 0 30 2 *", "UTC");
        assert_eq!(never, "cron expression `0 0 30 2 *` never fires");
        for bad in ["0 7 * *", "61 * * * *", "0 0 7 * * *", "@reboot", ""] {
            assert!(err(bad, "UTC").starts_with(&format!("not a cron expression: `{bad}`")));
        }
        let daily = sched("@daily", "UTC");
        assert_eq!(daily.expr(), "@daily");
        chain(&daily, "2025-01-15T06:00Z", &["2025-01-16T00:00Z"]);
    }

    #[test]
    fn next_after_crosses_days_and_follows_the_zone() {
        let utc = sched("0 7 * * *", "UTC");
        chain(&utc, "2025-12-31T07:00Z", &["2026-01-01T07:00Z"]);
        let paris = sched("0 7 * * *", "Europe/Paris");
        let winter = ["2025-01-15T06:00Z", "2025-01-16T06:00Z"]; // 07:00 CET
        chain(&paris, "2025-01-15T00:00Z", &winter);
        chain(&paris, "2025-07-15T00:00Z", &["2025-07-15T05:00Z"]); // CEST
        let monday = sched("0 9 * * mon", "Europe/Paris");
        chain(&monday, "2025-01-15T00:00Z", &["2025-01-20T08:00Z"]);
    }

    #[test]
    fn spring_forward_gap_moves_forward_once() {
        // Paris, 2025-03-30: 02:00 CET jumps to 03:00 CEST; 02:30 never happens.
        let s = sched("30 2 * * *", "Europe/Paris");
        let gap_day = ["2025-03-30T03:30+02:00", "2025-03-31T02:30+02:00"];
        chain(&s, "2025-03-29T12:00Z", &gap_day);
        // From after the gap but before the shifted time: still today's.
        chain(&s, "2025-03-30T03:10+02:00", &gap_day);
        // Hourly: the missing 02:00 lands on 03:00, which fires once.
        let hourly = sched("0 * * * *", "Europe/Paris");
        let want = ["2025-03-30T03:00+02:00", "2025-03-30T04:00+02:00"];
        chain(&hourly, "2025-03-30T01:00+01:00", &want);
        // Lord Howe, 2025-10-05: 02:00 (+10:30) jumps to 02:30 (+11); 02:15 moves to
        // 02:45, after the real 02:40.
        let s = sched("15,40 2 * * *", "Australia/Lord_Howe");
        let want = [
            "2025-10-05T02:40+11",
            "2025-10-05T02:45+11",
            "2025-10-06T02:15+11",
        ];
        chain(&s, "2025-10-05T01:00+10:30", &want);
    }

    #[test]
    fn fall_back_repeat_fires_once_at_the_earlier() {
        // Paris, 2025-10-26: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
        let s = sched("30 2 * * *", "Europe/Paris");
        let want = ["2025-10-26T02:30+02:00", "2025-10-27T02:30+01:00"];
        chain(&s, "2025-10-25T12:00Z", &want);
        chain(&s, "2025-10-26T02:10+01:00", &want[1..]);
    }

    #[tokio::test(start_paused = true)]
    async fn clock_follows_tokio_time() {
        let clock = Clock::starting_at(ts("2025-01-15T06:59:30Z"));
        sleep(10).await;
        assert_eq!(clock.now(), ts("2025-01-15T06:59:40Z"));
        assert_eq!(clock.instant_at(ts("2025-01-15T06:00Z")), Instant::now());
        let seven = Instant::now() + Duration::from_secs(20);
        assert_eq!(clock.instant_at(ts("2025-01-15T07:00Z")), seven);
    }

    #[tokio::test(start_paused = true)]
    async fn fires_once_at_seven_and_again_next_day() {
        let (rec, _stop, _task) = start("2025-01-15T06:59:30+01:00", 0).await;
        sleep(29).await;
        assert!(rec.fired().is_empty());
        sleep(2).await;
        let (scheduled, wall) = rec.fires.lock().unwrap()[0];
        assert_eq!(rec.fired(), [ts(SEVEN)]);
        let drift = wall.duration_since(scheduled);
        let second = SignedDuration::from_secs(1);
        assert!(!drift.is_negative() && drift < second, "{drift:?}");
        sleep(DAY).await;
        assert_eq!(rec.fired(), [ts(SEVEN), ts(SEVEN_NEXT_DAY)]);
        assert!(rec.skips().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_little_late_still_fires_with_the_nominal_time() {
        let (rec, _stop, _task) = start("2025-01-15T06:59:30+01:00", 0).await;
        // The task is not polled until 50 s after 07:00: within the grace.
        tokio::time::advance(Duration::from_secs(80)).await;
        tokio::task::yield_now().await;
        assert_eq!(rec.fired(), [ts(SEVEN)]);
        assert!(rec.skips().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn long_pause_skips_missed_times_without_pile_up() {
        let (rec, _stop, _task) = start("2025-01-15T06:59:30+01:00", 0).await;
        // Tokio time jumps 3 days at once while the task sleeps, as when the process
        // is stopped or starved: it wakes once, at 06:59:30 three days on.
        tokio::time::advance(Duration::from_secs(3 * DAY)).await;
        tokio::task::yield_now().await;
        assert!(rec.fired().is_empty());
        let late = (ts("2025-01-17T07:00+01:00"), Skip::Late, 3);
        assert_eq!(rec.skips(), [late]);
        sleep(31).await;
        assert_eq!(rec.fired(), [ts("2025-01-18T07:00+01:00")]);
        assert_eq!(rec.skips(), [late]);
    }

    #[tokio::test(start_paused = true)]
    async fn busy_is_skipped_and_next_day_fires() {
        let (rec, _stop, _task) = start("2025-01-15T06:59:30+01:00", 1).await;
        sleep(31).await;
        assert!(rec.fired().is_empty());
        assert_eq!(rec.skips(), [(ts(SEVEN), Skip::Busy, 1)]);
        sleep(DAY).await;
        assert_eq!(rec.fired(), [ts(SEVEN_NEXT_DAY)]);
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_the_loop_promptly() {
        let (rec, stop, task) = start("2025-01-15T06:00+01:00", 0).await;
        let before = Instant::now();
        stop.cancel();
        let ended = tokio::time::timeout(Duration::from_millis(1), task).await;
        assert!(matches!(ended, Ok(Ok(()))));
        assert_eq!(Instant::now(), before);
        assert!(rec.fired().is_empty());
    }
}
