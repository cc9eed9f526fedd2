//! `current_time`: the date and time now in an IANA zone (`Europe/Paris`, `UTC`), as
//! ISO 8601 with the offset (`2026-12-01T21:03:05+01:00`), the format sluice-tiny's
//! training data uses. The zone database is built into the binary (jiff's bundled
//! tzdb), so a slim container without `/usr/share/zoneinfo` answers the same.

use async_trait::async_trait;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde_json::{json, Value};

use super::{optional_string_arg, CallContext, Tool, ToolError, ToolSpec};
use crate::config::ToolConfig;

pub struct CurrentTime {
    spec: ToolSpec,
    default_zone: TimeZone,
}

impl CurrentTime {
    pub fn new(name: &str, config: &ToolConfig) -> Result<Self, String> {
        let zone = config.default_timezone.as_deref().unwrap_or("UTC");
        Ok(CurrentTime {
            spec: ToolSpec {
                name: name.to_owned(),
                description: config
                    .description
                    .clone()
                    .unwrap_or_else(|| "get the current date and time".into()),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "timezone": {
                            "type": "string",
                            "description": "an IANA time zone such as Europe/Paris; default: the server's configured zone"
                        }
                    },
                }),
            },
            default_zone: zone_named(zone)?,
        })
    }
}

/// An IANA zone by name, or a message naming what is wrong.
pub fn zone_named(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name).map_err(|_| {
        format!("unknown time zone `{name}`: use an IANA name such as Europe/Paris or UTC")
    })
}

/// `t` in `zone` as ISO 8601 to the second, with the offset (`+00:00` for UTC).
pub fn format(t: Timestamp, zone: &TimeZone) -> String {
    t.to_zoned_datetime(zone.clone())
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

#[async_trait]
impl Tool for CurrentTime {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, arguments: Value, _ctx: &CallContext) -> Result<String, ToolError> {
        let zone = match optional_string_arg(&arguments, "timezone")?.map(str::trim) {
            None | Some("") => self.default_zone.clone(),
            Some(name) => zone_named(name).map_err(ToolError::InvalidArguments)?,
        };
        Ok(format(Timestamp::now(), &zone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_the_zone_offset() {
        let t: Timestamp = "2024-07-01T12:00:00Z".parse().unwrap();
        assert_eq!(
            format(t, &zone_named("UTC").unwrap()),
            "2024-07-01T12:00:00+00:00"
        );
        assert_eq!(
            format(t, &zone_named("Europe/Paris").unwrap()),
            "2024-07-01T14:00:00+02:00"
        );
        assert_eq!(
            format(t, &zone_named("Asia/Kolkata").unwrap()),
            "2024-07-01T17:30:00+05:30"
        );
    }

    #[tokio::test]
    async fn unknown_zones_are_argument_errors() {
        let cfg: ToolConfig = toml::from_str("kind = \"current_time\"").unwrap();
        let tool = CurrentTime::new("current_time", &cfg).unwrap();
        let ctx = CallContext::with_timeout(std::time::Duration::from_secs(1));
        let err = tool
            .call(json!({"timezone": "Mars/Olympus"}), &ctx)
            .await
            .unwrap_err();
        assert!(matches!(err, ToolError::InvalidArguments(ref m) if m.contains("Mars/Olympus")));
        let now = tool.call(json!({}), &ctx).await.unwrap();
        assert!(now.ends_with("+00:00"), "{now}");
    }
}
